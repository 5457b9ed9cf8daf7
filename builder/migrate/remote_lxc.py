"""Cluster nodes installed as LXC containers on another host, over the user's own ssh (`imgbuild install-lxc
OUTPUT --host HOST`, which `imgbuild deploy` runs once per host).

For every node, in this order, so that a refusal leaves nothing half-written on the host:
1. its tree is made here, in the staging directory beside the output (builder.build.install_lxc.stage_node: the
   build unpacked and given the node's identity by the identity engine, as a local install does; kept for the
   next deploy while the build and the node are unchanged, so a redeploy sends nothing);
2. the host is looked at with one script (what is at LXCPATH/NODE, whether it runs, whether lxc-start is there)
   and its guest configs are read in one round trip (LXCPATH/*/config, /etc/xen/*, /etc/vz/conf/*.conf, and
   imgbuild's MARKER files). They are the host's: hostile data, parsed by the same readers the local duplicate
   checks use (builder.identity.inventory_scan.from_texts), never run. A node whose name, MAC or IP another guest
   on THAT host has is refused, naming the guest and its config; so is a container of the node's name that
   imgbuild did not install (no MARKER), a symlink there, or one that runs. Every node of the host is checked
   before the first is written;
3. the tree goes to HOST:LXCPATH/NODE/rootfs through the push machinery (builder.migrate.push: rsync -aHAXS
   --numeric-ids, --delete, mounts under it left alone), after MARKER, and the config last (written only when it
   differs). A second deploy of the same build changes nothing.

Every value in a remote script is quoted (shlex.quote); node names passed the Name check (read_nodes), so
LXCPATH/NODE is always one directory inside LXCPATH. What the host says is shown through `shown()`.
Xen nodes (the disk image and xl config) are not deployed yet (docs/clusters.md).
"""
from __future__ import annotations

import contextlib
import json
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from builder.build.install_lxc import stage_node, staging_dir
from builder.build.targets.lxc import adapt_cgroup, cgroup_layout
from builder.core.errors import InputError
from builder.core.locks import Lock, lock_path
from builder.guestconf.lxc import BRIDGE_HINT, links
from builder.identity.inventory_records import GuestRecord
from builder.identity.inventory_scan import DEFAULT_VZ_DIR, DEFAULT_XEN_DIR, from_texts
from builder.migrate import push
from builder.migrate.remote import Remote, remote_path, shown

log = logging.getLogger("imgbuild")

MARKER = ".imgbuild-deploy"          # LXCPATH/NODE/.imgbuild-deploy: imgbuild installed this container
MAX_MARKER = 4096


@dataclass
class HostState:
    """What the probe and the configs say about the host (all of it the host's word: checked before use)."""

    lxc_start: str = ""
    rsync: str = ""
    cgroup: str = "v2"
    kinds: dict[str, str] = field(default_factory=dict)      # node -> dir, link, other (absent: nothing there)
    running: set[str] = field(default_factory=set)
    no_links: set[str] = field(default_factory=set)          # bridges the configs name that the host lacks
    rootfs_links: set[str] = field(default_factory=set)
    configs: dict[str, str] = field(default_factory=dict)    # path -> text
    markers: dict[str, str] = field(default_factory=dict)    # node -> MARKER's text


@dataclass
class NodeOutcome:
    name: str
    changes: push.Changes
    config: str                      # created, changed, unchanged
    new: bool                        # the container's directory did not exist
    started: bool = False


def check_lxcpath(lxcpath: str) -> str:
    p = remote_path(lxcpath, "--lxcpath")
    if p == "/":
        raise InputError("--lxcpath /: give LXC's container directory on the host", "e.g. --lxcpath /var/lib/lxc")
    return p


def marker_text(node: str, cluster: str) -> str:
    return json.dumps({"installed_by": "imgbuild", "node": node, "cluster": cluster}, sort_keys=True) + "\n"


def is_ours(text: str | None, node: str) -> bool:
    """Whether a MARKER's text (the host's: untrusted) says imgbuild installed container `node`."""
    if not text or len(text) > MAX_MARKER:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("installed_by") == "imgbuild" and data.get("node") == node


def _probe_script(lxcpath: str, names: list[str], bridges: list[str]) -> str:
    q = shlex.quote
    return "\n".join([
        f"L={q(lxcpath)}",
        'echo "lxcstart=$(command -v lxc-start 2>/dev/null)"',
        'echo "rsync=$(command -v rsync 2>/dev/null)"',
        f"for b in {' '.join(q(b) for b in bridges)}; do [ -e \"/sys/class/net/$b\" ] || echo \"nolink=$b\"; done",
        f"for n in {' '.join(q(n) for n in names)}; do",
        '  C="$L/$n"',
        '  if [ -L "$C" ]; then echo "link=$n"; elif [ -d "$C" ]; then echo "dir=$n";'
        ' elif [ -e "$C" ]; then echo "other=$n"; fi',
        '  if [ -L "$C/rootfs" ]; then echo "rootfslink=$n"; fi',
        '  if [ -d "$C" ] && command -v lxc-info >/dev/null 2>&1; then',
        '    s=$(lxc-info -P "$L" -n "$n" -s -H 2>/dev/null)',
        '    case "$s" in ""|STOPPED|ABORTING) ;; *) echo "running=$n" ;; esac',
        "  fi",
        '  if grep -a -s -q -F -e "[lxc monitor] $L $n" /proc/[0-9]*/cmdline 2>/dev/null; then echo "running=$n"; fi',
        "done",
        "true",
    ]) + "\n"


def look(remote: Remote, lxcpath: str, names: list[str], bridges: list[str] = ()) -> HostState:
    """The host's state for these nodes (and the bridges their configs name): one probe script and one read of
    its configs."""
    st = HostState()
    out = remote.sh(_probe_script(lxcpath, names, list(bridges)), what=f"looking at {lxcpath}",
                    max_output=1 << 20).stdout
    for line in out.splitlines()[:1000]:
        k, _, v = line.partition("=")
        if k == "lxcstart":
            st.lxc_start = v if v.startswith("/") else ""
        elif k == "rsync":
            st.rsync = v if v.startswith("/") else ""
        elif k == "nolink" and v in bridges:
            st.no_links.add(v)
        elif v in names and k in ("dir", "link", "other"):
            st.kinds[v] = k
        elif v in names and k == "running":
            st.running.add(v)
        elif v in names and k == "rootfslink":
            st.rootfs_links.add(v)
    files = remote.read_glob((lxcpath, "*/config"), (lxcpath, f"*/{MARKER}"), (DEFAULT_XEN_DIR, "*"),
                             (DEFAULT_VZ_DIR, "*.conf"), ("/proc/self", "mountinfo"))
    for path, text in files.items():
        if path == "/proc/self/mountinfo":
            st.cgroup = cgroup_layout(text)
        elif path.endswith(f"/{MARKER}"):
            st.markers[path.rsplit("/", 2)[-2]] = text
        else:
            st.configs[path] = text
    return st


def _config_of(g: GuestRecord) -> str:
    kind, _, path = g.where.partition(":")
    return f"{path}/config" if kind == "lxc" else path


def refusals(host: str, lxcpath: str, nodes: list[dict], st: HostState, start: bool) -> list[InputError]:
    """Why these nodes cannot be installed on the host as it is (nothing when they can)."""
    out: list[InputError] = []
    for n in nodes:
        name, cdir = n["name"], f"{lxcpath}/{n['name']}"
        kind = st.kinds.get(name)
        if kind in ("link", "other"):
            out.append(InputError(f"{host}: {cdir} is {'a symbolic link' if kind == 'link' else 'not a directory'}; "
                                  "a container of that name is not installed there",
                                  f"remove it on {host} if it may go, or give the node another name"))
        elif kind == "dir" and not is_ours(st.markers.get(name), name):
            out.append(InputError(f"{host}: {cdir} is a container imgbuild did not install (no {MARKER} of "
                                  f"imgbuild's in it); it is not replaced",
                                  f"give node {name} another name in the recipe, or remove that container on "
                                  f"{host} yourself (lxc-destroy -P {lxcpath} -n {name}) if it may go"))
        elif name in st.running:
            out.append(InputError(f"{host}: container {name} in {lxcpath} is running; it is not replaced",
                                  f"stop it first (ssh {host} lxc-stop -P {lxcpath} -n {name})"))
        elif name in st.rootfs_links:
            out.append(InputError(f"{host}: {cdir}/rootfs is a symbolic link; nothing is pushed through it",
                                  f"make it a directory on {host}, or remove the container there"))
    mine = {f"lxc:{lxcpath}/{n['name']}" for n in nodes if is_ours(st.markers.get(n["name"]), n["name"])}
    others = [g for g in from_texts(st.configs, lxcpath, DEFAULT_XEN_DIR, DEFAULT_VZ_DIR) if g.where not in mine]
    for n in nodes:
        ip = n["address"].split("/")[0]
        for g in others:
            said = f"guest {shown(g.name, 80)} ({shown(_config_of(g), 200)})"
            hint = (f"give node {n['name']} another {{what}} in the recipe (nodes: ... {{key}}:), or change that "
                    f"guest on {host}")
            if n["name"].lower() in {g.name.lower(), (g.hostname or "").lower()}:
                out.append(InputError(f"{host}: name {n['name']} of node {n['name']} is already used by {said}",
                                      hint.format(what="name", key="name")))
            if n["mac"].lower() in g.macs:
                out.append(InputError(f"{host}: MAC {n['mac']} of node {n['name']} is already used by {said}",
                                      hint.format(what="MAC", key="mac")))
            if ip in g.ips:
                out.append(InputError(f"{host}: IP {ip} of node {n['name']} is already used by {said}",
                                      hint.format(what="address", key="address")))
    if not st.rsync:
        out.append(InputError(f"{host}: rsync is not installed there; the nodes' trees are sent with it",
                              f"install it on {host} (apt-get install rsync / yum install rsync)"))
    if start and not st.lxc_start:
        out.append(InputError(f"{host}: lxc-start is not installed there, so --start cannot start the nodes",
                              f"install LXC on {host} (apt-get install lxc), or deploy without --start"))
    if start and st.no_links:
        out.append(InputError(f"{host}: no bridge {', '.join(sorted(st.no_links))} there, which the nodes' "
                              "configs join, so --start cannot start them", BRIDGE_HINT))
    return out


def install(remote: Remote, output: Path, cluster: str, nodes: list[dict], base: dict, lxcpath: str,
            start: bool = False) -> list[NodeOutcome]:
    """Install `nodes` (entries of OUTPUT's nodes.json, checked by read_nodes) on the remote host under lxcpath.
    remote.dry_run: the same staging, checks and comparisons, nothing written on the host."""
    host, dry = remote.host, remote.dry_run
    lxcpath = check_lxcpath(lxcpath)
    with contextlib.ExitStack() as held:
        for n in nodes:     # another deploy of this output's node waits: its tree is made or read only by one
            lock = Lock(lock_path(staging_dir(output) / n["name"]), what=f"deploy of node {n['name']}")
            lock.wait(f"node {n['name']}'s staged tree is in use by another imgbuild")
            held.callback(lock.release)
        staged = {n["name"]: stage_node(output, n, base, f"{lxcpath}/{n['name']}") for n in nodes}
        bridges = {n: [link for _, link in links((d / "config").read_text())] for n, d in staged.items()}
        st = look(remote, lxcpath, [n["name"] for n in nodes], sorted({b for bs in bridges.values() for b in bs}))
        problems = refusals(host, lxcpath, nodes, st, start)
        if problems:        # every one said, the first one's hint
            raise InputError("; ".join(p.message for p in problems),
                             f"{problems[0].hint}; nothing was changed on {host}")
        done = [_one(remote, n, staged[n["name"]], lxcpath, cluster, st) for n in nodes]
    for n, bs in bridges.items():
        for b in sorted(set(bs) & st.no_links):
            log.warning("%s: %s/%s/config joins bridge %s, which %s does not have: lxc-start -n %s will fail "
                        "there; %s", host, lxcpath, n, b, host, n, BRIDGE_HINT)
    if start:
        for o in done:
            if dry:
                log.info("%s: would start %s (lxc-start -n %s -P %s)", host, o.name, o.name, lxcpath)
                continue
            remote.sh(f"lxc-start -n {shlex.quote(o.name)} -P {shlex.quote(lxcpath)}", what=f"starting {o.name}")
            o.started = True
            log.info("%s: started %s", host, o.name)
    return done


def _one(remote: Remote, n: dict, staged: Path, lxcpath: str, cluster: str, st: HostState) -> NodeOutcome:
    name, cdir = n["name"], f"{lxcpath}/{n['name']}"
    new = name not in st.kinds
    mark = marker_text(name, cluster)
    config = adapt_cgroup((staged / "config").read_text(), st.cgroup)[0]
    old_config = st.configs.get(f"{cdir}/config")
    if not remote.dry_run:
        if new:
            remote.sh(f"set -e; mkdir -p {shlex.quote(lxcpath)}; mkdir -m 0770 {shlex.quote(cdir)}",
                      what=f"making {cdir}")
        if st.markers.get(name) != mark:
            remote.write_text(f"{cdir}/{MARKER}", mark, 0o644)
    if remote.dry_run and new:
        changes = _all_new(staged / "rootfs")
    else:
        req = push.PushRequest(dest=f"{cdir}/rootfs", source=staged / "rootfs", unprotect=push.DEFAULT_PROTECT,
                               delete=True, dry_run=remote.dry_run, force=True, progress=False, marker=False)
        changes = push.push(remote, req)
    what = "created" if old_config is None else "unchanged" if old_config == config else "changed"
    if what != "unchanged" and not remote.dry_run:
        remote.write_text(f"{cdir}/config", config, 0o644)
    verb = "would be" if remote.dry_run else "is"
    log.info("%s: node %s -> %s: %s; config %s %s", remote.host, name, cdir, push.summary(changes, remote.dry_run)[0],
             verb, what)
    return NodeOutcome(name, changes, what, new)


def _all_new(tree: Path) -> push.Changes:
    """What a push of `tree` into a directory that does not exist yet would do: every path created (the dry run
    of a new container, where rsync has no directory to compare with)."""
    c = push.Changes()
    for p in sorted(tree.rglob("*")):
        rel = str(p.relative_to(tree))
        if p.is_file() and not p.is_symlink():
            c.sent.append((rel, p.lstat().st_size))
            c.new.add(rel)
        else:
            c.made.append(rel)
    return c


def result(host: str, lxcpath: str, done: list[NodeOutcome], dry: bool) -> dict:
    """The per-host result for the fleet summary (the shape push.as_json gives): every path, prefixed with
    NODE/rootfs, and each config and marker written."""
    out: dict = {"host": host, "dest": lxcpath, "dry_run": dry, "create": [], "change": [], "delete": [],
                 "bytes": 0, "nodes": {}}
    for o in done:
        j = push.as_json(o.changes, host, f"{lxcpath}/{o.name}/rootfs", dry)
        out["create"] += [f"/{o.name}/rootfs{p}" for p in j["create"]]
        out["change"] += [{**c, "path": f"/{o.name}/rootfs{c['path']}"} for c in j["change"]]
        out["delete"] += [f"/{o.name}/rootfs{p}" for p in j["delete"]]
        if o.config == "created":
            out["create"].append(f"/{o.name}/config")
        elif o.config == "changed":
            out["change"].append({"path": f"/{o.name}/config", "what": "content"})
        out["bytes"] += j["bytes"]
        out["nodes"][o.name] = {"config": o.config, "new": o.new, "started": o.started}
    return out

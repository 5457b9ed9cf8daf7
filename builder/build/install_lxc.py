"""Installing a built output on this host as LXC container(s): `imgbuild install-lxc` and `build --install-lxc`.

The output is unpacked beside its destination, given its identity there by the identity engine (host name,
MACs, IPs checked against every guest this host knows of, recorded in the inventory) and only then moved into
place. A cluster build installs every node so, each with its own identity. Kept apart from the lxc target (which
only writes the config) so that building, and a no-change rebuild, do not load the identity engine."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from builder.build.cluster import NODES_FILE, read_nodes
from builder.build.manifest import read_manifest
from builder.build.targets.lxc import (
    DEFAULT_LXCPATH,
    adapt_cgroup,
    artifact_files,
    destination,
    host_cgroup,
    installed_by_imgbuild,
)
from builder.core import checks
from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.outputs import exchange, sha256, write_atomic
from builder.core.untrusted import read_file
from builder.guestconf.lxc import BRIDGE_HINT, config_dir, missing_links, relocate
from builder.identity import engine
from builder.identity.guest import Guest
from builder.identity.reidentify import Where, reidentify

log = logging.getLogger("imgbuild")
# in the container's directory: which output it was installed from (its manifest's sha256), so that a tool can
# tell an install of the same output again (the Ansible collection's install_lxc: changed=false)
SOURCE_FILE = "imgbuild-source.json"


def _hostname_for(name: str) -> str | None:
    """The host name a container named NAME gets, as a clone would: NAME's first label (the domain of the
    build's host name is kept), if that is a host name."""
    label = name.split(".")[0]
    try:
        return checks.hostname(label)
    except ValueError:
        return None


def install(output: Path, name: str | None = None, lxcpath: str = DEFAULT_LXCPATH, force: bool = False,
            inventory_file: str | None = None, request: engine.Request | None = None, what: str | None = None) -> Path:
    """Unpack a built output as an LXC container: lxcpath/name/{rootfs,config}. Returns the container dir.

    The container is made in a temp directory beside it, given its identity there by the identity engine
    (`request`; default: host name NAME when a name is given, new ssh host keys and machine-id) with every
    MAC, IP and host name checked against the inventory and this host's guest configs (a taken one is
    refused, naming both guests), recorded in the inventory, and only then moved into place."""
    output = Path(output)
    manifest = read_manifest(output)
    files = artifact_files(output, manifest)
    if name is None:
        name, what = manifest["name"], f"{output / 'manifest.json'}: name"
    dest = destination(lxcpath, name, force, what or "--name")
    config = _text(files["lxc-config"])
    old = config_dir(config, files["lxc-config"])
    made = []                       # the lxcpath's directories made now: removed again if the install fails
    for d in (dest.parent, *dest.parent.parents):
        if os.path.lexists(d):
            break
        made.append(d)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lxcpath = str(dest.parent)      # the config's paths must not depend on where lxc-start runs
    if request is None:
        hostname = None
        if what is None:            # --name: the guest takes that host name, or is told why not
            hostname = _hostname_for(name)
            if hostname is None:
                log.warning("--name %s is not a host name (letters, digits and '-', then optionally a "
                            "'.domain'): the container keeps the build's host name %s", name, manifest.get("hostname"))
        request = engine.Request(hostname=hostname, reset=True)
    try:
        part = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=lxcpath))   # hidden: not a container yet
    except BaseException:
        _rmdirs(made)
        raise
    try:
        config, dropped = adapt_cgroup(config, host_cgroup())
        if dropped:
            log.warning("this host's devices cgroup is %s: left out %s", host_cgroup(), ", ".join(dropped))
        _unpack(files, part, config, old, str(dest))
        write_atomic(part / SOURCE_FILE, json.dumps({"output": str(output.resolve()),
                                                     "manifest_sha256": sha256(output / "manifest.json")}))
        staged = Guest("lxc", name, f"lxc:{dest}", part, ("lxc", part / "config"))
        destination(lxcpath, name, force, what or "--name")    # again: nothing came or started meanwhile
        try:
            reidentify(staged, request, Where(inventory_file=inventory_file, lxcpath=lxcpath), new_guest=True)
        except InputError as e:
            if "guests imgbuild knows of" not in e.message:
                raise
            raise InputError(e.message, f"install-lxc gives the container the build's own MAC and IP, and another "
                                        f"guest has them: for another container of one build, clone the first "
                                        f"(imgbuild clone lxc:FIRST {name} --ip OLD=NEW: a fresh MAC, the IP you "
                                        f"give), or build it with its own network (--set network.eth0...)") from None
        _swap_in(part, dest, name)
    except BaseException:
        if part.is_dir() and not part.is_symlink():
            shutil.rmtree(part, ignore_errors=True)
        _rmdirs(made)
        raise
    log.info("installed %s as LXC container %s in %s", output, name, lxcpath)
    for key, link in missing_links(config):
        log.warning("%s: %s = %s: no such interface on this host, so `lxc-start -n %s` will fail; %s", dest / "config",
                    key, link, name, BRIDGE_HINT)
    return dest


def _unpack(files: dict[str, Path], part: Path, config: str, old: str, dest: str) -> None:
    """The output's tree and config in `part` (rootfs/, config and a legacy config's fstab), their paths
    pointing at `dest`, the container's directory where it will live."""
    os.chmod(part, 0o770)
    (part / "rootfs").mkdir()
    runner.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "-xpf",
                str(files["tarball"]), "-C", str(part / "rootfs")])
    write_atomic(part / "config", relocate(config, old, dest))
    if "lxc-fstab" in files:
        write_atomic(part / "fstab", _text(files["lxc-fstab"]).replace(old, dest))


def _rmdirs(made: list[Path]) -> None:
    """Remove the directories an install made (deepest first), each only while it is empty."""
    for d in made:
        try:
            os.rmdir(d)
        except OSError:
            break


def _text(f: Path) -> str:
    data = read_file(f, what="an LXC config imgbuild wrote", hint="build the output again")
    try:
        if b"\0" in data:
            raise ValueError
        return data.decode("utf-8")
    except ValueError:
        raise InputError(f"{f}: not a text file (binary or not UTF-8); not an LXC config imgbuild wrote",
                         "build the output again") from None


def _swap_in(part: Path, dest: Path, name: str) -> None:
    """part becomes dest; a container replaced at dest (checked by destination()) is removed after the swap."""
    if not os.path.lexists(dest):
        os.rename(part, dest)
        return
    if not exchange(part, dest):
        old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=dest.parent))
        os.rename(dest, old / name)
        os.rename(part, dest)
        shutil.rmtree(old)
        return
    if installed_by_imgbuild(part):     # what was swapped out: the container checked before
        shutil.rmtree(part)
    else:
        log.warning("%s: what was at %s changed during the install; left there, not removed", part, dest)


def install_nodes(output: Path, lxcpath: str, force: bool = False, only: tuple[str, ...] = (),
                  inventory_file: str | None = None) -> list[Path]:
    """Every node of a cluster build as an LXC container: the build unpacked under the node's name and given
    the node's identity and variables by the identity engine before it is moved into place (duplicates
    against other guests refused)."""
    data = read_nodes(output)
    if data is None:
        raise InputError(f"{output}: not a cluster build (no {NODES_FILE})", "give nodes: in the recipe")
    nodes = [n for n in data["nodes"] if not only or n["name"] in only]
    unknown = set(only) - {n["name"] for n in data["nodes"]}
    if unknown:
        raise InputError(f"--node {', '.join(sorted(unknown))}: not a node of {output}",
                         f"nodes: {', '.join(n['name'] for n in data['nodes'])}")
    nodes_file = Path(output) / NODES_FILE
    whats = {n["name"]: f"{nodes_file}: nodes[{data['nodes'].index(n)}].name" for n in nodes}
    for n in nodes:   # every destination checked before the first node is made
        destination(lxcpath, n["name"], force, whats[n["name"]])
    base = data["base"]
    made = []
    for n in nodes:
        made.append(install(output, n["name"], lxcpath, force, inventory_file, request=node_request(base, n),
                            what=whats[n["name"]]))
        log.info("node %s: %s, %s", n["name"], n["address"], n["mac"])
    return made


def node_request(base: dict, n: dict) -> engine.Request:
    """What the identity engine makes of the build for node `n` (an entry of nodes.json, checked by read_nodes):
    its host name, address and MAC for the build's own, its variables, new ssh host keys and machine-id."""
    ips = (engine.parse_ip(f"{base['ip']}={n['address']}"),) if base.get("ip") else ()
    macs = ((base["mac"], n["mac"]),) if base.get("mac") else ()
    return engine.Request(hostname=n["name"], ips=ips, macs=macs, variables=tuple(n.get("vars", {}).items()),
                          reset=True)


# ------------------------------------------------------------------ a node made here for another host

STAGING = ".deploy"          # OUTPUT/../.deploy/NAME/NODE: beside the output, which a rebuild replaces whole
STAMP = "imgbuild-stage.json"


def staging_dir(output: Path) -> Path:
    out = Path(output).resolve()
    return out.parent / STAGING / out.name


def stage_node(output: Path, node: dict, base: dict, dest: str) -> Path:
    """Node `node` of the cluster build OUTPUT made as a container for another host, in the staging directory
    (staging_dir(OUTPUT)/NODE: rootfs/ and config, whose paths point at `dest`, the container's directory on
    that host): the same unpacking and identity engine as a local install, but checked against no guest of
    this host and recorded in no inventory here (the host it goes to is checked by the caller).

    A staged node whose build (the tarball's sha256), node entry and `dest` are unchanged is kept as it is, so a
    second deploy sends nothing and the node keeps its ssh host keys and machine-id. Returns the directory."""
    output = Path(output)
    manifest = read_manifest(output)
    files = artifact_files(output, manifest)
    tar_sha = next((a.get("sha256") for a in manifest["artifacts"] if a.get("kind") == "tarball"), None)
    stamp = json.dumps({"tarball": tar_sha, "node": node, "base": base, "dest": dest}, sort_keys=True) + "\n"
    root = staging_dir(output)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in (root.parent, root):       # the trees hold the nodes' secrets and ssh host keys
        os.chmod(d, 0o700)
    final = checks.child(root, node["name"], f"{output / NODES_FILE}: a node's name")
    mark = final / STAMP
    if final.is_dir() and not final.is_symlink() and mark.is_file() and not mark.is_symlink() \
            and mark.read_text() == stamp and (final / "rootfs").is_dir():
        log.info("node %s: its tree made earlier is up to date (%s)", node["name"], final)
        return final
    config = _text(files["lxc-config"])
    part = Path(tempfile.mkdtemp(prefix=f".{node['name']}.partial-", dir=root))
    try:
        _unpack(files, part, config, config_dir(config, files["lxc-config"]), dest)
        with tempfile.TemporaryDirectory(prefix=".nowhere-", dir=root) as nowhere:
            where = Where(inventory_file=f"{nowhere}/inventory.yml", lxcpath=f"{nowhere}/lxc",
                          xen_dir=f"{nowhere}/xen", vz_dir=f"{nowhere}/vz")
            staged = Guest("lxc", node["name"], f"lxc:{dest}", part, ("lxc", part / "config"))
            reidentify(staged, node_request(base, node), where, new_guest=True)
        write_atomic(part / STAMP, stamp)
        if os.path.lexists(final):
            old = Path(tempfile.mkdtemp(prefix=f".{node['name']}.old-", dir=root))
            os.rename(final, old / "x")
            os.rename(part, final)
            shutil.rmtree(old)
        else:
            os.rename(part, final)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    log.info("node %s: made in %s (%s, %s)", node["name"], final, node["address"], node["mac"])
    return final

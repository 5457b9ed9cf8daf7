"""Clusters from one recipe: `nodes:` are clones of the one build, each with its own name, address and MAC;
`secrets:` are the values every node shares (a replication password, an erlang cookie).

The base is built once, with the recipe's own identity and an /etc/hosts block naming every node. Each node is
that build, cloned through the identity engine (host name, address and MAC everywhere they live, ssh host keys and
machine-id made anew) and its templates rendered again with its own variables. Secrets are files at fixed
paths in the tree, owned by the service's user and readable only by it; their values come from a file or are
generated once per cluster and kept in the secrets directory (0700, one 0600 file per secret), so a rebuild is
byte-identical. They never reach a log, the manifest or vars.yml.
"""
from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import secrets as pysecrets
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from builder.core import checks
from builder.core.checks import MAC, IPInterface, Mode, Owner, RootPath, SshDest
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.core.paths import DEFAULT_SECRETS_DIR, SECRETS_ENV
from builder.core.proc import Secret
from builder.core.schema import Check, opt
from builder.core.untrusted import read_json

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")

HOSTS_BEGIN = "# BEGIN imgbuild cluster nodes"
HOSTS_END = "# END imgbuild cluster nodes"
NODES_FILE = "nodes.json"
_ALPHABET = string.ascii_letters + string.digits


def _node_name(v: str) -> str:
    """A node's name is its host name and its container's name: both checks."""
    return checks.name(checks.hostname(v))


NodeName = Annotated[str, Check(_node_name, {"pattern": f"^{checks._NAME.pattern}$"}, describe="node name")]


@dataclass(frozen=True)
class Node:
    """One node of a cluster: a clone of the build with its own identity and variables."""

    name: NodeName = opt(doc="the node's name: its host name and its container's name")
    address: IPInterface = opt(doc="its address on the first interface, with prefix (10.0.3.11/24)")
    mac: Union[MAC, None] = opt(None, doc="its MAC (default: one derived from the recipe and node names, in "
                                          "Xen's 00:16:3e range, the same on every build)")
    vars: dict[str, Any] = opt(factory=dict, doc="template variables for this node (over the recipe's vars)")
    host: Union[SshDest, None] = opt(None, doc="the host `imgbuild deploy` installs this node on: an ssh "
                                               "destination (an ssh_config alias, host or user@host); "
                                               "docs/clusters.md")


@dataclass(frozen=True)
class SecretSpec:
    """A value every node shares, written to a file in the tree. Never logged, never in the manifest."""

    ONE_OF = ("from_file", "generate")
    path: RootPath = opt(doc="the file in the tree that holds the value")
    from_file: str | None = opt(None, doc="a file whose first line is the value (relative to the recipe)")
    generate: int | None = opt(None, doc="length of a random value (letters and digits) made once per cluster "
                                         "and kept in $IMGBUILD_SECRETS_DIR (default /var/lib/imgbuild/secrets)")
    owner: Owner = opt("root", doc="owner: the service's user (mysql, rabbitmq ...)")
    group: Owner = opt("root", doc="group")
    mode: Mode = opt(0o400, doc="permissions; readable only by the owner")
    newline: bool = opt(False, doc="end the file with a newline (an erlang cookie must not have one)")

    def __post_init__(self) -> None:
        if self.generate is not None and not 8 <= self.generate <= 256:
            raise ValueError("generate: a length from 8 to 256")
        if self.mode & 0o077:
            raise ValueError(f"mode {self.mode:04o}: a secret must not be readable by group or others")


def node_mac(cluster: str, node: Node) -> str:
    if node.mac:
        return node.mac.lower()
    h = hashlib.sha256(f"imgbuild-node:{cluster}:{node.name}".encode()).digest()
    return "00:16:3e:%02x:%02x:%02x" % (h[0] & 0x7F, h[1], h[2])


def node_table(r: "Recipe") -> list[dict[str, Any]]:
    """What templates see as `nodes`: name, ip, address (with prefix), mac, index, and the node's vars."""
    return [{**n.vars, "name": n.name, "ip": str(ipaddress.ip_interface(n.address).ip), "address": str(n.address),
             "mac": node_mac(r.name, n), "index": i} for i, n in enumerate(r.nodes)]


def cluster_vars(r: "Recipe", index: int) -> dict[str, Any]:
    """Variables of node `index` for its templates: the recipe's vars, the node's, and the cluster's."""
    table = node_table(r)
    node = r.nodes[index]
    return {**r.vars, **node.vars, "cluster": r.name, "nodes": table, "node": table[index], "node_index": index,
            "first_node": table[0]}


CLUSTER_BUILTINS = frozenset({"cluster", "nodes", "node", "node_index", "first_node"})


def base_identity(r: "Recipe") -> tuple[str, str | None, str | None]:
    """The build's own first interface: (name, address without prefix, mac)."""
    for ifname, iface in r.network.items():
        ip = str(ipaddress.ip_interface(iface.address).ip) if iface.address else None
        return ifname, ip, (iface.mac or "").lower() or None
    raise InputError("nodes: the recipe has no network interface to give each node its address",
                     "add network: {eth0: {address: ..., mac: ...}}")


def check_nodes(name: str, hostname: str | None, network: dict, nodes: tuple[Node, ...]) -> list[tuple[str, str]]:
    """Problems with nodes: (key, message); checked when the recipe loads."""
    out: list[tuple[str, str]] = []
    if not nodes:
        return out
    seen: dict[tuple[str, str], str] = {}
    iface = next(iter(network.values()), None)
    if iface is None or iface.address is None:
        out.append(("nodes", "nodes need the recipe's first interface to have a static address (network.eth0.address)"))
    for i, n in enumerate(nodes):
        for kind, value in (("name", n.name.lower()), ("address", str(ipaddress.ip_interface(n.address).ip)),
                            ("mac", node_mac(name, n))):
            if (kind, value) in seen:
                out.append((f"nodes[{i}].{kind}", f"{value} is also {seen[(kind, value)]}'s"))
            seen[(kind, value)] = n.name
        if iface is not None and iface.address is not None:
            if str(ipaddress.ip_interface(n.address).ip) == str(ipaddress.ip_interface(iface.address).ip):
                out.append((f"nodes[{i}].address", f"{n.address} is the build's own address; give each node "
                                                    "its own (the build is the template they are cloned from)"))
            if n.name.lower() == (hostname or name).lower():
                out.append((f"nodes[{i}].name", f"{n.name} is the build's own host name; name the build "
                                                 "something else (hostname: ...)"))
    return out


# ------------------------------------------------------------------ secrets


def secrets_dir() -> Path:
    return Path(os.environ.get(SECRETS_ENV) or DEFAULT_SECRETS_DIR)


def secret_value(cluster: str, name: str, spec: SecretSpec, base: Path | None = None) -> Secret:
    if spec.from_file is not None:
        try:
            lines = Path(spec.from_file).read_text().splitlines()
        except OSError as e:
            raise InputError(f"secrets.{name}.from_file: cannot read {spec.from_file}: {e.strerror}",
                             "give a readable file whose first line is the value (mode 0600)") from None
        if not lines or not lines[0]:
            raise InputError(f"secrets.{name}.from_file: {spec.from_file} is empty",
                             "put the value on its first line")
        return Secret(lines[0])
    # the cluster's directory in the secrets directory, and the secret's file in it: both names checked again
    # here (the recipe loader checked them too), so neither can lead out of the secrets directory
    d = checks.child(base or secrets_dir(), cluster, f"secrets.{name}: the cluster name")
    f = checks.child(d, name, f"secrets.{name}")
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as fh:
            value = fh.read().strip()
        if len(value) >= 8:
            return Secret(value)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise InputError(f"secrets.{name}: cannot read the kept value {f}: {e.strerror}",
                         f"fix its permissions, or set ${SECRETS_ENV}") from None
    value = "".join(pysecrets.choice(_ALPHABET) for _ in range(spec.generate or 32))
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d.parent, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)   # 0600, a name of its own
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(value + "\n")
            os.replace(tmp, f)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise InputError(f"secrets.{name}: cannot keep the generated value in {d}: {e.strerror}",
                         f"run as root, or set ${SECRETS_ENV} to a writable directory") from None
    log.info("secrets.%s: generated a new value, kept in %s (mode 0600)", name, f)
    return Secret(value)


def hosts_block(r: "Recipe") -> str:
    lines = [HOSTS_BEGIN]
    for n in node_table(r):
        names = f"{n['name']}.{r.domain} {n['name']}" if r.domain else n["name"]
        lines.append(f"{n['ip']}\t{names}")
    lines.append(HOSTS_END)
    return "\n".join(lines) + "\n"


def with_hosts_block(text: str, block: str) -> str:
    if HOSTS_BEGIN in text and HOSTS_END in text:
        head, rest = text.split(HOSTS_BEGIN, 1)
        return head + block + rest.split(HOSTS_END, 1)[1].lstrip("\n")
    return text.rstrip("\n") + "\n" + block


def run(ctx: "Context") -> None:
    """The build's cluster step: every secret in its file; /etc/hosts knows every node."""
    r = ctx.recipe
    for name, spec in sorted(r.secrets.items()):
        value = secret_value(r.name, name, spec)
        uid, gid = ctx.ids(spec.owner, spec.group, f"secrets.{name}")
        ctx.root.write(spec.path, value.reveal() + ("\n" if spec.newline else ""), spec.mode, uid, gid)
        log.info("secret %s -> %s (owner %s, mode %04o)", name, spec.path, spec.owner, spec.mode)
    if r.nodes:
        ctx.root.write("/etc/hosts", with_hosts_block(ctx.root.read_text("/etc/hosts") or "", hosts_block(r)), 0o644)
        ctx.artifacts.update(write_nodes(ctx))


def write_nodes(ctx: "Context") -> dict[str, Path]:
    """OUTPUT/NAME/nodes.json: what install-lxc needs to make the nodes (no secrets in it)."""
    r = ctx.recipe
    ifname, ip, mac = base_identity(r)
    data = {"base": {"interface": ifname, "ip": ip, "mac": mac, "hostname": r.hostname},
            "nodes": [{"name": n.name, "address": str(n.address), "mac": node_mac(r.name, n), "host": n.host,
                       "vars": {k: v for k, v in cluster_vars(r, i).items()}}
                      for i, n in enumerate(r.nodes)]}
    write_atomic(ctx.stage / NODES_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return {"nodes": ctx.stage / NODES_FILE}


# ------------------------------------------------------------------ making the nodes


def read_nodes(output: Path) -> dict | None:
    """OUTPUT/nodes.json (None when the output is not a cluster build), checked for the shape write_nodes
    gives it: a file an earlier run left is not trusted, so every value is checked before it names a
    container, a host or an address (a bad one: InputError naming the file and the key)."""
    f = Path(output) / NODES_FILE
    if not os.path.lexists(f):
        return None
    hint = f"{f} is written by the build: build the recipe again"
    if f.is_symlink() or not f.is_file():
        raise InputError(f"{f}: not a regular file", hint)
    data = read_json(f, what="imgbuild's nodes.json", hint=hint)

    def bad(key: str, msg: str) -> InputError:
        return InputError(f"{f}: {key}: {msg}", hint)

    def value(d: dict, key: str, where: str, check, optional: bool = False):
        v = d.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise bad(f"{where}.{key}", f"expected a string, found {type(v).__name__}")
        try:
            check(v)
        except ValueError as e:
            raise bad(f"{where}.{key}", str(e)) from None
        return v

    base, nodes = data.get("base"), data.get("nodes")
    if not isinstance(base, dict):
        raise bad("base", f"expected an object, found {type(base).__name__}")
    if not isinstance(nodes, list) or not nodes:
        raise bad("nodes", "expected a list of nodes")
    value(base, "ip", "base", checks._address, optional=True)
    value(base, "mac", "base", checks.mac, optional=True)
    value(base, "hostname", "base", checks.hostname, optional=True)
    for i, n in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(n, dict):
            raise bad(where, f"expected an object, found {type(n).__name__}")
        value(n, "name", where, _node_name)
        value(n, "address", where, checks._interface)
        value(n, "mac", where, checks.mac)
        value(n, "host", where, checks.ssh_dest, optional=True)
        if not isinstance(n.get("vars", {}), dict):
            raise bad(f"{where}.vars", f"expected an object, found {type(n.get('vars')).__name__}")
        if any(o["name"].lower() == n["name"].lower() for o in nodes[:i]):
            raise bad(f"{where}.name", f"{n['name']} is the name of an earlier node too")
    return data

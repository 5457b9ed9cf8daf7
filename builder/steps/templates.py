"""Per-node application settings: Jinja2 templates rendered with the guest's identity and the recipe's `vars`.

At build time each template is rendered into the root. Its source and the variables are also kept inside the
guest (/usr/share/imgbuild/templates/, /etc/imgbuild/templates.yml, /etc/imgbuild/vars.yml, root-only), so
`imgbuild clone` and `migrate reidentify` render them again for the new node (e.g. my.cnf's
wsrep_node_name/wsrep_node_address, server-id) without the recipe at hand.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jinja2
import yaml

from ..checks import Mode, Owner, RootPath
from ..errors import InputError
from ..schema import opt

if TYPE_CHECKING:
    from ..context import Context

STORE = "/usr/share/imgbuild/templates"
INDEX = "/etc/imgbuild/templates.yml"
VARS = "/etc/imgbuild/vars.yml"


@dataclass(frozen=True)
class Template:
    """A file rendered from a Jinja2 template with the node's identity and `vars`."""

    path: RootPath = opt(doc="where in the root")
    source: str = opt(doc="the template (relative to the recipe); variables: hostname, fqdn, domain, ip, "
                          "addresses (by interface), macs (by interface), and every key of `vars`")
    mode: Mode = opt(0o644, doc="permissions")
    owner: Owner = opt("root", doc="owner")
    group: Owner = opt("root", doc="group")


def context(hostname: str, domain: str | None, addresses: Mapping[str, str], macs: Mapping[str, str],
            variables: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees. `ip` is the first interface's address (without prefix)."""
    first = next(iter(addresses.values()), None)
    return {**variables, "hostname": hostname, "domain": domain or "",
            "fqdn": f"{hostname}.{domain}" if domain else hostname, "ip": first,
            "addresses": dict(addresses), "macs": dict(macs)}


def render(source: str, ctx: Mapping[str, Any], name: str) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    try:
        return env.from_string(source).render(**ctx)
    except jinja2.TemplateError as e:
        line = f" line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise InputError(f"template {name}{line}: {e}", "define the variable in the recipe's vars (or --set "
                                                        "VAR=VALUE when cloning)") from None


BUILTINS = frozenset({"hostname", "fqdn", "domain", "ip", "addresses", "macs"})


def undefined(source: str, variables: Mapping[str, Any]) -> set[str]:
    """Variables a template uses that neither imgbuild nor `vars` defines (checked when the recipe loads)."""
    from jinja2 import meta

    from jinja2 import nodes

    env = jinja2.Environment()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"Jinja2 syntax, line {e.lineno}: {e.message}") from None
    used = meta.find_undeclared_variables(ast)
    # a variable only ever read through `| default(...)` is optional: the role templates document such knobs
    every = [n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"]
    guarded = [f.node.name for f in ast.find_all(nodes.Filter)
               if f.name in ("default", "d") and isinstance(f.node, nodes.Name)]
    optional = {name for name in set(guarded) if every.count(name) == guarded.count(name)}
    return set(used) - BUILTINS - set(variables) - optional


def stored_name(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16] + "-" + Path(path).name + ".j2"


def run(ctx: "Context", templates: tuple[Template, ...]) -> None:
    if not templates:
        return
    r = ctx.recipe
    addresses = {n: str(i.address.ip) for n, i in r.network.items() if i.address is not None}
    macs = {n: i.mac for n, i in r.network.items() if i.mac}
    from ..cluster import cluster_vars

    variables = cluster_vars(r, 0) if r.nodes else dict(r.vars)   # a cluster's build renders as its first node
    c = context(r.hostname, r.domain, addresses, macs, variables)
    index = []
    for n, t in enumerate(templates):
        try:
            source = Path(t.source).read_text()
        except OSError as e:
            raise InputError(f"{ctx.source}: templates[{n}].source: cannot read {t.source}: {e.strerror}") from None
        uid, gid = ctx.ids(t.owner, t.group, f"templates[{n}]")
        ctx.root.write(t.path, render(source, c, f"{t.source} (for {t.path})"), t.mode, uid, gid)
        kept = f"{STORE}/{stored_name(t.path)}"
        ctx.root.write(kept, source, 0o600)
        index.append({"path": t.path, "template": kept, "mode": f"{t.mode:04o}", "uid": uid, "gid": gid})
    ctx.root.write(INDEX, yaml.safe_dump(index, sort_keys=False), 0o600)
    ctx.root.write(VARS, yaml.safe_dump(variables, sort_keys=True), 0o600)

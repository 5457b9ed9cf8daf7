"""Per-node application settings: Jinja2 templates rendered into the root with the guest's identity and the
recipe's `vars` (in the sandbox of builder/core/templating.py). Each template's source and the variables are also
kept inside the guest (builder/identity/kept.py), so `imgbuild clone` and `migrate reidentify` render them again
for the new node (e.g. my.cnf's wsrep_node_name/wsrep_node_address, server-id)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from builder.build.cluster import cluster_vars
from builder.core.checks import Mode, Owner, RootPath
from builder.core.errors import InputError
from builder.core.schema import opt
from builder.core.templating import context, render
from builder.identity.kept import INDEX, STORE, VARS, stored_name

if TYPE_CHECKING:
    from builder.build.context import Context


@dataclass(frozen=True)
class Template:
    """A file rendered from a Jinja2 template with the node's identity and `vars`."""

    path: RootPath = opt(doc="where in the root")
    source: str = opt(doc="the template (relative to the recipe); variables: hostname, fqdn, domain, ip, "
                          "addresses (by interface), macs (by interface), and every key of `vars`")
    mode: Mode = opt(0o644, doc="permissions")
    owner: Owner = opt("root", doc="owner")
    group: Owner = opt("root", doc="group")


def run(ctx: "Context", templates: tuple[Template, ...]) -> None:
    if not templates:
        return
    r = ctx.recipe
    addresses = {n: str(i.address.ip) for n, i in r.network.items() if i.address is not None}
    macs = {n: i.mac for n, i in r.network.items() if i.mac}
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

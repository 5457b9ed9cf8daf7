"""systemd-nspawn target: a .nspawn settings file and the machine itself, as a directory tree or a raw image.

Put the machine in /var/lib/machines and NAME.nspawn in /etc/systemd/nspawn/ (a .nspawn file next to the machine
is untrusted: nspawn ignores its network settings there), or run `systemd-nspawn --settings=trusted -D NAME`
with the file next to the tree."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from builder.build.targets import image
from builder.core import proc as runner
from builder.core.errors import BuilderError
from builder.core.outputs import write_atomic
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

DOC = "a systemd-nspawn machine: NAME.nspawn settings and the tree (or a raw image) for /var/lib/machines"


@dataclass(frozen=True)
class NspawnOptions:
    """systemd-nspawn target. Inside the machine the veth is called host0 (nspawn's name), so give the recipe's
    network for host0, or use `network: private`."""

    format: Literal["dir", "image"] = opt("dir", doc="dir: the tree as NAME/; image: NAME.raw (ext4)")
    network: Literal["veth", "bridge", "private", "host"] = opt("veth", doc="veth: a veth pair (host side "
                                                                          "ve-NAME); bridge: that veth on "
                                                                          "`bridge`; private: loopback only; "
                                                                          "host: the host's network")
    bridge: str = opt("br0", doc="host bridge for network: bridge")
    binds: tuple[str, ...] = opt((), doc="bind mounts, HOST[:MACHINE[:OPTIONS]] (Bind= lines)")
    boot: bool = opt(True, doc="run the machine's init (Boot=yes)")


Options = NspawnOptions


def render(r: "Recipe", opts: NspawnOptions) -> str:
    out = [f"# written by imgbuild for {r.name}: /etc/systemd/nspawn/{r.name}.nspawn", "[Exec]",
           f"Boot={'yes' if opts.boot else 'no'}", f"Hostname={r.hostname}", "", "[Network]"]
    out += {"veth": ["VirtualEthernet=yes"], "bridge": [f"Bridge={opts.bridge}"], "private": ["Private=yes",
            "VirtualEthernet=no"], "host": ["Private=no", "VirtualEthernet=no"]}[opts.network]
    if opts.binds:
        out += ["", "[Files]", *(f"Bind={b}" for b in opts.binds)]
    return "\n".join(out) + "\n"


def produce(ctx: "Context", opts: NspawnOptions) -> dict[str, Path]:
    name = ctx.recipe.name
    settings = ctx.stage / f"{name}.nspawn"
    write_atomic(settings, render(ctx.recipe, opts))
    if opts.format == "image":
        raw = image.make_image(ctx.root.path, ctx.stage / f"{name}.raw", image.ImageOptions(fstab=False), ctx.epoch)
        return {"nspawn-settings": settings, "nspawn-image": raw}
    tree = ctx.stage / name
    if os.path.lexists(tree):   # the stage is this build's own, fresh: nothing is ever there to replace
        raise BuilderError(f"{tree} already exists in the build's stage directory; not replaced",
                           "rename what another target wrote under that name")
    runner.run(["cp", "-a", "--reflink=auto", str(ctx.root.path), str(tree)])
    return {"nspawn-settings": settings, "nspawn-tree": tree}

"""Targets: one module per output kind. TARGETS is the registry: name -> module with DOC, Options and
produce(ctx, opts) -> {artifact kind: path in the stage directory}.

The recipe's `targets:` mapping is generated from this registry, so a new target needs only its module here. A
module may also have recipe_checks(opts, targets) -> [(key, message)]: what it needs from the other targets,
checked when the recipe loads. Targets run in this order (the VM configs after the disk they name).
"""
from __future__ import annotations

from dataclasses import make_dataclass
from types import ModuleType

from builder.build.targets import disk, image, libvirt, lxc, lxd, nspawn, openvz, squashfs, tarball, xen, xenvm
from builder.core.schema import opt

TARGETS: dict[str, ModuleType] = {"tarball": tarball, "squashfs": squashfs, "lxd": lxd, "lxc": lxc, "image": image,
                                  "openvz": openvz, "nspawn": nspawn, "xen": xen, "disk": disk, "libvirt": libvirt,
                                  "xenvm": xenvm}

Targets = make_dataclass(
    "Targets",
    [(name, mod.Options | None, opt(None, doc=mod.DOC)) for name, mod in TARGETS.items()],
    frozen=True,
)
Targets.__doc__ = "Outputs to produce; each key present (even as `{}`) turns that target on."


def enabled(targets) -> list[tuple[str, object]]:
    return [(name, getattr(targets, name)) for name in TARGETS if getattr(targets, name) is not None]


def checks(targets) -> list[tuple[str, str]]:
    """What enabled targets need of each other (a VM config needs the disk target ...)."""
    return [p for name, opts in enabled(targets) if hasattr(TARGETS[name], "recipe_checks")
            for p in TARGETS[name].recipe_checks(opts, targets)]

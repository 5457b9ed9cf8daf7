"""Targets: one module per output kind. TARGETS is the registry: name -> module with DOC, Options and
produce(ctx, opts) -> {artifact kind: path in the stage directory}.

The recipe's `targets:` mapping is generated from this registry, so a new target needs only its module here.
"""
from __future__ import annotations

from dataclasses import make_dataclass
from types import ModuleType

from builder.build.targets import disk, image, lxc, nspawn, openvz, tarball, xen
from builder.core.schema import opt

TARGETS: dict[str, ModuleType] = {"tarball": tarball, "lxc": lxc, "image": image, "openvz": openvz,
                                  "nspawn": nspawn, "xen": xen, "disk": disk}

Targets = make_dataclass(
    "Targets",
    [(name, mod.Options | None, opt(None, doc=mod.DOC)) for name, mod in TARGETS.items()],
    frozen=True,
)
Targets.__doc__ = "Outputs to produce; each key present (even as `{}`) turns that target on."


def enabled(targets) -> list[tuple[str, object]]:
    return [(name, getattr(targets, name)) for name in TARGETS if getattr(targets, name) is not None]

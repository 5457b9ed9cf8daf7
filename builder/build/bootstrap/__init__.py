"""Bootstrap methods: one module each, behind one Protocol. METHODS is the registry.

A method fills an empty directory with a minimal system of the recipe's distro, release and arch, with the
recipe's extra packages. `choose()` resolves `method: auto` to what works on this host.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Protocol

from builder.build.bootstrap import debootstrap, dnf, mmdebstrap, rpm_native
from builder.core.errors import InputError
from builder.core.proc import PACKAGES
from builder.core.schema import Check

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.families import Family
    from builder.build.recipe import Recipe


class Method(Protocol):
    name: str
    doc: str
    program: str                 # the host program it needs
    families: tuple[str, ...]
    variants: tuple[str, ...]    # first one is the default

    def available(self) -> bool: ...

    def bootstrap(self, ctx: "Context") -> None: ...


METHODS: dict[str, Method] = {m.name: m for m in (mmdebstrap.METHOD, debootstrap.METHOD, dnf.YUM, dnf.DNF,
                                                  rpm_native.METHOD)}

MethodName = Annotated[str, Check(choices=lambda: ["auto", *METHODS])]


def choose(recipe: "Recipe", family: "Family") -> Method:
    """The recipe's method, or for `auto` the first of the family's auto_methods this host has."""
    name = recipe.bootstrap.method
    if name != "auto":
        m = METHODS[name]
        if not m.available():
            raise InputError(f"bootstrap.method: {name} needs {m.program}, which is not installed",
                             f"apt-get install {PACKAGES.get(m.program, m.program)}, or use method: auto")
        return m
    candidates = family.auto_methods
    limit = family.auto_native_up_to
    major = recipe.release.split(".")[0]
    if limit is not None and major.isdigit() and int(major) <= limit:
        candidates = ("rpm-native",)
    for candidate in candidates:
        if METHODS[candidate].available():
            return METHODS[candidate]
    tried = ", ".join(family.auto_methods) or "none"
    raise InputError(f"bootstrap.method: auto found no usable method for {family.name} on this host (tried {tried})",
                     "install one of them (see README: scripts/setup.sh)")

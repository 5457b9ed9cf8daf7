"""Distro families: per-family facts live in this table, not in `if distro ==` chains.

FAMILIES is the registry of families; DISTROS maps a recipe's `distro:` to its family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from .schema import Check


@dataclass(frozen=True)
class Family:
    name: str
    archs: tuple[str, ...]          # architecture names as the family's package tools spell them
    default_init: str               # init shim when the recipe names none
    package_db: str                 # how the manifest lists installed packages


FAMILIES: dict[str, Family] = {
    "debian": Family("debian", ("amd64", "arm64", "armhf", "armel", "i386", "mips64el", "ppc64el", "riscv64",
                                "s390x"), "none", "dpkg"),
}

DISTROS: dict[str, str] = {"debian": "debian"}

DistroName = Annotated[str, Check(choices=lambda: list(DISTROS))]


def family_of(distro: str) -> Family:
    return FAMILIES[DISTROS[distro]]

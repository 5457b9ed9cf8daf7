"""Distro families: per-family facts live in this table, not in `if distro ==` chains.

FAMILIES is the registry of families; DISTROS maps a recipe's `distro:` to its family.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from builder.core.schema import Check


@dataclass(frozen=True)
class Family:
    name: str
    archs: tuple[str, ...]          # architecture names as the family's package tools spell them; first: default
    default_init: str               # init shim when the recipe names none
    package_db: str                 # how the manifest lists installed packages
    skel_to_root: bool              # copy /etc/skel into /root (EL bootstraps leave /root empty)


FAMILIES: dict[str, Family] = {
    "debian": Family("debian", ("amd64", "arm64", "armhf", "armel", "i386", "mips64el", "ppc64el", "riscv64",
                                "s390x"), "none", "dpkg", False),
    "rhel": Family("rhel", ("x86_64", "i386", "i686", "aarch64", "ppc64le", "s390x"), "none", "rpm", True),
}

DISTROS: dict[str, str] = {
    "debian": "debian",
    "centos": "rhel", "rhel": "rhel", "rocky": "rhel", "almalinux": "rhel", "oraclelinux": "rhel",
    "scientific": "rhel",
}

DistroName = Annotated[str, Check(choices=lambda: list(DISTROS))]


def family_of(distro: str) -> Family:
    return FAMILIES[DISTROS[distro]]

"""Distro families: one object each behind one interface (base.Family), not `if distro ==` chains.

FAMILIES is the registry of families; DISTROS maps a recipe's `distro:` to its family.
"""
from __future__ import annotations

from typing import Annotated

from builder.build.families.base import Family, Plan
from builder.build.families.debian import DEBIAN
from builder.build.families.rhel import RHEL
from builder.core.schema import Check

__all__ = ["DISTROS", "FAMILIES", "DistroName", "Family", "Plan", "family_of"]

FAMILIES: dict[str, Family] = {f.name: f for f in (DEBIAN, RHEL)}

DISTROS: dict[str, str] = {
    "debian": "debian",
    "centos": "rhel", "rhel": "rhel", "rocky": "rhel", "almalinux": "rhel", "oraclelinux": "rhel",
    "scientific": "rhel",
}

DistroName = Annotated[str, Check(choices=lambda: list(DISTROS))]


def family_of(distro: str) -> Family:
    return FAMILIES[DISTROS[distro]]

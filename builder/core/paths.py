"""Where imgbuild keeps what outlives a build: the caches and the secrets it generated."""

from __future__ import annotations

import os
from pathlib import Path

from builder.core.errors import InputError

CACHE_ENV = "IMGBUILD_CACHE"
SECRETS_ENV = "IMGBUILD_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/var/lib/imgbuild/secrets"


def cache_dir() -> Path:
    """$IMGBUILD_CACHE, else /var/cache/imgbuild for root, else the user's XDG cache."""
    env = os.environ.get(CACHE_ENV)
    if env:
        if os.path.lexists(env) and not os.path.isdir(env):
            raise InputError(f"${CACHE_ENV} {env}: not a directory",
                             f"point ${CACHE_ENV} at a directory for the caches, or unset it")
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/imgbuild")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imgbuild"


def user_secrets_dir() -> Path:
    """The secrets directory of an unprivileged user (decided as that user, before entering a namespace)."""
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "imgbuild" / "secrets"


def same_fs(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether a and b (or, for one not made yet, its nearest existing parent) are on one file system."""
    def dev(p: Path) -> int:
        while not p.exists() and p != p.parent:
            p = p.parent
        return p.stat().st_dev
    return dev(Path(a)) == dev(Path(b))


def link_flag(src: str | os.PathLike, dest: str | os.PathLike) -> str:
    """cp's flag to put src's files into dest: hard links (-al) on one file system, copies (-a) across two."""
    return "-al" if same_fs(src, dest) else "-a"

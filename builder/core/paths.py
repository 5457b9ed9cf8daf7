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

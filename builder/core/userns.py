"""Whether this process runs inside a user namespace (an unprivileged build)."""

from __future__ import annotations


def in_userns() -> bool:
    """True inside a user namespace that does not map the whole uid range (not the initial one)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False

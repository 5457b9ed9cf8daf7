"""Device nodes: a named preset or an explicit list, made with mknod inside the root."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from builder.core.checks import Mode, Owner, RootPath
from builder.core.schema import Check, opt

if TYPE_CHECKING:
    from builder.build.context import Context


@dataclass(frozen=True)
class Device:
    """One entry of an explicit `devices:` list."""

    path: RootPath = opt(doc="where, e.g. /dev/null")
    type: Literal["c", "b", "p", "dir", "link"] = opt(doc="c char device, b block device, p fifo, dir, link")
    major: int = opt(0, doc="major number (c, b)")
    minor: int = opt(0, doc="minor number (c, b)")
    mode: Mode = opt(0o666, doc="permissions")
    owner: Owner = opt("root", doc="owner (name from the root's /etc/passwd, or a number)")
    group: Owner = opt("root", doc="group (name from the root's /etc/group, or a number)")
    target: str | None = opt(None, doc="link target (type link)")

    def __post_init__(self) -> None:
        if self.type == "link" and not self.target:
            raise ValueError("a device of type link needs target")
        if self.type in ("c", "b") and not (0 <= self.major < 4096 and 0 <= self.minor < 1 << 20):
            raise ValueError("major must be 0-4095 and minor 0-1048575")


def _d(path, type, major=0, minor=0, mode=0o666, group="root", target=None):
    return Device(path, type, major, minor, mode, "root", group, target)


# What a container needs in /dev (the nodes a hand-made container root gets with mknod, plus full, tty, ptmx and the
# fd links).
PRESETS: dict[str, tuple[Device, ...]] = {
    "container": (
        _d("/dev/null", "c", 1, 3), _d("/dev/zero", "c", 1, 5), _d("/dev/full", "c", 1, 7),
        _d("/dev/random", "c", 1, 8), _d("/dev/urandom", "c", 1, 9), _d("/dev/tty", "c", 5, 0),
        _d("/dev/console", "c", 5, 1, 0o600), _d("/dev/tty1", "c", 4, 1, 0o620, "tty"),
        _d("/dev/ptmx", "c", 5, 2), _d("/dev/fd", "link", target="/proc/self/fd"),
        _d("/dev/stdin", "link", target="/proc/self/fd/0"), _d("/dev/stdout", "link", target="/proc/self/fd/1"),
        _d("/dev/stderr", "link", target="/proc/self/fd/2"), _d("/dev/shm", "dir", mode=0o1777),
        _d("/dev/pts", "dir", mode=0o755),
    ),
    "none": (),
}

# What mmdebstrap puts in /dev when it runs as real root (its @devfiles): an unprivileged build adds the same
# after its bootstrap, so both give the same tree whatever the recipe's devices.
MMDEBSTRAP: tuple[Device, ...] = (
    _d("/dev/console", "c", 5, 1), _d("/dev/fd", "link", target="/proc/self/fd"), _d("/dev/full", "c", 1, 7),
    _d("/dev/null", "c", 1, 3), _d("/dev/ptmx", "c", 5, 2), _d("/dev/pts", "dir", mode=0o755),
    _d("/dev/random", "c", 1, 8), _d("/dev/shm", "dir", mode=0o755),
    _d("/dev/stderr", "link", target="/proc/self/fd/2"), _d("/dev/stdin", "link", target="/proc/self/fd/0"),
    _d("/dev/stdout", "link", target="/proc/self/fd/1"), _d("/dev/tty", "c", 5, 0), _d("/dev/urandom", "c", 1, 9),
    _d("/dev/zero", "c", 1, 5),
)

Preset = Annotated[str, Check(choices=lambda: list(PRESETS))]


def nodes(spec: str | tuple[Device, ...]) -> tuple[Device, ...]:
    return PRESETS[spec] if isinstance(spec, str) else spec


def run(ctx: "Context", spec: str | tuple[Device, ...]) -> None:
    root = ctx.root
    for i, dev in enumerate(nodes(spec)):
        uid, gid = ctx.ids(dev.owner, dev.group, f"devices[{i}]" if not isinstance(spec, str) else "devices")
        if dev.type in ("c", "b", "p"):
            root.mknod(dev.path, dev.type, dev.major, dev.minor, dev.mode, uid, gid)
        elif dev.type == "dir":
            root.mkdir(dev.path, dev.mode, uid, gid, reset=True)
        else:
            root.symlink(dev.target, dev.path)

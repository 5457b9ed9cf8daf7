"""What a build step sees: the recipe, the root tree, where outputs go, and what the build learnt so far."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.build.families.base import Plan
from builder.core.errors import InputError
from builder.core.rootfs import RootFS

if TYPE_CHECKING:
    from builder.build.families import Family
    from builder.build.recipe import Recipe


@dataclass
class Context:
    recipe: "Recipe"
    source: Path                 # the recipe file
    root: RootFS                 # the tree being built
    work: Path                   # scratch space for this build (removed at the end)
    stage: Path                  # outputs are written here, then moved into place together
    epoch: int                   # SOURCE_DATE_EPOCH: mtimes are clamped to it
    family: "Family"
    mirror: str = ""
    plan: Plan = field(default_factory=Plan)   # what the family's preflight worked out (Debian: the index)
    method: str = ""
    packages: dict[str, str] = field(default_factory=dict)   # installed package -> version
    timings: dict[str, float] = field(default_factory=dict)
    sub_timings: dict[str, dict[str, float]] = field(default_factory=dict)   # phase -> its sub-phases' seconds
    artifacts: dict[str, Path] = field(default_factory=dict)  # kind -> file in stage
    tools: dict[str, Any] = field(default_factory=dict)
    cache: str = ""              # the bootstrap cache: "hit KEY (overlay)", "miss, kept as KEY (overlay)", "off"
    frames: Path | None = None   # where the tarball keeps its zstd frames for the next build (in the cache entry)
    build_key: str | None = None  # builder/build/uptodate.py: every input of this build, hashed
    phase: str = ""               # the phase running now (pipeline.phase)
    _sub: tuple[str, str, float] | None = field(default=None, repr=False)

    def sub(self, name: str | None) -> None:
        """Start the sub-phase `name` of the phase running now (None: end the open one); its seconds are added to
        sub_timings[PHASE][name]: where a long phase spends its time (the bootstrap's prepare, download, extract,
        install ...)."""
        now = time.monotonic()
        if self._sub is not None:
            phase, sub, t = self._sub
            d = self.sub_timings.setdefault(phase, {})
            d[sub] = round(d.get(sub, 0.0) + now - t, 3)
        self._sub = (self.phase, name, now) if name and self.phase else None

    def ids(self, owner: str, group: str, where: str) -> tuple[int, int]:
        """uid and gid from the root's own user database; a name it lacks is the recipe's error."""
        try:
            uid = self.root.uid(owner)
        except KeyError:
            raise InputError(f"{self.source}: {where}.owner: no user {owner!r} in the root's /etc/passwd",
                             "create the user in a post-bootstrap hook, or use a number") from None
        try:
            gid = self.root.gid(group)
        except KeyError:
            if group == "tty":
                return uid, 5  # fixed on Debian and RHEL
            raise InputError(f"{self.source}: {where}.group: no group {group!r} in the root's /etc/group",
                             "create the group in a post-bootstrap hook, or use a number") from None
        return uid, gid

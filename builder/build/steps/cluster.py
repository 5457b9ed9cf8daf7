"""The cluster step: every secret in its file, and /etc/hosts knows every node (builder/build/cluster.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.build import cluster

if TYPE_CHECKING:
    from builder.build.context import Context


def run(ctx: "Context", _opts: None = None) -> None:
    cluster.run(ctx)

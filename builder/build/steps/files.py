"""Arbitrary files: inline content or copied from a local file, with mode and owner."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core.checks import Mode, Owner, RootPath
from builder.core.errors import InputError
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context


@dataclass(frozen=True)
class FileSpec:
    """A file to place in the root."""

    ONE_OF = ("content", "source")
    path: RootPath = opt(doc="where in the root")
    content: str | None = opt(None, doc="the file's text")
    source: str | None = opt(None, doc="a local file to copy (relative to the recipe's directory)")
    mode: Mode = opt(0o644, doc="permissions")
    owner: Owner = opt("root", doc="owner (from the root's /etc/passwd, or a number)")
    group: Owner = opt("root", doc="group (from the root's /etc/group, or a number)")


def run(ctx: "Context", files: tuple[FileSpec, ...]) -> None:
    for n, f in enumerate(files):
        uid, gid = ctx.ids(f.owner, f.group, f"files[{n}]")
        if f.content is not None:
            data = f.content.encode()
        else:
            try:
                data = Path(f.source).read_bytes()
            except OSError as e:
                raise InputError(f"files[{n}].source: cannot read {f.source}: {e.strerror}") from None
        ctx.root.write(f.path, data, f.mode, uid, gid)

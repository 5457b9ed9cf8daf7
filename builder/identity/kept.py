"""The templates a built guest keeps (its /etc/imgbuild/templates.yml, vars.yml and the kept sources), so a
clone or a re-identified guest renders them again for its new name and address, without the recipe at hand.
What a guest keeps is read as untrusted data: strict YAML, every entry checked, sizes bounded."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from builder.core import schema, untrusted
from builder.core.checks import Mode, RootPath
from builder.core.errors import InputError, RecipeError
from builder.core.schema import Check, opt

STORE = "/usr/share/imgbuild/templates"
INDEX = "/etc/imgbuild/templates.yml"
VARS = "/etc/imgbuild/vars.yml"
MAX_GUEST_FILE = 4 << 20      # bytes of a guest's templates.yml, vars.yml or kept template


def _id(v: int) -> int:
    if not 0 <= v < 2**32 - 1:
        raise ValueError(f"{v} is not a user or group id")
    return v


_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')    # never in a path read from a guest (debugfs quotes paths)


def _guest_path(v: str) -> str:
    if _UNSAFE.search(v):
        raise ValueError(f"{v!r}: a path with control characters, quotes or backslashes")
    return v


def _stored(v: str) -> str:
    name = v[len(STORE) + 1:]
    if not v.startswith(STORE + "/") or "/" in name or name in ("", ".", "..") or _UNSAFE.search(name):
        raise ValueError(f"{v!r} is not a template imgbuild keeps (a file in {STORE}/)")
    return v


Id = Annotated[int, Check(_id, {"minimum": 0}, describe="user or group id")]


@dataclass(frozen=True)
class Kept:
    """One entry of /etc/imgbuild/templates.yml in a guest: a template kept there and where it renders to."""

    path: Annotated[RootPath, Check(_guest_path)] = opt(doc="where in the guest")
    template: Annotated[str, Check(_stored)] = opt(doc="the kept template, in " + STORE)
    mode: Mode = opt(doc="permissions")
    uid: Id = opt(doc="owner")
    gid: Id = opt(doc="group")


GUEST_HINT = (f"the guest's {INDEX} and {VARS} are written by imgbuild; fix or remove the file in the guest "
              "(without them its templates are not rendered again)")


def guest_file(data: bytes, shown: str) -> bytes:
    """`data` (a file read from a guest) if it is not larger than imgbuild ever writes one."""
    if len(data) > MAX_GUEST_FILE:
        raise InputError(f"{shown}: {len(data):,} bytes, more than the {MAX_GUEST_FILE:,} imgbuild allows for its "
                         "files in a guest", GUEST_HINT)
    return data


def read_index(data: bytes, shown: str) -> tuple[Kept, ...]:
    """The templates a guest keeps, from its templates.yml (untrusted: strict YAML, every entry checked)."""
    value = untrusted.load_yaml(guest_file(data, shown), shown, what="imgbuild's list of templates",
                                hint=GUEST_HINT)
    if value is None:
        return ()
    loader = schema.Loader(shown)
    kept = loader.load(tuple[Kept, ...], value, "")
    if loader.problems:
        raise RecipeError(loader.problems, GUEST_HINT)
    return kept


def read_vars(data: bytes, shown: str) -> dict[str, Any]:
    """A guest's template variables, from its vars.yml (untrusted: strict YAML, a mapping of names)."""
    value = untrusted.load_yaml(guest_file(data, shown), shown, what="imgbuild's template variables",
                                hint=GUEST_HINT)
    if value is None:
        return {}
    loader = schema.Loader(shown)
    variables = loader.load(dict[str, Any], value, "")
    if loader.problems:
        raise RecipeError(loader.problems, GUEST_HINT)
    return dict(variables)


def stored_name(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16] + "-" + Path(path).name + ".j2"

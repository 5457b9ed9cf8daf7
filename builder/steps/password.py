"""Root password: a crypt hash, a password read from a file at build time, or locked. Never logged."""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import run as runner
from ..errors import InputError
from ..run import Secret
from ..schema import opt

if TYPE_CHECKING:
    from ..context import Context

CRYPT = re.compile(r"^\$(1|2[abxy]|5|6|y|gy|7)\$[./A-Za-z0-9$=,]+$")


@dataclass(frozen=True)
class RootPassword:
    """How root logs in. The hash or password never reaches a log, an output or the manifest."""

    ONE_OF = ("lock", "hash", "from_file")
    lock: bool | None = opt(None, doc="true: no password login for root (ssh keys or console only)")
    hash: Secret | None = opt(None, doc='a crypt(3) hash, e.g. from `openssl passwd -6` ("$6$...")')
    from_file: str | None = opt(None, doc="a file whose first line is the password; hashed (SHA-512) at build time")

    def __post_init__(self) -> None:
        if self.lock is False:
            raise ValueError("lock: false means nothing; give hash or from_file to set a password")
        if self.hash is not None and not CRYPT.match(self.hash.reveal()):
            raise ValueError("hash is not a crypt(3) hash (it should start with $6$, $5$, $y$ ...)")


def sha512_crypt(password: Secret, salt: str) -> str:
    """SHA-512 crypt, readable by every glibc since EL5; computed by openssl with the password on stdin."""
    return runner.output(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password)


def _salt(ctx: "Context") -> str:
    # Reproducible (same recipe, same epoch -> same shadow file) and independent of the password.
    seed = f"imgbuild:{ctx.recipe.name}:{ctx.recipe.hostname}:{ctx.epoch}".encode()
    return base64.b64encode(hashlib.sha256(seed).digest(), b"./").decode()[:16]


def shadow_entry(ctx: "Context", opts: RootPassword, old: str) -> str:
    if opts.lock:
        return old if old.startswith("!") else "!" + (old or "*")
    if opts.hash is not None:
        return opts.hash.reveal()
    path = Path(opts.from_file)
    try:
        line = path.read_text().splitlines()[0] if path.stat().st_size else ""
    except OSError as e:
        raise InputError(f"root_password.from_file: cannot read {path}: {e.strerror}") from None
    if not line:
        raise InputError(f"root_password.from_file: {path} is empty", "put the password on its first line")
    return sha512_crypt(Secret(line), _salt(ctx))


def run(ctx: "Context", opts: RootPassword | None) -> None:
    if opts is None:
        return
    root = ctx.root
    shadow = root.read_text("/etc/shadow")
    if shadow is None:
        raise InputError("root_password: the root has no /etc/shadow", "the bootstrap did not install passwd/shadow")
    day = str(ctx.epoch // 86400)
    lines = shadow.splitlines()
    for n, line in enumerate(lines):
        f = line.split(":")
        if f[0] == "root" and len(f) >= 3:
            f[1] = shadow_entry(ctx, opts, f[1])
            f[2] = day
            lines[n] = ":".join(f)
            break
    else:
        raise InputError("root_password: the root's /etc/shadow has no root entry")
    st = root.stat("/etc/shadow")
    root.write("/etc/shadow", "\n".join(lines) + "\n", st.st_mode & 0o7777, st.st_uid, st.st_gid)

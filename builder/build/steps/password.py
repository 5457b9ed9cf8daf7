"""Root password: a crypt hash, a password read from a file at build time, or locked. Never logged.

A password from a file is hashed with the target's own default scheme and cost (Debian since bullseye:
yescrypt; older Debian and EL: SHA-512 crypt, 5000 rounds), by the host's libxcrypt. Its salt is an HMAC of the
build's public inputs (name, host name, epoch) keyed by a secret of this host, made once and kept in the secrets
directory: a rebuild on this host gives the same /etc/shadow, but nobody can derive the salt from the recipe or
the manifest, and the same password gives another hash on every other host and in every other build.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import hmac
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.build.cluster import secrets_dir
from builder.core.errors import BuilderError, InputError
from builder.core.proc import Secret
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context

CRYPT = re.compile(r"^\$(1|2[abxy]|5|6|y|gy|7)\$[./A-Za-z0-9$=,]+$")

# The schemes the families' own tools use for a new password (pam_unix, login.defs ENCRYPT_METHOD; a family's
# password_scheme names one), at their default cost: the crypt(3) prefix and the cost crypt_gensalt gets (0: the
# scheme's default; yescrypt's is 5, written $y$j9T$; SHA-512's is 5000 rounds, not written).
SCHEMES = {"yescrypt": (b"$y$", 0), "sha512": (b"$6$", 0)}
SALT_BYTES = 16
HOST_KEY = ".password-salt.key"    # in the secrets directory; no cluster is called that (names start alphanumeric)
HOST_KEY_BYTES = 32


@dataclass(frozen=True)
class RootPassword:
    """How root logs in. The hash or password never reaches a log or the manifest; a hash does reach the
    tree's /etc/shadow, and so the outputs (0600, in a 0700 directory)."""

    ONE_OF = ("lock", "hash", "from_file")
    lock: bool | None = opt(None, doc="true: no password login for root (ssh keys or console only)")
    hash: Secret | None = opt(None, doc='a crypt(3) hash, e.g. from `openssl passwd -6` ("$6$...")')
    from_file: str | None = opt(None, doc="a file whose first line is the password; hashed at build time with "
                                          "the target's default scheme (Debian: yescrypt; EL: SHA-512) and a "
                                          "salt this host keeps secret")

    def __post_init__(self) -> None:
        if self.lock is False:
            raise ValueError("lock: false means nothing; give hash or from_file to set a password")
        if self.hash is not None and not CRYPT.match(self.hash.reveal()):
            raise ValueError("hash is not a crypt(3) hash (it should start with $6$, $5$, $y$ ...)")


# ------------------------------------------------------------------ the host's salt key


def _read_key(path: Path) -> bytes | None:
    """The key, if the file is there; refused (InputError) when it is not this user's private 32-byte file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)   # a fifo never blocks
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link", "remove it; imgbuild makes a new one") from None
        raise InputError(f"cannot read {path}: {e.strerror}", "fix its permissions, or set $IMGBUILD_SECRETS_DIR"
                         ) from None
    try:
        st = os.fstat(fd)
        data = os.read(fd, HOST_KEY_BYTES + 1) if stat.S_ISREG(st.st_mode) else b""
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise InputError(f"{path}: the key that salts password hashes must be a file of yours, mode 0600 "
                         f"(it is {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid})",
                         "chmod 600 it if nobody else can have read it; else remove it (imgbuild makes a new "
                         "one, and rebuilt images get new hashes)")
    if len(data) != HOST_KEY_BYTES:
        raise InputError(f"{path}: not a key imgbuild made ({len(data)} bytes)",
                         "remove it; imgbuild makes a new one")
    return data


def host_key(base: Path | None = None) -> bytes:
    """This host's secret for password salts: SECRETS_DIR/.password-salt.key, 32 random bytes, made once
    (written under a temp name and linked into place, so two builds at once agree on one key), 0600 in a 0700
    directory."""
    d = Path(base) if base is not None else secrets_dir()
    path = d / HOST_KEY
    key = _read_key(path)
    if key is not None:
        return key
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if d.stat().st_uid == os.geteuid() and d.stat().st_mode & 0o077:
            os.chmod(d, 0o700)
        tmp = d / f".{HOST_KEY}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(HOST_KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)          # fails if another build made it first: then that one is the key
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise InputError(f"root_password.from_file: cannot keep the password salt key in {d}: {e.strerror}",
                         "run as root, or set $IMGBUILD_SECRETS_DIR to a writable directory") from None
    key = _read_key(path)
    assert key is not None
    return key


# ------------------------------------------------------------------ hashing


def scheme(ctx: "Context") -> str:
    """The target's default password scheme (its family's, for its release)."""
    return ctx.family.password_scheme(ctx.recipe.release)


def salt_bytes(ctx: "Context", kind: str, key: bytes | None = None) -> bytes:
    """The salt's random bytes: an HMAC of the build's public inputs under this host's key."""
    msg = json.dumps(["imgbuild root password salt", kind, ctx.recipe.name, ctx.recipe.hostname, ctx.epoch])
    return hmac.new(key if key is not None else host_key(), msg.encode(), hashlib.sha256).digest()[:SALT_BYTES]


_CRYPT_DATA = 32768      # sizeof(struct crypt_data) in libxcrypt


def _libcrypt():
    try:
        lib = ctypes.CDLL("libcrypt.so.1", use_errno=True)
        gensalt, crypt_rn = lib.crypt_gensalt_rn, lib.crypt_rn
    except (OSError, AttributeError):
        raise BuilderError("root_password.from_file: this host has no libxcrypt (libcrypt.so.1 with "
                           "crypt_gensalt_rn)", "apt-get install libcrypt1") from None
    gensalt.restype = ctypes.c_char_p
    gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_int]
    crypt_rn.restype = ctypes.c_char_p
    crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    return gensalt, crypt_rn


def crypt(password: Secret, kind: str, salt: bytes) -> str:
    """crypt(3) of password with the scheme `kind` at its default cost and this salt (libxcrypt, in process:
    the password is never on a command line or in a pipe)."""
    gensalt, crypt_rn = _libcrypt()
    prefix, cost = SCHEMES[kind]
    out = ctypes.create_string_buffer(256)
    setting = gensalt(prefix, cost, salt, len(salt), out, len(out))
    if not setting:
        raise BuilderError(f"root_password.from_file: libxcrypt cannot make a {kind} salt "
                           f"(error {ctypes.get_errno()})", "upgrade libcrypt1")
    data = ctypes.create_string_buffer(_CRYPT_DATA)
    got = crypt_rn(password.reveal().encode(), setting, data, _CRYPT_DATA)
    ctypes.memset(data, 0, _CRYPT_DATA)
    if not got or got.startswith(b"*"):
        raise BuilderError(f"root_password.from_file: libxcrypt cannot hash with {kind}", "upgrade libcrypt1")
    return got.decode()


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
    kind = scheme(ctx)
    return crypt(Secret(line), kind, salt_bytes(ctx, kind))


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

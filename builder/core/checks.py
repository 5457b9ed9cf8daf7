"""Reusable value checks for recipe fields (Annotated[..., Check(...)])."""
from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from pathlib import Path
from typing import Annotated

from builder.core.errors import InputError
from builder.core.schema import Check

# fullmatch everywhere: `$` alone would also accept a value ending in a newline
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_HEX = "[0-9a-fA-F]"
# The one MAC pattern: six hex pairs joined by ':' or '-' (one separator throughout; group `sep`), or the dotted
# aabb.ccdd.eeff notation (Cisco, systemd.link). MAC_PAIRS is the first form alone, for searching free text.
MAC_PAIRS = rf"{_HEX}{{2}}(?P<sep>[:-]){_HEX}{{2}}(?:(?P=sep){_HEX}{{2}}){{4}}"
MAC_RE = re.compile(rf"(?:{MAC_PAIRS}|{_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}})")
# A recipe's MAC, as JSON Schema reads it (ECMA regex has no named back-reference): the colon form mac() accepts
MAC_COLON = f"{_HEX}{{2}}(?::{_HEX}{{2}}){{5}}"    # the colon form alone, no groups (to embed)
_MAC_SCHEMA = f"^{MAC_COLON}$"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "letters, digits, '.', '_', '-'; at most 64; starting with a letter or digit"
# an ssh destination ssh cannot mistake for an option: [user@]host, a Host alias of an ssh_config, an IPv4/IPv6
# address (`migrate push --hosts` names, a cluster node's host:)
SSH_DEST = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}@)?[A-Za-z0-9_][A-Za-z0-9_.:%-]{0,252}")


def hostname(v: str) -> str:
    if not isinstance(v, str) or len(v) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in v.split(".")):
        raise ValueError(f"{v!r} is not a valid host name (letters, digits and '-', labels of 1-63 characters)")
    return v


def _interface(v: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in v:
        raise ValueError(f"{v!r} needs a prefix length, e.g. {v}/24")
    try:
        return ipaddress.ip_interface(v)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address with prefix (e.g. 10.0.3.2/24)") from None


def _address(v: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None


def mac_norm(value: str) -> str | None:
    """aa:bb:cc:dd:ee:ff for a MAC in colon, dash or dotted notation, any case, blanks around it ignored; else
    None."""
    s = value.strip()
    if not MAC_RE.fullmatch(s):
        return None
    digits = re.sub(r"[:.-]", "", s).lower()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def mac(v: str) -> str:
    """A NIC's MAC as a recipe or the command line gives it: colon notation, unicast; returned in lower case."""
    m = MAC_RE.fullmatch(v) if isinstance(v, str) else None
    if m is None or m.group("sep") != ":":
        raise ValueError(f"{v!r} is not a MAC address (six hex pairs separated by ':', e.g. 00:16:3e:00:03:02)")
    if int(v[:2], 16) & 1:
        raise ValueError(f"{v!r} is a multicast address; a NIC needs a unicast MAC (even first byte)")
    return v.lower()


_COMMON_MODES = {0o400, 0o440, 0o444, 0o555, 0o600, 0o640, 0o644, 0o660, 0o664, 0o700, 0o710, 0o750, 0o755, 0o770,
                 0o775, 0o777, 0o1777, 0o2755, 0o4755}


def _mode(v: object) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        # what was written: 644 arrives as 644; 0644 (an octal literal to YAML) as 420
        octal = f"0{v:o}"
        written = octal if v in _COMMON_MODES or not re.fullmatch(r"[0-7]{3,4}", str(v)) else str(v)
        raise ValueError(f"mode {written} is a number to YAML (the integer {v}), not a mode; write it quoted: "
                         f"\"{written.zfill(4)}\"")
    if not isinstance(v, str) or not re.fullmatch(r"0?[0-7]{3,4}", v):
        raise ValueError(f"{v!r} is not an octal mode; write it quoted, e.g. \"0644\" "
                         "(YAML reads an unquoted 0644 as the number 420)")
    return int(v, 8)


def _abspath(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{v!r} must be an absolute path inside the root (starting with /)")
    if "\0" in v:
        raise ValueError("path contains a NUL byte")
    norm = posixpath.normpath(v)
    if norm in ("/", "//") or norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm == "/":
        raise ValueError("the root directory itself cannot be a file")
    return norm


def name(v: str) -> str:
    """The Name check, for every name that becomes a file or directory name: guests, containers, outputs,
    secrets, cluster nodes. Such a name is one path component that is neither `.` nor `..` (it cannot start
    with a dot), has no `/`, no space, no shell metacharacter and no control character."""
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise ValueError(f"{v!r} is not a valid name ({NAME_RULE})")
    return v


_name = name


def child(parent: str | os.PathLike[str], value: str, what: str) -> Path:
    """PARENT/VALUE for a name that must stay a direct child of PARENT (a container in an lxcpath, a secret in
    its directory): VALUE passes the Name check, PARENT is resolved (it may itself be a symlink), and what is at
    PARENT/VALUE, if anything, is not a symlink (which would lead elsewhere). `what` names the value in the
    InputError: `--name`, `secrets.pw`, `/path/manifest.json: name` ..."""
    try:
        name(value)
    except ValueError as e:
        raise InputError(f"{what}: {e}", "a name is one path component; choose another name") from None
    real = Path(os.path.realpath(parent))
    if os.path.exists(real) and not real.is_dir():
        raise InputError(f"{what}: {parent} is not a directory", "give the directory it belongs in")
    path = real / value
    if path.is_symlink():
        raise InputError(f"{what}: {path} is a symbolic link (to {os.readlink(path)}); imgbuild neither follows "
                         "nor removes it", "remove the link yourself if it is stale, or choose another name")
    return path


def directory(path: str | os.PathLike[str], what: str) -> None:
    """A directory a command will create or write into: it, or else the nearest part of it that exists, is a
    directory (a file in the way is bad input before anything is done, not a failure halfway through). `what`
    names the option, e.g. `-o`."""
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{what} {path}: {p} is not a directory", f"give {what} a directory (or one to create)")


def ssh_dest(v: str) -> str:
    """An ssh destination ([user@]host, an ssh_config alias, an address): no leading `-`, no space, no path."""
    if not isinstance(v, str) or not SSH_DEST.fullmatch(v):
        raise ValueError(f"{v!r} is not an ssh destination (an ssh_config alias, host or user@host; no spaces, "
                         "options or paths)")
    return v


def _ifname(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", v):
        raise ValueError(f"{v!r} is not a network interface name (at most 15 letters, digits, '_', '.', '-')")
    return v


def _owner(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?|[0-9]+", v):
        raise ValueError(f"{v!r} is not a user or group name or number")
    return v


def _epoch(v: int) -> int:
    if v < 0 or v > 2**33:
        raise ValueError(f"{v} is not a plausible Unix time")
    return v


Hostname = Annotated[str, Check(hostname, {"pattern": r"^[A-Za-z0-9.-]+$"}, describe="host name")]
IPInterface = Annotated[str, Check(_interface, {"format": "ip-interface"}, describe="address/prefix")]
IPAddress = Annotated[str, Check(_address, {"format": "ip-address"}, describe="IP address")]
MAC = Annotated[str, Check(mac, {"pattern": _MAC_SCHEMA}, describe="MAC address")]
Mode = Annotated[str, Check(_mode, {"pattern": r"^0?[0-7]{3,4}$"}, describe='octal mode string ("0644")',
                            show=lambda v: f"{v:04o}", raw=True)]
RootPath = Annotated[str, Check(_abspath, {"pattern": "^/"}, describe="absolute path in the root")]
Name = Annotated[str, Check(name, {"pattern": f"^{_NAME.pattern}$"}, describe="name")]
IfName = Annotated[str, Check(_ifname, {"pattern": r"^[A-Za-z0-9_.-]{1,15}$"}, describe="interface name")]
SshDest = Annotated[str, Check(ssh_dest, {"pattern": f"^{SSH_DEST.pattern}$"}, describe="ssh destination")]
Owner = Annotated[str, Check(_owner, {}, describe="user/group name or number")]
Epoch = Annotated[int, Check(_epoch, {"minimum": 0}, describe="Unix time")]

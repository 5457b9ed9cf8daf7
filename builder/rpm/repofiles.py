"""yum/dnf .repo files of a root: read with configparser, pointed at the recipe's mirror.

A release package's repo files name a mirrorlist (dead for EL5/6 and EL7 today) and, commented out, a
baseurl like `http://mirror.centos.org/centos/$releasever/os/$basearch/`. Every section whose baseurl has
that shape is rewritten to `MIRROR/<what follows $releasever/>` with $releasever/$basearch/$arch resolved,
its mirrorlist/metalink dropped. Which sections are enabled is the recipe's choice (default: the release's).

The files come from a release package off a mirror: outside input. rewrite() returns the new text or raises
InputError naming the file (and the line or section): a file larger than MAX_BYTES, one configparser cannot
read, a NUL byte, a section name that is not a repo id yum and dnf accept (letters, digits, - _ . :), or a
baseurl whose path after $releasever/ would leave the mirror's tree (`..`) or carry a query.
"""
from __future__ import annotations

import configparser
import io
import re
from dataclasses import dataclass

from builder.core.errors import InputError

MAX_BYTES = 1 << 20          # a .repo file is a few KB
REPO_ID = re.compile(r"[A-Za-z0-9_.:-]+")    # what dnf accepts as a repo id (yum takes the same)

HEADER = "# rewritten by imgbuild: baseurl points at {mirror}; mirrorlist and metalink removed\n"
BASEARCH = {"i386": "i386", "i486": "i386", "i586": "i386", "i686": "i386", "x86_64": "x86_64",
            "aarch64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class RepoDef:
    id: str
    name: str
    baseurl: str        # resolved, pointing at the mirror
    enabled: bool
    gpgcheck: bool
    gpgkeys: tuple[str, ...]   # as written (file:///etc/pki/rpm-gpg/...)
    file: str           # the .repo file it came from (basename)


class _Parser(configparser.RawConfigParser):
    # configparser's own option pattern, `(?P<option>.*?)\s*(?P<vi>=|:)\s*(?P<value>.*)$`, backtracks
    # quadratically on a long line of blanks without a delimiter. This one matches the same lines (the option
    # is everything before the first delimiter; configparser strips it) in linear time.
    OPTCRE = re.compile(r"(?P<option>[^=:]*+)(?P<vi>[=:])\s*(?P<value>.*)$")


def variables(releasever: str, arch: str) -> dict[str, str]:
    return {"releasever": releasever, "basearch": BASEARCH.get(arch, arch), "arch": arch, "infra": "container",
            "contentdir": "centos"}


def expand(text: str, vars: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: vars.get(m.group(1) or m.group(2), m.group(0)), text)


def _commented_baseurls(text: str) -> dict[str, str]:
    """`#baseurl=` lines by section (configparser drops comments)."""
    found, section = {}, None
    for line in text.splitlines():
        m = re.match(r"^\s*\[([^\]]+)\]", line)
        if m:
            section = m.group(1).strip()
        m = re.match(r"^\s*#\s*baseurl\s*=\s*(\S+)", line)
        if m and section and section not in found:
            found[section] = m.group(1)
    return found


def rewrite(text: str, file: str, mirror: str, vars: dict[str, str], want: tuple[str, ...] = ()
            ) -> tuple[str, list[RepoDef]]:
    """One .repo file pointed at the mirror: (new text, its repos). Sections without a $releasever-shaped
    baseurl are kept as they are but disabled (they cannot be pointed at this mirror)."""
    hint = "the release package's repo files are read as yum reads them: [repo-id] sections of key=value lines"
    if len(text) > MAX_BYTES:
        raise InputError(f"{file}: {len(text)} characters, more than a repo file has ({MAX_BYTES})", hint)
    if "\0" in text:
        raise InputError(f"{file}:{text.count(chr(10), 0, text.index(chr(0))) + 1}: a NUL byte in a repo file", hint)
    cp = _Parser(strict=False, interpolation=None)
    cp.optionxform = str  # keep option names as written
    try:
        cp.read_string(text, source=file)
    except configparser.Error as e:
        raise InputError(f"{file}: cannot read the repo file of the release package: {e}", hint) from None
    for sec in cp.sections():
        if not REPO_ID.fullmatch(sec):
            raise InputError(f"{file}: [{sec[:80]}] is not a repo id yum or dnf accept (letters, digits, - _ . :)",
                             hint)
    commented = _commented_baseurls(text)
    repos = []
    for sec in cp.sections():
        opts = cp[sec]
        base = (opts.get("baseurl") or commented.get(sec) or "").split()[0:1]
        base = base[0] if base else ""
        enabled = opts.get("enabled", "1").strip() == "1" if not want else sec in want
        if "$releasever/" in base:
            tail = base.split("$releasever/", 1)[1]
            if ".." in tail.split("/") or any(c in tail for c in "?#\\"):
                raise InputError(f"{file}: [{sec}] baseurl {base[:120]!r}: the part after $releasever/ must be a "
                                 "plain path below it (no .., ? or #) to be pointed at the mirror", hint)
            url = expand(f"{mirror.rstrip('/')}/{tail}", vars).rstrip("/")
            opts["baseurl"] = url
            for k in ("mirrorlist", "metalink"):
                cp.remove_option(sec, k)
        else:
            url = ""
            enabled = False
        opts["enabled"] = "1" if enabled else "0"
        keys = tuple(expand(k, vars) for k in re.split(r"[\s,]+", opts.get("gpgkey", "").strip()) if k)
        repos.append(RepoDef(sec, expand(opts.get("name", sec), vars), url, enabled,
                             opts.get("gpgcheck", "0").strip() == "1", keys, file))
    out = io.StringIO()
    cp.write(out)
    return HEADER.format(mirror=mirror) + out.getvalue(), repos

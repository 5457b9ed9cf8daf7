"""Which packages mmdebstrap will install: the same apt requests, asked of apt before the build.

mmdebstrap installs in two stages, each an apt request with apt patterns (mmdebstrap(1), run_download and
run_install): first `?essential` of the suite and architecture, then the --include packages plus, by variant, the
required/important/standard packages that are not essential. Here the host's apt-get answers the same two
requests with `-s` (simulate), the second on top of a status file that holds the first stage's packages, so its
choices between alternatives are apt's own.

apt would need 3 s to build its cache from a whole suite (63,000 stanzas); it is given instead the closure of
the request: every package reachable from the seeds through Depends and Pre-Depends, every alternative and
every provider of a virtual name included. Nothing apt could choose is left out, so its answer is the same,
in a tenth of the time. The answer is cached by the index's identity and the request.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core import proc as runner
from builder.core.errors import BuilderError
from builder.core.outputs import write_atomic
from builder.core.paths import cache_dir
from builder.debian.apt import give_back_memory, packages_text
from builder.debian.repoindex import write_index

if TYPE_CHECKING:
    from builder.debian.apt import Index

log = logging.getLogger("imgbuild")

FORMAT = 2
# variant -> the Priority values its second stage adds (mmdebstrap's run_install); minbase is required
PRIORITIES = {"essential": (), "required": ("required",), "minbase": ("required",), "buildd": ("required",),
              "important": ("required", "important"), "debootstrap": ("required", "important"),
              "-": ("required", "important"), "standard": ("required", "important", "standard")}
_FIELD = re.compile(rb"^(Package|Filename|Version|Architecture|Provides|Depends|Pre-Depends|Essential|Priority)"
                    rb": ?(.*)$",
                    re.M)
_INST = re.compile(r"^Inst (\S+) \((\S+) ", re.M)


class Unresolved(BuilderError):
    """apt could not answer (or the request is one this module does not model); the caller falls back."""


class Stanza:
    __slots__ = ("text", "name", "version", "arch", "fields")

    def __init__(self, text: bytes):
        self.text = text
        self.fields = {k.decode(): v.strip() for k, v in _FIELD.findall(text)}
        self.name = self.fields.get("Package", b"").decode()
        self.version = self.fields.get("Version", b"").decode()
        self.arch = self.fields.get("Architecture", b"").decode()


class Universe:
    """A Packages text, indexed in one pass over the few fields the seeds and the closure need; a stanza is
    parsed only when the closure visits it (0.3 s for a suite, against 1 s for parsing all 63,000)."""

    _SCAN = re.compile(rb"\n(Package|Provides|Essential|Priority): ([^\n]*)")

    def __init__(self, packages: bytes | bytearray, arch: str):
        if not packages.startswith(b"\n"):
            raise ValueError("a Universe's text starts with a newline (apt.packages_text gives one)")
        self.text, self.arch = packages, arch
        self.span: dict[str, int] = {}               # name -> start of its (first) stanza in text
        self.provides: dict[str, list[str]] = {}
        self.fields: dict[tuple[str, bytes], list[str]] = {}   # (Essential|Priority, value) -> names
        wanted = {(b"Essential", b"yes"), *((b"Priority", p.encode()) for ps in PRIORITIES.values() for p in ps)}
        name = ""
        for m in self._SCAN.finditer(self.text):
            key, value = m.group(1), m.group(2).strip()
            if key == b"Package":
                name = value.decode()
                self.span.setdefault(name, m.start() + 1)
            elif key == b"Provides":
                for v in _names(value):
                    self.provides.setdefault(v, []).append(name)
            elif (key, value) in wanted:
                self.fields.setdefault((key.decode(), value), []).append(name)
        self._parsed: dict[str, Stanza | None] = {}

    def matching(self, field: str, values: tuple[bytes, ...]) -> list[str]:
        """Names of the stanzas whose field has one of values."""
        names = dict.fromkeys(n for v in values for n in self.fields.get((field, v), []))
        return [n for n in names if self.get(n) is not None]     # of this architecture

    def providers(self) -> dict[str, list[str]]:
        return self.provides

    def get(self, name: str) -> "Stanza | None":
        if name not in self._parsed:
            start = self.span.get(name)
            s = None
            if start is not None:
                end = self.text.find(b"\n\n", start)
                s = Stanza(bytes(self.text[start:end if end >= 0 else len(self.text)]).strip(b"\n"))
                if s.arch not in (self.arch, "all"):
                    s = None
            self._parsed[name] = s
        return self._parsed[name]


def stanzas(packages: bytes, arch: str) -> dict[str, Stanza]:
    """name -> stanza of every package for arch (or all) in a (small) Packages text."""
    u = Universe(b"\n" + packages, arch)
    return {n: s for n in u.span if (s := u.get(n)) is not None}


def _names(field: bytes) -> list[str]:
    """Every package name a Depends-style field mentions (all alternatives, no versions or arch qualifiers)."""
    out = []
    for alt in re.split(rb"[,|]", field):
        name = alt.strip().split(b" ", 1)[0].split(b"(", 1)[0].split(b":", 1)[0]
        if name:
            out.append(name.decode())
    return out


def closure(universe: Universe, seeds: list[str]) -> dict[str, Stanza]:
    providers = universe.providers()
    todo, seen = list(seeds), set()
    found: dict[str, Stanza] = {}
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo += providers.get(n, [])
        s = universe.get(n)
        if s is not None:
            found[n] = s
            todo += _names(s.fields.get("Depends", b"")) + _names(s.fields.get("Pre-Depends", b""))
    return {n: found[n] for n in sorted(found)}


def seeds(universe: Universe, variant: str, include: list[str]) -> tuple[list[str], list[str]]:
    """(first stage, second stage) seed names."""
    first = universe.matching("Essential", (b"yes",))
    second = [re.split(r"[=/]", p, maxsplit=1)[0] for p in include]
    if PRIORITIES[variant]:
        firsts = set(first)
        second += [n for n in universe.matching("Priority", tuple(p.encode() for p in PRIORITIES[variant]))
                   if n not in firsts]
    if variant == "buildd":
        second.append("build-essential")
    return first, second


def _repo(d: Path, index: "Index", stanzas_: list[Stanza]) -> None:
    write_index(d, index, [s.text for s in stanzas_])


def _apt(conf: Path, args: list[str]) -> str:
    env = dict(os.environ, APT_CONFIG=str(conf), LC_ALL="C")
    return runner.run(["apt-get", "-q", "-o", "APT::Get::Simulate=true", *args], env=env,
                      capture=True).stdout


def apt_conf(top: Path, repo: Path, suite: str, arch: str, status: Path) -> Path:
    """A private apt configuration: nothing of the host's apt is read, nothing of it is written."""
    empty = top / "empty"
    for d in (empty, top / "lists" / "partial", top / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (top / "sources.list").write_text(f"deb [trusted=yes] file://{repo} {suite} main\n")
    lines = {
        "Dir": "/", "Dir::Etc::Parts": empty, "Dir::Etc::Main": empty / "none",
        "Dir::Etc::SourceList": top / "sources.list", "Dir::Etc::SourceParts": empty,
        "Dir::Etc::Preferences": empty / "none", "Dir::Etc::PreferencesParts": empty,
        "Dir::Etc::Trusted": empty / "none", "Dir::Etc::TrustedParts": empty,
        "Dir::State": top, "Dir::State::Lists": top / "lists", "Dir::State::status": status,
        "Dir::Cache": top / "cache", "Dir::Log": top, "APT::Architecture": arch,
        "APT::Install-Recommends": "false", "Acquire::Languages": "none", "Debug::NoLocking": "true",
        "pkgCacheGen::ForceEssential": ",",
        # a simulation over a file:// repository in a private (0700) directory: nothing is downloaded, and the
        # _apt user could not read it anyway (apt would warn and fall back to root)
        "APT::Sandbox::User": "root",
    }
    conf = top / "apt.conf"
    body = "".join(f'{k} "{v}";\n' for k, v in lines.items()) + f'APT::Architectures {{ "{arch}"; }};\n'
    conf.write_text(body)
    return conf


def _installed(out: str) -> list[str]:
    return [m.group(1).split(":", 1)[0] for m in _INST.finditer(out)]


@dataclass(frozen=True)
class Resolution:
    stanzas: tuple[Stanza, ...]     # every package mmdebstrap will install, by name
    first: frozenset[str]           # the ones its first stage (the essential set) installs


def resolve(index: "Index", variant: str, include: list[str]) -> Resolution:
    """Every package mmdebstrap would install for this request; cached by the index and the request."""
    if variant not in PRIORITIES or any(p.startswith((".", "/")) or "?" in p for p in include):
        raise Unresolved(f"variant {variant!r} or a file/pattern in --include: not modelled")
    key = hashlib.sha256(json.dumps([FORMAT, index.ids, index.arch, index.suite, variant, include]).encode()
                         ).hexdigest()[:24]
    cached = cache_dir() / "indexes" / f"resolved-{key}.Packages"
    firsts = cached.with_suffix(".first")
    with contextlib.suppress(OSError):
        return Resolution(tuple(stanzas(cached.read_bytes(), index.arch).values()),
                          frozenset(firsts.read_text().split()))
    universe = Universe(packages_text(index), index.arch)
    first, second = seeds(universe, variant, include)
    sub = closure(universe, first + second)
    narrow = f"?narrow(?or(?archive(^{index.suite}$),?codename(^{index.suite}$)),?architecture({index.arch}),"
    with tempfile.TemporaryDirectory(prefix="imgbuild-resolve-") as tmp:
        top = Path(tmp)
        _repo(top / "repo", index, list(sub.values()))
        status = top / "status"
        status.write_bytes(b"")
        conf = apt_conf(top, top / "repo", index.suite, index.arch, status)
        try:
            _apt(conf, ["update"])
            one = _installed(_apt(conf, ["install", narrow + "?essential)"]))
            # the second stage runs on top of the first, as mmdebstrap's does inside the chroot
            status.write_bytes(b"".join(sub[n].text + b"\nStatus: install ok installed\n\n" for n in one))
            prio = PRIORITIES[variant]
            priorities = ",".join(f"?priority({p})" for p in prio)
            extra = [f"{narrow}?and(?or({priorities}),?not(?essential)))"] if prio else []
            two = _installed(_apt(conf, ["install", *include, *extra])) if include or extra else []
        except BuilderError as e:
            raise Unresolved(f"apt could not resolve the package set: {e}") from None
    missing = [n for n in one + two if n not in sub]
    if missing or not one:
        raise Unresolved(f"apt's answer names packages outside the index: {', '.join(missing[:5])}")
    chosen = tuple(sub[n] for n in sorted(set(one + two)))
    del universe, sub
    give_back_memory()
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(firsts, "\n".join(sorted(one)) + "\n")
        write_atomic(cached, b"\n\n".join(s.text for s in chosen) + b"\n")
    return Resolution(chosen, frozenset(one))

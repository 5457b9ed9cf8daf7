"""Dependency resolution for a first install into an empty root, the way yum's depsolver does it, simplified.

Resolver(repos, arch).resolve(names, groups) returns the closure of what was asked for: every requirement of every
chosen package met by a chosen package's provides (versions compared as rpm does), its name, or a file in the file
list primary carries (/bin/sh, /etc/...). Among several providers it prefers one already chosen, then one whose
name is the requirement, then the shortest name, then the newest EVR (across repos, so updates win) and the best
arch, then the first repo: the answer is the same on every run.

Left out on purpose: conflicts, obsoletes, weak dependencies (Recommends, Suggests ...), and file requirements
outside primary's file list (filelists.xml is not read). rpmlib(...) requires are rpm's own features, not
packages. Rich (boolean) dependencies are followed: and, or, with, without; `if`/`unless` by what ends up chosen.
"""
from __future__ import annotations

import difflib
import functools
import logging
import re
from collections import deque
from collections.abc import Iterable, Sequence

from builder.core.errors import InputError
from builder.rpm.repodata import Dep, Group, Package, Repo

log = logging.getLogger("imgbuild")

_DIGITS = frozenset("0123456789")
_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _DIGITS | _ALPHA


def vercmp(a: str, b: str) -> int:
    """rpm's rpmvercmp(): -1, 0 or 1 as version a is older than, the same as or newer than b.

    Versions are compared segment by segment: runs of ASCII digits (numerically, leading zeros ignored) or letters
    (as bytes), separated by anything else. A digit run is newer than a letter run; `~` sorts before everything,
    even the end of the string (1.0~rc1 < 1.0); `^` sorts after the end but before any other segment
    (1.0 < 1.0^git1 < 1.0.1). When all segments are equal, the version with segments left over is newer.
    """
    if a == b:
        return 0
    i, j, la, lb = 0, 0, len(a), len(b)
    while i < la or j < lb:
        while i < la and a[i] not in _ALNUM and a[i] not in "~^":
            i += 1
        while j < lb and b[j] not in _ALNUM and b[j] not in "~^":
            j += 1
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        kind = _DIGITS if ca in _DIGITS else _ALPHA
        si, sj = i, j
        while i < la and a[i] in kind:
            i += 1
        while j < lb and b[j] in kind:
            j += 1
        sa, sb = a[si:i], b[sj:j]
        if not sb:  # segments of different kinds: the numeric one is newer
            return 1 if kind is _DIGITS else -1
        if kind is _DIGITS:
            sa, sb = sa.lstrip("0"), sb.lstrip("0")
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        if sa != sb:
            return 1 if sa > sb else -1
    if i >= la and j >= lb:
        return 0
    return 1 if i < la else -1


def evr_cmp(a: tuple[int, str, str], b: tuple[int, str, str]) -> int:
    """Compare (epoch, version, release) triples: epoch numerically, then version, then release by vercmp."""
    if a[0] != b[0]:
        return 1 if a[0] > b[0] else -1
    return vercmp(a[1], b[1]) or vercmp(a[2] or "", b[2] or "")


_LESS, _GREATER, _EQUAL = 1, 2, 4
_SENSE = {"LT": _LESS, "GT": _GREATER, "EQ": _EQUAL, "LE": _LESS | _EQUAL, "GE": _GREATER | _EQUAL}


def satisfies(provide: Dep, require: Dep) -> bool:
    """Whether a provides entry meets a requirement: same name and overlapping version ranges (rpm's rules).

    An unversioned side always matches. A missing epoch counts as 0; a missing release on one side matches any
    release when that side's range includes equality (`foo >= 1.0` is met by `foo = 1.0-3`)."""
    if provide.name != require.name:
        return False
    f1, f2 = _SENSE.get(provide.flags or "", 0), _SENSE.get(require.flags or "", 0)
    if not f1 or not f2 or provide.ver is None or require.ver is None:
        return True
    e1, e2 = provide.epoch, require.epoch
    if e1 and e2:
        sense = vercmp(e1, e2)
    elif e1 and _atol(e1) > 0:
        sense = 1
    elif e2 and _atol(e2) > 0:
        sense = -1
    else:
        sense = 0
    if sense == 0:
        sense = vercmp(provide.ver, require.ver)
        if sense == 0:
            r1, r2 = provide.rel, require.rel
            if r1 and r2:
                sense = vercmp(r1, r2)
            elif (r1 and f2 & _EQUAL) or (r2 and f1 & _EQUAL):
                return True
    if sense < 0:
        return bool(f1 & _GREATER or f2 & _LESS)
    if sense > 0:
        return bool(f1 & _LESS or f2 & _GREATER)
    return bool(f1 & f2 & (_EQUAL | _LESS | _GREATER))


def _atol(s: str) -> int:
    m = re.match(r"\s*[-+]?\d+", s)
    return int(m.group()) if m else 0


def _skipped(name: str) -> bool:
    """rpm's own capabilities: met by rpm itself, never by a package."""
    return name.startswith("rpmlib(")


# ------------------------------------------------------------------ errors


class ResolveError(InputError):
    """What cannot be found: .missing is a list of (what, needed_by), needed_by None for what was asked for."""

    def __init__(self, title: str, missing: Sequence[tuple[str, str | None]], repos: Iterable[Repo],
                 notes: dict[str, str] | None = None, hint: str | None = None):
        self.missing = list(missing)
        self.repos = [(r.id, r.base_url) for r in repos]
        notes = notes or {}
        items = []
        for what, by in self.missing:
            item = what + (f", needed by {by}" if by else "")
            if notes.get(what):
                item += f" ({notes[what]})"
            items.append(item)
        searched = ", ".join(f"{i} ({u})" for i, u in self.repos) or "no repositories"
        if len(items) == 1:   # the common case reads as one line
            message = f"{title.rstrip(':')}: {items[0]}; searched {searched}"
        else:
            message = "\n".join([title, *(f"  {x}" for x in items), f"searched: {searched}"])
        super().__init__(message, hint)


# ------------------------------------------------------------------ rich (boolean) dependencies


def _parse_rich(text: str) -> tuple:
    """`(a >= 1 or (b if c))` as a tree: ("dep", Dep) or (op, [operands]) or ("if"|"unless", then, cond, else)."""
    pos = 0
    n = len(text)

    def skip() -> None:
        nonlocal pos
        while pos < n and text[pos].isspace():
            pos += 1

    def word() -> str:
        # a name may hold balanced parentheses: libc.so.6()(64bit)
        nonlocal pos
        start, depth = pos, 0
        while pos < n and not (depth == 0 and (text[pos].isspace() or text[pos] == ")")):
            depth += {"(": 1, ")": -1}.get(text[pos], 0)
            pos += 1
        return text[start:pos]

    def term() -> tuple:
        nonlocal pos
        skip()
        if pos < n and text[pos] == "(":
            return group()
        name = word()
        if not name:
            raise ValueError(f"expected a name at {pos}")
        skip()
        save = pos
        op = word()
        flags = {"=": "EQ", "==": "EQ", "<": "LT", "<=": "LE", ">": "GT", ">=": "GE"}.get(op)
        if flags is None:
            pos = save
            return ("dep", Dep(name))
        skip()
        evr = word()
        m = re.fullmatch(r"(?:(\d+):)?([^-]+)(?:-(.+))?", evr)
        if not m:
            raise ValueError(f"bad version {evr!r}")
        return ("dep", Dep(name, flags, m.group(1), m.group(2), m.group(3)))

    def group() -> tuple:
        nonlocal pos
        pos += 1  # (
        first = term()
        skip()
        if pos < n and text[pos] == ")":
            pos += 1
            return first
        op = word()
        if op in ("if", "unless"):
            cond = term()
            skip()
            other = None
            if text.startswith("else", pos):
                word()
                other = term()
            node: tuple = (op, first, cond, other)
        elif op in ("and", "or", "with", "without"):
            items = [first, term()]
            skip()
            while text.startswith(op + " ", pos) or text.startswith(op + "(", pos):
                word()
                items.append(term())
                skip()
            node = (op, items)
        else:
            raise ValueError(f"unknown operator {op!r}")
        skip()
        if pos >= n or text[pos] != ")":
            raise ValueError("missing )")
        pos += 1
        return node

    tree = term()
    skip()
    if pos != n:
        raise ValueError("text after the expression")
    return tree


# ------------------------------------------------------------------ the resolver

# target arch -> (arches it installs, in order of preference; arches used only when nothing else provides)
_MULTILIB = {
    "x86_64": (("x86_64", "noarch"), ("i686", "i586", "i486", "i386")),
    "i686": (("i686", "i586", "i486", "i386", "noarch"), ()),
    "aarch64": (("aarch64", "noarch"), ()),
}
_ALIASES = {"amd64": "x86_64", "i386": "i686", "i486": "i686", "i586": "i686", "arm64": "aarch64"}


def arches(arch: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(installable arches best first, fallback arches) for a target arch (Debian names accepted)."""
    arch = _ALIASES.get(arch, arch)
    return _MULTILIB.get(arch, ((arch, "noarch"), ()))


def _norm_group(s: str) -> str:
    return s.strip().lstrip("@").strip().casefold()


class Resolver:
    """Packages of several repos for one arch, indexed once; resolve() may be called any number of times."""

    def __init__(self, repos: list[Repo], arch: str):
        self.repos = list(repos)
        self.arch = arch
        best, fallback = arches(arch)
        rank = {a: n for n, a in enumerate(best + fallback)}
        tier = {a: (0 if a in best else 1) for a in best + fallback}
        # every installable package once (the first repo wins a NEVRA listed twice), ordered so that a lower
        # index is better among packages of one name: best tier, newest EVR, best arch, first repo
        seen: set[tuple] = set()
        found: dict[str, list[tuple[int, int, Package]]] = {}
        for ri, repo in enumerate(self.repos):
            for p in repo.packages:
                if p.arch not in rank:
                    continue
                key = (p.name, p.arch, p.epoch, p.version, p.release)
                if key in seen:
                    continue
                seen.add(key)
                found.setdefault(p.name, []).append((ri, rank[p.arch], p))

        def better(x: tuple[int, int, Package], y: tuple[int, int, Package]) -> int:
            return ((tier[x[2].arch] - tier[y[2].arch]) or -evr_cmp(x[2].evr, y[2].evr) or (x[1] - y[1])
                    or (x[0] - y[0]))

        pkgs: list[Package] = []
        self._by_name: dict[str, list[int]] = {}
        for name in sorted(found):
            group = found[name]
            if len(group) > 1:
                group.sort(key=functools.cmp_to_key(better))
            self._by_name[name] = list(range(len(pkgs), len(pkgs) + len(group)))
            pkgs.extend(p for _, _, p in group)
        self._pkgs = pkgs
        self._tier = [tier[p.arch] for p in pkgs]

        self._provides: dict[str, list[tuple[Dep, int]]] = {}
        self._files: dict[str, list[int]] = {}
        for i, p in enumerate(pkgs):
            own = False
            for d in p.provides:
                self._provides.setdefault(d.name, []).append((d, i))
                own = own or d.name == p.name
            if not own:  # rpm always provides the package's own name; hand-made metadata may not say so
                self._provides.setdefault(p.name, []).append(
                    (Dep(p.name, "EQ", str(p.epoch), p.version, p.release), i))
            for f in p.files:
                self._files.setdefault(f, []).append(i)
        self._cache: dict[Dep, list[int]] = {}

        self.groups: dict[str, Group] = {}
        for repo in self.repos:
            for gid, g in repo.groups.items():
                old = self.groups.get(gid)
                if old is None:
                    self.groups[gid] = g
                else:  # the same group in several repos: yum merges the lists
                    self.groups[gid] = Group(gid, old.name, *(tuple(dict.fromkeys(a + b)) for a, b in (
                        (old.mandatory, g.mandatory), (old.default, g.default), (old.optional, g.optional))))

    # -------------------------------------------------------------- lookups

    @property
    def packages(self) -> list[Package]:
        """Every installable package, by name, best first within a name."""
        return list(self._pkgs)

    def _providers(self, req: Dep) -> list[int]:
        """Indexes of the packages that meet a (simple) requirement, in index order."""
        hit = self._cache.get(req)
        if hit is None:
            out = {i for d, i in self._provides.get(req.name, ()) if satisfies(d, req)}
            if req.name.startswith("/"):
                out.update(self._files.get(req.name, ()))
            hit = self._cache[req] = sorted(out)
        return hit

    def _find_group(self, key: str) -> Group | None:
        k = _norm_group(key)
        for g in self.groups.values():
            if _norm_group(g.id) == k:
                return g
        for g in self.groups.values():
            if _norm_group(g.name) == k:
                return g
        return None

    def group_packages(self, group_ids: list[str]) -> list[str]:
        """Mandatory and default packages of groups named by id or name (any case, `@` optional), in order."""
        out: list[str] = []
        unknown = []
        for key in group_ids:
            g = self._find_group(key)
            if g is None:
                unknown.append(key)
                continue
            out.extend(g.mandatory + g.default)
        if unknown:
            known = sorted({g.id for g in self.groups.values()})
            choices = {_norm_group(g.id): g.id for g in self.groups.values()}
            for g in self.groups.values():
                choices.setdefault(_norm_group(g.name), g.name)
            notes = {}
            for key in unknown:
                close = [choices[c] for c in difflib.get_close_matches(_norm_group(key), choices, n=3, cutoff=0.6)]
                notes[key] = ("did you mean: " + ", ".join(close)) if close else ""
            shown = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "") if known else "none"
            raise ResolveError(f"unknown package group{'s' if len(unknown) > 1 else ''} (known groups: {shown}):",
                               [(k, None) for k in unknown], self.repos, notes,
                               "use a group id or name from the repositories' comps")
        return list(dict.fromkeys(out))

    # -------------------------------------------------------------- resolution

    def resolve(self, names: list[str], groups: Sequence[str] = ()) -> list[Package]:
        """The packages to install for names and groups, sorted by name (then arch)."""
        state = _State(self)
        missing = []
        notes: dict[str, str] = {}
        for raw in names:
            name = raw.strip()
            if not name:
                continue
            i = self._requested(name, state)
            if i is None:
                close = difflib.get_close_matches(name, self._by_name.keys(), n=3, cutoff=0.6)
                missing.append((name, None))
                notes[name] = ("did you mean: " + ", ".join(close)) if close else ""
            else:
                state.add(i)
        if missing:
            raise ResolveError(f"no such package{'s' if len(missing) > 1 else ''}:", missing, self.repos, notes,
                               "check the package names (yum/dnf names, not Debian's)")
        for name in self.group_packages(list(groups)) if groups else []:
            i = self._requested(name, state)
            if i is None:  # comps lists packages some arches or releases lack; yum skips them too
                log.debug("group package %s is in no repository; skipped", name)
            else:
                state.add(i)
        state.close()
        if state.missing:
            raise ResolveError(
                f"{len(state.missing)} requirement{'s' if len(state.missing) > 1 else ''} cannot be met:",
                state.missing, self.repos, state.notes,
                "add the repository that has them (e.g. updates, extras), or leave out the package that needs them")
        chosen = sorted(state.chosen, key=lambda i: (self._pkgs[i].name, self._pkgs[i].arch, i))
        log.debug("resolved %d requested packages and %d groups to %d packages", len(names), len(groups),
                  len(chosen))
        return [self._pkgs[i] for i in chosen]

    def _requested(self, name: str, state: _State) -> int | None:
        """The package for a requested name: a package name, name.arch, or something provided (a file ...)."""
        idx = self._by_name.get(name)
        if idx:
            for i in idx:  # the one already chosen, else the best of the best tier
                if i in state.chosen:
                    return i
            return idx[0]
        if "." in name:
            n, _, arch = name.rpartition(".")
            for i in self._by_name.get(n, ()):
                if self._pkgs[i].arch == arch:
                    return i
        cands = self._providers(Dep(name))
        return state.pick(cands, name)[0] if cands else None


class _State:
    """One resolve() run: what is chosen and what could not be met."""

    def __init__(self, r: Resolver):
        self.r = r
        self.chosen: set[int] = set()
        self.by_key: dict[tuple[str, str], int] = {}   # (name, arch) -> the chosen version
        self.queue: deque[int] = deque()
        self.met: set[Dep] = set()
        self.pending: list[tuple[tuple, str]] = []      # if/unless requirements, decided as the closure grows
        self.missing: list[tuple[str, str | None]] = []
        self.notes: dict[str, str] = {}

    def add(self, i: int) -> None:
        if i in self.chosen:
            return
        p = self.r._pkgs[i]
        self.chosen.add(i)
        self.by_key.setdefault((p.name, p.arch), i)
        self.queue.append(i)

    def pick(self, cands: list[int], want: str) -> tuple[int | None, str]:
        """The provider to add among cands (none chosen yet): (index, or None with the reason)."""
        pkgs, tier = self.r._pkgs, self.r._tier
        pool = [i for i in cands if tier[i] == 0] or cands
        free = [i for i in pool if (pkgs[i].name, pkgs[i].arch) not in self.by_key]
        if not free:
            other = pkgs[self.by_key[(pkgs[pool[0]].name, pkgs[pool[0]].arch)]]
            return None, f"{other.nevra} is chosen"
        return min(free, key=lambda i: (pkgs[i].name != want, len(pkgs[i].name), i)), ""

    def close(self) -> None:
        while True:
            while self.queue:
                i = self.queue.popleft()
                by = self.r._pkgs[i].nevra
                for req in self.r._pkgs[i].requires:
                    if req in self.met or _skipped(req.name):
                        continue
                    if req.name.startswith("("):
                        self._rich(req, by)
                    elif self._need(req, by):
                        self.met.add(req)
            if not self._conditions():
                return

    def _need(self, req: Dep, by: str) -> bool:
        """Meet a simple requirement (adding a provider if none is chosen); False and noted when it cannot be."""
        cands = self.r._providers(req)
        if any(i in self.chosen for i in cands):
            return True
        what = str(req)
        if cands:
            i, why = self.pick(cands, req.name)
            if i is not None:
                self.add(i)
                return True
            self.notes[what] = why
        self.missing.append((what, by))
        return False

    def _sat(self, node: tuple) -> bool:
        kind = node[0]
        if kind == "dep":
            return any(i in self.chosen for i in self.r._providers(node[1]))
        if kind in ("and", "with"):
            return all(self._sat(n) for n in node[1])
        if kind == "or":
            return any(self._sat(n) for n in node[1])
        if kind == "without":
            return self._sat(node[1][0])
        _, then, cond, other = node
        if (kind == "if") == self._sat(cond):
            return self._sat(then)
        return other is None or self._sat(other)

    def _possible(self, node: tuple) -> bool:
        kind = node[0]
        if kind == "dep":
            return bool(self.r._providers(node[1]))
        if kind in ("and", "with"):
            return all(self._possible(n) for n in node[1])
        if kind == "or":
            return any(self._possible(n) for n in node[1])
        if kind == "without":
            return self._possible(node[1][0])
        return True

    def _ensure(self, node: tuple, by: str) -> bool:
        kind = node[0]
        if kind == "dep":
            return _skipped(node[1].name) or self._need(node[1], by)
        if kind in ("and", "with"):
            done = [self._ensure(n, by) for n in node[1]]  # every part, even after one fails
            return all(done)
        if kind == "without":
            return self._ensure(node[1][0], by)
        if kind == "or":
            if self._sat(node):
                return True
            for n in node[1]:
                if self._possible(n):
                    return self._ensure(n, by)
            return self._ensure(node[1][0], by)  # notes the first alternative as missing
        self.pending.append((node, by))
        return True

    def _rich(self, req: Dep, by: str) -> None:
        try:
            tree = _parse_rich(req.name)
        except ValueError as e:
            log.warning("%s: cannot read the requirement %r (%s); ignored", by, req.name, e)
            return
        n = len(self.missing)
        self._ensure(tree, by)
        if len(self.missing) > n and tree[0] != "dep":  # name the whole expression, not just one of its parts
            del self.missing[n:]
            self.missing.append((req.name, by))
        elif len(self.missing) == n and tree[0] not in ("if", "unless"):
            self.met.add(req)

    def _conditions(self) -> bool:
        """Decide pending if/unless requirements; True when that added packages to look at.

        `A if B` is met once B is chosen; `A unless B`, and the else branches, only when nothing else is left to
        add, since choosing more packages can change the answer."""
        if not self.pending:
            return False
        pending, self.pending = self.pending, []
        for node, by in pending:
            kind, then, cond, other = node
            if kind == "if" and other is None:
                if self._sat(cond):
                    self._ensure(then, by)
                else:
                    self.pending.append((node, by))
            else:
                self.pending.append((node, by))
        if self.queue:
            return True
        pending, self.pending = self.pending, []
        for node, by in pending:
            kind, then, cond, other = node
            if kind == "if" and other is None:
                self.pending.append((node, by))   # its condition may never come: then nothing is needed
                continue
            branch = then if (kind == "if") == self._sat(cond) else other
            if branch is not None:
                self._ensure(branch, by)
        return bool(self.queue)

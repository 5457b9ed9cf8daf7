"""The Debian side of the package world: which mirror the host uses, and what the mirror holds.

host_mirror() reads the host's apt sources (deb822 `.sources` with python-debian, one-line `.list` by their simple
grammar) so recipes can say `mirror: auto` and no mirror name is ever written into a recipe.
fetch_index() reads a suite's InRelease, checked with gpgv against the Debian archive keyring (no gpgv or no
keyring: the build is refused). Only the text gpgv itself verified is parsed, and a file with anything outside its
one signed block is refused. Then the Packages index of each component, checked against the verified Release
file's SHA256 and size, cached by that hash; every .deb is later checked against that index (pkgcache,
localrepo). A local mirror without a signature needs the recipe's explicit `bootstrap.unsigned: true`.
"""
from __future__ import annotations

import contextlib
import ctypes
import difflib
import email.utils
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from debian import deb822

from builder.core import net
from builder.core import proc as runner
from builder.core.errors import InputError, MirrorError
from builder.core.gpg import status as gpg_status
from builder.core.outputs import write_atomic
from builder.core.paths import cache_dir

log = logging.getLogger("imgbuild")

APT_DIR = Path("/etc/apt")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
KEYRING_ENV = "IMGBUILD_KEYRING"


@dataclass(frozen=True)
class Source:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    file: str


def _one_line(path: Path) -> list[Source]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...] options
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("deb", "deb-src"):
            out.append(Source((parts[0],), (parts[1],), (parts[2],), tuple(parts[3:]), str(path)))
    return out


def _deb822(path: Path) -> list[Source]:
    out = []
    with open(path, errors="replace") as f:
        for para in deb822.Deb822.iter_paragraphs(f):
            if para.get("Enabled", "yes").strip().lower() == "no":
                continue
            out.append(Source(tuple(para.get("Types", "").split()), tuple(para.get("URIs", "").split()),
                              tuple(para.get("Suites", "").split()), tuple(para.get("Components", "").split()),
                              str(path)))
    return out


def host_sources(apt_dir: Path = APT_DIR) -> list[Source]:
    """Every enabled source of the host, in apt's order."""
    found: list[Source] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        found += _one_line(main)
    d = apt_dir / "sources.list.d"
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if p.suffix == ".list":
                found += _one_line(p)
            elif p.suffix == ".sources":
                found += _deb822(p)
    return found


def host_mirror(release: str, apt_dir: Path = APT_DIR) -> str:
    """The archive URI the host's apt uses, for `mirror: auto`.

    Prefers a `deb` source that lists the release itself, then one that lists a plain suite (not -security or
    -updates); never a security or third-party suite-less source.
    """
    sources = [s for s in host_sources(apt_dir) if "deb" in s.types and s.uris]
    plain = [s for s in sources if any("-" not in x and "/" not in x for x in s.suites)
             and not any("security" in u for u in s.uris)]
    for s in sources:
        if release in s.suites and not any("security" in u for u in s.uris):
            return s.uris[0].rstrip("/")
    if plain:
        return plain[0].uris[0].rstrip("/")
    raise InputError(
        f"mirror: auto, but no Debian archive source was found in {apt_dir}/sources.list or "
        f"{apt_dir}/sources.list.d/",
        "set bootstrap.mirror to the mirror's URL, or configure apt on this host")


# ------------------------------------------------------------------ the mirror's index


class UnknownSuite(InputError):
    """The mirror lacks what the recipe names; `key` is the recipe key to blame."""

    def __init__(self, key: str, message: str, hint: str):
        super().__init__(message, hint)
        self.key = key


@dataclass(frozen=True)
class Index:
    """What one suite of a mirror holds for one architecture."""

    mirror: str
    suite: str
    arch: str
    date: int                     # the Release file's Date, as Unix time
    ids: tuple[str, ...]          # sha256 of each Packages index used: the index's identity
    names: frozenset[str]         # real and virtual (Provides) package names
    urls: tuple[str, ...] = ()    # where each Packages index came from (same order as ids)
    release: tuple[tuple[str, str], ...] = ()   # the Release file's Origin, Label, Suite, Codename, Version
    signed_by: tuple[str, ...] = ()   # fingerprints of the keys whose signatures gpgv verified; () = unsigned
    keyring: str = ""                 # the keyring they were checked against ("": bootstrap.unsigned)

    def missing(self, packages: list[str]) -> dict[str, list[str]]:
        """Requested packages the index does not know, each with close matches."""
        out = {}
        for p in packages:
            name = re.split(r"[=/:]", p, maxsplit=1)[0]
            if name not in self.names:
                out[p] = difflib.get_close_matches(name, self.names, n=3, cutoff=0.75)
        return out


_HINTS = {"hint": "check the mirror URL and the network, or set bootstrap.mirror",
          "status_hint": "check the release name and the mirror URL"}


def _get(url: str) -> bytes:
    return net.get(url, **_HINTS)


class Unverifiable(InputError):
    """The index cannot be checked on this host (gpgv or the keyring is missing)."""


def keyring() -> Path:
    """The keyring a Debian index must be signed with: $IMGBUILD_KEYRING (a mirror signed with your own key),
    else debian-archive-keyring's, which holds the keys of every current Debian release (bullseye to sid)."""
    return Path(os.environ.get(KEYRING_ENV) or KEYRING)


def check_tools() -> tuple[str, Path]:
    """gpgv and the keyring, or Unverifiable (exit 2) naming what to install."""
    kr = keyring()
    gpgv = runner.which("gpgv")
    if gpgv is None:
        raise Unverifiable("cannot check the Debian mirror's signature: gpgv is not installed",
                           "apt-get install gpgv (a local mirror without a signature needs bootstrap.unsigned: true "
                           "in the recipe)")
    if not kr.is_file():
        where = f"${KEYRING_ENV}" if os.environ.get(KEYRING_ENV) else "debian-archive-keyring"
        raise Unverifiable(f"cannot check the Debian mirror's signature: the keyring {kr} is missing ({where})",
                           "apt-get install debian-archive-keyring" if kr == KEYRING else
                           f"point ${KEYRING_ENV} at the keyring your mirror is signed with, or unset it")
    return gpgv, kr


_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIGNATURE = b"-----BEGIN PGP SIGNATURE-----"
_END = b"-----END PGP SIGNATURE-----"
_ARMOR_HEADER = re.compile(rb"^Hash: [A-Za-z0-9, ]+$")     # the only header a clearsigned message has


def check_clearsigned(data: bytes, url: str) -> None:
    """An InRelease file is one clearsigned message and nothing else: its first line opens the message, one
    signature block closes it, only blank lines may follow (apt's rule). gpgv alone would say "Good signature"
    for a file with unsigned text before or after the block, or with several blocks."""
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n")]

    def refuse(why: str) -> MirrorError:
        return MirrorError(f"{url}: {why}; only what the signature covers is read, so this index is refused",
                           "the mirror (or something between it and this host) serves a tampered index; check "
                           "the mirror URL and your network")

    if not lines or lines[0] != _BEGIN:
        raise refuse("text before the signed message (the file must start with " + _BEGIN.decode() + ")")
    for marker in (_BEGIN, _SIGNATURE, _END):
        n = lines.count(marker)
        if n != 1:
            raise refuse(f"{n} {marker.decode().strip('-')} lines (exactly one signed message is allowed)")
    i = 1
    while i < len(lines) and lines[i] != b"":
        if not _ARMOR_HEADER.match(lines[i]):
            raise refuse(f"line {i + 1}: not a Hash: header before the message")
        i += 1
    sig, end = lines.index(_SIGNATURE), lines.index(_END)
    if not i < sig < end:
        raise refuse("the signed message is not followed by its signature")
    if any(ln.strip() for ln in lines[end + 1:]):
        raise refuse("text after the signature")


def _verify(inrelease: bytes, url: str) -> tuple[bytes, tuple[str, ...]]:
    """The text gpgv verified, and the fingerprints of the keys that signed it. Nothing else of the file is read:
    the structure is checked first (nothing outside the one signed block), then gpgv --output gives the
    message itself."""
    gpgv, kr = check_tools()
    check_clearsigned(inrelease, url)
    with tempfile.TemporaryDirectory(prefix="imgbuild-inrelease-") as tmp:
        signed, plain = Path(tmp) / "InRelease", Path(tmp) / "Release"
        signed.write_bytes(inrelease)
        r = runner.run([gpgv, "--status-fd", "1", "--keyring", str(kr), "--output", str(plain), str(signed)],
                       capture=True, check=False)
        good, problems = gpg_status(r.stdout)
        text = plain.read_bytes() if plain.is_file() else b""
    # gpgv exits non-zero when any signature does not count, also beside a good one: that alone is no reason
    failed = r.returncode != 0 and not re.search(r"^\[GNUPG:\] (NO_PUBKEY|EXPKEYSIG|REVKEYSIG|EXPSIG) ", r.stdout, re.M)
    if problems or not good or failed:
        why = "; ".join(problems) or ("no signature by a key in " + str(kr))
        raise MirrorError(f"{url}: bad or unknown signature ({why})",
                          "the mirror may be compromised or stale; check debian-archive-keyring on this host "
                          f"(or ${KEYRING_ENV} for a mirror signed with your own key)")
    return text, tuple(dict.fromkeys(good))


RELEASE_FIELDS = ("Origin", "Label", "Suite", "Version", "Codename")
_FIELDS = re.compile(rb"^(Package|Provides|Version|Architecture|Size|SHA256): (.+)$", re.M)


def archive_name(package: str, version: str, arch: str) -> str:
    """The file name apt (and debootstrap) give a downloaded .deb in /var/cache/apt/archives."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


@dataclass
class Scan:
    """What is read from a Packages index: package and virtual names, and each .deb's (sha256, size)."""

    names: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)   # "archive_name sha256 size\n", as SHA.debs keeps them
    _cur: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def debs(self) -> dict[str, tuple[str, int]]:
        """archive_name -> (sha256, size)"""
        return {n: (h, int(z)) for n, h, z in (line.split() for line in self.lines)}

    def _flush(self) -> None:
        c = self._cur
        if b"Package" in c and b"Version" in c and b"SHA256" in c:
            name = archive_name(c[b"Package"].decode(), c[b"Version"].decode(), c.get(b"Architecture", b"").decode())
            self.lines.append(f"{name} {c[b'SHA256'].decode()} {int(c.get(b'Size', b'0'))}\n")
        self._cur = {}

    def feed(self, data: bytes) -> "Scan":
        """Read a piece of an index made of whole lines (a stanza may go on in the next piece).

        Only six fields are needed, so one regex pass over the raw index (0.4 s for bookworm's 63,000 stanzas)
        stands in for python-debian's full deb822 parse (3 s), which the rest of the project uses."""
        for m in _FIELDS.finditer(data):
            key, value = m.group(1), m.group(2).strip()
            if key == b"Package":
                self._flush()
                self.names.add(value.decode())
            elif key == b"Provides":
                for item in value.decode().split(","):
                    self.names.add(item.strip().split(" ", 1)[0])
            self._cur[key] = value
        return self

    def done(self) -> "Scan":
        self._flush()
        return self


def _scan(data: bytes) -> Scan:
    return Scan().feed(data).done()


def _stream_scan(f: IO[bytes], chunk: int = 4 << 20, sink: IO[bytes] | None = None) -> Scan:
    """_scan of a decompressing file, read a chunk at a time so the index is never whole in memory (and each
    chunk also written to sink)."""
    scan = Scan()
    tail = b""
    while block := f.read(chunk):
        if sink is not None:
            sink.write(block)
        buf = tail + block
        cut = buf.rfind(b"\n") + 1
        scan.feed(buf[:cut])
        tail = buf[cut:]
    return scan.feed(tail).done()


_FIELD_NAME = re.compile(r"^([^\s:#][^:\s]*):", re.M)
_SHA256_LINE = re.compile(r"^([0-9a-f]{64})\s+(\d+)\s+(\S+)$")


@dataclass(frozen=True)
class Release:
    """What is read from a (verified) Release file."""

    fields: dict[str, str]                   # every field, raw
    files: dict[str, tuple[str, int]]        # SHA256: name -> (sha256, size)
    date: int


def parse_release(text: str, url: str) -> Release:
    """One paragraph, every field once, a Date, and a SHA256 list whose every line is `sha256 size name` with
    each name once; anything else is refused rather than guessed at."""
    def bad(why: str) -> MirrorError:
        return MirrorError(f"{url}: {why}", "the mirror's index is malformed; check the mirror")

    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]
    if len(paragraphs) != 1:
        raise bad(f"{len(paragraphs)} paragraphs in the Release file (it has one)")
    names = _FIELD_NAME.findall(paragraphs[0])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise bad(f"field {', '.join(twice)} given more than once in the Release file")
    fields = dict(deb822.Deb822(paragraphs[0]))
    files: dict[str, tuple[str, int]] = {}
    for line in fields.get("SHA256", "").strip().splitlines():
        m = _SHA256_LINE.match(line.strip())
        if not m:
            raise bad(f"SHA256 line {line.strip()!r} is not `sha256 size name`")
        if m.group(3) in files:
            raise bad(f"SHA256 lists {m.group(3)} more than once")
        files[m.group(3)] = (m.group(1), int(m.group(2)))
    try:
        date = int(email.utils.parsedate_to_datetime(fields["Date"]).timestamp())
    except (KeyError, TypeError, ValueError):
        raise bad("the Release file has no valid Date (SOURCE_DATE_EPOCH and the cache keys come from it)") from None
    if "Valid-Until" in fields:
        try:
            until = email.utils.parsedate_to_datetime(fields["Valid-Until"]).timestamp()
        except (TypeError, ValueError):
            raise bad(f"Valid-Until {fields['Valid-Until']!r} is not a date") from None
        if until < time.time():
            raise MirrorError(f"{url}: the index expired on {fields['Valid-Until']} (Valid-Until)",
                              "the mirror is stale, or serves an old index again; use an up-to-date mirror (and "
                              "check this host's clock)")
    return Release(fields, files, date)


def fetch_index(mirror: str, suite: str, arch: str, components: tuple[str, ...] = ("main",),
                unsigned: bool = False) -> Index:
    """The suite's index: InRelease checked with gpgv against keyring() (only the text gpgv verified is read),
    then each component's Packages index checked against its SHA256 and size. unsigned (the recipe's
    bootstrap.unsigned): the plain Release file, nothing checked but the Packages hashes it lists."""
    base = f"{mirror.rstrip('/')}/dists/{suite}"
    url = f"{base}/{'Release' if unsigned else 'InRelease'}"
    if not unsigned:
        check_tools()      # before any download: no gpgv or no keyring is the host's problem, exit 2
    try:
        raw = _get(url)
    except MirrorError as e:
        if "HTTP 404" not in str(e):
            raise
        if not unsigned and net.exists(f"{base}/Release"):
            raise UnknownSuite("bootstrap.unsigned", f"{base} has no signed index (InRelease), only an unsigned "
                               "Release file", "sign the mirror's index (InRelease), or, for a local mirror you "
                               "trust, set bootstrap.unsigned: true") from None
        raise UnknownSuite("release", f"{suite!r} is not on the mirror ({url}: HTTP 404)",
                           "check the release name (e.g. bookworm, trixie)") from None
    if unsigned:
        text, signers = raw, ()
        log.warning("bootstrap.unsigned: %s is not checked against a signature; the packages are only as "
                    "trustworthy as the mirror and the network to it", url)
    else:
        text, signers = _verify(raw, url)
    release = parse_release(text.decode("utf-8", "replace"), url)
    named = {release.fields.get("Suite", "").strip(), release.fields.get("Codename", "").strip()} - {""}
    if named and suite not in named:
        raise MirrorError(f"{url}: the index is for {' / '.join(sorted(named))}, not {suite}",
                          "the mirror serves another suite's index under this name; check the mirror")
    by_name = release.files
    names: set[str] = set()
    ids, urls = [], []
    for comp in components:
        # gzip first: a third larger than xz, but it decompresses three times faster (0.17 s against 0.49 s
        # for bookworm's main), which matters more on the LAN mirrors builders use
        for ext in (".gz", ".xz", ""):
            name = f"{comp}/binary-{arch}/Packages{ext}"
            if name in by_name:
                break
        else:
            key = "arch" if not any(n.startswith(f"{c}/binary-{arch}/") for n in by_name for c in components) \
                else "bootstrap.components"
            raise UnknownSuite(key, f"the mirror has no {comp}/binary-{arch} index for {suite}",
                               "check arch and bootstrap.components")
        sha, size = by_name[name]
        ids.append(sha)
        urls.append(f"{base}/{name}")
        names |= _cached_names(urls[-1], sha, ext, size)
    fields = tuple((k, release.fields[k].strip()) for k in RELEASE_FIELDS if k in release.fields)
    return Index(mirror, suite, arch, release.date, tuple(ids), frozenset(names), tuple(urls), fields,
                 signed_by=signers, keyring="" if unsigned else str(keyring()))


def _cached_names(url: str, sha256: str, ext: str, size: int | None = None) -> set[str]:
    """Package names of one Packages index; the names and the .deb checksums are cached by the index's sha256,
    and the index itself, decompressed, for debresolve."""
    cache = cache_dir() / "indexes"
    listing, debs = cache / f"{sha256}.names", cache / f"{sha256}.debs"
    if listing.exists() and debs.exists():
        return set(listing.read_text().split())
    log.info("reading the package index %s", url)
    data = _download_index(url, sha256, size)
    scan = None
    with contextlib.suppress(OSError):    # a cache that cannot be written: the index is read all the same
        cache.mkdir(parents=True, exist_ok=True)
        with _PlainIndex(cache, sha256) as sink:
            scan = _read_index(data, ext, sink)
        scan.lines.sort()
        write_atomic(debs, "".join(scan.lines))
        write_atomic(listing, "\n".join(sorted(scan.names)))
    if scan is None:
        scan = _read_index(data, ext, None)
    names = scan.names
    del scan, data
    give_back_memory()
    return names


def give_back_memory() -> None:
    """Return the heap's free memory to the system (glibc malloc_trim): reading a 50 MB index leaves the
    heap fragmented, and the build's peak memory would carry it to its end."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _read_index(data: bytes, ext: str, sink: "_PlainIndex | None") -> Scan:
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(ext)
    if opener:
        with opener(io.BytesIO(data)) as f:
            return _stream_scan(f, sink=sink)
    if sink is not None:
        sink.write(data)
    return _scan(data)


class _PlainIndex:
    """CACHE/indexes/SHA.Packages: a Packages index decompressed, with its own sha256 in SHA.Packages.sha256;
    written under a temp name, renamed when whole. Only the newest KEEP_PLAIN are kept (50 MB each)."""

    KEEP_PLAIN = 4

    def __init__(self, cache: Path, sha256: str):
        self.final = cache / f"{sha256}.Packages"
        self.tmp = cache / f".{sha256}.Packages.{os.getpid()}"
        self.h = hashlib.sha256()

    def __enter__(self) -> "_PlainIndex":
        self.f = open(self.tmp, "wb")
        return self

    def write(self, block: bytes) -> None:
        self.f.write(block)
        self.h.update(block)

    def __exit__(self, et, ev, tb) -> None:
        self.f.close()
        if et is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            return
        write_atomic(self.final.with_name(self.final.name + ".sha256"), self.h.hexdigest() + "\n")
        os.rename(self.tmp, self.final)
        plain = sorted(self.final.parent.glob("*.Packages"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in plain[self.KEEP_PLAIN:]:
            for q in (old, old.with_name(old.name + ".sha256")):
                with contextlib.suppress(OSError):
                    q.unlink()


def deb_checksums(index: Index, only: set[str] | None = None) -> dict[str, tuple[str, int]]:
    """archive_name -> (sha256, size) of every .deb the index lists (from the cache fetch_index filled), or of
    those named in only."""
    out: dict[str, tuple[str, int]] = {}
    for sha in index.ids:
        path = cache_dir() / "indexes" / f"{sha}.debs"
        with contextlib.suppress(OSError), open(path) as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if only is None or name in only:
                    h, size = rest.split()
                    out[name] = (h, int(size))
    return out


def _download_index(url: str, sha256: str, size: int | None = None) -> bytes:
    try:
        return net.get_verified(url, "sha256", sha256, size, **_HINTS)
    except net.Mismatch:
        raise MirrorError(f"{url}: checksum differs from the Release file", "the mirror may be syncing; retry"
                          ) from None


def packages_text(index: Index) -> bytes | bytearray:
    """The whole Packages index (every component, decompressed), after a newline: from the cache, checked
    against its sha256, or downloaded again (and checked against the Release file). One suite's is 50 MB, so
    the kept file is read straight into its place."""
    parts: list[bytes | bytearray] = []
    for sha, url in zip(index.ids, index.urls):
        path = cache_dir() / "indexes" / f"{sha}.Packages"
        data: bytes | bytearray = b""
        with contextlib.suppress(OSError):
            want = path.with_name(path.name + ".sha256").read_text().strip()
            buf = bytearray(path.stat().st_size + 1)
            buf[0] = 10
            with open(path, "rb") as f:
                f.readinto(memoryview(buf)[1:])
            if hashlib.sha256(memoryview(buf)[1:]).hexdigest() == want:
                data = buf
        if not data:
            raw = _download_index(url, sha)
            ext = next((e for e in (".gz", ".xz") if url.endswith(e)), "")
            plain = {".xz": lzma.decompress, ".gz": gzip.decompress}.get(ext, bytes)(raw)
            with contextlib.suppress(OSError), _PlainIndex(path.parent, sha) as sink:
                sink.write(plain)
            data = b"\n" + plain
        parts.append(data)
    if len(parts) == 1 and parts[0].endswith(b"\n"):
        return parts[0]
    return b"".join(p.rstrip(b"\n") + b"\n" for p in parts)

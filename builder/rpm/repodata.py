"""yum/dnf repository metadata: repomd.xml, primary (packages and their dependencies) and comps (groups).

fetch_repo() reads BASE/repodata/repomd.xml, downloads the primary and comps files it lists, checks each against
the checksum repomd gives (sha256, sha1 or CentOS 5's "sha", sha512, md5), keeps them in a cache directory named
by that checksum and parses them. repomd.xml itself is always fetched: it is what says whether the repo changed.

primary is streamed (iterparse, each <package> cleared once read): CentOS 7's is ~100 MB of XML. Only what a
depsolver needs is kept: name, EVR, arch, location, checksum, size, provides, requires and the file list that
primary carries (/etc/*, */bin/*; the full lists are in filelists.xml, which is not read).
"""
from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from builder.core import net
from builder.core.errors import BuilderError, MirrorError

if TYPE_CHECKING:
    import requests

log = logging.getLogger("imgbuild")

_REPO = "{http://linux.duke.edu/metadata/repo}"
_COMMON = "{http://linux.duke.edu/metadata/common}"
_RPM = "{http://linux.duke.edu/metadata/rpm}"
_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# repomd checksum type -> hashlib name
HASHES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
          "sha512": "sha512", "md5": "md5"}
COMPRESSED = (".gz", ".xz", ".bz2", ".zst", ".zck")
COMPS_TYPES = ("group_gz", "group_xz", "group")  # the first one repomd lists is used


@dataclass(frozen=True, slots=True)
class Dep:
    """One provides/requires entry."""

    name: str
    flags: str | None = None      # EQ LT LE GT GE, or None for "any version"
    epoch: str | None = None
    ver: str | None = None
    rel: str | None = None
    pre: bool = False

    def __str__(self) -> str:
        if not self.flags or self.ver is None:
            return self.name
        evr = self.ver
        if self.epoch and self.epoch != "0":
            evr = f"{self.epoch}:{evr}"
        if self.rel:
            evr = f"{evr}-{self.rel}"
        return f"{self.name} {_OPS.get(self.flags, self.flags)} {evr}"


_OPS = {"EQ": "=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}


@dataclass(frozen=True)
class Package:
    name: str
    arch: str
    epoch: int
    version: str
    release: str
    location: str         # href relative to base_url
    checksum_type: str    # as repodata says: sha256, sha1, sha (= sha1), md5
    checksum: str
    size: int             # size of the .rpm file
    provides: tuple[Dep, ...]
    requires: tuple[Dep, ...]
    files: tuple[str, ...]  # the file list primary carries, for file dependencies
    repo: str
    base_url: str         # no trailing slash

    @property
    def evr(self) -> tuple[int, str, str]:
        return (self.epoch, self.version, self.release)

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.location}"

    def __str__(self) -> str:
        return self.nevra


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    mandatory: tuple[str, ...]
    default: tuple[str, ...]
    optional: tuple[str, ...]   # optional and conditional packages


@dataclass(frozen=True)
class Repo:
    id: str
    base_url: str
    packages: tuple[Package, ...]
    groups: dict[str, Group]    # by group id
    revision: str               # checksum of the primary file: changes whenever the package set does
    timestamp: int = 0          # when primary was generated (repomd.xml), for SOURCE_DATE_EPOCH

    def __str__(self) -> str:
        return f"{self.id} ({self.base_url})"


# ------------------------------------------------------------------ parsing


def _xml_error(what: str, e: ET.ParseError) -> MirrorError:
    line = e.position[0] if getattr(e, "position", None) else "?"
    reason = str(e).split(":", 1)[0]
    return MirrorError(f"{what}: malformed XML at line {line}: {reason}",
                       "the mirror may be syncing or serving an error page; retry or use another mirror")


def _decompress_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, EOFError, lzma.LZMAError]
    zstd = sys.modules.get("zstandard")
    if zstd is not None:
        errs.append(zstd.ZstdError)
    return tuple(errs)


def parse_primary(fileobj: IO[bytes], repo_id: str, base_url: str, what: str | None = None) -> list[Package]:
    """Packages of a primary.xml (an uncompressed binary stream), in file order.

    Raises MirrorError naming the file (`what`, else fileobj.name when it has one) and the line on malformed XML."""
    what = what or str(getattr(fileobj, "name", "primary.xml"))
    base_url = base_url.rstrip("/")
    name_t, arch_t, version_t, checksum_t = (_COMMON + t for t in ("name", "arch", "version", "checksum"))
    size_t, location_t, format_t, file_t, package_t = (_COMMON + t for t in
                                                         ("size", "location", "format", "file", "package"))
    provides_t, requires_t = _RPM + "provides", _RPM + "requires"
    deps: dict[tuple, Dep] = {}   # one Dep object per distinct entry: most requires repeat across packages
    intern = sys.intern

    def dep_list(parent: ET.Element) -> tuple[Dep, ...]:
        out = []
        for e in parent:
            a = e.attrib
            key = (a.get("name"), a.get("flags"), a.get("epoch"), a.get("ver"), a.get("rel"),
                   a.get("pre") in ("1", "true"))
            d = deps.get(key)
            if d is None:
                if key[0] is None:
                    continue
                d = deps[key] = Dep(intern(key[0]), key[1], key[2], key[3], key[4], key[5])
            out.append(d)
        return tuple(out)

    packages: list[Package] = []
    root = None
    try:
        for event, elem in ET.iterparse(fileobj, events=("start", "end")):
            if event == "start":
                if root is None:
                    root = elem
                continue
            if elem.tag != package_t:
                continue
            f: dict = {"provides": (), "requires": (), "files": [], "base": base_url}
            for child in elem:
                tag = child.tag
                if tag == name_t:
                    f["name"] = child.text
                elif tag == arch_t:
                    f["arch"] = child.text
                elif tag == version_t:
                    f["evr"] = child.attrib
                elif tag == checksum_t:
                    f["checksum"] = (child.get("type"), child.text)
                elif tag == size_t:
                    f["size"] = child.get("package")
                elif tag == location_t:
                    f["location"] = child.get("href")
                    if child.get(_XML_BASE):
                        f["base"] = child.get(_XML_BASE).rstrip("/")
                elif tag == format_t:
                    for sub in child:
                        if sub.tag == file_t:
                            if sub.text:
                                f["files"].append(sub.text)
                        elif sub.tag == provides_t:
                            f["provides"] = dep_list(sub)
                        elif sub.tag == requires_t:
                            f["requires"] = dep_list(sub)
            packages.append(_package(f, len(packages) + 1, repo_id, what))
            elem.clear()
            root.clear()
    except ET.ParseError as e:
        raise _xml_error(what, e) from None
    except _decompress_errors() as e:
        raise MirrorError(f"{what}: cannot read: {e}", "the cached or downloaded file is damaged; retry") from None
    return packages


def _package(f: dict, n: int, repo_id: str, what: str) -> Package:
    for key in ("name", "arch", "evr", "location"):
        if not f.get(key):
            raise MirrorError(f"{what}: package #{n} ({f.get('name') or 'unnamed'}) has no {key}",
                              "the repository metadata is broken; tell its maintainers")
    evr = f["evr"]
    ctype, csum = f.get("checksum", ("", ""))
    try:
        epoch = int(evr.get("epoch") or 0)
        size = int(f.get("size") or 0)
    except ValueError:
        raise MirrorError(f"{what}: package #{n} ({f['name']}) has a non-numeric epoch or size",
                          "the repository metadata is broken; tell its maintainers") from None
    return Package(
        name=sys.intern(f["name"]), arch=sys.intern(f["arch"]), epoch=epoch, version=evr.get("ver") or "",
        release=evr.get("rel") or "", location=f["location"], checksum_type=ctype or "", checksum=csum or "",
        size=size, provides=f["provides"], requires=f["requires"], files=tuple(f["files"]), repo=repo_id,
        base_url=f["base"])


def parse_comps(fileobj: IO[bytes], what: str | None = None) -> dict[str, Group]:
    """Groups of a comps.xml (an uncompressed binary stream), by id; errors name `what` (else fileobj.name)."""
    what = what or str(getattr(fileobj, "name", "comps.xml"))
    try:
        root = ET.parse(fileobj).getroot()
    except ET.ParseError as e:
        raise _xml_error(what, e) from None
    except _decompress_errors() as e:
        raise MirrorError(f"{what}: cannot read: {e}", "the cached or downloaded file is damaged; retry") from None
    groups: dict[str, Group] = {}
    for g in root.iter("group"):
        gid = (g.findtext("id") or "").strip()
        if not gid:
            continue
        name = next(((n.text or "").strip() for n in g.findall("name") if not n.get(_XML_LANG)), gid)
        lists: dict[str, list[str]] = {"mandatory": [], "default": [], "optional": []}
        for req in g.iter("packagereq"):
            pkg = (req.text or "").strip()
            kind = req.get("type", "mandatory")
            if pkg:
                lists.get(kind, lists["optional"]).append(pkg)   # conditional: only with another package
        groups[gid] = Group(gid, name, tuple(lists["mandatory"]), tuple(lists["default"]),
                            tuple(lists["optional"]))
    return groups


# ------------------------------------------------------------------ fetching


@dataclass(frozen=True)
class _Data:
    """One <data> entry of repomd.xml."""

    type: str
    checksum_type: str
    checksum: str
    location: str
    timestamp: int = 0


def _parse_repomd(raw: bytes, url: str) -> dict[str, _Data]:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        raise _xml_error(url, e) from None
    out = {}
    for d in root.iter(_REPO + "data"):
        cs = d.find(_REPO + "checksum")
        loc = d.find(_REPO + "location")
        if cs is None or loc is None or not loc.get("href") or not (cs.text or "").strip():
            continue
        ts = (d.findtext(_REPO + "timestamp") or "").strip().split(".")[0]
        out[d.get("type", "")] = _Data(d.get("type", ""), (cs.get("type") or "").lower(), cs.text.strip().lower(),
                                       loc.get("href"), int(ts) if ts.isdigit() else 0)
    return out


def _hints(url: str) -> dict[str, str]:
    return {"hint": "check the repository's base URL and the network",
            "status_hint": "the base URL must be the directory that holds repodata/" if url.endswith("/repomd.xml")
            else "the mirror may be syncing; retry, or use another mirror"}


def _cached(session: "requests.Session", base_url: str, data: _Data, cache_dir: Path) -> Path:
    """The verified local copy of one metadata file: from the cache, or downloaded into it."""
    url = f"{base_url}/{data.location}"
    algo = HASHES.get(data.checksum_type)
    if algo is None:
        raise MirrorError(f"{base_url}/repodata/repomd.xml: unknown checksum type {data.checksum_type!r} "
                          f"for {data.location}", f"known types: {', '.join(HASHES)}")
    name = Path(data.location).name
    ext = next((e for e in COMPRESSED if name.endswith(e)), "")
    path = cache_dir / f"{data.checksum}-{data.type}{ext}"
    if path.exists():
        if net.file_digest(path, algo) == data.checksum:
            log.debug("cached: %s (%s)", url, path)
            return path
        log.warning("cached %s does not match its checksum; fetching it again", path)
        path.unlink(missing_ok=True)
    log.info("reading %s", url)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        net.download(url, path, algo, data.checksum, session=session, **_hints(url))
    except OSError as e:
        raise BuilderError(f"cannot write the metadata cache {cache_dir}: {e.strerror}",
                           "check the cache directory's permissions and free space") from None
    except net.Mismatch as e:
        raise MirrorError(f"{url}: checksum mismatch ({data.checksum_type}): repomd.xml says {data.checksum}, "
                          f"the file has {e.actual}", "the mirror may be syncing; retry, or use another mirror"
                          ) from None
    return path


def _open(path: Path, what: str) -> IO[bytes]:
    """A metadata file, decompressed by its extension."""
    ext = path.suffix
    if ext == ".gz":
        return gzip.open(path, "rb")
    if ext == ".xz":
        return lzma.open(path, "rb")
    if ext == ".bz2":
        return bz2.open(path, "rb")
    if ext == ".zst":
        try:
            import zstandard
        except ImportError:
            raise MirrorError(f"{what} is zstd-compressed and the Python module zstandard is not installed",
                              "install it into imgbuild's environment: pip install zstandard") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True,
                                                           closefd=True)
    if ext == ".zck":
        raise MirrorError(f"{what} is zchunk-compressed, which imgbuild cannot read",
                          "use a mirror that also publishes gz or xz metadata")
    return open(path, "rb")


def fetch_repo(repo_id: str, base_url: str, cache_dir: Path, session: "requests.Session | None" = None
               ) -> Repo:
    """Read a repository's metadata: packages from primary, groups from comps (when the repo has one)."""
    base = base_url.rstrip("/")
    cache_dir = Path(cache_dir)
    own = session is None
    s = session or net.open_session()
    try:
        repomd_url = f"{base}/repodata/repomd.xml"
        entries = _parse_repomd(net.get(repomd_url, session=s, **_hints(repomd_url)), repomd_url)
        primary = entries.get("primary")
        if primary is None:
            raise MirrorError(f"{repomd_url} lists no primary metadata",
                              "the base URL must be a yum/dnf repository (the directory that holds repodata/)")
        url = f"{base}/{primary.location}"
        with _open(_cached(s, base, primary, cache_dir), url) as f:
            packages = parse_primary(f, repo_id, base, url)
        groups: dict[str, Group] = {}
        comps = next((entries[t] for t in COMPS_TYPES if t in entries), None)
        if comps is not None:
            url = f"{base}/{comps.location}"
            with _open(_cached(s, base, comps, cache_dir), url) as f:
                groups = parse_comps(f, url)
        log.debug("%s: %d packages, %d groups", repo_id, len(packages), len(groups))
        return Repo(repo_id, base, tuple(packages), groups, primary.checksum, primary.timestamp)
    finally:
        if own:
            s.close()

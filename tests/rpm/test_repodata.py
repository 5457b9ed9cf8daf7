"""Repository metadata: parsing hand-written and createrepo_c-made XML, fetching over HTTP with the cache.

The real repositories are made here: tiny RPMs built by rpmbuild from generated specs (in a temp _topdir, with a
temp HOME so the host's ~/.rpmmacros is never read or touched), indexed by createrepo_c, served by http.server on
127.0.0.1. test_resolve.py imports the helpers.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from builder.core.errors import MirrorError
from builder.rpm.repodata import Dep, Package, fetch_repo, parse_comps, parse_primary
from tests.support import TEST_DATA

DATA = TEST_DATA / "rpm"


def need(*programs: str) -> None:
    for p in programs:
        if not shutil.which(p):
            pytest.skip(f"{p} is not installed (apt-get install rpm createrepo-c)")


# ------------------------------------------------------------------ building real packages and repos


@dataclass
class Spec:
    name: str
    version: str = "1.0"
    release: str = "1"
    epoch: int | None = None
    arch: str = "x86_64"         # noarch -> BuildArch: noarch; anything else is the rpmbuild --target
    requires: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)   # path -> content
    post: bool = False            # a %post scriptlet: rpmbuild adds Requires(post): /bin/sh

    def text(self) -> str:
        lines = [f"Name: {self.name}", f"Version: {self.version}", f"Release: {self.release}",
                 f"Summary: {self.name} for the imgbuild tests", "License: MIT", "AutoReqProv: no"]
        if self.epoch is not None:
            lines.append(f"Epoch: {self.epoch}")
        if self.arch == "noarch":
            lines.append("BuildArch: noarch")
        lines += [f"Requires: {r}" for r in self.requires]
        lines += [f"Provides: {p}" for p in self.provides]
        lines += ["%define debug_package %{nil}", "%description", f"{self.name} test package", "%install"]
        for path, content in self.files.items():
            lines.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
            lines.append(f"printf '%s\\n' '{content}' > %{{buildroot}}{path}")
        if self.post:
            lines += ["%post", "true"]
        lines += ["%files", *self.files]
        return "\n".join(lines) + "\n"


def rpmbuild(specs: list[Spec], work: Path) -> dict[str, Path]:
    """Build the specs; file name of each RPM -> its path."""
    need("rpmbuild")
    top, home = work / "top", work / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    for spec in specs:
        path = work / f"{spec.name}-{spec.version}-{spec.arch}.spec"
        path.write_text(spec.text())
        argv = ["rpmbuild", "-bb", "--nodeps", "--quiet", "--define", f"_topdir {top}",
                "--define", "_build_id_links none", str(path)]
        if spec.arch != "noarch":
            argv[2:2] = ["--target", spec.arch]
        r = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"rpmbuild failed for {spec.name}:\n{r.stdout}\n{r.stderr}"
    return {p.name: p for p in (top / "RPMS").glob("*/*.rpm")}


def createrepo(repo: Path, *args: str) -> None:
    need("createrepo_c")
    r = subprocess.run(["createrepo_c", "-q", "--no-database", *args, str(repo)], check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def make_repo(dest: Path, rpms: list[Path], *args: str, comps: str | None = None) -> Path:
    (dest / "Packages").mkdir(parents=True, exist_ok=True)
    for p in rpms:
        shutil.copy(p, dest / "Packages" / p.name)
    if comps is not None:
        (dest.parent / f"{dest.name}-comps.xml").write_text(comps)
        args = (*args, "-g", str(dest.parent / f"{dest.name}-comps.xml"))
    createrepo(dest, *args)
    return dest


def repomd_entry(repo: Path, dtype: str) -> dict[str, str]:
    """checksum type, checksum and location of one data type, read from repomd.xml with a regex (independently
    of the code under test)."""
    text = (repo / "repodata" / "repomd.xml").read_text()
    block = re.search(rf'<data type="{dtype}">(.*?)</data>', text, re.DOTALL).group(1)
    m = re.search(r'<checksum type="([^"]+)">([0-9a-f]+)</checksum>', block)
    return {"type": m.group(1), "checksum": m.group(2), "href": re.search(r'href="([^"]+)"', block).group(1)}


# the packages both test modules use: a file dependency on /bin/sh (from %post), versioned requires, an epoch,
# noarch packages, a package nothing needs, one with requirements nobody meets, a rich dependency
BASE_SPECS = [
    Spec("tinysh", files={"/bin/sh": "#!tiny", "/usr/share/doc/tinysh/README": "doc"}),
    Spec("libtiny", "1.5", "3", epoch=2, provides=["libtiny.so.1()(64bit)"],
         files={"/usr/lib64/libtiny.so.1": "lib"}),
    Spec("tinyapp", requires=["libtiny >= 2:1.2", "libtiny.so.1()(64bit)", "tinydata"], post=True,
         files={"/usr/bin/tinyapp": "app", "/etc/tinyapp.conf": "conf"}),
    Spec("tinydata", "0.9", arch="noarch", files={"/usr/share/tinydata/data": "0.9"}),
    Spec("lonely", arch="noarch", files={"/usr/share/lonely": "alone"}),
    Spec("needy", requires=["libtiny >= 3:0", "ghost-lib"], files={"/usr/bin/needy": "needy"}),
    Spec("pinned", arch="noarch", requires=["tinydata = 0.9-1"], files={"/usr/share/pinned": "pin"}),
    Spec("richy", arch="noarch", requires=["(nosuchthing or tinydata)"], files={"/usr/share/richy": "rich"}),
]
UPDATES_SPECS = [Spec("tinydata", "1.0", arch="noarch", files={"/usr/share/tinydata/data": "1.0"})]
COMPS = """<?xml version="1.0" encoding="UTF-8"?>
<comps>
  <group><id>core</id><name>Core</name>
    <packagelist>
      <packagereq type="mandatory">tinyapp</packagereq>
      <packagereq type="default">lonely</packagereq>
      <packagereq type="optional">needy</packagereq>
    </packagelist>
  </group>
  <group><id>minimal</id><name>Minimal Install</name>
    <packagelist>
      <packagereq type="mandatory">tinysh</packagereq>
      <packagereq type="mandatory">not-in-any-repo</packagereq>
    </packagelist>
  </group>
</comps>
"""


def build_repos(work: Path, variants: bool = True) -> dict[str, Path]:
    """The served tree: base (with comps) and updates; with variants also the base packages as a sha1 repo, a
    CentOS-5-style "sha" repo, and repos with xz and bz2 compressed metadata."""
    rpms = rpmbuild(BASE_SPECS, work / "base-build")
    newer = rpmbuild(UPDATES_SPECS, work / "updates-build")
    www = work / "www"
    base = list(rpms.values())
    out = {"www": www, "base": make_repo(www / "base", base, comps=COMPS),
           "updates": make_repo(www / "updates", list(newer.values()))}
    if variants:
        out["sha1"] = make_repo(www / "sha1", base, "-s", "sha1")
        out["sha"] = make_repo(www / "sha", base, "-s", "sha")
        out["xz"] = make_repo(www / "xz", base, "--general-compress-type", "xz")
        out["bz2"] = make_repo(www / "bz2", base, "--general-compress-type", "bz2")
    return out


class Server:
    """http.server on 127.0.0.1 in a thread, serving a directory; .paths lists every path requested."""

    def __init__(self, root: Path):
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                paths.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def count(self, fragment: str) -> int:
        return sum(fragment in p for p in self.paths)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return build_repos(tmp_path_factory.mktemp("rpmrepos"))


@pytest.fixture(scope="module")
def server(repos):
    srv = Server(repos["www"])
    yield srv
    srv.stop()


def sha(path: Path, algo: str = "sha256") -> str:
    return hashlib.new(algo, path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ hand-written XML


def test_parse_primary_reads_every_field():
    with open(DATA / "primary.xml", "rb") as f:
        pkgs = parse_primary(f, "base", "http://mirror.example/centos/7/os/x86_64/")
    assert [p.name for p in pkgs] == ["bash", "tzdata", "shadow-utils"]
    bash, tz, shadow = pkgs
    assert (bash.arch, bash.epoch, bash.version, bash.release) == ("x86_64", 0, "4.2.46", "34.el7")
    assert bash.nevra == "bash-4.2.46-34.el7.x86_64"
    assert bash.location == "Packages/bash-4.2.46-34.el7.x86_64.rpm"
    assert bash.url == "http://mirror.example/centos/7/os/x86_64/Packages/bash-4.2.46-34.el7.x86_64.rpm"
    assert bash.base_url == "http://mirror.example/centos/7/os/x86_64"
    assert (bash.checksum_type, bash.size, bash.repo) == ("sha256", 1037976, "base")
    assert bash.checksum.startswith("8c4e0ec2")
    assert Dep("/bin/sh") in bash.provides
    assert Dep("bash", "EQ", "0", "4.2.46", "34.el7") in bash.provides
    assert bash.requires[0] == Dep("filesystem", "GE", "0", "3")
    assert bash.requires[1] == Dep("filesystem", "GE", "0", "3", pre=True)
    assert Dep("rpmlib(BuiltinLuaScripts)", "LE", "0", "4.2.2-1", pre=True) in bash.requires
    assert bash.files == ("/etc/skel/.bash_logout", "/etc/skel/.bashrc", "/usr/bin/bash", "/etc/skel",
                          "/usr/bin/sh-ghost")
    # checksum types as the metadata says them; xml:base moves a package to another server
    assert (tz.checksum_type, tz.arch, tz.requires, tz.files) == ("sha", "noarch", (), ())
    assert tz.url == "http://vault.example.org/centos/7.8.2003/updates/x86_64/Packages/tzdata-2020a-1.el7.noarch.rpm"
    assert shadow.epoch == 2 and shadow.nevra == "shadow-utils-2:4.6-5.el7.x86_64"
    assert shadow.checksum_type == "md5"
    assert str(bash.requires[0]) == "filesystem >= 3"
    assert str(Dep("libtiny", "GE", "2", "1.2")) == "libtiny >= 2:1.2"


def test_parse_primary_shares_identical_deps():
    """One Dep object per distinct entry: CentOS 7's 10,000 packages repeat the same requires thousands of times."""
    xml = (DATA / "primary.xml").read_bytes().replace(b'<rpm:entry name="setup"/>',
                                                      b'<rpm:entry name="libtinfo.so.5()(64bit)"/>')
    bash, _, shadow = parse_primary(io.BytesIO(xml), "base", "http://m")
    assert shadow.requires[0] == Dep("libtinfo.so.5()(64bit)")
    assert shadow.requires[0] is bash.requires[3]
    assert bash.requires[0] != bash.requires[1]   # the same but for pre=1: two entries


def test_parse_primary_malformed_names_file_and_line(tmp_path):
    text = (DATA / "primary.xml").read_text().splitlines()
    text[9] = "  <description>an & unescaped ampersand</description>"
    bad = tmp_path / "broken-primary.xml"
    bad.write_text("\n".join(text))
    with open(bad, "rb") as f, pytest.raises(MirrorError) as e:
        parse_primary(f, "base", "http://m")
    assert str(bad) in str(e.value)
    assert "line 10" in str(e.value)
    assert e.value.hint


def test_parse_primary_truncated_and_incomplete():
    data = (DATA / "primary.xml").read_bytes()
    with pytest.raises(MirrorError, match=r"primary\.xml: malformed XML at line \d+"):
        parse_primary(io.BytesIO(data[: len(data) // 2]), "base", "http://m")
    no_arch = data.replace(b"<arch>noarch</arch>", b"")
    with pytest.raises(MirrorError, match=r"package #2 \(tzdata\) has no arch"):
        parse_primary(io.BytesIO(no_arch), "base", "http://m")


def test_parse_primary_empty_repo():
    xml = b'<metadata xmlns="http://linux.duke.edu/metadata/common" packages="0"></metadata>'
    assert parse_primary(io.BytesIO(xml), "empty", "http://m") == []


def test_parse_comps():
    with open(DATA / "comps.xml", "rb") as f:
        groups = parse_comps(f)
    assert sorted(groups) == ["core", "development"]
    core = groups["core"]
    assert core.name == "Core"   # not the translation
    assert core.mandatory == ("basesystem", "bash", "coreutils")   # no type: mandatory
    assert core.default == ("tuned",)
    assert core.optional == ("tboot", "NetworkManager-team")
    dev = groups["development"]
    assert (dev.name, dev.mandatory, dev.default) == ("Development Tools", (), ("gcc",))


def test_parse_comps_malformed():
    with pytest.raises(MirrorError, match=r"comps\.xml: malformed XML at line 3"):
        parse_comps(io.BytesIO(b"<comps>\n<group>\n<id>x</i>\n</group></comps>"))


# ------------------------------------------------------------------ real metadata from createrepo_c


def real_packages(repo: Path) -> dict[str, Package]:
    href = repomd_entry(repo, "primary")["href"]
    with gzip.open(repo / href) as f:
        return {p.name: p for p in parse_primary(f, "base", "http://127.0.0.1/base/")}


def test_parse_real_primary(repos):
    pkgs = real_packages(repos["base"])
    assert sorted(pkgs) == sorted(s.name for s in BASE_SPECS)
    app, lib, data, sh = pkgs["tinyapp"], pkgs["libtiny"], pkgs["tinydata"], pkgs["tinysh"]
    assert Dep("/bin/sh", pre=True) in app.requires          # from %post
    assert Dep("libtiny", "GE", "2", "1.2") in app.requires
    assert Dep("libtiny.so.1()(64bit)") in app.requires
    assert Dep("tinydata") in app.requires
    assert "/etc/tinyapp.conf" in app.files and "/usr/bin/tinyapp" in app.files
    assert "/bin/sh" in sh.files
    assert "/usr/share/doc/tinysh/README" not in sh.files    # primary carries only /etc/*, */bin/* and such
    assert (lib.epoch, lib.version, lib.release, lib.nevra) == (2, "1.5", "3", "libtiny-2:1.5-3.x86_64")
    assert Dep("libtiny", "EQ", "2", "1.5", "3") in lib.provides
    assert Dep("libtiny.so.1()(64bit)") in lib.provides
    assert data.arch == "noarch" and data.epoch == 0
    assert Dep("(nosuchthing or tinydata)") in pkgs["richy"].requires
    for p in pkgs.values():
        rpm = repos["base"] / p.location
        assert rpm.is_file(), p.location
        assert p.size == rpm.stat().st_size
        assert (p.checksum_type, p.checksum) == ("sha256", sha(rpm))
        assert p.url == f"http://127.0.0.1/base/{p.location}"


def test_fetch_repo_over_http(repos, server, tmp_path):
    repo = fetch_repo("base", server.url + "/base/", tmp_path / "cache")
    assert (repo.id, repo.base_url) == ("base", server.url + "/base")
    assert sorted(p.name for p in repo.packages) == sorted(s.name for s in BASE_SPECS)
    assert repo.revision == repomd_entry(repos["base"], "primary")["checksum"]
    assert sorted(repo.groups) == ["core", "minimal"]
    assert repo.groups["core"].mandatory == ("tinyapp",)
    assert repo.groups["minimal"].name == "Minimal Install"
    # every package URL works and serves the file its checksum describes
    app = next(p for p in repo.packages if p.name == "tinyapp")
    body = requests.get(app.url, timeout=10).content
    assert hashlib.sha256(body).hexdigest() == app.checksum and len(body) == app.size


def test_fetch_repo_caches_by_checksum(repos, server, tmp_path):
    cache = tmp_path / "cache"
    primary = repomd_entry(repos["base"], "primary")
    before = server.count(primary["href"])
    first = fetch_repo("base", server.url + "/base", cache)
    assert server.count(primary["href"]) == before + 1
    cached = sorted(p.name for p in cache.iterdir())
    assert any(n.startswith(primary["checksum"]) for n in cached)
    assert not any(n.startswith(".part-") for n in cached)
    # again: repomd.xml is read, primary and comps come from the cache
    repomd = server.count("/base/repodata/repomd.xml")
    second = fetch_repo("base", server.url + "/base", cache)
    assert server.count(primary["href"]) == before + 1
    assert server.count("/base/repodata/repomd.xml") == repomd + 1
    assert second == first
    # a cached file that no longer matches its checksum is thrown away and fetched again
    entry = next(p for p in cache.iterdir() if p.name.startswith(primary["checksum"]))
    entry.write_bytes(b"garbage")
    third = fetch_repo("base", server.url + "/base", cache)
    assert server.count(primary["href"]) == before + 2
    assert third == first
    assert sha(entry) == primary["checksum"]


def test_fetch_repo_checksum_mismatch(repos, server, tmp_path):
    bad = tmp_path / "www"
    shutil.copytree(repos["base"], bad / "bad")
    primary = repomd_entry(bad / "bad", "primary")
    path = bad / "bad" / primary["href"]
    data = gzip.decompress(path.read_bytes()).replace(b"tinyapp", b"evilapp")
    path.write_bytes(gzip.compress(data))
    actual = sha(path)
    srv = Server(bad)
    try:
        with pytest.raises(MirrorError) as e:
            fetch_repo("bad", srv.url + "/bad", tmp_path / "cache")
    finally:
        srv.stop()
    msg = str(e.value)
    assert primary["href"] in msg and "checksum mismatch" in msg
    assert primary["checksum"] in msg and actual in msg
    # the bad download never lands in the cache
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_repo_unreachable(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/centos/7/os/x86_64"
    with pytest.raises(MirrorError) as e:
        fetch_repo("base", url, tmp_path / "cache")
    assert f"{url}/repodata/repomd.xml" in str(e.value)
    assert "ConnectionError" in str(e.value)
    assert e.value.hint
    assert not (tmp_path / "cache").exists()


def test_fetch_repo_http_error_names_status(server, tmp_path):
    with pytest.raises(MirrorError) as e:
        fetch_repo("base", server.url + "/no-such-repo", tmp_path / "cache")
    assert f"{server.url}/no-such-repo/repodata/repomd.xml: HTTP 404" in str(e.value)
    assert "repodata/" in e.value.hint


@pytest.mark.parametrize("kind", ["sha1", "sha"])
def test_fetch_repo_sha1_checksums(repos, server, tmp_path, kind):
    entry = repomd_entry(repos[kind], "primary")
    assert entry["type"] == kind and len(entry["checksum"]) == 40
    repo = fetch_repo(kind, f"{server.url}/{kind}", tmp_path / "cache")
    assert repo.revision == entry["checksum"]
    assert len(repo.packages) == len(BASE_SPECS)
    for p in repo.packages:
        assert p.checksum_type == kind
        assert p.checksum == sha(repos[kind] / p.location, "sha1")
    # the cached copy is checked with sha1 too: a second run reads nothing but repomd.xml
    n = server.count(entry["href"])
    fetch_repo(kind, f"{server.url}/{kind}", tmp_path / "cache")
    assert server.count(entry["href"]) == n


@pytest.mark.parametrize("kind", ["xz", "bz2"])
def test_fetch_repo_other_compressions(repos, server, tmp_path, kind):
    entry = repomd_entry(repos[kind], "primary")
    assert entry["href"].endswith(f".xml.{kind}")
    repo = fetch_repo(kind, f"{server.url}/{kind}", tmp_path / "cache")
    assert sorted(p.name for p in repo.packages) == sorted(s.name for s in BASE_SPECS)
    assert repo.groups == {}   # no comps in these repos


def test_fetch_repo_zstd(tmp_path):
    """zstd needs the optional zstandard module: without it, a clear error that says how to get it.

    (Debian 12's createrepo_c cannot write zstd: the zstd program compresses a hand-made primary.)"""
    need("zstd")
    xml = (DATA / "primary.xml").read_bytes()
    zst = subprocess.run(["zstd", "-q", "-c"], input=xml, capture_output=True, check=True).stdout
    www = tmp_path / "www"
    _handmade_repo(www / "zst", zst, ext=".zst")
    srv = Server(www)
    try:
        try:
            import zstandard  # noqa: F401 - only whether it is installed
        except ImportError:
            with pytest.raises(MirrorError, match="primary.xml.zst is zstd-compressed") as e:
                fetch_repo("zst", srv.url + "/zst", tmp_path / "cache")
            assert "pip install zstandard" in e.value.hint
        else:
            repo = fetch_repo("zst", srv.url + "/zst", tmp_path / "cache")
            assert [p.name for p in repo.packages] == ["bash", "tzdata", "shadow-utils"]
    finally:
        srv.stop()


def _handmade_repo(root: Path, primary: bytes, repomd: str | None = None, ext: str = ".gz") -> None:
    """A repo with only repomd.xml and primary (gzip-compressed here unless ext says it already is)."""
    (root / "repodata").mkdir(parents=True)
    data = gzip.compress(primary) if ext == ".gz" else primary
    (root / "repodata" / f"primary.xml{ext}").write_bytes(data)
    if repomd is None:
        repomd = ('<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo">\n'
                  f'<data type="primary"><checksum type="sha256">{hashlib.sha256(data).hexdigest()}</checksum>'
                  f'<location href="repodata/primary.xml{ext}"/></data>\n</repomd>\n')
    (root / "repodata" / "repomd.xml").write_text(repomd)


def test_fetch_repo_malformed_xml(tmp_path):
    www = tmp_path / "www"
    lines = (DATA / "primary.xml").read_text().splitlines()
    lines[20] = '    <rpm:header-range start=4504 end="46548"/>'   # an unquoted attribute, on line 21
    _handmade_repo(www / "badxml", "\n".join(lines).encode())
    _handmade_repo(www / "badrepomd", b"", repomd="<html>\n<body>\n<p>Mirror down<br></body></html>\n")
    _handmade_repo(www / "noprimary", b"", repomd='<repomd xmlns="http://linux.duke.edu/metadata/repo"/>')
    srv = Server(www)
    try:
        with pytest.raises(MirrorError) as e:
            fetch_repo("badxml", srv.url + "/badxml", tmp_path / "cache")
        assert f"{srv.url}/badxml/repodata/primary.xml.gz: malformed XML at line " in str(e.value)
        assert "line 21:" in str(e.value)
        with pytest.raises(MirrorError, match=r"badrepomd/repodata/repomd\.xml: malformed XML at line 3"):
            fetch_repo("badrepomd", srv.url + "/badrepomd", tmp_path / "cache")
        with pytest.raises(MirrorError, match="lists no primary"):
            fetch_repo("noprimary", srv.url + "/noprimary", tmp_path / "cache")
    finally:
        srv.stop()


def test_fetch_repo_uses_the_given_session(server, tmp_path):
    seen = []
    with requests.Session() as s:
        s.hooks["response"].append(lambda r, *a, **k: seen.append(r.url))
        fetch_repo("updates", server.url + "/updates", tmp_path / "cache", session=s)
    assert seen[0] == f"{server.url}/updates/repodata/repomd.xml"
    assert any("primary.xml" in u for u in seen)

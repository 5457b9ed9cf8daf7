"""The el_repo fixture (tests/support/rpmrepo.py) is a real, signed, dnf-installable EL-like distribution.

Checked with the real tools: rpm reads payloads, signatures and metadata; createrepo_c's repodata matches the files;
dnf installs comps groups from the served URL with gpgcheck on and picks the newer package from the updates repo;
and the negative cases (wrong key, missing dependency, corrupted download) fail the way tests of imgbuild rely on.
"""
from __future__ import annotations

import configparser
import gzip
import os
import stat
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support.rpmrepo import (
    KEY_NAME,
    TMP_PREFIX,
    DnfRoot,
    corrupt_copy,
    port_is_closed,
    primary_packages,
    serve,
    sha256_file,
    throwaway_public_key,
)

ALL_OS = {"testos-release", "testos-base", "testos-tools", "testos-net", "testos-extra", "testos-broken"}


def rpm_q(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    """rpm with a private HOME and database: Debian's rpm creates ~/.rpmdb even for `rpm -qp`."""
    home = tmp_path / "rpmhome"
    home.mkdir(exist_ok=True)
    cmd = ["rpm", "--dbpath", str(tmp_path / "rpmdb"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={"PATH": os.environ["PATH"], "HOME": str(home), "LC_ALL": "C"})


def extract(rpm: Path, dest: Path) -> Path:
    """Unpack an rpm's payload with rpm2cpio | cpio (no root needed)."""
    dest.mkdir(parents=True)
    p1 = subprocess.Popen(["rpm2cpio", str(rpm)], stdout=subprocess.PIPE)
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], stdin=p1.stdout, cwd=dest, check=True,
                   timeout=60)
    p1.stdout.close()
    assert p1.wait(timeout=60) == 0
    return dest


def repomd_types(repo_dir: Path) -> dict[str, str]:
    ns = {"r": "http://linux.duke.edu/metadata/repo"}
    root = ET.parse(repo_dir / "repodata" / "repomd.xml").getroot()
    return {d.get("type"): d.find("r:location", ns).get("href") for d in root.findall("r:data", ns)}


def dump(tmp_path: Path, rpm: Path) -> dict[str, list[str]]:
    """rpm --dump: path -> [size, mtime, digest, mode, owner, group, isconfig, isdoc, rdev, symlink]."""
    r = rpm_q(tmp_path, "-qp", "--dump", rpm)
    assert r.returncode == 0, r.stderr
    return {f[0]: f[1:] for f in (line.split() for line in r.stdout.splitlines())}


# ------------------------------------------------------------------------------------------- the repository
def test_layout_is_a_vault_mirror(el_repo):
    os_dir, upd = el_repo.repo_dir("os"), el_repo.repo_dir("updates")
    assert os_dir == el_repo.root / "6" / "os" / "x86_64" and upd == el_repo.root / "6" / "updates" / "x86_64"
    assert {p.name for p in (os_dir / "Packages").iterdir()} == {
        "testos-release-6-1.noarch.rpm", "testos-base-1.0-1.x86_64.rpm", "testos-tools-2.0-1.x86_64.rpm",
        "testos-net-1.0-1.noarch.rpm", "testos-extra-1.0-1.noarch.rpm", "testos-broken-1.0-1.noarch.rpm"}
    assert [p.name for p in (upd / "Packages").iterdir()] == ["testos-tools-2.1-1.x86_64.rpm"]
    assert set(el_repo.packages) == ALL_OS and set(el_repo.updates) == {"testos-tools"}
    assert all(path.is_file() for _, _, path in el_repo.packages.values())
    types = repomd_types(os_dir)
    assert {"primary", "filelists", "other", "group", "group_gz"} <= set(types)
    assert "group" not in repomd_types(upd)
    assert el_repo.key_path == os_dir / KEY_NAME
    assert el_repo.key_path.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (el_repo.releasever, el_repo.arch) == ("6", "x86_64")
    assert len(el_repo.key_id) == 16 and el_repo.fingerprint.endswith(el_repo.key_id)


def test_build_is_fast_and_leaves_nothing_behind(el_repo):
    assert el_repo.build_seconds < 20, el_repo.build_seconds
    prefix = f"{TMP_PREFIX}{os.getpid()}-"
    assert [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix)] == []
    live_agents = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "gpg-agent" in cmd and prefix in cmd and state != "Z":
            live_agents.append(cmd)
    assert live_agents == []


def test_primary_checksums_and_versions_match_the_files(el_repo):
    for repo, entries in (("os", el_repo.packages), ("updates", el_repo.updates)):
        d = el_repo.repo_dir(repo)
        prim = primary_packages(d)
        assert {(v["name"], v["version"], v["release"]) for v in prim.values()} == {
            (n, ver, rel) for n, (ver, rel, _) in entries.items()}
        for href, meta in prim.items():
            assert meta["checksum_type"] == "sha256"
            assert sha256_file(d / href) == meta["checksum"], href
            assert (d / href).stat().st_size == meta["size"]


def test_updates_repo_holds_the_newer_tools(el_repo):
    assert el_repo.packages["testos-tools"][:2] == ("2.0", "1")
    assert el_repo.updates["testos-tools"][:2] == ("2.1", "1")
    assert el_repo.newest("testos-tools")[:2] == ("2.1", "1")
    assert el_repo.newest("testos-base")[:2] == ("1.0", "1")
    prim = primary_packages(el_repo.repo_dir("updates"))
    assert [(m["name"], m["version"]) for m in prim.values()] == [("testos-tools", "2.1")]


def test_comps_groups(el_repo):
    d = el_repo.repo_dir("os")
    raw = (d / repomd_types(d)["group_gz"]).read_bytes()
    comps = ET.fromstring(gzip.decompress(raw))
    groups = {g.findtext("id"): g for g in comps.findall("group")}
    assert set(groups) == {"core", "base"}
    reqs = {gid: {r.text: r.get("type") for r in g.iter("packagereq")} for gid, g in groups.items()}
    assert reqs == {"core": {"testos-base": "mandatory", "testos-tools": "mandatory"},
                    "base": {"testos-net": "mandatory", "testos-extra": "default"}}
    assert reqs == el_repo.group_types
    assert el_repo.groups == {"core": ["testos-base", "testos-tools"], "base": ["testos-net", "testos-extra"]}
    for g in groups.values():
        assert g.findtext("uservisible") == "true" and g.findtext("name")
    # The uncompressed copy says the same.
    assert ET.parse(d / repomd_types(d)["group"]).getroot().find("group/id").text == "core"


def test_payload_compressors(el_repo, tmp_path):
    seen = {}
    for rpm in el_repo.rpms():
        r = rpm_q(tmp_path, "-qp", "--nosignature", "--qf", "%{PAYLOADCOMPRESSOR}", rpm)
        assert r.returncode == 0, r.stderr
        seen[rpm.name] = r.stdout
    assert seen == el_repo.payloads == {
        "testos-release-6-1.noarch.rpm": "gzip", "testos-base-1.0-1.x86_64.rpm": "gzip",
        "testos-broken-1.0-1.noarch.rpm": "gzip", "testos-tools-2.0-1.x86_64.rpm": "xz",
        "testos-extra-1.0-1.noarch.rpm": "xz", "testos-tools-2.1-1.x86_64.rpm": "zstd",
        "testos-net-1.0-1.noarch.rpm": "zstd"}
    assert not (tmp_path / "rpmhome" / ".rpmdb").exists()


def test_signatures_verify_with_the_shipped_key_only(el_repo, tmp_path):
    rpms = el_repo.rpms()
    r = rpm_q(tmp_path, "--checksig", *rpms)
    assert r.returncode != 0 and r.stdout.count("SIGNATURES NOT OK") == len(rpms)      # not yet trusted
    assert "NOKEY" in rpm_q(tmp_path, "--checksig", "-v", rpms[0]).stdout
    assert rpm_q(tmp_path, "--import", el_repo.key_path).returncode == 0
    r = rpm_q(tmp_path, "--checksig", *rpms)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("digests signatures OK") == len(rpms)
    for rpm in rpms:   # both the v4 header signature and the v3 header+payload one (as on real EL6 packages)
        r = rpm_q(tmp_path, "-qp", "--qf", "%{RSAHEADER:pgpsig}|%{SIGPGP:pgpsig}", rpm)
        v4, v3 = r.stdout.split("|")
        assert el_repo.key_id.lower() in v4 and el_repo.key_id.lower() in v3, r.stdout


def test_package_dependencies(el_repo, tmp_path):
    def q(name, what, repo="os"):
        pkgs = el_repo.packages if repo == "os" else el_repo.updates
        r = rpm_q(tmp_path, "-qp", "--nosignature", f"--{what}", pkgs[name][2])
        assert r.returncode == 0, r.stderr
        return set(r.stdout.splitlines())

    tools_req = q("testos-tools", "requires")
    assert {"testos-base >= 1.0", "/bin/sh"} <= tools_req
    assert "testos-toolkit = 2.0" in q("testos-tools", "provides")
    assert "testos-toolkit = 2.1" in q("testos-tools", "provides", "updates")
    assert "config(testos-tools) = 2.0-1" in q("testos-tools", "provides")
    assert {"testos-tools", "testos-toolkit >= 2"} <= q("testos-net", "requires")
    assert {"system-release = 6", "testos-release = 6"} <= q("testos-release", "provides")
    assert "does-not-exist-anywhere" in q("testos-broken", "requires")
    assert not any(r.startswith(("testos-", "does-not")) for r in q("testos-extra", "requires"))
    assert "/bin/sh" in q("testos-base", "list")          # the file that satisfies tools' file dependency


def test_package_files(el_repo, tmp_path):
    base = dump(tmp_path, el_repo.packages["testos-base"][2])
    assert base["/bin/sh"][3] == "0100755" and base["/bin/sh"][2] == base["/bin/busybox"][2]  # a copy
    assert base["/bin/ls"][3] == "0120777" and base["/bin/ls"][-1] == "busybox"
    assert base["/tmp"][3] == "041777" and base["/etc/shadow"][3] == "0100000"
    tools = dump(tmp_path, el_repo.packages["testos-tools"][2])
    assert tools["/usr/bin/sutool"][3:6] == ["0104755", "root", "root"]
    assert tools["/var/lib/testos/owned"][3:6] == ["0100640", "daemonuser", "daemongrp"]
    assert tools["/usr/bin/tool-link"][3] == "0120777" and tools["/usr/bin/tool-link"][-1] == "tool"
    assert tools["/usr/lib/testos/a"][2] == tools["/usr/lib/testos/b"][2]
    r = rpm_q(tmp_path, "-qp", "--nosignature", "--qf", "[%{FILENAMES}|%{FILEFLAGS:fflags}|%{FILENLINKS}\n]",
              el_repo.packages["testos-tools"][2])
    flags = {f[0]: f[1:] for f in (line.split("|") for line in r.stdout.splitlines())}
    assert "g" in flags["/var/lib/testos/state"][0]                       # %ghost
    assert "c" in flags["/etc/testos/tools.conf"][0]                      # %config
    assert flags["/usr/lib/testos/a"][1] == flags["/usr/lib/testos/b"][1] == "2"   # one hardlink set
    r = rpm_q(tmp_path, "-qp", "--nosignature", "--scripts", el_repo.updates["testos-tools"][2])
    assert "echo 2.1 > /var/lib/testos/post-ran" in r.stdout


def test_base_files(el_repo, tmp_path):
    tree = extract(el_repo.packages["testos-base"][2], tmp_path / "x")
    assert (tree / "bin/sh").read_bytes() == Path("/bin/busybox").read_bytes()
    assert "daemonuser:x:321:654:" in (tree / "etc/passwd").read_text()
    assert "daemongrp:x:654:" in (tree / "etc/group").read_text()
    assert (tree / "etc/shadow").read_text().startswith("root:*:")


def test_release_package_repo_file_and_key(el_repo, tmp_path):
    tree = extract(el_repo.packages["testos-release"][2], tmp_path / "x")
    assert (tree / "etc/pki/rpm-gpg" / KEY_NAME).read_bytes() == el_repo.key_path.read_bytes()
    text = (tree / "etc/yum.repos.d/testos.repo").read_text()
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    assert cp.sections() == ["base", "updates", "extras"]
    for sid, repo, enabled in (("base", "os", "1"), ("updates", "updates", "1"), ("extras", "extras", "0")):
        s = cp[sid]
        assert s["mirrorlist"] == \
            f"http://mirrorlist.testos.invalid/?release=$releasever&arch=$basearch&repo={repo}"
        assert "baseurl" not in s
        assert (s["gpgcheck"], s["enabled"]) == ("1", enabled)
        assert s["gpgkey"] == f"file:///etc/pki/rpm-gpg/{KEY_NAME}"
        assert f"#baseurl=http://mirror.testos.invalid/testos/$releasever/{repo}/$basearch/\n" in text


def test_corrupt_copy_differs_only_in_checksum(el_repo, tmp_path):
    copy = corrupt_copy(el_repo, tmp_path / "bad")
    rel = el_repo.relpath("testos-extra")
    bad, good = copy / rel, el_repo.root / rel
    assert bad.stat().st_size == good.stat().st_size
    prim = primary_packages(copy / "6/os/x86_64")
    meta = prim[str(Path(*rel.parts[3:]))]
    assert sha256_file(good) == meta["checksum"]            # the original is untouched
    assert sha256_file(bad) != meta["checksum"]
    r = subprocess.run(["sha256sum", "-c", "-"], input=f"{meta['checksum']}  {bad}\n", capture_output=True,
                       text=True)
    assert r.returncode != 0 and "FAILED" in r.stdout
    for href, m in prim.items():                             # every other package still matches
        if not href.endswith(bad.name):
            assert sha256_file(copy / "6/os/x86_64" / href) == m["checksum"]


def test_serve_is_local_and_stops(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "hello.txt").write_text("hi\n")
    log = []
    with serve(tmp_path / "d", log=log) as url:
        assert url.startswith("http://127.0.0.1:")
        assert [t for t in threading.enumerate() if t.name == f"rpmrepo-http-{url.rsplit(':', 1)[1]}"]
        assert urllib.request.urlopen(url + "/hello.txt", timeout=10).read() == b"hi\n"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/missing", timeout=10)
        assert e.value.code == 404
    assert log == [("GET", "/hello.txt", 200), ("GET", "/missing", 404)]
    assert not [t for t in threading.enumerate() if t.name.startswith("rpmrepo-http-") and
                t.name.endswith(url.rsplit(":", 1)[1])]
    assert port_is_closed(url)


def test_throwaway_key_is_another_key(el_repo):
    fpr, armored = throwaway_public_key()
    assert fpr.upper() != el_repo.fingerprint and armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")


# ---------------------------------------------------------------------------------------- dnf, really installing
@pytest.fixture
def dnfroot(el_repo, tmp_path) -> DnfRoot:
    return DnfRoot(el_repo, tmp_path / "root", tmp_path / "work")


@pytest.mark.root
def test_dnf_installs_groups_with_gpgcheck(el_repo, dnfroot):
    root = dnfroot.root
    assert dnfroot.import_key().returncode == 0
    log = []
    with serve(el_repo.root, log=log) as url:
        r = dnfroot.dnf("install", "@core", "@base", "testos-release", url=url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dnfroot.installed() == {"testos-release-6-1.noarch", "testos-base-1.0-1.x86_64",
                                   "testos-tools-2.1-1.x86_64", "testos-net-1.0-1.noarch",
                                   "testos-extra-1.0-1.noarch"}
    # newest wins: tools came from updates, the older one was never fetched
    fetched = [p for m, p, code in log if p.endswith(".rpm") and code == 200]
    assert "/6/updates/x86_64/Packages/testos-tools-2.1-1.x86_64.rpm" in fetched
    assert not [p for p in fetched if "testos-tools-2.0" in p]
    # the database is where EL keeps it, not at ~/.rpmdb inside the root
    assert (root / "var/lib/rpm").is_dir() and not list(root.rglob(".rpmdb"))
    r = dnfroot.rpm("-q", "gpg-pubkey")
    assert r.stdout.startswith(f"gpg-pubkey-{el_repo.short_key_id}-"), r.stdout
    # scriptlet ran chrooted with busybox's /bin/sh
    assert (root / "var/lib/testos/post-ran").read_text() == "2.1\n"
    st = (root / "usr/bin/sutool").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (0, 0)
    st = (root / "var/lib/testos/owned").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (321, 654)
    assert os.readlink(root / "usr/bin/tool-link") == "tool"
    a, b = (root / "usr/lib/testos/a").lstat(), (root / "usr/lib/testos/b").lstat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert stat.S_IMODE((root / "tmp").lstat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "etc/shadow").lstat().st_mode) == 0
    assert not (root / "var/lib/testos/state").exists()                     # %ghost is not installed
    assert (root / "etc/pki/rpm-gpg" / KEY_NAME).read_bytes() == el_repo.key_path.read_bytes()
    # the tree is exactly what the packages say
    v = dnfroot.rpm("-Va")
    assert v.returncode == 0, v.stdout + v.stderr
    r = subprocess.run(["chroot", str(root), "/usr/bin/tool"], capture_output=True, text=True, timeout=30)
    assert r.stdout == "testos tool 2.1\n", r.stderr
    # dnf finds the release version from the installed testos-release
    r = dnfroot.run("/usr/bin/python3", "-c", f"import dnf.rpm; print(dnf.rpm.detect_releasever({str(root)!r}))")
    assert r.stdout.strip() == "6", r.stderr


@pytest.mark.root
def test_dnf_upgrades_from_the_updates_repo(dnfroot):
    assert dnfroot.import_key().returncode == 0
    r = dnfroot.dnf("install", "testos-tools", repos=("os",))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "testos-tools-2.0-1.x86_64" in dnfroot.installed()
    assert (dnfroot.root / "var/lib/testos/post-ran").read_text() == "2.0\n"
    r = dnfroot.dnf("upgrade")
    assert r.returncode == 0, r.stdout + r.stderr
    assert dnfroot.installed() == {"testos-base-1.0-1.x86_64", "testos-tools-2.1-1.x86_64"}
    assert (dnfroot.root / "var/lib/testos/post-ran").read_text() == "2.1\n"


@pytest.mark.root
def test_dnf_refuses_packages_signed_by_another_key(dnfroot, tmp_path):
    other = tmp_path / "other.asc"
    other.write_text(throwaway_public_key()[1])
    assert dnfroot.import_key(other).returncode == 0
    r = dnfroot.dnf("install", "testos-extra")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Public key for testos-extra-1.0-1.noarch.rpm is not installed" in out and "GPG check FAILED" in out, out
    assert dnfroot.installed() == set()


@pytest.mark.root
def test_dnf_imports_the_key_from_gpgkey_url(el_repo, dnfroot):
    r = dnfroot.dnf("install", "testos-extra", gpgkey=el_repo.key_url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert el_repo.fingerprint[-8:] in (r.stdout + r.stderr).replace(" ", "")
    assert dnfroot.installed() == {"testos-extra-1.0-1.noarch"}


@pytest.mark.root
def test_dnf_reports_the_missing_dependency(dnfroot):
    assert dnfroot.import_key().returncode == 0
    r = dnfroot.dnf("install", "testos-broken")
    assert r.returncode != 0
    assert "nothing provides does-not-exist-anywhere needed by testos-broken-1.0-1.noarch" in r.stdout + r.stderr
    assert dnfroot.installed() == set()


@pytest.mark.root
def test_dnf_rejects_the_corrupted_package(el_repo, dnfroot, tmp_path):
    copy = corrupt_copy(el_repo, tmp_path / "bad")
    assert dnfroot.import_key().returncode == 0
    with serve(copy) as url:
        r = dnfroot.dnf("install", "testos-extra", url=url, repos=("os",))
    out = r.stdout + r.stderr
    expected = primary_packages(copy / "6/os/x86_64")["Packages/testos-extra-1.0-1.noarch.rpm"]["checksum"]
    assert r.returncode != 0
    assert "checksum doesn't match" in out and f"Expected: {expected}(sha256)" in out, out
    assert dnfroot.installed() == set()

"""EL builds for real, with the `imgbuild` console script, against the signed "testos" 6 repository that the el_repo
fixture serves on 127.0.0.1 (tests/support/rpmrepo.py): both EL methods (the host's dnf, and rpm-native), the tree they
make, the seeded repo files, the rpm database and manifest, the network files, and the errors before and during
the bootstrap (each leaving no output, no work directory and nothing bad in the package cache)."""
from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import imgbuild, mounts_under, sha256
from tests.support import REPO
from tests.support.rpmrepo import KEY_NAME, primary_packages, serve

METHODS = ["dnf", "rpm-native"]
NAME = "el6"
INSTALLED = {"testos-release": "6-1", "testos-base": "1.0-1", "testos-tools": "2.1-1", "testos-net": "1.0-1"}


def write_recipe(tmp_path: Path, mirror: str, method: str, **bootstrap) -> Path:
    data = {
        "name": NAME, "distro": "centos", "release": "6", "hostname": "vm0",
        "bootstrap": {"method": method, "mirror": mirror, "release_package": "testos-release", "groups": ["core"],
                      "packages": ["testos-net"], **bootstrap},
        "network": {"eth0": {"address": "10.0.3.2/24", "gateway": "10.0.3.1", "mac": "00:16:3e:00:03:02"}},
        "targets": {"tarball": {}},
    }
    path = tmp_path / "el6.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Build:
    """One imgbuild run: its result, output directory, kept tree, package cache and HOME."""

    def __init__(self, tmp: Path, recipe: Path, *args: str):
        self.out, self.cache, self.home = tmp / "out", tmp / "cache", tmp / "home"
        self.home.mkdir()
        env = dict(os.environ, IMGBUILD_CACHE=str(self.cache), HOME=str(self.home))
        self.recipe, self.env = recipe, env
        self.result = imgbuild(recipe, "-o", self.out, "--keep-tree", *args, env=env, timeout=300)
        self.final, self.tree = self.out / NAME, self.out / f"{NAME}.rootfs"

    @property
    def stderr(self) -> str:
        return self.result.stderr

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


def host_rpm(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    """The host's rpm on the root's database, with a private HOME (Debian's rpm would use ~/.rpmdb otherwise)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home), "LC_ALL": "C"}
    return subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def assert_cache_sound(cache: Path) -> None:
    """Every file in the package and metadata caches is whole: named by its checksum, with that checksum; no
    temporary (dot) files are left."""
    rpms = cache / "el" / "rpms"
    for f in rpms.iterdir() if rpms.is_dir() else ():
        m = re.fullmatch(r"sha256-([0-9a-f]{64})\.rpm", f.name)
        assert m, f"unexpected file in the package cache: {f.name}"
        assert sha256(f) == m.group(1), f"{f.name} does not have the checksum it is named by"
    meta = cache / "el" / "repodata"
    for f in meta.iterdir() if meta.is_dir() else ():
        m = re.fullmatch(r"([0-9a-f]{64})-\w+\.(gz|xz|bz2|zst)", f.name)
        assert m, f"unexpected file in the metadata cache: {f.name}"
        assert sha256(f) == m.group(1), f.name


def assert_nothing_left(b: Build) -> None:
    """A failed build: no output (OUT itself may be there, empty), no work or partial directory, no mounts."""
    if b.out.exists():
        assert sorted(os.listdir(b.out)) == [], sorted(os.listdir(b.out))
    assert mounts_under(b.out.parent) == []
    assert_cache_sound(b.cache)


# ------------------------------------------------------------------ a successful build, both methods


@pytest.fixture(scope="module", params=METHODS)
def built(request, el_repo, tmp_path_factory) -> Build:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp = tmp_path_factory.mktemp(f"el-{request.param}")
    b = Build(tmp, write_recipe(tmp, f"{el_repo.url}/6", request.param))
    b.method = request.param
    assert b.result.returncode == 0, b.stderr
    return b


@pytest.mark.root
@pytest.mark.slow
def test_build_succeeds(built):
    assert built.result.stdout.strip().splitlines()[-1] == str(built.final)
    assert f"==> bootstrap ({built.method} centos 6 x86_64)" in built.stderr
    assert sorted(os.listdir(built.out)) == [f".{NAME}.rootfs.imgbuild", NAME, f"{NAME}.rootfs"]   # no .work, .partial
    assert sorted(os.listdir(built.final)) == ["SHA256SUMS", "el6.spdx.json", "el6.tar.zst", "manifest.json"]
    assert mounts_under(built.out) == []
    m = json.loads((built.final / "manifest.json").read_text())
    assert (m["distro"], m["release"], m["arch"]) == ("centos", "6", "x86_64")
    assert m["bootstrap"]["method"] == built.method
    assert not [line for line in built.stderr.splitlines() if line.startswith(("error:", "warning:"))], built.stderr


@pytest.mark.root
@pytest.mark.slow
def test_a_rebuild_goes_on_above_the_cache_entry(built, tmp_path):
    """The first build kept its bootstrap and went on above it (its --keep-tree copied out of the overlay); a
    rebuild checks the entry and goes on above it too, without making the tree again: the same tarball."""
    first = json.loads((built.final / "manifest.json").read_text())["bootstrap"]["cache"]
    assert first.startswith("miss, kept as ") and first.endswith(" (overlay)"), first
    assert (built.tree / "etc/sysconfig/network").exists() and not os.path.ismount(built.tree)
    r = imgbuild(built.recipe, "-o", tmp_path / "again", env=built.env, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "again" / NAME / "manifest.json").read_text())
    assert m["bootstrap"]["cache"] == "hit " + first.split()[3] + " (overlay)", m["bootstrap"]["cache"]
    assert sha256(tmp_path / "again" / NAME / "el6.tar.zst") == sha256(built.final / "el6.tar.zst")
    assert mounts_under(tmp_path) == []


@pytest.mark.root
@pytest.mark.slow
def test_build_leaves_the_callers_home_alone(built):
    """Debian's rpm and dnf keep their database in ~/.rpmdb unless told otherwise: a build must not create one
    in the HOME of whoever runs it."""
    assert sorted(os.listdir(built.home)) == []


@pytest.mark.root
@pytest.mark.slow
def test_files_modes_and_owners(built):
    t = built.tree
    sutool = (t / "usr/bin/sutool").lstat()
    assert stat.S_ISREG(sutool.st_mode) and stat.S_IMODE(sutool.st_mode) == 0o4755
    assert (sutool.st_uid, sutool.st_gid) == (0, 0)
    assert (t / "usr/bin/sutool").read_text() == '#!/bin/sh\necho "testos sutool 2.1"\n'
    tool = (t / "usr/bin/tool").lstat()
    assert stat.S_IMODE(tool.st_mode) == 0o755 and (t / "usr/bin/tool").read_text().endswith('tool 2.1"\n')
    owned = (t / "var/lib/testos/owned").lstat()
    assert stat.S_IMODE(owned.st_mode) == 0o640 and (owned.st_uid, owned.st_gid) == (321, 654)
    assert (t / "usr/bin/tool-link").is_symlink() and os.readlink(t / "usr/bin/tool-link") == "tool"
    a, b = (t / "usr/lib/testos/a").lstat(), (t / "usr/lib/testos/b").lstat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (t / "usr/lib/testos/b").read_text() == "hardlinked data 2.1\n"
    assert not os.path.lexists(t / "var/lib/testos/state")                 # %ghost: never installed
    assert (t / "etc/testos/tools.conf").read_text().startswith("# testos-tools 2.1 ")
    assert (t / "etc/testos/net.conf").read_text() == "# testos-net\nhostname=testos\n"
    assert stat.S_IMODE((t / "tmp").lstat().st_mode) == 0o1777
    assert stat.S_IMODE((t / "etc/shadow").lstat().st_mode) == 0
    assert os.readlink(t / "etc/system-release") == "testos-release"
    assert not (t / "usr/share/testos").exists()                            # testos-extra was not asked for


@pytest.mark.root
@pytest.mark.slow
def test_post_scriptlet_ran_for_the_newest_version(built):
    """testos-tools 2.0 (os) and 2.1 (updates): the newest across repos is installed, and its %post ran."""
    assert (built.tree / "var/lib/testos/post-ran").read_text() == "2.1\n"


@pytest.mark.root
@pytest.mark.slow
def test_seeded_repo_files_point_at_the_mirror(built, el_repo):
    d = built.tree / "etc/yum.repos.d"
    assert sorted(p.name for p in d.iterdir()) == ["testos.repo"]            # no .rpmnew/.rpmorig left
    text = (d / "testos.repo").read_text()
    assert not re.search(r"(?m)^\s*#?\s*(mirrorlist|metalink)\s*=", text), text
    cp = configparser.RawConfigParser(interpolation=None)
    cp.read_string(text)
    assert cp.sections() == ["base", "updates", "extras"]
    for sec in cp.sections():
        assert not cp.has_option(sec, "mirrorlist") and not cp.has_option(sec, "metalink")
        url = cp[sec]["baseurl"]
        assert url.startswith(f"{el_repo.url}/6/"), url
        assert "$" not in url, url
        assert cp[sec]["gpgkey"].strip() == f"file:///etc/pki/rpm-gpg/{KEY_NAME}"
    assert cp["base"]["baseurl"].rstrip("/") == el_repo.baseurl("os").rstrip("/")
    assert cp["updates"]["baseurl"].rstrip("/") == el_repo.baseurl("updates").rstrip("/")
    assert [cp[s]["enabled"] for s in cp.sections()] == ["1", "1", "0"]     # as the release package has them
    assert all(cp[s]["gpgcheck"] == "1" for s in cp.sections())


@pytest.mark.root
@pytest.mark.slow
def test_gpg_key_is_in_the_root(built, el_repo):
    key = built.tree / "etc/pki/rpm-gpg" / KEY_NAME
    assert key.read_bytes() == el_repo.key_path.read_bytes()


@pytest.mark.root
@pytest.mark.slow
def test_rpm_database_and_manifest_agree(built, tmp_path):
    home = tmp_path / "home"
    r = host_rpm(built.tree, home, "-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n")
    assert r.returncode == 0, r.stderr
    assert not (home / ".rpmdb").exists()
    rows = [line.split() for line in r.stdout.splitlines()]
    installed = {n: v for n, v, _ in rows if n != "gpg-pubkey"}
    assert installed == INSTALLED
    assert {n: a for n, _, a in rows if n != "gpg-pubkey"} == {"testos-release": "noarch", "testos-base": "x86_64",
                                                                "testos-tools": "x86_64", "testos-net": "noarch"}
    manifest = json.loads((built.final / "manifest.json").read_text())
    assert manifest["packages"] == installed
    # the database knows the files too (rpm -V would be useless otherwise)
    r = host_rpm(built.tree, home, "-qf", "/usr/bin/sutool")
    assert r.returncode == 0 and r.stdout.strip() == "testos-tools-2.1-1.x86_64", r.stdout + r.stderr


@pytest.mark.root
@pytest.mark.slow
def test_network_files(built):
    net = (built.tree / "etc/sysconfig/network").read_text().splitlines()
    assert "HOSTNAME=vm0" in net and "NETWORKING=yes" in net
    ifcfg = dict(line.split("=", 1) for line in
                 (built.tree / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text().splitlines())
    assert ifcfg["DEVICE"] == "eth0" and ifcfg["ONBOOT"] == "yes"
    assert ifcfg["BOOTPROTO"] in ("none", "static")
    assert (ifcfg["IPADDR"], ifcfg["NETMASK"], ifcfg["PREFIX"], ifcfg["GATEWAY"]) == \
        ("10.0.3.2", "255.255.255.0", "24", "10.0.3.1")
    assert ifcfg["HWADDR"].lower() == "00:16:3e:00:03:02"


@pytest.mark.root
@pytest.mark.slow
def test_root_gets_skel(built):
    skel = built.tree / "etc/skel"
    root = built.tree / "root"
    assert root.is_dir() and stat.S_IMODE(root.lstat().st_mode) == 0o550   # testos-base's %attr, kept
    if not skel.is_dir():
        # testos-base ships no /etc/skel, so there is nothing to copy here; copy_skel itself is tested on a
        # CentOS-shaped tree in tests/build/steps/test_el_steps.py
        assert os.listdir(root) == []
        return
    for f in skel.rglob("*"):
        rel = f.relative_to(skel)
        assert (root / rel).exists(), rel


@pytest.mark.root
@pytest.mark.slow
def test_package_cache(built, el_repo):
    assert_cache_sound(built.cache)
    rpms = {f.name for f in (built.cache / "el/rpms").iterdir()}
    sums = {}
    for repo in ("os", "updates"):
        for p in primary_packages(el_repo.repo_dir(repo)).values():
            sums[(p["name"], p["version"])] = f"sha256-{p['checksum']}.rpm"
    release = sums[("testos-release", "6")]
    if built.method == "rpm-native":     # every package went through imgbuild's own cache
        assert rpms == {release, sums[("testos-base", "1.0")], sums[("testos-tools", "2.1")],
                        sums[("testos-net", "1.0")]}
    else:                                # the release package (read before the build); dnf keeps its own
        assert rpms == {release}
        kept = sorted(p.name for p in (built.cache / "el/dnf").glob("**/packages/*.rpm"))
        assert kept == sorted(f"{n}-{v}.{a}.rpm" for n, v, a in
                              [("testos-base", "1.0-1", "x86_64"), ("testos-net", "1.0-1", "noarch"),
                               ("testos-release", "6-1", "noarch"), ("testos-tools", "2.1-1", "x86_64")])


# ------------------------------------------------------------------ gpgcheck


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_gpgcheck_false_warns(el_repo, tmp_path, method):
    b = Build(tmp_path, write_recipe(tmp_path, f"{el_repo.url}/6", method, gpgcheck=False))
    assert b.result.returncode == 0, b.stderr
    warnings = [line for line in b.stderr.splitlines() if line.startswith("warning: ")]
    assert any(re.search(r"signatures are not checked", w, re.IGNORECASE) for w in warnings), b.stderr
    assert (b.tree / "var/lib/testos/post-ran").read_text() == "2.1\n"


# ------------------------------------------------------------------ errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_missing_package(el_repo, tmp_path, method):
    b = Build(tmp_path, write_recipe(tmp_path, f"{el_repo.url}/6", method, packages=["testos-nett"]))
    assert b.result.returncode == 2, b.stderr
    [err] = b.error_lines()
    assert "bootstrap.packages" in err and "testos-nett" in err
    assert re.search(r"did you mean: [^;)]*\btestos-net\b", err), err
    for repo in ("os", "updates"):                       # the repos searched, by URL
        assert el_repo.baseurl(repo).rstrip("/") in err, err
    assert_nothing_left(b)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_missing_group(el_repo, tmp_path, method):
    b = Build(tmp_path, write_recipe(tmp_path, f"{el_repo.url}/6", method, groups=["core", "nosuchgroup"]))
    assert b.result.returncode == 2, b.stderr
    [err] = b.error_lines()
    assert "bootstrap.groups" in err and "nosuchgroup" in err
    assert "core" in err and "base" in err               # the groups there are
    assert_nothing_left(b)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_missing_dependency(el_repo, tmp_path, method):
    b = Build(tmp_path, write_recipe(tmp_path, f"{el_repo.url}/6", method, packages=["testos-broken"]))
    assert b.result.returncode == 2, b.stderr
    [err] = b.error_lines()
    assert "does-not-exist-anywhere" in err and "testos-broken" in err
    assert el_repo.baseurl("os").rstrip("/") in err
    assert_nothing_left(b)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_unreachable_mirror(tmp_path, method):
    mirror = f"http://127.0.0.1:{_closed_port()}/6"
    b = Build(tmp_path, write_recipe(tmp_path, mirror, method))
    assert b.result.returncode == 1, b.stderr
    [err] = b.error_lines()
    assert mirror in err, err
    assert_nothing_left(b)


@pytest.mark.root
@pytest.mark.slow
def test_bad_checksum_is_refused_and_not_cached(el_repo, tmp_path):
    copy = el_repo.corrupt_copy(tmp_path / "mirror", name="testos-extra")
    bad = copy / el_repo.relpath("testos-extra")
    href = str(el_repo.relpath("testos-extra").relative_to(Path("6/os/x86_64")))
    expected = primary_packages(el_repo.repo_dir("os"))[href]["checksum"]
    assert sha256(bad) != expected
    with serve(copy) as url:
        b = Build(tmp_path, write_recipe(tmp_path, f"{url}/6", "rpm-native", packages=["testos-net", "testos-extra"]))
    assert b.result.returncode == 1, b.stderr
    [err] = b.error_lines()
    assert f"{url}/6/os/x86_64/{href}" in err and "checksum" in err, err
    assert_nothing_left(b)
    rpms = b.cache / "el" / "rpms"
    names = sorted(os.listdir(rpms))
    assert f"sha256-{expected}.rpm" not in names
    assert not [n for n in names if n.startswith(".")], names            # no temporary download left
    assert sha256(bad) not in {hashlib.sha256((rpms / n).read_bytes()).hexdigest() for n in names}


# ------------------------------------------------------------------ reproducibility


@pytest.mark.root
@pytest.mark.slow
def test_epoch_comes_from_the_repositories_not_the_clock(el_repo, tmp_path):
    """SOURCE_DATE_EPOCH defaults to something the mirror says (as the Debian Release date does), so two builds of
    the same recipe against the same unchanged repos get the same epoch (and so the same file mtimes). (The
    tarballs still differ in /var/lib/rpm/rpmdb.sqlite, where rpm records install times.)"""
    recipe = write_recipe(tmp_path, f"{el_repo.url}/6", "rpm-native")
    epochs = []
    for n in (1, 2):
        (tmp_path / f"b{n}").mkdir()
        b = Build(tmp_path / f"b{n}", recipe)
        assert b.result.returncode == 0, b.stderr
        epochs.append(json.loads((b.final / "manifest.json").read_text())["source_date_epoch"])
        time.sleep(1.5)
    assert epochs[0] == epochs[1], f"the epoch follows the clock: {epochs}"


@pytest.mark.root
@pytest.mark.slow
def test_yum_method_through_a_yum_compatible_front_end(el_repo, tmp_path):
    """Debian 12 has no yum, so this runs the `yum` method's command line through dnf (which takes yum's options)
    under the name yum: what is verified is that imgbuild drives a host `yum` with options it accepts and that
    the root comes out the same. A real yum (on an EL host) is the case this cannot reproduce here."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "yum").write_text('#!/bin/sh\nexec dnf "$@"\n')
    (shim / "yum").chmod(0o755)
    recipe = write_recipe(tmp_path, f"{el_repo.url}/6", "yum")
    out, home = tmp_path / "out", tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, IMGBUILD_CACHE=str(tmp_path / "cache"), HOME=str(home),
               PATH=f"{shim}:{os.environ['PATH']}")
    r = imgbuild(recipe, "-o", out, "--keep-tree", "-v", env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "+ yum -y --installroot=" in r.stderr
    manifest = json.loads((out / NAME / "manifest.json").read_text())
    assert manifest["bootstrap"]["method"] == "yum"
    assert manifest["packages"] == INSTALLED
    assert (out / f"{NAME}.rootfs" / "var/lib/testos/post-ran").read_text().strip() == "2.1"


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_extra_repo_is_written_and_used(el_repo, tmp_path, method):
    """The release's updates repo turned off (repos: [base]) and served again as an extra repository: its newer
    testos-tools 2.1 is installed, signature-checked with the extra repo's own key."""
    extra = {"extra": {"baseurl": el_repo.baseurl("updates"), "gpgkey": el_repo.key_url, "name": "Extra"}}
    b = Build(tmp_path, write_recipe(tmp_path, f"{el_repo.url}/6", method, repos=["base"], extra_repos=extra))
    assert b.result.returncode == 0, b.stderr
    assert (b.tree / "var/lib/testos/post-ran").read_text() == "2.1\n"
    repo = (b.tree / "etc/yum.repos.d/imgbuild-extra.repo").read_text()
    assert f"baseurl={el_repo.baseurl('updates').rstrip('/')}" in repo and "gpgcheck=1" in repo
    assert "gpgkey=file:///etc/pki/rpm-gpg/imgbuild-extra.key" in repo
    assert (b.tree / "etc/pki/rpm-gpg/imgbuild-extra.key").read_bytes() == el_repo.key_path.read_bytes()


def test_extra_repos_are_checked_when_the_recipe_loads(tmp_path):
    from builder.build import recipe as recipe_mod
    from builder.core.errors import RecipeError

    p = write_recipe(tmp_path, "http://127.0.0.1:9/6", "rpm-native",
                     extra_repos={"a": {"baseurl": "not a url"}, "b": {"baseurl": "http://x/y"}})
    with pytest.raises(RecipeError) as e:
        recipe_mod.load(p)
    text = str(e.value)
    assert "bootstrap.extra_repos.a" in text and "give an http(s), ftp or file URL" in text
    assert "bootstrap.extra_repos.b" in text and "gpgcheck needs gpgkey" in text
    deb = tmp_path / "deb.yml"
    deb.write_text(f"extends: {REPO}/recipes/debian12.yml\n"
                   "bootstrap: {extra_repos: {x: {baseurl: 'http://x/y', gpgcheck: false}}}\n")
    with pytest.raises(RecipeError) as e:
        recipe_mod.load(deb)
    assert "bootstrap.extra_repos: is for rhel recipes, not debian" in str(e.value)

"""The default recipe built for real (session fixture `debian12_build`): outputs, manifest, the tarball as GNU tar
and Python's tarfile see it, and the kept tree. Plus a build whose hook gives a file a capability, and the tar
writer's own handling of capabilities, hardlinks and special files on a small tree."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEFAULT_RECIPE, imgbuild, mounts_under, sha256

# One line of `tar -tv`: mode, owner/group, size or "major,minor", date, time, name (with "-> x" / "link to x").
TV_LINE = re.compile(r"^(?P<mode>\S{10})\s+(?P<owner>[^/\s]+)/(?P<group>\S+)\s+"
                     r"(?:(?P<major>\d+),\s*(?P<minor>\d+)|(?P<size>\d+))\s+"
                     r"(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d) (?P<rest>.*)$")


# ---------------------------------------------------------------- helpers


def tv_listing(tarball: Path) -> dict[str, dict]:
    """GNU tar's verbose listing (no --numeric-owner: names in the archive would show), by entry name."""
    r = subprocess.run(["tar", "--zstd", "-tvf", str(tarball)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        m = TV_LINE.match(line)
        assert m, f"unparsable tar -tv line: {line!r}"
        d = m.groupdict()
        rest = d.pop("rest")
        if d["mode"][0] == "l":
            name, _, d["target"] = rest.partition(" -> ")
        elif d["mode"][0] == "h":
            name, _, d["target"] = rest.partition(" link to ")
        else:
            name = rest
        out[name.rstrip("/") or "."] = d
    return out


def tar_members(tarball: Path, want: tuple[str, ...] = ()) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    """Every member's header (Python's tarfile, streamed), and the data of the members named in `want`."""
    p = subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE)
    members, data = [], {}
    try:
        with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
            for m in tf:
                members.append(m)
                if m.name in want and m.isfile():
                    data[m.name] = tf.extractfile(m).read()
    finally:
        p.stdout.close()
        assert p.wait() == 0
    return members, data


def in_tree(tree: Path, inside: str) -> Path:
    return tree / inside.lstrip("/")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def out_dir(debian12_build: Path) -> Path:
    return debian12_build


@pytest.fixture(scope="module")
def tree(debian12_build: Path) -> Path:
    t = debian12_build.parent / "debian12.rootfs"
    assert t.is_dir()
    return t


@pytest.fixture(scope="module")
def manifest(debian12_build: Path) -> dict:
    return json.loads((debian12_build / "manifest.json").read_text())


@pytest.fixture(scope="module")
def tarball(debian12_build: Path) -> Path:
    return debian12_build / "debian12.tar.zst"


@pytest.fixture(scope="module")
def listing(tarball: Path) -> dict[str, dict]:
    return tv_listing(tarball)


WANT = ("./etc/hostname", "./etc/resolv.conf", "./etc/motd", "./etc/hello")


@pytest.fixture(scope="module")
def archive(tarball: Path) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    return tar_members(tarball, WANT)


def needs_build(f):
    """Marks of a test that uses a real build: root, the mirror, and time."""
    return pytest.mark.root(pytest.mark.network(pytest.mark.slow(f)))


# ---------------------------------------------------------------- outputs and manifest


@needs_build
def test_output_has_tarball_lxc_conf_and_manifest(out_dir: Path):
    assert sorted(p.name for p in out_dir.iterdir()) == ["SHA256SUMS", "debian12.spdx.json", "debian12.tar.zst",
                                                         "lxc.conf", "manifest.json"]
    for p in out_dir.iterdir():
        assert p.is_file() and p.stat().st_size > 0, p
    # nothing half-written or left over beside it (only the kept tree and the note that it is imgbuild's)
    assert sorted(p.name for p in out_dir.parent.iterdir()) == [".debian12.rootfs.imgbuild", "debian12",
                                                                 "debian12.rootfs"]
    conf = (out_dir / "lxc.conf").read_text()
    assert "lxc.uts.name = vm0" in conf
    assert "lxc.net.0.hwaddr = 00:16:3e:00:03:02" in conf


@needs_build
def test_manifest_artifacts_match_files(out_dir: Path, manifest: dict):
    arts = {a["path"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"debian12.tar.zst", "lxc.conf", "debian12.spdx.json"}
    assert {a["kind"] for a in manifest["artifacts"]} == {"tarball", "lxc-config", "sbom"}
    for name, a in arts.items():
        p = out_dir / name
        assert a["size"] == p.stat().st_size, name
        assert re.fullmatch(r"[0-9a-f]{64}", a["sha256"]), name
        assert a["sha256"] == sha256(p), name


@needs_build
def test_manifest_packages_match_the_tree(manifest: dict, tree: Path):
    pkgs = manifest["packages"]
    for p in ("systemd-sysv", "openssh-server", "ifupdown", "iproute2"):
        assert re.match(r"^(\d+:)?\d", pkgs.get(p, "")), f"{p}: {pkgs.get(p)!r}"
    # the host's dpkg-query reading the tree's own database agrees on every package and version
    r = subprocess.run(["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", "-f",
                        "${Package} ${Version} ${db:Status-Status}\n"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    installed = {}
    for line in r.stdout.splitlines():
        name, version, status = line.split(" ")
        if status == "installed":
            installed[name] = version
    assert pkgs == installed


@needs_build
def test_manifest_recipe_tools_timings(manifest: dict):
    from builder.build.recipe import load

    assert manifest["name"] == "debian12" and manifest["release"] == "bookworm" and manifest["hostname"] == "vm0"
    assert manifest["recipe"]["sha256"] == load(DEFAULT_RECIPE).sha256
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["recipe"]["sha256"])
    assert manifest["bootstrap"]["method"] == "mmdebstrap"
    assert manifest["bootstrap"]["variant"] == "minbase"
    tools = manifest["tools"]
    first = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert tools["mmdebstrap"] == first.strip()
    assert tools["mmdebstrap"].startswith("mmdebstrap ")
    assert "zstd" in tools and "Zstandard" in tools["zstd"]
    assert tools["imgbuild"]
    t = manifest["timings"]
    for phase in ("preflight", "bootstrap", "hooks post-bootstrap", "steps", "hooks post-files", "hooks pre-pack",
                  "cleanup", "target tarball", "target lxc", "total"):
        assert isinstance(t.get(phase), (int, float)) and t[phase] >= 0, phase
    assert t["bootstrap"] > 0         # (a restore from the bootstrap cache on tmpfs can take under a second)
    assert t["total"] >= t["bootstrap"]
    assert sum(v for k, v in t.items() if k != "total") <= t["total"] + 1
    assert isinstance(manifest["source_date_epoch"], int) and manifest["source_date_epoch"] > 1_600_000_000
    subs = manifest["sub_timings"]["bootstrap"]          # where the bootstrap's time went: the cache's check and
    assert set(subs) & {"check the cache entry", "install essential"}, subs     # overlay, or mmdebstrap's stages
    assert sum(subs.values()) <= t["bootstrap"] + 0.5, (subs, t["bootstrap"])


@needs_build
def test_what_the_build_shows_by_default(out_dir: Path):
    """One line per phase and the bootstrap tool's stages; no hook script imgbuild passes to mmdebstrap, no
    warning that imgbuild's own files cause; the last line says where the time went."""
    said = (out_dir.parent.parent / "build.stderr").read_text()
    assert "==> bootstrap (mmdebstrap debian bookworm amd64)" in said and "==> target tarball" in said, said
    assert "in shell:" not in said and "sh -c" not in said, said
    assert not [ln for ln in said.splitlines() if ln.lstrip().startswith(("W: ", "warning: "))], said
    last = re.search(r"^built \S+/debian12 in [\d.]+ s: (.+)$", said, re.M)
    assert last and re.fullmatch(r"([a-z -]+ [\d.]+ s, )*[a-z -]+ [\d.]+ s", last.group(1)), said
    # the bootstrap by name, or (above a cache entry, in a tenth of a second) within "the rest"
    assert "bootstrap " in last.group(1) or "the rest " in last.group(1), said


@needs_build
def test_manifest_has_no_secrets_or_recipe_copy(out_dir: Path):
    text = (out_dir / "manifest.json").read_text()
    assert "built by imgbuild" not in text  # the recipe's file content is not copied, only its hash


# ---------------------------------------------------------------- the tarball


@needs_build
def test_gnu_tar_lists_dev_null_as_char_1_3_root(listing: dict):
    null = listing["./dev/null"]
    assert null["mode"] == "crw-rw-rw-"
    assert (null["owner"], null["group"]) == ("0", "0")
    assert (null["major"], null["minor"]) == ("1", "3")


@needs_build
@pytest.mark.parametrize("name, mode, owner, group, major, minor", [
    ("./dev/console", "crw-------", "0", "0", "5", "1"),
    ("./dev/tty1", "crw--w----", "0", "5", "4", "1"),
    ("./dev/ptmx", "crw-rw-rw-", "0", "0", "5", "2"),
    ("./dev/zero", "crw-rw-rw-", "0", "0", "1", "5"),
    ("./dev/full", "crw-rw-rw-", "0", "0", "1", "7"),
    ("./dev/random", "crw-rw-rw-", "0", "0", "1", "8"),
    ("./dev/urandom", "crw-rw-rw-", "0", "0", "1", "9"),
    ("./dev/tty", "crw-rw-rw-", "0", "0", "5", "0"),
])
def test_container_device_nodes(listing: dict, name, mode, owner, group, major, minor):
    e = listing[name]
    assert (e["mode"], e["owner"], e["group"], e["major"], e["minor"]) == (mode, owner, group, major, minor)


@needs_build
def test_container_dev_dirs_and_links(listing: dict):
    assert listing["./dev/shm"]["mode"] == "drwxrwxrwt"
    assert listing["./dev/pts"]["mode"] == "drwxr-xr-x"
    for name in ("./dev/shm", "./dev/pts"):
        assert (listing[name]["owner"], listing[name]["group"]) == ("0", "0")
    assert listing["./dev/fd"]["mode"][0] == "l" and listing["./dev/fd"]["target"] == "/proc/self/fd"
    for n, s in enumerate(("stdin", "stdout", "stderr")):
        assert listing[f"./dev/{s}"]["target"] == f"/proc/self/fd/{n}"
    # the chroot mounts of the hooks left nothing of theirs behind in /dev
    assert not [n for n in listing if n.startswith("./dev/pts/") or n.startswith("./dev/shm/")]


@needs_build
def test_entries_sorted_like_gnu_tar_sort_name(tarball: Path, tree: Path):
    ours = subprocess.run(["tar", "--zstd", "-tf", str(tarball)], capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    gnu = subprocess.run(["tar", "--sort=name", "-cvf", "/dev/null", "-C", str(tree), "."], capture_output=True,
                         text=True)
    assert gnu.returncode == 0, gnu.stderr
    names = ours.stdout.splitlines()
    assert len(names) > 5000
    assert names == gnu.stdout.splitlines()
    # and the order is bytewise per path component, independent of the locale
    keys = [tuple(os.fsencode(c) for c in n.rstrip("/").split("/")) for n in names]
    assert keys == sorted(keys)


@needs_build
def test_owners_numeric_only_and_mtimes_clamped(archive, manifest: dict):
    members, _ = archive
    epoch = manifest["source_date_epoch"]
    assert members[0].name in ("./", ".")
    named = [m.name for m in members if m.uname or m.gname]
    assert not named, f"user/group names in the archive: {named[:5]}"
    late = [(m.name, m.mtime) for m in members if m.mtime > epoch]
    assert not late, f"mtimes after source_date_epoch {epoch}: {late[:5]}"
    assert any(m.mtime == epoch for m in members)  # files written by the build itself are clamped, not dropped
    assert not [m.name for m in members if "mtime" in m.pax_headers]
    # owners other than root exist and are kept as numbers (e.g. /var/mail is group mail)
    assert any(m.gid != 0 for m in members)


@needs_build
def test_hardlinks_are_hardlinks(archive, tree: Path):
    members, _ = archive
    by_name = {m.name: m for m in members}
    groups: dict[tuple[int, int], list[str]] = {}
    for dirpath, _dirnames, filenames in os.walk(tree):
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                groups.setdefault((st.st_dev, st.st_ino), []).append("./" + os.path.relpath(p, tree))
    assert groups, "expected hardlinked files in a Debian tree (perl, perlbug/perlthanks)"
    order = {m.name: i for i, m in enumerate(members)}
    for names in groups.values():
        names.sort(key=lambda n: order[n])
        first = by_name[names[0]]
        assert first.isfile() and first.size > 0, names[0]
        for other in names[1:]:
            m = by_name[other]
            assert m.islnk(), other
            assert m.linkname == names[0], (other, m.linkname)
            assert m.size == 0
    assert sum(1 for m in members if m.islnk()) == sum(len(n) - 1 for n in groups.values())


@needs_build
def test_acl_xattrs_are_archived(archive, tree: Path):
    """systemd's ACL on /var/log/journal (binary xattr values) goes into the archive byte for byte."""
    members, _ = archive
    by_name = {m.name: m for m in members}
    journal = tree / "var/log/journal"
    names = [n for n in os.listxattr(journal, follow_symlinks=False) if n.startswith("system.posix_acl")]
    if not names:
        pytest.skip("this tree has no ACL on /var/log/journal")
    pax = by_name["./var/log/journal"].pax_headers
    for n in names:
        assert pax[f"SCHILY.xattr.{n}"].encode("utf-8", "surrogateescape") == os.getxattr(journal, n)


@needs_build
def test_archive_matches_the_tree_files(archive):
    members, data = archive
    assert data["./etc/hostname"] == b"vm0\n"
    assert b"nameserver 10.0.3.1\n" in data["./etc/resolv.conf"]
    assert data["./etc/motd"] == b"built by imgbuild\n"
    assert data["./etc/hello"] == b"hello\n"
    by_name = {m.name: m for m in members}
    assert by_name["./etc/motd"].mode == 0o644
    assert by_name["./etc/resolv.conf"].isfile()


@needs_build
def test_archive_has_no_build_noise(archive):
    members, _ = archive
    names = [m.name for m in members]
    assert not [n for n in names if n.endswith(".deb")]
    assert not [n for n in names if re.fullmatch(r"\./var/log/[^/]+\.log", n)]
    assert not [n for n in names if n.startswith("./var/lib/apt/lists/") and n not in (
        "./var/lib/apt/lists/lock", "./var/lib/apt/lists/partial")]
    assert not [n for n in names if n.startswith("./etc/ssh/ssh_host_")]
    assert "./usr/sbin/policy-rc.d" not in names
    assert not [n for n in names if n.startswith("./tmp/") or n.startswith("./proc/") or n.startswith("./sys/")]


# ---------------------------------------------------------------- the kept tree


@needs_build
def test_tree_hostname_hosts_resolv(tree: Path):
    assert in_tree(tree, "/etc/hostname").read_text() == "vm0\n"
    hosts = in_tree(tree, "/etc/hosts").read_text().splitlines()
    assert ["10.0.3.2", "vm0"] in [line.split() for line in hosts]
    resolv = in_tree(tree, "/etc/resolv.conf")
    assert resolv.is_file() and not resolv.is_symlink()
    assert "nameserver 10.0.3.1" in resolv.read_text().splitlines()


@needs_build
def test_tree_network_interfaces(tree: Path):
    lines = [line.strip() for line in in_tree(tree, "/etc/network/interfaces").read_text().splitlines()]
    assert "iface eth0 inet static" in lines
    assert "address 10.0.3.2/24" in lines
    assert "gateway 10.0.3.1" in lines
    assert "hwaddress ether 00:16:3e:00:03:02" in lines
    assert "auto eth0" in lines


@needs_build
def test_tree_files_and_hook(tree: Path):
    motd = in_tree(tree, "/etc/motd")
    assert motd.read_text() == "built by imgbuild\n"
    assert stat.S_IMODE(motd.lstat().st_mode) == 0o644
    assert (motd.lstat().st_uid, motd.lstat().st_gid) == (0, 0)
    assert in_tree(tree, "/etc/hello").read_text().strip() == "hello"


@needs_build
def test_tree_root_locked(tree: Path):
    root = [line for line in in_tree(tree, "/etc/shadow").read_text().splitlines() if line.startswith("root:")]
    assert len(root) == 1
    assert root[0].split(":")[1].startswith("!")


@needs_build
def test_tree_machine_id_empty(tree: Path):
    mid = in_tree(tree, "/etc/machine-id")
    assert mid.is_file() and not mid.is_symlink()
    assert mid.stat().st_size == 0


@needs_build
def test_tree_no_ssh_host_keys_but_keygen_enabled(tree: Path):
    assert in_tree(tree, "/usr/sbin/sshd").exists()
    assert not list(in_tree(tree, "/etc/ssh").glob("ssh_host_*"))
    link = in_tree(tree, "/etc/systemd/system/multi-user.target.wants/imgbuild-ssh-keygen.service")
    assert link.is_symlink()
    target = os.readlink(link)
    unit = in_tree(tree, target) if target.startswith("/") else link.parent / target
    text = unit.read_text()
    assert "ExecStart=/usr/bin/ssh-keygen -A" in text
    assert re.search(r"^Before=.*\bssh\.service", text, re.M)
    assert in_tree(tree, "/usr/bin/ssh-keygen").exists()


@needs_build
def test_tree_no_apt_lists_debs_logs_policy(tree: Path):
    lists = in_tree(tree, "/var/lib/apt/lists")
    assert set(os.listdir(lists)) <= {"lock", "partial"}
    if (lists / "partial").exists():
        assert os.listdir(lists / "partial") == []
    debs = [os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs if f.endswith(".deb")]
    assert not debs
    assert not list(in_tree(tree, "/var/log").glob("*.log"))
    assert not os.path.lexists(in_tree(tree, "/usr/sbin/policy-rc.d"))
    assert os.listdir(in_tree(tree, "/tmp")) == []


@needs_build
def test_nothing_mounted_under_output(out_dir: Path):
    assert mounts_under(out_dir.parent) == []


# ---------------------------------------------------------------- file capabilities


def _cap_value(cap: int) -> bytes:
    """A VFS_CAP_REVISION_2 security.capability value: cap permitted and effective."""
    return struct.pack("<IIIII", 0x02000000 | 0x000001, 1 << cap, 0, 0, 0)


CAP_NET_RAW = 13


@pytest.mark.root
def test_tarwriter_keeps_capability_hardlinks_and_special_files(tmp_path: Path):
    """builder.core.tarwriter on a small tree; GNU tar --xattrs extracts it with the capability intact."""
    from builder.core import tarwriter

    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    ping = src / "bin" / "ping"
    ping.write_bytes(b"\x7fELF not really\n")
    os.chmod(ping, 0o755)
    os.setxattr(ping, "security.capability", _cap_value(CAP_NET_RAW))
    os.link(ping, src / "bin" / "ping2")
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    os.symlink("bin/ping", src / "link")
    epoch = 1_700_000_000
    out = tmp_path / "t.tar"
    with open(out, "wb") as f:
        n = tarwriter.write(tarwriter.entries(src), f.fileno(), epoch)
    assert n == 7  # ., bin, bin/ping, bin/ping2, fifo, link, null

    with tarfile.open(out) as tf:
        m = {x.name: x for x in tf}
    assert m["./bin/ping2"].islnk() and m["./bin/ping2"].linkname == "./bin/ping"
    assert m["./null"].ischr() and (m["./null"].devmajor, m["./null"].devminor) == (1, 3)
    assert m["./fifo"].isfifo()
    assert max(x.mtime for x in m.values()) == epoch

    dest = tmp_path / "dest"
    dest.mkdir()
    r = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", str(out), "-C",
                        str(dest)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.getxattr(dest / "bin" / "ping", "security.capability") == _cap_value(CAP_NET_RAW)
    getcap = subprocess.run(["getcap", str(dest / "bin" / "ping")], capture_output=True, text=True)
    assert "cap_net_raw=ep" in getcap.stdout, getcap.stdout + getcap.stderr
    assert os.stat(dest / "bin" / "ping").st_ino == os.stat(dest / "bin" / "ping2").st_ino
    st = os.lstat(dest / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


@pytest.fixture(scope="module")
def cap_build(tmp_path_factory, tree: Path) -> Path:
    """debian12.yml plus a post-files hook that gives /usr/bin/true CAP_NET_RAW with the tree's own setcap."""
    if not (in_tree(tree, "/usr/sbin/setcap").exists() or in_tree(tree, "/sbin/setcap").exists()):
        pytest.skip("the debian12 tree has no setcap (the tar writer test above covers capabilities)")
    d = tmp_path_factory.mktemp("capbuild")
    recipe = d / "cap.yml"
    recipe.write_text(yaml.safe_dump({
        "extends": str(DEFAULT_RECIPE),
        "hooks": {"post-files": [{"run": "echo hello > /etc/hello"},
                                 {"run": "setcap cap_net_raw+ep /usr/bin/true && getcap /usr/bin/true"}]},
        "targets": {"tarball": {"compression": "zstd"}},
    }))
    out = d / "out"
    r = imgbuild(recipe, "-o", out, "--keep-tree")
    assert r.returncode == 0, r.stderr
    return out


@needs_build
def test_file_capability_survives_the_build(cap_build: Path, tmp_path: Path):
    tree = cap_build / "debian12.rootfs"
    value = os.getxattr(tree / "usr/bin/true", "security.capability")
    getcap = subprocess.run(["getcap", str(tree / "usr/bin/true")], capture_output=True, text=True)
    assert "cap_net_raw=ep" in getcap.stdout

    tarball = cap_build / "debian12" / "debian12.tar.zst"
    members, _ = tar_members(tarball)
    true = {m.name: m for m in members}["./usr/bin/true"]
    assert true.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == value

    dest = tmp_path / "x"
    dest.mkdir()
    r = subprocess.run(["tar", "--zstd", "--xattrs", "--xattrs-include=security.capability", "-xpf", str(tarball),
                        "-C", str(dest), "./usr/bin/true"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.getxattr(dest / "usr/bin/true", "security.capability") == value
    getcap = subprocess.run(["getcap", str(dest / "usr/bin/true")], capture_output=True, text=True)
    assert "cap_net_raw=ep" in getcap.stdout, getcap.stdout + getcap.stderr
    shutil.rmtree(dest)

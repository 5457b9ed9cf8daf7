"""A guest's ext4 image is untrusted (ImageTree, read and written with debugfs through builder/e2fs.py):

a. a write replaces a link there, never writes through it, and the new file gets the mode the engine asks for or
   the replaced regular file's, never a link's 0777 (a guest's ssh host key linked elsewhere stays private);
b. a file's size is read from its inode before anything is dumped: past 4 MiB (MAX_READ) InputError naming the
   image and the file, nothing dumped (a sparse 100 GB file, $TMPDIR on a 16 MiB tmpfs of the test's own); what is
   dumped goes to a private (0700) directory that is removed afterwards; DirTree refuses the same files;
c. links on the way are followed inside the image as in a chroot of it, at most 40 (an absolute link to a path
   that exists on the host reads the image's file at that path), and DirTree and ImageTree answer alike;
d. names with quotes, spaces and debugfs's own syntax are taken literally; a name debugfs cannot be handed (a
   newline, carriage return, NUL, or too long) is refused with InputError naming the image, and no command ever
   runs from a name: the marker file a `!touch` line would make never appears, the image stays consistent.

Everything is real: images made by mke2fs -d, debugfs, e2fsck, a tmpfs mounted (and unmounted) by the test.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.core import e2fs
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError, UnsafePath
from builder.identity import engine, inventory
from builder.identity import reidentify as rid
from builder.identity.guest import locate
from builder.identity.tree import MAX_READ, DirTree, ImageTree, Meta
from tests.conftest import BIN, REPO
from tests.support.guests import EPOCH, OLD_MAC, fsck, make_root

pytestmark = pytest.mark.root

MARK = "imgbuild-injected"


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))


def mkimage(root: Path, image: Path, size: str = "64M") -> Path:
    """ROOT as an ext4 image (4 KiB blocks: room for a sparse 100 GB file), nothing mounted."""
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", str(root), str(image), size],
                   check=True, capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                         "E2FSPROGS_FAKE_TIME": str(EPOCH)})
    return image


def inode(image: Path, path: str) -> tuple[str, int, int, int]:
    """(type, permission bits, uid, gid) of path as debugfs's stat says, read independently of builder.core.e2fs."""
    out = subprocess.run(["debugfs", "-R", f'stat "{path}"', str(image)], capture_output=True, text=True).stdout
    m = re.search(r"Type: (\w+)\s+Mode:\s+(\d+).*?User:\s+(\d+)\s+Group:\s+(\d+)", out, re.S)
    assert m, f"{path} is not in the image:\n{out}"
    return m.group(1), int(m.group(2), 8), int(m.group(3)), int(m.group(4))


def cat(image: Path, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["debugfs", "-R", f'dump "{path}" {d}/f', str(image)], capture_output=True, check=True)
        return Path(d, "f").read_bytes()


@pytest.fixture
def tmpfs(tmp_path):
    """A 16 MiB tmpfs of the test's own (a full $TMPDIR cannot fill the host's /tmp); unmounted afterwards."""
    d = tmp_path / "small-tmp"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


# ================================================================== a. a write replaces a link


@pytest.fixture
def linked(tmp_path) -> Path:
    """An image whose files to replace are links: to a private file of the guest (absolute and relative), to
    nowhere, to a directory."""
    r = tmp_path / "root"
    (r / "etc/ssh").mkdir(parents=True)
    (r / "var/lib").mkdir(parents=True)
    (r / "etc/shadow").write_bytes(b"root:$6$guest-hash:19000::::::\n")
    os.chmod(r / "etc/shadow", 0o640)
    os.chown(r / "etc/shadow", 0, 42)
    os.symlink("/etc/shadow", r / "etc/hostname")
    os.symlink("../shadow", r / "etc/ssh/ssh_host_rsa_key")
    os.symlink("/nowhere/at/all", r / "etc/motd")
    os.symlink("/var/lib", r / "etc/dirlink")
    return mkimage(r, tmp_path / "linked.ext4")


LINKS = ["/etc/hostname", "/etc/ssh/ssh_host_rsa_key", "/etc/motd", "/etc/dirlink"]


@pytest.mark.parametrize("path", LINKS)
@pytest.mark.parametrize("how", ["meta-of-the-link", "no-meta"])
def test_imagetree_write_replaces_a_link_and_lends_it_no_mode(linked, path, how):
    t = ImageTree(linked)
    meta = t.meta(path)
    assert meta is not None and stat.S_ISLNK(meta.mode)
    t.write(path, b"new\n", meta if how == "meta-of-the-link" else None)      # the engine passes what meta() said
    kind, mode, uid, gid = inode(linked, path)
    assert (kind, mode, uid, gid) == ("regular", 0o600, 0, 0), "a link lent its mode (or owner) to the new file"
    assert cat(linked, path) == b"new\n"
    assert cat(linked, "/etc/shadow") == b"root:$6$guest-hash:19000::::::\n", "the write went through the link"
    assert inode(linked, "/etc/shadow") == ("regular", 0o640, 0, 42)
    assert inode(linked, "/var/lib")[0] == "directory"
    assert fsck(linked).returncode == 0, fsck(linked).stdout


def test_imagetree_write_keeps_a_regular_files_mode_or_takes_the_engines(linked):
    t = ImageTree(linked)
    t.write("/etc/shadow", b"root:*:1::::::\n")                    # the file it replaces lends mode and owner
    assert inode(linked, "/etc/shadow") == ("regular", 0o640, 0, 42)
    t.write("/etc/motd", b"hi\n", Meta(stat.S_IFREG | 0o644, 0, 0))   # what the engine asks for (a template's)
    assert inode(linked, "/etc/motd") == ("regular", 0o644, 0, 0)
    t.write("/etc/new", b"x\n")                                      # nothing there: 0644
    assert inode(linked, "/etc/new") == ("regular", 0o644, 0, 0)


def test_reidentify_an_image_whose_host_keys_are_links_makes_them_private_files(tmp_path):
    root = make_root(tmp_path / "root", keys=True)
    ssh = root / "etc/ssh"
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
        os.rename(ssh / name, ssh / f"real_{name}")
        os.symlink(f"/etc/ssh/real_{name}", ssh / name)
    image = mkimage(root, tmp_path / "vm0.ext4")
    req = engine.Request(hostname="db1", macs=(engine.parse_mac(f"{OLD_MAC}=00:16:3e:00:03:13"),))
    w = rid.Where(inventory_file=str(tmp_path / "inventory.yml"), lxcpath=str(tmp_path / "lxc"),
                  xen_dir=str(tmp_path / "xen"), vz_dir=str(tmp_path / "vz"))
    assert rid.reidentify(locate(str(image)), req, w).applied
    kind, mode, uid, _ = inode(image, "/etc/ssh/ssh_host_ed25519_key")
    assert (kind, mode, uid) == ("regular", 0o600, 0), "the new private key is readable by everyone"
    assert b"PRIVATE KEY" in cat(image, "/etc/ssh/ssh_host_ed25519_key")
    assert inode(image, "/etc/ssh/real_ssh_host_ed25519_key")[0] == "regular"    # the link's target: left alone
    assert fsck(image).returncode == 0


# ================================================================== b. sizes checked before anything is read


@pytest.fixture
def big(tmp_path) -> tuple[Path, Path]:
    """A tree (and its image) with files at, above and far above the limit (a sparse 100 GB one)."""
    r = tmp_path / "bigroot"
    (r / "etc/network").mkdir(parents=True)
    (r / "etc/exact").write_bytes(b"a" * MAX_READ)
    (r / "etc/network/interfaces").write_bytes(b"# padding\n" * (MAX_READ // 10 + 1))
    with open(r / "etc/hosts", "wb") as f:
        f.truncate(100 << 30)
    (r / "etc/hostname").write_text("vm0\n")
    return r, mkimage(r, tmp_path / "big.ext4")


def _dumps(monkeypatch) -> list[tuple[str, int, int]]:
    """Spy on the commands builder.core.e2fs runs: for each debugfs `dump`, the directory it dumps into (mode, owner),
    seen while the dump runs."""
    seen: list[tuple[str, int, int]] = []
    real = runner.run

    def spy(argv, **kw):
        m = re.search(r'^dump <\d+> "(.*)"$', next((str(a) for a in argv if str(a).startswith("dump ")), ""))
        if m:
            d = os.path.dirname(m.group(1).replace('""', '"'))
            st = os.lstat(d)
            seen.append((d, stat.S_IMODE(st.st_mode), st.st_uid))
        return real(argv, **kw)
    monkeypatch.setattr(runner, "run", spy)
    return seen


@pytest.mark.parametrize("path", ["/etc/network/interfaces", "/etc/hosts"])
def test_imagetree_refuses_a_file_past_the_limit_before_dumping_it(big, path, tmpfs, monkeypatch):
    _, image = big
    monkeypatch.setattr(tempfile, "tempdir", str(tmpfs))
    dumps = _dumps(monkeypatch)
    with pytest.raises(InputError) as e:
        ImageTree(image).read(path)
    assert str(image) in e.value.message and path in e.value.message and "bytes" in e.value.message
    assert dumps == [], "the file was dumped before its size was checked"
    assert os.listdir(tmpfs) == [], "left in the temporary directory"


def test_imagetree_reads_a_file_at_the_limit_through_a_private_directory(big, tmpfs, monkeypatch):
    _, image = big
    monkeypatch.setattr(tempfile, "tempdir", str(tmpfs))
    dumps = _dumps(monkeypatch)
    assert ImageTree(image).read("/etc/exact") == b"a" * MAX_READ
    assert ImageTree(image).read("/etc/hostname") == b"vm0\n"
    assert len(dumps) == 2
    for d, mode, uid in dumps:
        assert Path(d).parent == tmpfs and mode == 0o700 and uid == os.getuid(), (d, oct(mode))
    assert os.listdir(tmpfs) == [], "the private directory was not removed"


@pytest.mark.parametrize("path", ["/etc/network/interfaces", "/etc/hosts"])
def test_dirtree_refuses_the_same_files(big, path):
    root, _ = big
    with pytest.raises(InputError) as e:
        DirTree(root).read(path)
    assert path in e.value.message and "bytes" in e.value.message
    assert DirTree(root).read("/etc/exact") == b"a" * MAX_READ


def test_a_dry_run_on_an_image_with_a_huge_file_exits_2_and_leaves_tmp_empty(big, tmpfs, tmp_path):
    _, image = big
    env = {**os.environ, "TMPDIR": str(tmpfs), inventory.ENV_VAR: str(tmp_path / "inventory.yml")}
    before = image.read_bytes()
    r = subprocess.run([str(BIN / "migrate"), "reidentify", str(image), "--hostname", "db1", "--dry-run",
                        "--lxcpath", str(tmp_path / "lxc"), "--xen-dir", str(tmp_path / "xen"),
                        "--vz-dir", str(tmp_path / "vz")], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert str(image) in r.stderr and "/etc/" in r.stderr, r.stderr
    assert os.listdir(tmpfs) == [], "the dry run left files in $TMPDIR"
    assert image.read_bytes() == before


# ================================================================== c. links on the way: inside the image


@pytest.fixture
def chains(tmp_path) -> tuple[Path, Path, Path]:
    """A tree and its image with links on the way of every kind; and a directory on the host that an absolute
    link names (the image has a decoy at the same path)."""
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc/hostname").write_text("HOST\n")
    r = tmp_path / "chainroot"
    (r / "real/etc").mkdir(parents=True)
    (r / "real/etc/hostname").write_text("image\n")
    os.symlink("hostname", r / "real/etc/hn")
    decoy = r / str(host).lstrip("/") / "etc"
    decoy.mkdir(parents=True)
    (decoy / "hostname").write_text("decoy in the image\n")
    os.symlink("/real/etc", r / "etc")                                   # absolute, inside
    os.symlink(str(host), r / "hostdir")                                 # absolute, a host path
    os.symlink("../" * 20 + "real", r / "up")                            # relative, past the top
    os.symlink("/" + "/./".join(["real"] + ["."] * 30) + "/etc", r / "slow")   # a target > 60 bytes
    for n in range(45):
        os.symlink(f"c{n + 1}" if n < 44 else "real", r / f"c{n}")        # c44 -> real; c0 is 45 links from it
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    return host, r, mkimage(r, tmp_path / "chains.ext4")


CHAIN_PATHS = ["/etc/hostname", "/etc/../etc/hostname", "/hostdir/etc/hostname", "/up/etc/hostname",
               "/slow/hostname", "/real/etc/hn", "/etc/hn", "/loop1/x", "/loop1",
               *[f"/c{n}/etc/hostname" for n in (44, 30, 25, 9, 5, 4, 3, 0)]]


@pytest.mark.parametrize("path", CHAIN_PATHS)
def test_links_on_the_way_resolve_inside_the_image_as_dirtree_does(chains, path):
    _, root, image = chains
    d, i = DirTree(root), ImageTree(image)
    assert i.read(path) == d.read(path)
    assert i.meta(path) == d.meta(path)
    parent = path.rsplit("/", 1)[0] or "/"
    assert [n for n in i.listdir(parent) if n != "lost+found"] == d.listdir(parent)    # mke2fs makes lost+found


def test_link_resolution_answers_are_the_images(chains):
    host, _, image = chains
    t = ImageTree(image)
    assert t.read("/etc/hostname") == b"image\n"
    assert t.read("/hostdir/etc/hostname") == b"decoy in the image\n", "an absolute link was resolved on the host"
    assert t.read("/up/etc/hostname") == b"image\n" and t.read("/slow/hostname") == b"image\n"
    assert t.read("/c5/etc/hostname") == b"image\n"      # 40 links: followed
    assert t.read("/c4/etc/hostname") is None             # 41: too many
    assert t.read("/etc/hn") is None and stat.S_ISLNK(t.meta("/etc/hn").mode)   # the last one is never followed
    assert t.read("/loop1/x") is None and t.listdir("/loop1") == []
    assert (host / "etc/hostname").read_text() == "HOST\n"


def test_writes_follow_links_on_the_way_inside_the_image(chains):
    host, _, image = chains
    t = ImageTree(image)
    t.write("/hostdir/etc/hostname", b"web1\n")
    assert cat(image, f"{host}/etc/hostname") == b"web1\n"
    assert (host / "etc/hostname").read_text() == "HOST\n", "a write left the image"
    t.write("/c10/etc/motd", b"m\n")
    assert cat(image, "/real/etc/motd") == b"m\n"
    with pytest.raises(UnsafePath):
        t.write("/loop1/x", b"x\n")
    assert fsck(image).returncode == 0, fsck(image).stdout


# ================================================================== d. names: quoted, or refused


@pytest.fixture
def named(tmp_path, monkeypatch) -> Path:
    """An image with a guest's file names that would be commands if debugfs ever read them as such; the test runs
    in a directory of its own, where `!touch` would leave its marker."""
    r = tmp_path / "namedroot"
    (r / "var/lib/dhcp").mkdir(parents=True)
    (r / "etc").mkdir()
    (r / "d").mkdir()
    (r / "etc/shadow").write_text("root:guest:1::::::\n")
    (r / f"var/lib/dhcp/x\n!touch {MARK} #.leases").write_text("lease {}\n")
    (r / f"d/y\r!touch {MARK}").write_text("y\n")
    (r / 'd/q"uote').write_text("q\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return mkimage(r, tmp_path / "named.ext4")


def no_command_ran(image: Path) -> None:
    assert not any(MARK in n for n in os.listdir(".")), "a name ran as a command"
    assert cat(image, "/etc/shadow") == b"root:guest:1::::::\n"
    assert fsck(image).returncode == 0, fsck(image).stdout


BAD = [f"/var/lib/dhcp/x\n!touch {MARK} #.leases", f"/d/y\r!touch {MARK}", "/d/z\0!touch", f"/d/a\n!touch {MARK}",
       "/d/" + "/".join(["a" * 250] * 36) + f"!touch {MARK}"]


@pytest.mark.parametrize("path", BAD, ids=["newline", "cr", "nul", "newline-new", "longer-than-a-line"])
def test_a_name_debugfs_cannot_be_handed_is_refused(named, path):
    t = ImageTree(named)
    for op in (lambda: t.remove(path), lambda: t.write(path, b"x\n", Meta(0o100644, 0, 0)),
               lambda: t.read(path), lambda: t.meta(path)):
        with pytest.raises(InputError) as e:
            op()
        assert str(named) in e.value.message and e.value.hint
    no_command_ran(named)


def test_a_directory_holding_such_a_name_is_refused_by_name(named):
    with pytest.raises(InputError) as e:
        ImageTree(named).listdir("/var/lib/dhcp")
    assert str(named) in e.value.message and "/var/lib/dhcp" in e.value.message
    assert sorted(ImageTree(named).listdir("/etc")) == ["shadow"]
    no_command_ran(named)


@pytest.mark.parametrize("name", ['q"uote', 'two "" quotes', "with space", "tab\there", "!touch " + MARK,
                                  "#comment", '"; rm shadow', "<2>", "-p", "é ü", "a\\b", "$(id)"])
def test_names_with_debugfs_syntax_are_taken_literally(named, name):
    t = ImageTree(named)
    path = f"/d/{name}"
    t.write(path, b"literal\n", Meta(0o100640, 7, 8))
    assert t.read(path) == b"literal\n"
    assert t.meta(path) == Meta(0o100640, 7, 8)
    assert name in t.listdir("/d")
    t.remove(path)
    assert t.meta(path) is None and name not in t.listdir("/d")
    no_command_ran(named)


NAMES = st.text(st.sampled_from(list('ab. "\'!#;$()<>\\|&*?\t\n\r\x00é')), min_size=1,
                max_size=24).filter(lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_any_name_is_written_literally_or_refused(named, name):
    t = ImageTree(named)
    path = f"/d/{name}"
    try:
        t.write(path, name.encode() + b"\n")
    except InputError as e:
        assert re.search(r"[\n\r\x00]", name), f"{name!r} refused: {e}"
        assert str(named) in e.message
    else:
        assert not re.search(r"[\n\r\x00]", name)
        assert t.read(path) == name.encode() + b"\n" and name in t.listdir("/d")
        t.remove(path)
    assert not any(MARK in n for n in os.listdir("."))
    assert cat(named, "/etc/shadow") == b"root:guest:1::::::\n"


def test_every_debugfs_line_is_one_command(tmp_path):
    """The last guard: builder.core.e2fs never hands debugfs a line that is not exactly one command of its own."""
    image = mkimage(make_root(tmp_path / "r"), tmp_path / "x.ext4", "16M")
    for bad in ["!touch x", "#x", "rm /a\nrm /b", "stat /a\r!id", "x" * 5000, " !id"]:
        with pytest.raises(BuilderError):
            e2fs.script(image, [bad])

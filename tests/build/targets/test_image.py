"""The image target: an ext2/3/4 filesystem image made from a tree with `mke2fs -d`, checked with e2fsprogs' own
tools (e2fsck, debugfs, dumpe2fs), and the default recipe's image booted for real under qemu (TCG) with a Debian
kernel to systemd (tests/support/qemu.py downloads the kernel and builds the initramfs).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.build.targets import image
from builder.core import e2fs, tarwriter
from builder.core.errors import BuilderError
from tests.conftest import DEFAULT_RECIPE, imgbuild, mounts_under, sha256
from tests.support.qemu import qemu, qemu_kernel  # noqa: F401  (qemu_kernel is a session fixture)

EPOCH = 1700000000          # 2023-11-14 22:13:20 UTC
MiB = 1 << 20
BIG = bytes(range(256)) * (3 * 4096)      # 3 MiB of file data, deterministic


# ------------------------------------------------------------------ helpers


def debugfs(img: Path, request: str) -> str:
    r = subprocess.run(["debugfs", "-R", request, str(img)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


@dataclass
class Inode:
    number: int
    type: str
    mode: int          # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    links: int
    size: int
    device: tuple[int, int] | None
    link_target: str | None
    times: dict[str, int]


def inode(img: Path, path: str) -> Inode:
    """`debugfs -R "stat PATH"`, parsed."""
    out = debugfs(img, f'stat "{path}"')
    m = re.search(r"Inode: (\d+)\s+Type: ([\w ]+?)\s+Mode:\s+(\d+)", out)
    assert m, f"debugfs stat {path}: {out or 'not found'}"
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+).*?Size: (\d+)", out)
    links = re.search(r"Links: (\d+)", out)
    dev = re.search(r"Device major/minor number: ([0-9a-f]+):([0-9a-f]+)", out)
    target = re.search(r'Fast link dest: "(.*)"', out)
    times = {k: int(v, 16) for k, v in re.findall(r"^\s*(\w+time): 0x([0-9a-f]+)", out, re.MULTILINE)}
    return Inode(int(m.group(1)), m.group(2), int(m.group(3), 8), int(owner.group(1)), int(owner.group(2)),
                 int(links.group(1)), int(owner.group(3)),
                 (int(dev.group(1)), int(dev.group(2))) if dev else None,
                 target.group(1) if target else None, times)


def superblock(img: Path) -> dict[str, str]:
    """dumpe2fs -h, times in UTC (ctime format)."""
    r = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "TZ": "UTC"}, check=False)
    assert r.returncode == 0, r.stderr
    return {k.strip(): v.strip() for k, v in re.findall(r"^([^:\n]+):\s*(.*)$", r.stdout, re.MULTILINE)}


def fsck(img: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True, timeout=300, check=False)


def make(tree: Path, dest: Path, epoch: int = EPOCH, **opts) -> Path:
    return image.make_image(tree, dest, image.ImageOptions(**opts), epoch)


def dir_state(d: Path) -> dict[str, tuple]:
    """Every entry below d with what a writer would change (content hash, mode, owner, mtime)."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        h = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else os.readlink(p) \
            if stat.S_ISLNK(st.st_mode) else ""
        out[str(p.relative_to(d))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, h)
    return out


@pytest.fixture(autouse=True)
def _drop_images(tmp_path):
    """Images are 14-30 MB on disk each: remove them after every test (pytest keeps the rest of tmp_path)."""
    yield
    for p in tmp_path.rglob("*"):
        if p.is_file() and not p.is_symlink() and re.search(r"\.(ext[234]|img)$", p.name):
            p.unlink()
    shutil.rmtree(tmp_path / "many", ignore_errors=True)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A small root: device nodes, a setuid binary, a file owned 123:456, a symlink, a hardlink, 3 MiB of data."""
    t = tmp_path / "tree"
    for d in ("bin", "dev", "etc", "var/lib/empty"):
        (t / d).mkdir(parents=True)
    (t / "etc" / "hostname").write_text("img0\n")
    (t / "etc" / "motd").write_text("hello\n")
    os.link(t / "etc" / "motd", t / "etc" / "motd.hard")
    (t / "etc" / "owned").write_text("mine\n")
    os.chown(t / "etc" / "owned", 123, 456)
    (t / "bin" / "su").write_bytes(b"#!/bin/sh\n")
    os.chmod(t / "bin" / "su", 0o4755)
    os.symlink("../etc/motd", t / "bin" / "motd-link")
    (t / "var" / "big").write_bytes(BIG)
    os.mknod(t / "dev" / "null", stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(t / "dev" / "null", 0o666)
    os.mknod(t / "dev" / "vda", stat.S_IFBLK, os.makedev(254, 0))
    os.chmod(t / "dev" / "vda", 0o660)
    os.chown(t / "dev" / "vda", 0, 6)
    # mtimes before EPOCH, as a bootstrap's packages have; atimes recent, as in a tree that was just built (an
    # atime more than a day old would be bumped by mke2fs reading the file, under relatime)
    now = time.time_ns()
    for p in [t, *t.rglob("*")]:
        os.utime(p, ns=(now, (EPOCH - 86400) * 10**9), follow_symlinks=False)
    return t


# ------------------------------------------------------------------ the filesystem


@pytest.mark.root
@pytest.mark.parametrize("fs", ["ext4", "ext3", "ext2"])
def test_image_keeps_modes_owners_devices_and_links(tree, tmp_path, fs):
    img = make(tree, tmp_path / f"x.{fs}", fs=fs, label="guest")
    r = fsck(img)
    assert r.returncode == 0, r.stdout + r.stderr

    sb = superblock(img)
    assert sb["Filesystem volume name"] == "guest"
    features = sb["Filesystem features"].split()
    assert ("has_journal" in features) == (fs != "ext2"), features
    assert ("extent" in features) == (fs == "ext4"), features

    null, vda = inode(img, "/dev/null"), inode(img, "/dev/vda")
    assert (null.type, null.device, null.mode, null.uid) == ("character special", (1, 3), 0o666, 0)
    assert (vda.type, vda.device, vda.mode, vda.gid) == ("block special", (254, 0), 0o660, 6)
    su = inode(img, "/bin/su")
    assert (su.type, su.mode, su.uid, su.gid) == ("regular", 0o4755, 0, 0)
    owned = inode(img, "/etc/owned")
    assert (owned.uid, owned.gid) == (123, 456)
    link = inode(img, "/bin/motd-link")
    assert (link.type, link.link_target) == ("symlink", "../etc/motd")
    a, b = inode(img, "/etc/motd"), inode(img, "/etc/motd.hard")
    assert a.number == b.number and a.links == 2, (a, b)
    assert (inode(img, "/").uid, inode(img, "/").gid) == (0, 0)
    assert inode(img, "/var/lib/empty").type == "directory"
    assert e2fs.read(img, "/etc/hostname", 64 << 20) == b"img0\n"
    assert e2fs.read(img, "/etc/no-such-file", 64 << 20) is None
    dumped = tmp_path / "big.out"
    debugfs(img, f'dump "/var/big" "{dumped}"')
    assert dumped.read_bytes() == BIG and inode(img, "/var/big").size == len(BIG)


@pytest.mark.root
def test_default_size_is_the_tree_plus_headroom(tree, tmp_path):
    items = tarwriter.entries(tree)
    data = tarwriter.data_size(items)
    img = make(tree, tmp_path / "x.ext4")
    size = img.stat().st_size
    assert size == image.default_size(data, len(items))
    assert size % (64 * MiB) == 0
    assert size > data + 64 * MiB                                     # the promised 64M of headroom
    assert size <= data * 1.3 + 64 * MiB + len(items) * 256 + 64 * MiB   # and no more than one rounding step
    sb = superblock(img)
    assert int(sb["Block count"]) * int(sb["Block size"]) == size      # the filesystem fills the file
    # the formula on a realistic tree: 220 MB, 10k entries -> 384 MiB (not absurdly bigger)
    assert image.default_size(220 * 10**6, 10700) == 384 * MiB


@pytest.mark.root
def test_explicit_size(tree, tmp_path):
    img = make(tree, tmp_path / "x.ext4", size="96M")
    assert img.stat().st_size == 96 * MiB
    sb = superblock(img)
    assert int(sb["Block count"]) * int(sb["Block size"]) == 96 * MiB
    assert fsck(img).returncode == 0


@pytest.mark.parametrize("text,size", [("512M", 512 * MiB), ("2G", 2 << 30), ("1g", 1 << 30), ("64MiB", 64 * MiB),
                                       ("100", 100), ("3K", 3072)])
def test_parse_size(text, size):
    assert image.parse_size(text) == size


@pytest.mark.root
def test_fstab_is_written_into_the_image_not_the_tree(tree, tmp_path):
    before = dir_state(tree)
    img = make(tree, tmp_path / "x.ext4", label="guest")
    assert dir_state(tree) == before, "make_image changed the source tree"
    assert not (tree / "etc" / "fstab").exists()

    text = e2fs.read(img, "/etc/fstab", 64 << 20)
    assert text is not None, "no /etc/fstab in the image"
    rows = [line.split() for line in text.decode().splitlines() if line.strip() and not line.startswith("#")]
    root = [r for r in rows if r[1] == "/"]
    assert len(root) == 1, rows
    spec, _mnt, fstype, options, dump, passno = root[0]
    assert (spec, fstype, dump, passno) == ("LABEL=guest", "ext4", "0", "1")
    assert "defaults" in options.split(",")
    f = inode(img, "/etc/fstab")
    assert (f.type, f.mode, f.uid, f.gid) == ("regular", 0o644, 0, 0)
    assert fsck(img).returncode == 0


@pytest.mark.root
def test_fstab_replaces_the_trees_own_and_can_be_turned_off(tree, tmp_path):
    (tree / "etc" / "fstab").write_text("# the container's fstab\n")
    before = dir_state(tree)
    with_fstab = make(tree, tmp_path / "a.ext4")
    assert e2fs.read(with_fstab, "/etc/fstab", 64 << 20).startswith(b"# written by imgbuild")
    without = make(tree, tmp_path / "b.ext4", fstab=False)
    assert e2fs.read(without, "/etc/fstab", 64 << 20) == b"# the container's fstab\n"
    assert dir_state(tree) == before


@pytest.mark.root
def test_same_tree_without_fstab_is_byte_identical(tree, tmp_path):
    """mke2fs -d itself is deterministic: UUID and hash seed from the epoch, the filesystem's own times from
    E2FSPROGS_FAKE_TIME, entries in sorted order (the C locale: make_image passes only PATH)."""
    a = make(tree, tmp_path / "a.ext4", fstab=False)
    b = make(tree, tmp_path / "b.ext4", fstab=False)
    assert sha256(a) == sha256(b)
    c = make(tree, tmp_path / "c.ext4", epoch=EPOCH + 1, fstab=False)
    assert sha256(c) != sha256(a), "the epoch is not in the image (UUID, hash seed, times)"


def _differences(a: Path, b: Path) -> str:
    """What differs between two images, for the failure message."""
    out = []
    for key in ("Last write time", "Filesystem UUID"):
        x, y = superblock(a).get(key), superblock(b).get(key)
        if x != y:
            out.append(f"superblock {key}: {x} / {y}")
    for p in ("/etc/fstab", "/etc", "/etc/motd", "/etc/hostname"):
        if e2fs.read(a, p, 64 << 20) is None and p != "/etc":
            continue
        x, y = inode(a, p).times, inode(b, p).times
        if x != y:
            out.append(f"{p} times: {x} / {y}")
    return "; ".join(out)


@pytest.mark.root
def test_same_tree_same_epoch_is_byte_identical(tree, tmp_path):
    a = make(tree, tmp_path / "a.ext4")
    time.sleep(1.1)                     # debugfs stamps in whole seconds
    b = make(tree, tmp_path / "b.ext4")
    assert sha256(a) == sha256(b), _differences(a, b)


@pytest.mark.root
def test_rebuilt_tree_gives_the_same_image(tree, tmp_path):
    """A rebuild of the same recipe gives the same files with new ctimes and atimes, and files the build writes
    get the build's wall-clock mtime: with the same epoch the image must still be the same (as the tarball is).
    (The same goes for one tree imaged twice: mke2fs reading a file bumps an atime older than a day.)"""
    (tree / "etc" / "hostname").write_text("img0\n")        # written by the build: mtime now, after EPOCH
    a = make(tree, tmp_path / "a.ext4", fstab=False)
    time.sleep(1.1)
    again = tmp_path / "again"
    subprocess.run(["cp", "-a", str(tree), str(again)], check=True)
    (again / "etc" / "hostname").write_text("img0\n")       # written again by the rebuild, a second later
    b = make(again, tmp_path / "b.ext4", fstab=False)
    assert sha256(a) == sha256(b), _differences(a, b)


# ------------------------------------------------------------------ failures


@pytest.mark.root
def test_too_small_size_is_a_builder_error_and_leaves_no_file(tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuilderError) as e:
        make(tree, out / "x.ext4", size="2M")          # 3 MiB of data
    assert "too small" in str(e.value)
    assert list(out.iterdir()) == [], "a partial image was left behind"


@pytest.mark.root
def test_too_small_size_says_what_to_change(tree, tmp_path):
    with pytest.raises(BuilderError) as e:
        make(tree, tmp_path / "x.ext4", size="2M")
    said = f"{e.value}\n{e.value.hint or ''}".lower()
    assert "size" in said and "too small" in said, said


@pytest.mark.root
def test_default_size_holds_a_tree_of_many_small_files(tmp_path):
    t = tmp_path / "many"
    for d in range(100):
        sub = t / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(350):
            (sub / f"f{i:03d}").touch()
    try:
        img = make(t, tmp_path / "x.ext4", fstab=False)
    except BuilderError as e:
        raise AssertionError(f"the default size cannot hold 35000 empty files: {e}") from None
    assert fsck(img).returncode == 0


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_cli_too_small_image_exits_1_without_traceback(tmp_path):
    out = tmp_path / "out"
    r = imgbuild(DEFAULT_RECIPE, "-o", out, "--set", "bootstrap.packages=[]", "--set", "init=none",
                 "--set", "targets={image: {size: 16M}}")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert re.search(r"^error: image size 16M is too small for this tree", r.stderr, re.MULTILINE), r.stderr
    assert "hint: raise the target's size" in r.stderr, r.stderr
    assert not (out / "debian12").exists(), "a failed build published an output"
    left = [p.name for p in out.iterdir()] if out.exists() else []
    assert left == [], f"left behind in the output directory: {left}"
    assert mounts_under(tmp_path) == []


# ------------------------------------------------------------------ e2write / e2read


@pytest.mark.root
def test_e2write_replaces_a_file_with_mode_and_owner(tree, tmp_path):
    img = make(tree, tmp_path / "x.ext4")
    e2fs.write(img, "/etc/motd", b"new\n", mode=0o600, uid=123, gid=456)
    assert e2fs.read(img, "/etc/motd", 64 << 20) == b"new\n"
    m = inode(img, "/etc/motd")
    assert (m.type, m.mode, m.uid, m.gid, m.links) == ("regular", 0o600, 123, 456, 1)
    assert e2fs.read(img, "/etc/motd.hard", 64 << 20) == b"hello\n"      # the other name keeps the old inode
    e2fs.write(img, "/etc/new-file", b"x", mode=0o755)
    assert inode(img, "/etc/new-file").mode == 0o755
    assert fsck(img).returncode == 0


@pytest.mark.root
def test_e2write_into_a_missing_directory_raises(tree, tmp_path):
    img = make(tree, tmp_path / "x.ext4")
    raised = None
    try:
        e2fs.write(img, "/no/such/dir/file", b"data")
    except BuilderError as e:
        raised = e
    assert raised is not None, "e2write lost the file without an error"
    assert e2fs.read(img, "/no/such/dir/file", 64 << 20) is None


@pytest.mark.root
def test_e2read_returns_binary_content_unchanged(tree, tmp_path):
    img = make(tree, tmp_path / "x.ext4")
    assert e2fs.read(img, "/var/big", 64 << 20) == BIG


# ------------------------------------------------------------------ the default recipe, booted under qemu


MARKER_UNIT = b"""[Unit]
Description=imgbuild test: report on the serial console, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=-/usr/local/sbin/imgbuild-boot-report
ExecStart=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""

# Written to /dev/kmsg, so each line reaches the serial console through the kernel's console=ttyS0, whatever the
# console getty does to the tty.
REPORT = b"""#!/bin/sh
say() { echo "$*" > /dev/kmsg; }
say "IMGBUILD-BOOTED $(hostname)"
systemctl --failed --no-legend --plain --no-pager | while read -r unit rest; do say "IMGBUILD-FAILED $unit"; done
say "IMGBUILD-ROOT $(findmnt -n -o SOURCE,FSTYPE,OPTIONS /)"
say "IMGBUILD-ETH0 $(ip -o -4 addr show dev eth0 | awk '{print $4}') $(cat /sys/class/net/eth0/address)"
say "IMGBUILD-REPORT-END"
"""

BOOT_TIMEOUT = 180       # hard limit for qemu; the marker came after ~15 s here


@pytest.fixture(scope="module")
def image_build(tmp_path_factory):
    """The default recipe built through the CLI with the image target (and its tree kept, to compare)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path_factory.mktemp("image-build") / "out"
    t0 = time.monotonic()
    r = imgbuild(DEFAULT_RECIPE, "-o", out, "--keep-tree", "--set", "targets={image: {}}")
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"build with the image target: {time.monotonic() - t0:.1f} s")
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_default_recipe_image_artifact(image_build):
    final, tree = image_build / "debian12", image_build / "debian12.rootfs"
    img = final / "debian12.ext4"
    assert img.is_file()
    manifest = json.loads((final / "manifest.json").read_text())
    kinds = {a["kind"]: a for a in manifest["artifacts"]}
    assert kinds["image"]["path"] == "debian12.ext4" and kinds["image"]["sha256"] == sha256(img)
    assert set(kinds) == {"image", "sbom"}, "targets={image: {}} must produce only the image (and the SBOM)"

    r = fsck(img)
    assert r.returncode == 0, r.stdout + r.stderr
    sb = superblock(img)
    assert sb["Filesystem volume name"] == "root"
    epoch = manifest["source_date_epoch"]
    assert sb["Filesystem created"] == time.asctime(time.gmtime(epoch))      # E2FSPROGS_FAKE_TIME, not the clock
    assert sb["Filesystem UUID"] == image.fs_uuid("root", epoch)              # derived, not random

    items = tarwriter.entries(tree)
    data = tarwriter.data_size(items)
    assert data < img.stat().st_size <= image.default_size(data, len(items))
    assert img.stat().st_size <= 2 * data + 128 * MiB, "the default size is absurdly bigger than the tree"
    used = (int(sb["Block count"]) - int(sb["Free blocks"])) * int(sb["Block size"])
    assert used >= data * 0.9, "the image holds less data than the tree"

    assert e2fs.read(img, "/etc/hostname", 64 << 20) == b"vm0\n"
    assert b"LABEL=root\t/\text4" in e2fs.read(img, "/etc/fstab", 64 << 20)
    tree_fstab = (tree / "etc" / "fstab").read_bytes()        # the container fstab the build wrote, untouched
    assert b"A container" in tree_fstab and b"LABEL=" not in tree_fstab, "the image's fstab got into the tree"
    assert mounts_under(image_build) == []


@dataclass
class Boot:
    serial: str
    marker_after: float | None     # seconds from qemu start to the marker
    exit_status: int | None
    exited_after: float | None
    image_unchanged: bool


@pytest.fixture(scope="module")
def booted(image_build, qemu_kernel, tmp_path_factory):  # noqa: F811 - qemu_kernel: the session fixture imported above
    """A copy of the built image with a report unit, booted once under qemu; qemu is gone when this returns."""
    work = tmp_path_factory.mktemp("qemu-boot")
    boot = work / "boot.ext4"
    subprocess.run(["cp", "--sparse=always", str(image_build / "debian12" / "debian12.ext4"), str(boot)], check=True)
    e2fs.write(boot, "/usr/local/sbin/imgbuild-boot-report", REPORT, mode=0o755)
    e2fs.write(boot, "/etc/systemd/system/imgbuild-report.service", MARKER_UNIT)
    cmds = work / "enable.debugfs"
    cmds.write_text(
        # enable the unit the way `systemctl enable` would, and mask the serial getty (no udev in this tree: it
        # would wait 90 s for its device); the container shim already masks serial-getty@.service as a whole
        "symlink /etc/systemd/system/multi-user.target.wants/imgbuild-report.service "
        "/etc/systemd/system/imgbuild-report.service\n"
        "symlink /etc/systemd/system/serial-getty@ttyS0.service /dev/null\n")
    subprocess.run(["debugfs", "-w", "-f", str(cmds), str(boot)], check=True, capture_output=True)
    assert inode(boot, "/etc/systemd/system/multi-user.target.wants/imgbuild-report.service").type == "symlink"
    assert fsck(boot).returncode == 0
    before = sha256(boot)

    # slirp with restrict=on: the guest gets an eth0 for the recipe's static address, and no packet leaves qemu
    with qemu(qemu_kernel, boot, work / "run", nic="user,model=virtio-net-pci,restrict=on",
              hard_timeout=BOOT_TIMEOUT) as q:
        m = q.wait_for(r"IMGBUILD-BOOTED", BOOT_TIMEOUT - 30)
        marker_after = time.monotonic() - q.started if m else None
        status = q.wait_exit(max(5.0, BOOT_TIMEOUT - 10 - (time.monotonic() - q.started)))
        exited_after = time.monotonic() - q.started if status is not None else None
    result = Boot(q.output(), marker_after, status, exited_after, sha256(boot) == before)
    boot.unlink()                                   # the copy; the serial log stays for a look after a failure
    print(f"qemu: marker after {marker_after}s, exit {status} after {exited_after}s")
    (work / "serial.log").write_text(result.serial)
    return result


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_default_recipe_image_boots_to_systemd_under_qemu(booted):
    s = booted.serial
    assert "imgbuild-initramfs: /dev/vda mounted" in s, _tail(s)
    assert re.search(r"systemd\[1\]: .*(Detected virtualization|systemd 25\d)", s) or "Welcome to" in s, _tail(s)
    m = re.search(r"IMGBUILD-BOOTED (\S+)", s)
    assert m, f"no boot marker on the serial console within {BOOT_TIMEOUT - 30} s:\n{_tail(s)}"
    assert m.group(1) == "vm0", m.group(0)
    print(f"marker after {booted.marker_after:.1f} s under TCG")

    # / is the image, remounted rw by systemd-remount-fs with the options of the fstab written into the image
    root = re.search(r"IMGBUILD-ROOT (\S+)\s+(\S+)\s+(\S+)", s)
    assert root and root.group(1) == "/dev/vda" and root.group(2) == "ext4", root and root.group(0)
    opts = root.group(3).split(",")
    assert "rw" in opts and "errors=remount-ro" in opts, opts
    # the recipe's network config (ifupdown: address and hwaddress) took effect on the VM's NIC
    eth0 = re.search(r"IMGBUILD-ETH0 (\S*) (\S*)", s)
    assert eth0 and eth0.groups() == ("10.0.3.2/24", "00:16:3e:00:03:02"), eth0 and eth0.group(0)
    assert "IMGBUILD-REPORT-END" in s
    # and systemd shut the machine down cleanly (poweroff from the report unit)
    assert booted.exit_status == 0, f"qemu exit status {booted.exit_status}\n{_tail(s)}"
    assert "reboot: Power down" in s, _tail(s)
    assert booted.image_unchanged, "snapshot=on, yet the image file changed"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_booted_image_has_no_failed_units(booted):
    assert "IMGBUILD-REPORT-END" in booted.serial, _tail(booted.serial)
    failed = set(re.findall(r"IMGBUILD-FAILED (\S+)", booted.serial))
    assert failed == set(), f"failed units in the booted image: {sorted(failed)}"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_qemu_helper_fails_fast_and_never_leaves_qemu_running(tree, qemu_kernel, tmp_path):  # noqa: F811 - qemu_kernel: the session fixture imported above
    """The boot machinery itself: an image without /sbin/init stops in the initramfs with a clear line (and qemu
    powers off by itself), and a test that fails while qemu runs still leaves no qemu behind."""
    img = make(tree, tmp_path / "noinit.ext4")
    with qemu(qemu_kernel, img, tmp_path / "run1", hard_timeout=120) as q:
        m = q.wait_for(r"IMGBUILD-INITRAMFS-FAILED: (.*)", 100)
        assert m and m.group(1).strip() == "no /sbin/init in the image", _tail(q.output())
        assert q.wait_exit(30) == 0, "qemu did not power off after the initramfs gave up"

    pid = None
    with pytest.raises(RuntimeError, match="simulated"), \
            qemu(qemu_kernel, img, tmp_path / "run2", hard_timeout=120) as q:
        deadline = time.monotonic() + 30
        while pid is None and time.monotonic() < deadline:
            pid = q.qemu_pid()
            time.sleep(0.1)
        assert pid is not None and Path(f"/proc/{pid}").exists()
        raise RuntimeError("simulated test failure while qemu runs")
    assert not Path(f"/proc/{pid}").exists(), f"qemu {pid} survived a failing test"
    assert q.proc.poll() is not None

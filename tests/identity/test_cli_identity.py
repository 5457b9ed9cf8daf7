"""`imgbuild clone` and `migrate reidentify` from the command line: refusals of a taken MAC, IP or host name
(naming both guests, nothing copied, inventory untouched), --force, --dry-run (a diff of every change, not one
byte written), idempotence, ext4 images through debugfs (and --loop), and templates re-rendered for the clone.

Every command runs with IMGBUILD_INVENTORY in tmp_path and --lxcpath/--xen-dir/--vz-dir in tmp_path: the host's
inventory and guest configs are never read or written.
"""
from __future__ import annotations

import difflib
import os
import re
import shutil
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from builder.build.targets import image as img
from builder.identity import inventory
from tests.conftest import DEFAULT_RECIPE, imgbuild, migrate, mirror_reason
from tests.support.guests import (
    EPOCH,
    OLD_HOST,
    OLD_IP,
    OLD_MAC,
    debugfs_cat,
    debugfs_stat,
    file_sha,
    fsck,
    interfaces,
    make_container,
    make_root,
    tree_state,
)

OTHER_MAC, OTHER_IP = "00:16:3e:00:0a:50", "10.0.3.50"


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    """No test here may touch the host's inventory, even through a default (subprocesses get `env` too)."""
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))


@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, inventory.ENV_VAR: str(tmp_path / "inventory.yml")}


@pytest.fixture
def opts(tmp_path) -> list[str]:
    return ["--lxcpath", str(tmp_path / "lxc"), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]


def inv_bytes(tmp_path: Path) -> bytes | None:
    p = tmp_path / "inventory.yml"
    return p.read_bytes() if p.exists() else None


def inv_guests(tmp_path: Path, name: str = "inventory.yml") -> dict[str, inventory.GuestRecord]:
    return {g.name: g for g in inventory.load(tmp_path / name).guests}


def hwaddr(config: Path) -> str:
    return re.search(r"^lxc\.net\.0\.hwaddr = (\S+)$", config.read_text(), re.M).group(1)


def contents(top: Path) -> dict[str, bytes]:
    """Every regular file under top: relative path -> bytes."""
    out = {}
    for dirpath, _dirs, files in os.walk(top):
        for n in files:
            p = Path(dirpath, n)
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(top))] = p.read_bytes()
    return out


def udiff(old: bytes | None, new: bytes | None, label: str) -> str:
    a = (old or b"").decode(errors="replace").splitlines(keepends=True)
    b = (new or b"").decode(errors="replace").splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, label, label))


def changed_lines(old: bytes | None, new: bytes | None) -> list[str]:
    return [line for line in udiff(old, new, "x").splitlines()
            if line[:1] in "+-" and not line.startswith(("---", "+++"))]


# ================================================================== refusals (and --force)


@pytest.fixture
def host(tmp_path, env, opts):
    """tmp_path/lxc holds vm0 (10.0.3.2, the recipe's MAC; its address only inside the guest, like imgbuild's
    own containers) and `other` (10.0.3.50 in its config's lxc.net.0.ipv4.address); vmA was cloned from vm0
    with `imgbuild clone` (10.0.3.11), so the inventory knows it."""
    lxcpath = tmp_path / "lxc"
    make_container(lxcpath, "vm0", OLD_HOST)
    make_container(lxcpath, "other", "other", OTHER_IP, OTHER_MAC, config_ip=True)
    r = imgbuild("clone", "lxc:vm0", "vmA", "--ip", "10.0.3.2=10.0.3.11", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(lxcpath / "vmA")
    vma_mac = hwaddr(lxcpath / "vmA" / "config")
    assert vma_mac not in (OLD_MAC, OTHER_MAC)
    assert inv_guests(tmp_path)["vmA"].macs == (vma_mac,)
    # vmA's address is only in its guest files and in the inventory: its config carries none
    assert "ipv4" not in (lxcpath / "vmA" / "config").read_text()
    return {"lxcpath": lxcpath, "vmA_mac": vma_mac}


REFUSALS = {
    # case: (extra args, the taken value, its holder)
    "mac-of-another-container": (["--ip", "10.0.3.2=10.0.3.12", "--mac", f"{OLD_MAC}={OTHER_MAC}"], OTHER_MAC, "other"),
    "mac-of-an-earlier-clone": (["--ip", "10.0.3.2=10.0.3.12", "--mac", f"{OLD_MAC}=@vmA"], "@vmA", "vmA"),
    "ip-in-the-inventory": (["--ip", "10.0.3.2=10.0.3.11"], "10.0.3.11", "vmA"),
    "ip-in-an-lxc-config": (["--ip", f"10.0.3.2={OTHER_IP}"], OTHER_IP, "other"),
    "hostname-of-a-container": (["--ip", "10.0.3.2=10.0.3.12", "--hostname", "other"], "other", "other"),
    "hostname-of-an-earlier-clone": (["--ip", "10.0.3.2=10.0.3.12", "--hostname", "vmA"], "vmA", "vmA"),
    "ip-of-the-original": ([], OLD_IP, "vm0"),
}


def _fill(args: list[str], host: dict) -> list[str]:
    return [a.replace("@vmA", host["vmA_mac"]) for a in args]


@pytest.mark.root
@pytest.mark.parametrize("case", list(REFUSALS))
def test_clone_refuses_a_taken_identity_naming_both_guests(case, host, tmp_path, env, opts):
    args, value, holder = REFUSALS[case]
    args, value = _fill(args, host), value.replace("@vmA", host["vmA_mac"])
    lxcpath = host["lxcpath"]
    before = {n: tree_state(lxcpath / n) for n in ("vm0", "other", "vmA")}
    listing, inv_before = sorted(os.listdir(lxcpath)), inv_bytes(tmp_path)

    r = imgbuild("clone", "lxc:vm0", "vmB", *args, *opts, env=env)

    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr
    assert "error:" in err and "Traceback" not in err
    conflict = next((line for line in err.splitlines() if "already taken" in line), "")
    assert value in conflict, err
    assert "vmB" in conflict and holder in conflict, err                     # both guests named ...
    assert f"{lxcpath / holder}" in conflict, err                            # ... with where they are
    assert not (lxcpath / "vmB").exists()
    assert sorted(os.listdir(lxcpath)) == listing, "a partial copy was left behind"
    assert inv_bytes(tmp_path) == inv_before
    for n, s in before.items():
        assert tree_state(lxcpath / n) == s, f"{n} was changed"


@pytest.mark.root
def test_reidentify_refuses_a_taken_identity_and_changes_nothing(host, tmp_path, env, opts):
    lxcpath = host["lxcpath"]
    before, inv_before = tree_state(lxcpath / "vmA"), inv_bytes(tmp_path)
    r = migrate("reidentify", "lxc:vmA", "--ip", f"10.0.3.11={OTHER_IP}", "--hostname", "vmZ", *opts, env=env)
    assert r.returncode == 2, r.stderr
    conflict = next(line for line in r.stderr.splitlines() if "already taken" in line)
    assert OTHER_IP in conflict and "vmA" in conflict and "other" in conflict
    assert tree_state(lxcpath / "vmA") == before
    assert inv_bytes(tmp_path) == inv_before


@pytest.mark.root
def test_force_goes_on_with_a_warning_naming_both_guests(host, tmp_path, env, opts):
    lxcpath = host["lxcpath"]
    r = imgbuild("clone", "lxc:vm0", "vmB", "--ip", "10.0.3.2=10.0.3.12", "--mac", f"{OLD_MAC}={OTHER_MAC}",
                 "--force", *opts, env=env)
    assert r.returncode == 0, r.stderr
    warning = next((line for line in r.stderr.splitlines() if line.startswith("warning:")), "")
    assert OTHER_MAC in warning and "vmB" in warning and "other" in warning, r.stderr
    assert hwaddr(lxcpath / "vmB" / "config") == OTHER_MAC
    assert (lxcpath / "vmB/rootfs/etc/network/interfaces").read_text() == interfaces("10.0.3.12", OTHER_MAC)
    assert inv_guests(tmp_path)["vmB"].macs == (OTHER_MAC,)


@pytest.mark.root
def test_clones_in_a_row_never_share_a_mac(host, tmp_path, env, opts):
    lxcpath = host["lxcpath"]
    for n, name in enumerate(("vmB", "vmC", "vmD"), start=12):
        r = imgbuild("clone", "lxc:vm0", name, "--ip", f"10.0.3.2=10.0.3.{n}", *opts, env=env)
        assert r.returncode == 0, r.stderr
    macs = [hwaddr(lxcpath / n / "config") for n in ("vm0", "other", "vmA", "vmB", "vmC", "vmD")]
    assert len(set(macs)) == len(macs), macs
    recorded = inv_guests(tmp_path)
    assert {n: recorded[n].ips for n in ("vmA", "vmB", "vmC", "vmD")} == {
        "vmA": ("10.0.3.11",), "vmB": ("10.0.3.12",), "vmC": ("10.0.3.13",), "vmD": ("10.0.3.14",)}


@pytest.mark.root
def test_a_failed_copy_leaves_no_half_written_clone(tmp_path, env, opts):
    """The disk fills during the copy: the clone's name must not be left holding half an image (a later clone
    to that name would be refused, and the half image is not a filesystem)."""
    root = make_root(tmp_path / "root")
    (root / "var/data").write_bytes(os.urandom(4 << 20))            # 4 MiB the sparse copy cannot skip
    src = img.make_image(root, tmp_path / "vm0.ext4", img.ImageOptions(fstab=False), EPOCH)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        r = imgbuild("clone", src, small / "vm1.ext4", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env)
        assert r.returncode != 0
        assert "No space left" in r.stderr
        assert os.listdir(small) == [], f"left behind: {os.listdir(small)}"
        assert inv_bytes(tmp_path) is None
    finally:
        subprocess.run(["umount", str(small)], check=True)


def config_paths(config: Path) -> list[str]:
    """The host paths an LXC config names (rootfs, mounts)."""
    return re.findall(r"^lxc\.(?:rootfs\.path|rootfs|mount\.fstab|mount)\s*=\s*(?:dir:)?(\S+)", config.read_text(),
                      re.M)


@pytest.mark.root
def test_a_clone_given_through_a_symlinked_lxcpath_boots_its_own_rootfs(tmp_path, env):
    """/var/lib/lxc is often a symlink to a bigger disk, and configs keep the path they were installed with. The
    clone's config must point at the clone's rootfs, never at the original's."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    lxcpath = tmp_path / "link"
    make_container(lxcpath, "vm0")          # its config says dir:<tmp>/link/vm0/rootfs
    dirs = ["--lxcpath", str(lxcpath), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]
    r = imgbuild("clone", lxcpath / "vm0", "vm1", "--ip", "10.0.3.2=10.0.3.12", *dirs, env=env)
    assert r.returncode == 0, r.stderr
    paths = config_paths(lxcpath / "vm1" / "config")
    assert paths, (lxcpath / "vm1" / "config").read_text()
    for p in paths:
        assert os.path.realpath(p).startswith(str(tmp_path / "real" / "vm1") + "/"), \
            f"the clone's config names {p}, outside the clone"


@pytest.mark.root
def test_a_clone_to_a_relative_path_gets_absolute_paths(tmp_path, env, opts):
    lxcpath = tmp_path / "lxc"
    make_container(lxcpath, "vm0")
    (tmp_path / "elsewhere").mkdir()
    r = imgbuild("clone", "lxc:vm0", "elsewhere/vmB", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cdir = tmp_path / "elsewhere" / "vmB"
    assert config_paths(cdir / "config") == [f"{cdir}/rootfs"]
    assert inv_guests(tmp_path)["vmB"].where == f"lxc:{cdir}"
    # ... so that the clone is itself and not a stranger holding its own MAC next time
    r = migrate("reidentify", cdir, "--hostname", "vmB2", *opts, env=env)
    assert r.returncode == 0, r.stderr


@pytest.mark.root
def test_a_clone_does_not_keep_the_originals_host_side_veth_name(tmp_path, env, opts):
    """lxc.net.N.veth.pair names the host end of the NIC; two containers with one pair name cannot run at once
    (formats.py leaves the name to the clone tool, which is this)."""
    lxcpath = tmp_path / "lxc"
    cdir = make_container(lxcpath, "vm0")
    with open(cdir / "config", "a") as f:
        f.write("lxc.net.0.veth.pair = veth-vm0\n")
    r = imgbuild("clone", "lxc:vm0", "vmB", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env)
    assert r.returncode == 0, r.stderr
    pairs = re.findall(r"^lxc\.net\.0\.veth\.pair\s*=\s*(\S*)", (lxcpath / "vmB/config").read_text(), re.M)
    assert "veth-vm0" not in pairs, pairs
    assert all(len(p) <= 15 for p in pairs), pairs


@pytest.mark.root
@pytest.mark.parametrize("args, message", [
    (["--ip", "10.0.3.2"], "--ip 10.0.3.2"),
    (["--ip", "10.0.3.2=fd00::2"], "different IP versions"),
    (["--mac", "00:16:3e:00:03:02=zz"], "--mac"),
    (["--hostname", "not_a host"], "--hostname"),
    (["--set", "server_id=2"], "no imgbuild templates"),
])
def test_bad_options_are_input_errors(args, message, tmp_path, env, opts):
    make_container(tmp_path / "lxc", "vm0", leftovers=False)
    before = tree_state(tmp_path / "lxc")
    r = migrate("reidentify", "lxc:vm0", *args, *opts, env=env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert tree_state(tmp_path / "lxc") == before


# ================================================================== --dry-run


def dry_run_covers(dry: str, before: dict[str, bytes], after: dict[str, bytes], label) -> None:
    """Each file the real run changed is in the dry run's diff: its exact unified diff for text, its name for
    key material."""
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed, "the real run changed nothing"
    for k in changed:
        lab = label(k)
        if "/etc/ssh/ssh_host_" in lab:
            assert f"--- {lab.removesuffix('.pub')}\n" in dry, lab
            continue
        expected = udiff(before.get(k), after.get(k), lab)
        assert expected in dry, f"the dry run does not show the change of {lab}:\n{expected}"


@pytest.mark.root
def test_reidentify_dry_run_on_a_container_shows_every_change_and_writes_nothing(tmp_path, env, opts):
    cdir = make_container(tmp_path / "lxc", "vm0", keys=True)
    args = ["--hostname", "web1", "--ip", "10.0.3.2=10.0.3.41", "--mac", f"{OLD_MAC}=00:16:3e:00:03:41"]
    before = tree_state(cdir)
    r = migrate("reidentify", cdir, *args, "--dry-run", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert tree_state(cdir) == before, "--dry-run changed the container"
    assert inv_bytes(tmp_path) is None, "--dry-run wrote the inventory"
    dry = r.stdout
    for header in ("rootfs:/etc/hostname", "rootfs:/etc/hosts", "rootfs:/etc/network/interfaces",
                   f"config:{cdir}/config", "rootfs:/etc/machine-id", "rootfs:/var/lib/dbus/machine-id",
                   "rootfs:/var/lib/dhcp/dhclient.eth0.leases", "rootfs:/etc/ssh/ssh_host_ed25519_key"):
        assert f"--- {header}\n" in dry, header
    assert "+lxc.uts.name = web1\n" in dry and "+lxc.net.0.hwaddr = 00:16:3e:00:03:41\n" in dry
    assert "BEGIN OPENSSH PRIVATE KEY" not in dry
    assert "dry run" in r.stderr

    # the same command for real changes exactly what the dry run showed
    files_before = {f"config:{cdir}/config": (cdir / "config").read_bytes(),
                    **{f"rootfs:/{k}": v for k, v in contents(cdir / "rootfs").items()}}
    r = migrate("reidentify", cdir, *args, *opts, env=env)
    assert r.returncode == 0, r.stderr
    files_after = {f"config:{cdir}/config": (cdir / "config").read_bytes(),
                   **{f"rootfs:/{k}": v for k, v in contents(cdir / "rootfs").items()}}
    dry_run_covers(dry, files_before, files_after, lambda k: k)


@pytest.mark.root
def test_clone_dry_run_creates_nothing(tmp_path, env, opts):
    lxcpath = tmp_path / "lxc"
    make_container(lxcpath, "vm0", keys=True)
    before, listing = tree_state(lxcpath), sorted(os.listdir(lxcpath))
    r = imgbuild("clone", "lxc:vm0", "vmB", "--ip", "10.0.3.2=10.0.3.12", "--dry-run", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert not (lxcpath / "vmB").exists() and sorted(os.listdir(lxcpath)) == listing
    assert tree_state(lxcpath) == before
    assert inv_bytes(tmp_path) is None
    dry = r.stdout
    assert "-vm0\n+vmB\n" in dry                                   # /etc/hostname
    assert "+10.0.3.12\tvmB\n" in dry                              # /etc/hosts
    assert "+    address 10.0.3.12/24\n" in dry
    new_mac = re.search(r"^\+    hwaddress ether (\S+)$", dry, re.M).group(1)
    assert new_mac != OLD_MAC and f"+lxc.net.0.hwaddr = {new_mac}\n" in dry
    assert "+lxc.uts.name = vmB\n" in dry
    assert "--- rootfs:/etc/ssh/ssh_host_ed25519_key\n" in dry and "--- rootfs:/etc/machine-id\n" in dry


@pytest.mark.root
def test_clone_dry_run_shows_every_line_the_clone_changes(tmp_path, env, opts):
    """What `clone --dry-run` prints must cover what the real clone then changes, config included (the clone's
    lxc.rootfs.path moves to its own directory)."""
    lxcpath = tmp_path / "lxc"
    make_container(lxcpath, "vm0")
    args = ["--ip", "10.0.3.2=10.0.3.12", "--mac", f"{OLD_MAC}=00:16:3e:00:03:12"]
    dry = imgbuild("clone", "lxc:vm0", "vmB", *args, "--dry-run", *opts, env=env)
    assert dry.returncode == 0, dry.stderr
    r = imgbuild("clone", "lxc:vm0", "vmB", *args, *opts, env=env)
    assert r.returncode == 0, r.stderr
    src, new = contents(lxcpath / "vm0"), contents(lxcpath / "vmB")
    shown = set(dry.stdout.splitlines())
    for k in sorted(src.keys() | new.keys()):
        if src.get(k) != new.get(k):
            missing = [line for line in changed_lines(src.get(k), new.get(k)) if line not in shown]
            assert not missing, f"{k}: the dry run did not show {missing}"


# ================================================================== idempotence


REID = ["--hostname", "web1", "--ip", "10.0.3.2=10.0.3.41", "--mac", f"{OLD_MAC}=00:16:3e:00:03:41"]


@pytest.mark.root
def test_reidentify_twice_on_a_container_changes_nothing_the_second_time(tmp_path, env, opts):
    cdir = make_container(tmp_path / "lxc", "vm0", keys=True)
    r = cdir / "rootfs"
    keys = sorted(p.name for p in (r / "etc/ssh").glob("ssh_host_*"))
    assert len(keys) == 6, keys
    old_keys = {k: (r / "etc/ssh" / k).read_bytes() for k in keys}

    first = migrate("reidentify", cdir, *REID, *opts, env=env)
    assert first.returncode == 0, first.stderr
    after_first = tree_state(cdir)
    assert (r / "etc/hostname").read_text() == "web1\n"
    assert (r / "etc/network/interfaces").read_text() == interfaces("10.0.3.41", "00:16:3e:00:03:41")
    assert "lxc.uts.name = web1\n" in (cdir / "config").read_text()
    assert (r / "etc/machine-id").read_bytes() == b""
    assert not (r / "var/lib/dbus/machine-id").exists() and not (r / "var/lib/dhcp/dhclient.eth0.leases").exists()
    assert sorted(p.name for p in (r / "etc/ssh").glob("ssh_host_*")) == keys
    for k, old in old_keys.items():
        assert (r / "etc/ssh" / k).read_bytes() != old, f"{k} was not replaced"
        if k.endswith(".pub"):
            assert (r / "etc/ssh" / k).read_text().rstrip().endswith("root@web1 (imgbuild)")
        else:
            assert stat.S_IMODE((r / "etc/ssh" / k).stat().st_mode) == 0o600
    check = subprocess.run(["ssh-keygen", "-y", "-f", str(r / "etc/ssh/ssh_host_ed25519_key")], capture_output=True,
                           text=True)
    assert check.stdout.split()[:2] == (r / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    rec = inv_guests(tmp_path)["vm0"]
    assert (rec.hostname, rec.ips, rec.macs) == ("web1", ("10.0.3.41",), ("00:16:3e:00:03:41",))
    inv_first = inv_bytes(tmp_path)

    second = migrate("reidentify", cdir, *REID, *opts, env=env)
    assert second.returncode == 0, second.stderr
    assert " 0 file(s) changed" in second.stderr
    assert state_diff_of(after_first, tree_state(cdir)) == []
    assert inv_bytes(tmp_path) == inv_first


def state_diff_of(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@pytest.mark.root
def test_reidentify_twice_on_an_image_leaves_the_image_byte_identical(tmp_path, env, opts):
    root = make_root(tmp_path / "root", keys=True)
    image = img.make_image(root, tmp_path / "vm0.ext4", img.ImageOptions(), EPOCH)
    old_pub = debugfs_cat(image, "/etc/ssh/ssh_host_rsa_key.pub")
    first = migrate("reidentify", image, *REID, *opts, env=env)
    assert first.returncode == 0, first.stderr
    sha = file_sha(image)
    assert debugfs_cat(image, "/etc/hostname") == "web1\n"
    assert debugfs_cat(image, "/etc/machine-id") == ""
    new_pub = debugfs_cat(image, "/etc/ssh/ssh_host_rsa_key.pub")
    assert new_pub != old_pub and "root@web1 (imgbuild)" in new_pub
    second = migrate("reidentify", image, *REID, *opts, env=env)
    assert second.returncode == 0, second.stderr
    assert file_sha(image) == sha
    assert fsck(image).returncode == 0


@pytest.mark.root
def test_dry_run_with_loop_leaves_the_image_byte_identical(tmp_path, env, opts):
    """--loop changes how an image is opened, not what --dry-run promises: a read-write mount alone rewrites the
    superblock (mount count, times), so a dry run must not mount the image writable."""
    image = img.make_image(make_root(tmp_path / "root"), tmp_path / "vm0.ext4", img.ImageOptions(), EPOCH)
    sha, mounts = file_sha(image), host_mounts()
    r = migrate("reidentify", image, *REID, "--dry-run", "--loop", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert "+web1\n" in r.stdout
    assert host_mounts() == mounts and loop_devices(image) == ""
    assert file_sha(image) == sha, "--dry-run --loop changed the image"


@pytest.mark.root
def test_clone_with_loop_leaves_its_source_byte_identical(tmp_path, env, opts):
    src = img.make_image(make_root(tmp_path / "root"), tmp_path / "vm0.ext4", img.ImageOptions(), EPOCH)
    sha, mounts = file_sha(src), host_mounts()
    r = imgbuild("clone", src, tmp_path / "vm1.ext4", "--ip", "10.0.3.2=10.0.3.12", "--loop", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert debugfs_cat(tmp_path / "vm1.ext4", "/etc/hostname") == "vm1\n"
    assert host_mounts() == mounts and loop_devices(src) == ""
    assert file_sha(src) == sha, "clone --loop changed its source image"


# ================================================================== ext4 images of the real guest (debugfs, --loop)


@pytest.fixture(scope="module")
def vm0_image(debian12_build, tmp_path_factory) -> Path:
    """The session build installed with `imgbuild install-lxc` (as vm0), and an ext4 image of that rootfs."""
    base = tmp_path_factory.mktemp("vm0img")
    r = imgbuild("install-lxc", debian12_build, "--name", "vm0", "--lxcpath", base / "lxc",
                 env={**os.environ, inventory.ENV_VAR: str(base / "unused-inventory.yml")})
    assert r.returncode == 0, r.stderr
    image = img.make_image(base / "lxc/vm0/rootfs", base / "vm0.ext4", img.ImageOptions(), EPOCH)
    shutil.rmtree(base / "lxc")
    assert [g.name for g in inventory.load(base / "unused-inventory.yml").guests] == ["vm0"]   # recorded
    return image


def loop_devices(image: Path) -> str:
    return subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout


def host_mounts() -> list[str]:
    """Loop-device mounts of the host: what the debugfs path must never make (other mounts on the host, such as
    a concurrent build's, are not this test's business)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "/dev/loop" in line]


IDENTITY_FILES = ("/etc/hostname", "/etc/hosts", "/etc/network/interfaces", "/etc/machine-id", "/etc/motd",
                  "/etc/hello")


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_clone_an_image_with_debugfs_and_with_loop_gives_the_same_files(vm0_image, tmp_path, env, opts):
    src_sha, mounts = file_sha(vm0_image), host_mounts()
    (tmp_path / "a").mkdir()
    new = tmp_path / "a" / "vmI.ext4"
    r = imgbuild("clone", vm0_image, new, "--ip", "10.0.3.2=10.0.3.21", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(new)
    assert host_mounts() == mounts, "the debugfs path mounted something"
    rec = inv_guests(tmp_path)["vmI"]
    (mac,) = rec.macs
    assert mac != OLD_MAC and rec.ips == ("10.0.3.21",) and rec.where == f"image:{new}"
    assert debugfs_cat(new, "/etc/hostname") == "vmI\n"
    ifaces = debugfs_cat(new, "/etc/network/interfaces")
    assert "    address 10.0.3.21/24\n" in ifaces and f"    hwaddress ether {mac}\n" in ifaces
    assert OLD_MAC not in ifaces and "10.0.3.2/" not in ifaces
    assert "10.0.3.21\tvmI\n" in debugfs_cat(new, "/etc/hosts")
    assert "Mode:  0644" in debugfs_stat(new, "/etc/hostname")
    assert fsck(new).returncode == 0, fsck(new).stdout
    assert file_sha(vm0_image) == src_sha, "the source image changed"
    st = new.stat()
    assert st.st_blocks * 512 < st.st_size, "the copy is not sparse"

    # --loop: the same clone through a loop mount (its own inventory, else vmI's identity would be taken)
    (tmp_path / "b").mkdir()
    loop_new = tmp_path / "b" / "vmI.ext4"
    loop_env = {**env, inventory.ENV_VAR: str(tmp_path / "inventory-loop.yml")}
    r = imgbuild("clone", vm0_image, loop_new, "--ip", "10.0.3.2=10.0.3.21", "--mac", f"{OLD_MAC}={mac}", "--loop",
                 *opts, env=loop_env)
    assert r.returncode == 0, r.stderr
    assert host_mounts() == mounts, "--loop left a mount behind"
    assert loop_devices(loop_new) == "" and loop_devices(vm0_image) == "", "--loop left a loop device behind"
    for f in IDENTITY_FILES:
        assert debugfs_cat(loop_new, f) == debugfs_cat(new, f), f
        assert re.search(r"Mode:\s+\d+", debugfs_stat(loop_new, f)).group() == \
            re.search(r"Mode:\s+\d+", debugfs_stat(new, f)).group(), f
    assert fsck(loop_new).returncode == 0, fsck(loop_new).stdout


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_dry_run_on_an_image_shows_the_changes_and_leaves_every_byte(vm0_image, tmp_path, env, opts):
    image = tmp_path / "vm0.ext4"
    subprocess.run(["cp", "--sparse=always", str(vm0_image), str(image)], check=True)
    sha = file_sha(image)
    args = ["--hostname", "web1", "--ip", "10.0.3.2=10.0.3.41", "--mac", f"{OLD_MAC}=00:16:3e:00:03:41"]
    r = migrate("reidentify", image, *args, "--dry-run", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert file_sha(image) == sha, "--dry-run changed the image"
    assert inv_bytes(tmp_path) is None
    before = {f: debugfs_cat(image, f).encode() for f in IDENTITY_FILES}
    r2 = migrate("reidentify", image, *args, *opts, env=env)
    assert r2.returncode == 0, r2.stderr
    after = {f: debugfs_cat(image, f).encode() for f in IDENTITY_FILES}
    dry_run_covers(r.stdout, before, after, lambda f: f"image:{f}")
    assert "-vm0\n+web1\n" in r.stdout


# ================================================================== templates


TEMPLATE = textwrap.dedent("""\
    [mysqld]
    # {{ hostname }}: rendered by imgbuild
    server_id = {{ server_id }}
    wsrep_node_name = {{ hostname }}
    wsrep_node_address = {{ ip }}
    wsrep_cluster_address = gcomm://{{ cluster | join(",") }}
    """)


def rendered(hostname: str, ip: str, server_id: int, cluster: str = "vm0") -> str:
    return (f"[mysqld]\n# {hostname}: rendered by imgbuild\nserver_id = {server_id}\nwsrep_node_name = {hostname}\n"
            f"wsrep_node_address = {ip}\nwsrep_cluster_address = gcomm://{cluster}\n")


def node_recipe(d: Path, template: str = TEMPLATE, name: str = "tnode") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "node.cnf.j2").write_text(template)
    (d / "node.yml").write_text(textwrap.dedent(f"""\
        extends: {DEFAULT_RECIPE}
        name: {name}
        vars: {{server_id: 1, cluster: [vm0]}}
        templates:
          - {{path: /etc/mysql/conf.d/node.cnf, source: node.cnf.j2}}
        """))
    return d / "node.yml"


SMALL = ["--set", "bootstrap.packages=[]", "--set", "init=none"]


@pytest.fixture(scope="module")
def node_build(tmp_path_factory) -> Path:
    """The templated recipe (extending recipes/debian12.yml), built small; its output directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if mirror_reason():
        pytest.skip(mirror_reason())
    d = tmp_path_factory.mktemp("tnode")
    r = imgbuild(node_recipe(d / "recipe"), "-o", d / "out", *SMALL)
    assert r.returncode == 0, r.stderr
    return d / "out" / "tnode"


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_templates_are_rendered_and_rendered_again_for_each_clone(node_build, tmp_path, env, opts):
    lxcpath = tmp_path / "lxc"
    r = imgbuild("install-lxc", node_build, "--name", "node0", "--lxcpath", lxcpath, env=env)
    assert r.returncode == 0, r.stderr
    r0 = lxcpath / "node0" / "rootfs"
    cnf = "etc/mysql/conf.d/node.cnf"
    assert (r0 / cnf).read_text() == rendered("node0", "10.0.3.2", 1)   # --name node0 is its host name
    assert mode(r0 / cnf) == 0o644
    for kept in ("etc/imgbuild/vars.yml", "etc/imgbuild/templates.yml",
                 *(str(p.relative_to(r0)) for p in (r0 / "usr/share/imgbuild/templates").iterdir())):
        assert mode(r0 / kept) == 0o600, kept
        assert (r0 / kept).stat().st_uid == 0
    node0 = tree_state(lxcpath / "node0")

    r = imgbuild("clone", "lxc:node0", "node1", "--set", "server_id=2", "--ip", "10.0.3.2=10.0.3.12", *opts,
                 env=env)
    assert r.returncode == 0, r.stderr
    r1 = lxcpath / "node1" / "rootfs"
    assert (r1 / cnf).read_text() == rendered("node1", "10.0.3.12", 2)
    assert mode(r1 / cnf) == 0o644
    assert mode(r1 / "etc/imgbuild/vars.yml") == 0o600
    assert yaml.safe_load((r1 / "etc/imgbuild/vars.yml").read_text()) == {"server_id": 2, "cluster": ["vm0"]}
    assert tree_state(lxcpath / "node0") == node0, "the clone's source changed"

    # the vars travel with the guest: a clone of node1 without --set keeps server_id 2
    r = imgbuild("clone", "lxc:node1", "node2", "--ip", "10.0.3.12=10.0.3.13", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert (lxcpath / "node2/rootfs" / cnf).read_text() == rendered("node2", "10.0.3.13", 2)

    # and reidentify renders them again in place, once
    r = migrate("reidentify", lxcpath / "node2", "--set", "server_id=3", "--set", "cluster=[vm0, node1]", *opts,
                env=env)
    assert r.returncode == 0, r.stderr
    assert (lxcpath / "node2/rootfs" / cnf).read_text() == rendered("node2", "10.0.3.13", 3, "vm0,node1")
    state = tree_state(lxcpath / "node2")
    r = migrate("reidentify", lxcpath / "node2", "--set", "server_id=3", "--set", "cluster=[vm0, node1]", *opts,
                env=env)
    assert r.returncode == 0, r.stderr
    assert tree_state(lxcpath / "node2") == state


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_a_template_with_an_undefined_variable_fails_the_build(tmp_path):
    recipe = node_recipe(tmp_path / "recipe", TEMPLATE.replace("{{ server_id }}", "{{ server_idx }}"), "tbad")
    r = imgbuild(recipe, "-o", tmp_path / "out", *SMALL)
    assert r.returncode == 2, r.stdout + r.stderr
    err = next((line for line in r.stderr.splitlines() if line.startswith("error:")), "")
    # caught when the recipe loads, before any bootstrap: the key, the template file and the variable
    assert "templates[0].source" in err and ".j2" in err and "server_idx" in err, r.stderr
    assert "mmdebstrap" not in r.stderr, "the template error must be found before the bootstrap"
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "tbad").exists()

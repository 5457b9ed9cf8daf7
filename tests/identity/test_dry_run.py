"""A dry run is the run minus the writes: `imgbuild clone --dry-run` and `migrate reidentify --mac auto --dry-run`
show the MACs (and addresses) the same command then takes for real - one NIC or several, a container or an image,
also when the first MAC drawn is taken and the next one is used - and write nothing at all: no inventory, no lock
file beside it, no directory for it, no scratch copy next to an output. A refusal that names an inventory entry
whose guest is gone marks it stale.

Every command runs with the inventory in tmp_path and --lxcpath/--xen-dir/--vz-dir in tmp_path.
"""
from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.build.targets import image as img
from builder.identity import inventory
from tests.conftest import BIN, REPO, imgbuild
from tests.support.guests import EPOCH, OLD_IP, OLD_MAC, debugfs_cat, make_container, make_root, tree_state

pytestmark = pytest.mark.root

MAC2, IP2 = "00:16:3e:00:03:03", "10.0.4.2"


def migrate(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "migrate"), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inv" / "inventory.yml"))


@pytest.fixture
def env(tmp_path) -> dict:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    return {**os.environ, inventory.ENV_VAR: str(tmp_path / "inv" / "inventory.yml"), "TMPDIR": str(scratch)}


@pytest.fixture
def opts(tmp_path) -> list[str]:
    return ["--lxcpath", str(tmp_path / "lxc"), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]


def two_nic_container(lxcpath: Path, name: str = "vm0") -> Path:
    """make_container() with a second NIC (eth1: its own MAC and address, in the config and in the guest)."""
    cdir = make_container(lxcpath, name)
    with open(cdir / "config", "a") as f:
        f.write(f"lxc.net.1.type = veth\nlxc.net.1.link = lxcbr0\nlxc.net.1.name = eth1\nlxc.net.1.hwaddr = {MAC2}\n")
    with open(cdir / "rootfs/etc/network/interfaces", "a") as f:
        f.write(f"\nauto eth1\niface eth1 inet static\n    address {IP2}/24\n    hwaddress ether {MAC2}\n")
    return cdir


def identity_line(stderr: str, dry: bool) -> tuple[str, str]:
    """(where, "host name ..., IPs ..., MACs ...") of the summary line a run (or a dry run) prints."""
    rx = r"^dry run: (\S+): \d+ file\(s\) would change; (host name .*)$" if dry else \
        r"^(\S+): \d+ file\(s\) changed; (host name .*)$"
    m = re.search(rx, stderr, re.M)
    assert m, stderr
    return m.group(1), m.group(2)


def new_macs(identity: str) -> dict[str, str]:
    return dict(re.findall(r"([0-9a-f:]{17}) -> ([0-9a-f:]{17})", identity))


# ================================================================== the dry run shows the MACs the run takes


def _lxc_source(tmp_path: Path, nics: int) -> str:
    (make_container if nics == 1 else two_nic_container)(tmp_path / "lxc", "vm0")
    return "lxc:vm0"


def _image_source(tmp_path: Path, nics: int) -> str:
    return str(img.make_image(make_root(tmp_path / "root"), tmp_path / "vm0.ext4", img.ImageOptions(), EPOCH))


SOURCES = {"container-one-nic": (_lxc_source, 1, "vmB"), "container-two-nics": (_lxc_source, 2, "vmB"),
           "image": (_image_source, 1, "copies/vmB.ext4")}


@pytest.mark.parametrize("case", list(SOURCES))
def test_clone_dry_run_shows_the_macs_and_addresses_the_clone_then_takes(case, tmp_path, env, opts):
    make, nics, new = SOURCES[case]
    src = make(tmp_path, nics)
    (tmp_path / "copies").mkdir()
    new = str(tmp_path / new) if "/" in new else new
    args = ["--ip", f"{OLD_IP}=10.0.3.12", *(["--ip", f"{IP2}=10.0.4.12"] if nics == 2 else [])]
    dry = imgbuild("clone", src, new, *args, "--dry-run", *opts, env=env)
    assert dry.returncode == 0, dry.stderr
    real = imgbuild("clone", src, new, *args, *opts, env=env)
    assert real.returncode == 0, real.stderr
    (dwhere, dident), (rwhere, rident) = identity_line(dry.stderr, True), identity_line(real.stderr, False)
    assert (dwhere, dident) == (rwhere, rident), f"dry run: {dwhere} {dident}\nrun:     {rwhere} {rident}"
    macs = new_macs(rident)
    assert set(macs) == ({OLD_MAC, MAC2} if nics == 2 else {OLD_MAC}), rident
    assert len(set(macs.values())) == nics and not set(macs.values()) & {OLD_MAC, MAC2}
    assert "10.0.3.12" in rident
    for fresh in macs.values():             # the dry run's diff shows the very MAC the clone's files now hold
        assert f"+    hwaddress ether {fresh}\n" in dry.stdout
    if case.startswith("container"):
        config = (tmp_path / "lxc" / "vmB" / "config").read_text()
        for n, old in enumerate([OLD_MAC, MAC2][:nics]):
            assert f"lxc.net.{n}.hwaddr = {macs[old]}\n" in config
            assert f"+lxc.net.{n}.hwaddr = {macs[old]}\n" in dry.stdout
    else:
        assert f"hwaddress ether {macs[OLD_MAC]}" in debugfs_cat(Path(new), "/etc/network/interfaces")
    assert inventory.load(tmp_path / "inv" / "inventory.yml").at(rwhere).macs == tuple(
        macs[m] for m in [OLD_MAC, MAC2][:nics])


@pytest.mark.parametrize("kind", ["container-two-nics", "image"])
def test_reidentify_mac_auto_dry_run_shows_the_macs_the_run_takes(kind, tmp_path, env, opts):
    target = (two_nic_container(tmp_path / "lxc") if kind.startswith("container")
              else img.make_image(make_root(tmp_path / "root"), tmp_path / "vm0.ext4", img.ImageOptions(), EPOCH))
    dry = migrate("reidentify", target, "--mac", "auto", "--dry-run", *opts, env=env)
    assert dry.returncode == 0, dry.stderr
    again = migrate("reidentify", target, "--mac", "auto", "--dry-run", *opts, env=env)
    real = migrate("reidentify", target, "--mac", "auto", *opts, env=env)
    assert real.returncode == 0, real.stderr
    d, a, r = identity_line(dry.stderr, True), identity_line(again.stderr, True), identity_line(real.stderr, False)
    assert d == a == r, f"{d}\n{a}\n{r}"
    assert len(new_macs(r[1])) == (2 if kind.startswith("container") else 1)


def test_a_taken_mac_is_stepped_over_alike_in_the_dry_run_and_the_run(tmp_path, env, opts):
    make_container(tmp_path / "lxc", "vm0")
    args = ["clone", "lxc:vm0", "vmB", "--ip", f"{OLD_IP}=10.0.3.12", *opts]
    first = new_macs(identity_line(imgbuild(*args, "--dry-run", env=env).stderr, True)[1])[OLD_MAC]
    # another container takes exactly that MAC meanwhile: the next draw is used, in both
    make_container(tmp_path / "lxc", "other", "other", "10.0.3.77", first, config_ip=True)
    dry = imgbuild(*args, "--dry-run", env=env)
    real = imgbuild(*args, env=env)
    assert real.returncode == 0, real.stderr
    second = new_macs(identity_line(dry.stderr, True)[1])[OLD_MAC]
    assert second != first
    assert new_macs(identity_line(real.stderr, False)[1])[OLD_MAC] == second


def test_mac_draws_are_per_guest_and_per_host():
    a = inventory.allocate_macs(3, [], rng=inventory.mac_rng("lxc:/var/lib/lxc/vmB", b"host-1"))
    assert a == inventory.allocate_macs(3, [], rng=inventory.mac_rng("lxc:/var/lib/lxc/vmB", b"host-1"))
    assert a != inventory.allocate_macs(3, [], rng=inventory.mac_rng("lxc:/var/lib/lxc/vmC", b"host-1"))
    assert a != inventory.allocate_macs(3, [], rng=inventory.mac_rng("lxc:/var/lib/lxc/vmB", b"host-2"))
    # a taken one is skipped, the rest of the sequence is the same
    assert inventory.allocate_macs(2, [a[0]], rng=inventory.mac_rng("lxc:/var/lib/lxc/vmB", b"host-1")) == a[1:]
    assert all(m.startswith("00:16:3e:") and int(m.split(":")[3], 16) < 0x80 for m in a)


# ================================================================== a dry run writes nothing


def fake_output(d: Path) -> Path:
    """An imgbuild output directory: a tarball of a make_root() tree and its manifest. (A dry run may unpack it
    into $TMPDIR, as scratch it removes; not next to the output.)"""
    root = make_root(d / "work" / "root")
    out = d / "out" / "vm0"
    out.mkdir(parents=True)
    with tarfile.open(out / "vm0.tar", "w", format=tarfile.PAX_FORMAT) as t:
        t.add(root, ".")
    (out / "manifest.json").write_text(
        '{"name": "vm0", "source_date_epoch": %d, "artifacts": [{"kind": "tarball", "path": "vm0.tar"}]}\n' % EPOCH)
    return out


def snapshot(*dirs: Path) -> dict:
    return {str(d): tree_state(d) if d.exists() else None for d in dirs}


DRY_RUNS = {
    "clone-container": lambda t: ["imgbuild", "clone", "lxc:vm0", "vmB", "--ip", f"{OLD_IP}=10.0.3.12"],
    "clone-image": lambda t: ["imgbuild", "clone", t / "vm0.ext4", t / "vmB.ext4", "--ip", f"{OLD_IP}=10.0.3.12"],
    "reidentify-container": lambda t: ["migrate", "reidentify", t / "lxc/vm0", "--hostname", "web1", "--mac", "auto"],
    "reidentify-image": lambda t: ["migrate", "reidentify", t / "vm0.ext4", "--hostname", "web1", "--mac", "auto"],
    "reidentify-output": lambda t: ["migrate", "reidentify", t / "out/vm0", "--hostname", "web1", "--mac", "auto"],
}


@pytest.mark.parametrize("inventory_exists", [False, True], ids=["no-inventory-yet", "inventory-present"])
@pytest.mark.parametrize("case", list(DRY_RUNS))
def test_a_dry_run_writes_nothing_anywhere(case, inventory_exists, tmp_path, env, opts):
    make_container(tmp_path / "lxc", "vm0")
    img.make_image(make_root(tmp_path / "root"), tmp_path / "vm0.ext4", img.ImageOptions(), EPOCH)
    fake_output(tmp_path)
    inv_dir = tmp_path / "inv"
    if inventory_exists:
        inv_dir.mkdir()
        (inv_dir / "inventory.yml").write_text(inventory.dumps(
            [inventory.GuestRecord("far", "far", ("10.9.9.9",), ("00:16:3e:09:09:09",), "lxc:/elsewhere/far")]))
    watched = [inv_dir, tmp_path / "lxc", tmp_path / "out"]
    before = snapshot(*watched)
    listing, image_stat = sorted(os.listdir(tmp_path)), (tmp_path / "vm0.ext4").stat()
    cmd = DRY_RUNS[case](tmp_path)
    r = subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:]), "--dry-run", *opts], capture_output=True,
                       text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "nothing was changed" in r.stderr
    assert snapshot(*watched) == before, "the dry run wrote something (inventory, lock, guests, output, scratch)"
    assert not (inv_dir / "inventory.db").exists()      # no store made, no YAML inventory migrated
    assert os.listdir(tmp_path / "tmpdir") == [], "scratch files were left in $TMPDIR"
    assert sorted(os.listdir(tmp_path)) == listing
    st = (tmp_path / "vm0.ext4").stat()
    assert (st.st_mtime_ns, st.st_size) == (image_stat.st_mtime_ns, image_stat.st_size)


# ================================================================== stale inventory entries


def test_a_conflict_with_a_guest_that_is_gone_marks_its_entry_stale(tmp_path, env, opts):
    lxcpath = tmp_path / "lxc"
    make_container(lxcpath, "vm0")
    make_container(lxcpath, "live", "live", "10.0.3.40", "00:16:3e:00:03:40")
    inv_file = tmp_path / "inv" / "inventory.yml"
    inv_file.parent.mkdir()
    inv_file.write_text(inventory.dumps([
        inventory.GuestRecord("ux2", "ux2", ("10.0.3.12",), ("00:16:3e:00:0c:12",), f"lxc:{lxcpath}/ux2"),
        inventory.GuestRecord("live", "live", ("10.0.3.40",), ("00:16:3e:00:03:40",), f"lxc:{lxcpath}/live")]))
    before = inv_file.read_bytes()
    image = img.make_image(make_root(tmp_path / "root"), tmp_path / "vm9.ext4", img.ImageOptions(), EPOCH)
    stale = f"taken by ux2 (stale: {lxcpath}/ux2 no longer exists)"
    for cmd in (["imgbuild", "clone", "lxc:vm0", "vmB", "--ip", f"{OLD_IP}=10.0.3.12"],
                ["migrate", "reidentify", image, "--ip", f"{OLD_IP}=10.0.3.12"],
                ["migrate", "reidentify", image, "--ip", f"{OLD_IP}=10.0.3.13", "--mac",
                 f"{OLD_MAC}=00:16:3e:00:0c:12"]):
        for dry in ([], ["--dry-run"]):
            r = subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:]), *dry, *opts], capture_output=True,
                               text=True, env=env, cwd=REPO)
            assert r.returncode == 2, r.stdout + r.stderr
            assert stale in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert "ux2 is a guest that no longer exists: `imgbuild inventory forget ux2` removes its entry" \
                in r.stderr, r.stderr
    # a guest that is there is not called stale; the hint names the option that gives the copy its own address
    r = imgbuild("clone", "lxc:vm0", "vmB", "--ip", f"{OLD_IP}=10.0.3.40", *opts, env=env)
    assert r.returncode == 2 and f"taken by live (lxc:{lxcpath}/live)" in r.stderr and "(stale:" not in r.stderr
    assert f"give the copy an address of its own: --ip {OLD_IP}=NEW" in r.stderr, r.stderr
    assert "inventory forget" not in r.stderr
    assert inv_file.read_bytes() == before and not (lxcpath / "vmB").exists()
    # the command the hint names frees ux2's address: the same clone then passes
    r = imgbuild("inventory", "forget", "ux2", env=env)
    assert r.returncode == 0 and f"forgot ux2 (lxc:{lxcpath}/ux2)" in r.stdout, r.stderr
    r = imgbuild("clone", "lxc:vm0", "vmB", "--ip", f"{OLD_IP}=10.0.3.12", "--dry-run", *opts, env=env)
    assert r.returncode == 0, r.stderr

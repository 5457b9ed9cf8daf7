"""migrate xen between two real hosts (network namespaces with real sshd, tests/support/sshhost.py): a Xen 3 source
holding an xm config and an ext4 disk image; a Xen 4 destination.

MOCK, said plainly: there is no Xen hypervisor here, so `xm` on the source and `xl` on the destination are small
scripts the test installs (xm list/shutdown flip a marker file, xl create records its argument). Everything else
is real: ssh, rsync, the disk image (mke2fs -d), the identity edits inside it (debugfs), and the xl config is read
back with Xen's own parser (libxlutil)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from builder.guestconf import xl
from tests.conftest import migrate
from tests.support.guests import debugfs_cat
from tests.support.xenguest import OLD_IP, OLD_MAC, xen_args

pytestmark = [pytest.mark.root]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_copy_next_to_the_original_gets_new_ip_and_mac_in_config_and_disk(xen_hosts, tmp_path):
    src, dst = xen_hosts
    src_img = src.root / "var/xen/www.img"
    before = sha(src_img)
    args = ["xen", "src", "www", "--to", "dst", "--disk-map", "/var/xen=/srv/xen", "--ip", f"{OLD_IP}={'192.0.2.20'}",
            *xen_args(src, tmp_path)]
    r = migrate(*args)
    assert r.returncode == 0, r.stderr
    cfg = (dst.root / "etc/xen/www.cfg").read_text()
    parsed = xl.parse(cfg) if xl.available() else None
    img = dst.root / "srv/xen/www.img"
    assert img.is_file() and os.stat(img).st_blocks * 512 < 64 << 20, "the image arrived dense"
    vif_mac = re.search(r"mac=([0-9a-f:]{17})", cfg).group(1)
    assert vif_mac != OLD_MAC and vif_mac.startswith("00:16:3e")
    if parsed is not None:
        assert "target=/srv/xen/www.img" in str(parsed["disk"]) and parsed["bootloader"] == "pygrub"
    ifcfg = debugfs_cat(img, "/etc/sysconfig/network-scripts/ifcfg-eth0")
    assert "IPADDR=192.0.2.20" in ifcfg and f"HWADDR={vif_mac.upper()}" in ifcfg, ifcfg
    assert vif_mac in debugfs_cat(img, "/etc/udev/rules.d/70-persistent-net.rules")
    assert OLD_MAC not in debugfs_cat(img, "/etc/udev/rules.d/70-persistent-net.rules")
    assert "192.0.2.20" in debugfs_cat(img, "/etc/hosts")
    assert sha(src_img) == before                        # the original is never touched
    assert (src.root / "run/xm-www").exists()           # ... and keeps running
    # the staged full copy is gone after the run (the MACs chosen stay), and the log says where it was
    stage = tmp_path / "stage" / "www"
    assert sorted(p.name for p in stage.iterdir()) == ["identity.json"]
    assert f"removed the staged disk copies in {stage}" in r.stderr
    # a rerun converges: the same MAC (kept in the stage), the same files in the disk
    r = migrate(*args, "--keep-stage")
    assert r.returncode == 0, r.stderr
    assert (dst.root / "etc/xen/www.cfg").read_text() == cfg
    assert debugfs_cat(img, "/etc/sysconfig/network-scripts/ifcfg-eth0") == ifcfg
    assert (stage / "www.img").is_file() and f"kept in {stage} (--keep-stage)" in r.stderr


def test_cutover_keeps_the_identity_and_reports_downtime(xen_hosts, tmp_path):
    src, dst = xen_hosts
    r = migrate("xen", "src", "www", "--to", "dst", "--disk-map", "/var/xen=/srv/xen", "--cutover",
                *xen_args(src, tmp_path))
    assert r.returncode == 0, r.stderr
    m = re.search(r"downtime: ([\d.]+) s", r.stdout)
    assert m and 0 < float(m.group(1)) < 60, r.stdout
    assert not (src.root / "run/xm-www").exists() and (src.root / "run/xm-www.shutdown").exists()
    assert (dst.root / "run/xl-created").read_text().strip() == "/etc/xen/www.cfg"
    img = dst.root / "srv/xen/www.img"
    assert sha(img) == sha(src.root / "var/xen/www.img")
    cfg = (dst.root / "etc/xen/www.cfg").read_text()
    assert f"mac={OLD_MAC}" in cfg and "xenbr0" in cfg
    assert not (tmp_path / "stage" / "www" / "www.img").exists()


def test_a_failed_copy_keeps_the_stage_and_says_where(xen_hosts, tmp_path):
    src, dst = xen_hosts
    (dst.root / "srv").mkdir(exist_ok=True)
    (dst.root / "srv/xen").write_text("a file where the image directory should be\n")
    r = migrate("xen", "src", "www", "--to", "dst", "--disk-map", "/var/xen=/srv/xen", "--ip", f"{OLD_IP}=192.0.2.40",
                *xen_args(src, tmp_path))
    assert r.returncode == 1, r.stderr
    stage = tmp_path / "stage" / "www"
    assert (stage / "www.img").is_file() and f"the staged disk copies are kept in {stage}" in r.stderr


def test_refusals_and_dry_run_change_nothing(xen_hosts, tmp_path):
    src, dst = xen_hosts
    r = migrate("xen", "src", "www", "--to", "dst", *xen_args(src, tmp_path))
    assert r.returncode == 2 and "same IP and MAC as the running original" in r.stderr and "--ip" in r.stderr
    r = migrate("xen", "src", "nosuch", "--to", "dst", *xen_args(src, tmp_path))
    assert r.returncode == 2 and "src: no Xen config for 'nosuch'" in r.stderr
    r = migrate("xen", "src", "www", "--to", "dst", "--ip", f"{OLD_IP}=192.0.2.30", "--bridge", "br9", "--dry-run",
                *xen_args(src, tmp_path))
    assert r.returncode == 0, r.stderr
    assert "bridge 'br9'" in r.stderr and "does not define" in r.stderr
    assert "would write dst:/etc/xen/www.cfg" in r.stdout
    assert not (dst.root / "etc/xen").exists() and not (dst.root / "var/xen").exists()
    assert not (tmp_path / "stage").exists()
    assert (src.root / "run/xm-www").exists()


def test_xen_bridge_writes_files_for_review(xen_hosts, tmp_path):
    src, dst = xen_hosts
    nets = src.root / "etc/sysconfig/network-scripts"
    nets.mkdir(parents=True)
    (nets / "ifcfg-eth0").write_text("DEVICE=eth0\nBOOTPROTO=static\nHWADDR=52:54:00:12:34:56\n"
                                     "IPADDR=198.51.100.5\nNETMASK=255.255.255.0\nGATEWAY=198.51.100.1\nONBOOT=yes\n")
    (src.root / "etc/xen/db.cfg").write_text("name = 'db'\nvif = ['mac=00:16:3e:00:00:09,bridge=br1']\n")
    before = sha(nets / "ifcfg-eth0")
    out = tmp_path / "review"
    r = migrate("xen-bridge", "src", "--iface", "eth0", "-o", out, "--ssh-config", str(src.ssh_config))
    assert r.returncode == 0, r.stderr
    br = (out / "ifcfg-xenbr0").read_text()
    assert "TYPE=Bridge" in br and "IPADDR=198.51.100.5" in br
    eth = (out / "ifcfg-eth0").read_text()
    assert "BRIDGE=xenbr0" in eth and "IPADDR" not in eth and "HWADDR=52:54:00:12:34:56" in eth
    assert "br1" in r.stderr and "db.cfg" in r.stderr
    assert sha(nets / "ifcfg-eth0") == before          # nothing written on the host

"""A guest's tree is untrusted: its identity files may be links to the host's files (a guest's /etc/hostname
linked to the host's /etc/shadow). Re-identifying it (DirTree) reads and writes inside the guest only: the files
outside (a directory beside the guest standing in for the host) keep content, mode, owner and mtime."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.identity import engine, inventory
from builder.identity import reidentify as rid
from builder.identity.guest import locate
from builder.identity.tree import DirTree, Meta

UP = "../" * 12
OLD_MAC = "00:16:3e:00:03:02"


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))


def _outside(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    (d / "dir").mkdir(parents=True)
    for name in ("shadow", "key", "key.pub", "machine-id"):
        (d / name).write_text(f"host {name}\n")
        os.chmod(d / name, 0o600)
        os.chown(d / name, 4321, 4321)
        os.utime(d / name, (1_000_000_000, 1_000_000_000))
    (d / "dir" / "dhclient.eth0.leases").write_text('lease {\n  fixed-address 10.0.3.2;\n}\n')
    return d


def _state(d: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in [*dirnames, *filenames]:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                           p.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def _link(root: Path, path: str, target: Path, kind: str) -> None:
    host = root / path.lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(str(target) if kind == "absolute" else UP + str(target).lstrip("/"), host)


@pytest.mark.root
@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_reidentify_a_guest_whose_identity_files_link_to_the_host(tmp_path, kind):
    host = _outside(tmp_path)
    root = tmp_path / "guests" / "vm0"
    (root / "etc/network").mkdir(parents=True)
    (root / "etc/network/interfaces").write_text(
        f"auto eth0\niface eth0 inet static\n    address 10.0.3.2/24\n    hwaddress ether {OLD_MAC}\n")
    _link(root, "/etc/hostname", host / "shadow", kind)
    _link(root, "/etc/hosts", host / "shadow", kind)
    _link(root, "/etc/machine-id", host / "machine-id", kind)
    _link(root, "/var/lib/dbus/machine-id", host / "machine-id", kind)
    _link(root, "/etc/ssh/ssh_host_rsa_key", host / "key", kind)
    _link(root, "/etc/ssh/ssh_host_rsa_key.pub", host / "key.pub", kind)
    _link(root, "/var/lib/dhcp", host / "dir", kind)
    before = _state(host)
    w = rid.Where(inventory_file=str(tmp_path / "inventory.yml"), lxcpath=str(tmp_path / "lxc"),
                  xen_dir=str(tmp_path / "xen"), vz_dir=str(tmp_path / "vz"))
    req = engine.Request(hostname="db1", ips=(engine.parse_ip("10.0.3.2=10.0.3.13"),),
                         macs=(engine.parse_mac(f"{OLD_MAC}=00:16:3e:00:03:13"),))
    o = rid.reidentify(locate(str(root)), req, w)
    assert o.applied
    assert _state(host) == before
    assert "10.0.3.13" in (root / "etc/network/interfaces").read_text()
    # the host keys were made anew as files of the guest; a link lends its mode to neither: 0600, root's
    for name in ("ssh_host_rsa_key", "ssh_host_rsa_key.pub"):
        st = (root / "etc/ssh" / name).lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert b"PRIVATE KEY" in (root / "etc/ssh/ssh_host_rsa_key").read_bytes()


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_dirtree_reads_nothing_through_a_link_and_replaces_it_on_write(tmp_path, kind):
    host = _outside(tmp_path)
    root = tmp_path / "guest"
    root.mkdir()
    _link(root, "/etc/hostname", host / "shadow", kind)
    _link(root, "/etc/net", host / "dir", kind)
    before = _state(host)
    t = DirTree(root)
    assert t.read("/etc/hostname") is None and t.read("/etc/net/dhclient.eth0.leases") is None
    assert t.listdir("/etc/net") == []
    meta = t.meta("/etc/hostname")
    assert meta is not None and stat.S_ISLNK(meta.mode)
    t.write("/etc/hostname", b"db1\n", meta)          # a link's meta lends no mode: 0600, root's
    t.write("/etc/net/x", b"x\n", Meta(0o100600, 0, 0))
    t.remove("/etc/net")
    assert _state(host) == before
    st = (root / "etc/hostname").lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (0, 0)
    assert (root / "etc/hostname").read_bytes() == b"db1\n"
    assert not os.path.lexists(root / "etc/net")


@pytest.mark.parametrize("link", ["etc", "etc/hostname"])
def test_an_output_whose_etc_leads_to_the_host_records_nothing_of_the_host(tmp_path, link):
    """Re-identifying an imgbuild output unpacks its tarball, edits it, packs it and records the guest's host name
    in manifest.json: read inside the unpacked root, never through a link the tarball holds (/etc, or
    /etc/hostname, pointing at a host directory whose file would otherwise end up in the manifest)."""
    import json
    import subprocess

    host = tmp_path / "host"
    host.mkdir()
    (host / "hostname").write_text("hostsecret\n")
    tree = tmp_path / "t"
    (tree / "etc").mkdir(parents=True)
    if link == "etc":
        (tree / "etc").rmdir()
        (tree / "etc").symlink_to(host)
    else:
        (tree / "etc/hostname").symlink_to(host / "hostname")
    out = tmp_path / "out" / "tiny"
    out.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(tree), "-cf", str(out / "tiny.tar"), "."], check=True)
    (out / "lxc.conf").write_text("lxc.uts.name = tiny\nlxc.rootfs.path = dir:/var/lib/lxc/tiny/rootfs\n")
    (out / "manifest.json").write_text(json.dumps({
        "name": "tiny", "hostname": "tiny", "source_date_epoch": 0,
        "artifacts": [{"kind": "lxc-config", "path": "lxc.conf"}, {"kind": "tarball", "path": "tiny.tar"}]}))
    rid.reidentify(locate(str(out)), engine.Request(reset=False), rid.Where(lxcpath=str(tmp_path / "lxc")))
    m = json.loads((out / "manifest.json").read_text())
    assert m["hostname"] == "tiny"
    assert "hostsecret" not in (out / "manifest.json").read_text()
    assert (host / "hostname").read_text() == "hostsecret\n"

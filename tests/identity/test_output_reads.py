"""An imgbuild output is a file an earlier run left, and its tarball holds a guest's tree: re-identifying it reads
the unpacked tree inside itself only (RootFS), and the output's own files only when they are regular files.

- the tree's /etc is a link (absolute or relative) that, read on the host, leads to a host directory whose
  hostname file says "hostsecret": the manifest never gets the host's name; what it gets is the guest's;
- the output's manifest.json, lxc.conf or tarball is a link to a host file: refused (exit 2, naming it) before
  anything is read, the output and the host file unchanged.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.identity import engine, inventory
from builder.identity import reidentify as rid
from builder.identity.guest import locate
from tests.conftest import BIN, REPO
from tests.support.guests import tree_state

pytestmark = pytest.mark.root

NAME = "tiny"
OLD_IP, NEW_IP = "10.0.3.50", "10.0.3.51"
CONFIG = (f"# written by imgbuild for {NAME}\nlxc.uts.name = {NAME}\nlxc.rootfs.path = dir:/var/lib/lxc/{NAME}/rootfs\n"
          "lxc.net.0.type = veth\nlxc.net.0.hwaddr = 00:16:3e:00:05:50\n")


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))


def where(tmp_path: Path) -> rid.Where:
    return rid.Where(inventory_file=str(tmp_path / "inventory.yml"), lxcpath=str(tmp_path / "lxc"),
                     xen_dir=str(tmp_path / "xen"), vz_dir=str(tmp_path / "vz"))


def host_etc(tmp_path: Path) -> Path:
    h = tmp_path / "host-etc"
    h.mkdir()
    (h / "hostname").write_text("hostsecret\n")
    (h / "secret.conf").write_text("lxc.net.0.hwaddr = 00:16:3e:00:05:50\npassword = hostsecret\n")
    return h


def output(tmp_path: Path, etc_link: str | None, guest_etc_at: str | None) -> Path:
    """OUT/tiny: a tarball whose /etc is etc_link (or a real directory), the guest's files at guest_etc_at inside
    the tree (where the link leads when read inside the tree), an LXC config and a manifest."""
    tree = tmp_path / "tree"
    etc = tree / (guest_etc_at or ("elsewhere" if etc_link else "etc")).lstrip("/")
    (etc / "network").mkdir(parents=True)
    (etc / "hostname").write_text(f"{NAME}\n")
    (etc / "network/interfaces").write_text(f"auto eth0\niface eth0 inet static\n    address {OLD_IP}/24\n")
    if etc_link:
        os.symlink(etc_link, tree / "etc")
    d = tmp_path / "out" / NAME
    d.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(d / f"{NAME}.tar"), "."], check=True)
    (d / "lxc.conf").write_text(CONFIG)
    manifest = {"name": NAME, "hostname": NAME, "source_date_epoch": 0,
                "artifacts": [{"kind": "lxc-config", "path": "lxc.conf"}, {"kind": "tarball", "path": f"{NAME}.tar"}]}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return d


@pytest.mark.parametrize("link", ["absolute", "relative"])
@pytest.mark.parametrize("guest_files", ["behind-the-link", "none"])
def test_the_manifest_never_gets_the_hosts_name(tmp_path, link, guest_files):
    base = tmp_path / "o"
    base.mkdir()
    host = host_etc(base)
    # the tarball is unpacked beside the output, in OUT/imgbuild-output-XXXX/rootfs: from there, on the host,
    # ../../../host-etc is BASE/host-etc; inside the tree it is /host-etc
    target = str(host) if link == "absolute" else "../../../host-etc"
    inside = (str(host) if link == "absolute" else "/host-etc") if guest_files == "behind-the-link" else None
    out = output(base, target, inside)
    req = engine.Request(hostname="web1", ips=(engine.parse_ip(f"{OLD_IP}={NEW_IP}"),))
    o = rid.reidentify(locate(str(out)), req, where(tmp_path))
    assert o.applied
    m = json.loads((out / "manifest.json").read_text())
    assert "hostsecret" not in json.dumps(m), "a host file's content went into the manifest"
    assert m["hostname"] == ("web1" if guest_files == "behind-the-link" else NAME)
    assert (host / "hostname").read_text() == "hostsecret\n"


@pytest.mark.parametrize("artifact", ["lxc.conf", "tiny.tar", "manifest.json"])
def test_an_artifact_that_is_a_link_is_refused_before_it_is_read(tmp_path, artifact):
    host = host_etc(tmp_path)
    out = output(tmp_path / "o", None, None)
    if artifact == "tiny.tar":
        os.rename(out / artifact, tmp_path / "real.tar")
        os.symlink(str(tmp_path / "real.tar"), out / artifact)
    elif artifact == "manifest.json":      # a host JSON file of the right shape, with a secret in it
        m = json.loads((out / artifact).read_text())
        (host / "m.json").write_text(json.dumps({**m, "hostname": "hostsecret"}))
        (out / artifact).unlink()
        os.symlink(str(host / "m.json"), out / artifact)
    else:
        (out / artifact).unlink()
        os.symlink(str(host / "secret.conf"), out / artifact)
    before, host_before = tree_state(out), tree_state(tmp_path / "host-etc")
    env = {**os.environ, inventory.ENV_VAR: str(tmp_path / "inventory.yml")}
    for dry in ([], ["--dry-run"]):
        r = subprocess.run([str(BIN / "migrate"), "reidentify", str(out), "--hostname", "web1", *dry,
                            "--lxcpath", str(tmp_path / "lxc"), "--xen-dir", str(tmp_path / "xen"),
                            "--vz-dir", str(tmp_path / "vz")], cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "error:" in r.stderr and "Traceback" not in r.stderr and artifact in r.stderr, r.stderr
        assert "hostsecret" not in r.stdout + r.stderr
    assert tree_state(out) == before and tree_state(tmp_path / "host-etc") == host_before
    with pytest.raises(InputError):
        rid.reidentify(locate(str(out)), engine.Request(hostname="web1"), where(tmp_path))

"""The lxd and squashfs targets: metadata.yaml and templates on a small tree; then a real build of the default
recipe in both layouts, imported and launched by a real LXD daemon of the test's own (tests/support/lxd.py):
systemd runs and the instance has the name LXD gave it."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
import yaml

from builder.build.families import FAMILIES
from builder.build.targets import lxd
from tests.conftest import imgbuild
from tests.support.lxd import lxd_daemon, reason

# ---------------------------------------------------------------- metadata and templates (no build)


def test_metadata_has_what_lxd_requires_and_image_servers_list(ctx_for, tmp_path):
    ctx = ctx_for(arch="arm64", hostname="vm0")
    (ctx.root.path / "etc/hosts").write_text("127.0.0.1\tlocalhost\n10.0.3.2\tvm0.example.org vm0\n")
    meta = lxd.write_meta(ctx, lxd.LxdOptions(), tmp_path / "w")
    doc = yaml.safe_load((meta / "metadata.yaml").read_text())
    assert doc["architecture"] == "aarch64" and doc["creation_date"] == ctx.epoch
    assert doc["properties"] == {"os": "debian", "release": "bookworm", "variant": "default",
                                 "architecture": "aarch64", "serial": "20231114_2213", "name": "t1",
                                 "description": "Debian bookworm aarch64 (t1, built by imgbuild)"}
    assert doc["templates"]["/etc/hostname"] == {"when": ["create", "copy"], "create_only": False,
                                                 "template": "hostname.tpl", "properties": {}}
    assert (meta / "templates/hostname.tpl").read_text() == "{{ container.name }}\n"
    assert (meta / "templates/hosts.tpl").read_text() == (
        "127.0.0.1\tlocalhost\n10.0.3.2\t{{ container.name }} {{ container.name }}\n")
    # the recipe names no interface: eth0 by DHCP, as LXD's default profile offers it
    assert doc["templates"]["/etc/network/interfaces"]["template"] == "interfaces.tpl"
    assert "iface eth0 inet dhcp" in (meta / "templates/interfaces.tpl").read_text()


@pytest.mark.parametrize("network, recipe_net, dhcp", [
    ("auto", {"eth0": {"address": "10.0.3.2/24"}}, False),
    ("dhcp", {"eth0": {"address": "10.0.3.2/24"}}, True),
    ("recipe", {}, False),
])
def test_the_network_the_image_gets(ctx_for, tmp_path, network, recipe_net, dhcp):
    ctx = ctx_for(network=recipe_net)
    meta = lxd.write_meta(ctx, lxd.LxdOptions(network=network), tmp_path / "w")
    doc = yaml.safe_load((meta / "metadata.yaml").read_text())
    assert ("/etc/network/interfaces" in doc["templates"]) is dhcp


def test_an_el_image_gets_an_ifcfg_template_and_literal_braces_stay_literal(ctx_for, tmp_path):
    ctx = ctx_for(hostname="web")
    ctx.family = FAMILIES["rhel"]
    (ctx.root.path / "etc/hosts").write_text("# {{ not a template }}\n127.0.0.1 localhost\n")
    meta = lxd.write_meta(ctx, lxd.LxdOptions(), tmp_path / "w")
    hosts = (meta / "templates/hosts.tpl").read_text()
    assert hosts.startswith("# {{ '{{' }} not a template }}\n")
    assert hosts.endswith("127.0.1.1\t{{ container.name }}\n")         # no line named the host: one is added
    doc = yaml.safe_load((meta / "metadata.yaml").read_text())
    assert doc["templates"]["/etc/sysconfig/network-scripts/ifcfg-eth0"]["template"] == "ifcfg-eth0.tpl"
    assert "BOOTPROTO=dhcp" in (meta / "templates/ifcfg-eth0.tpl").read_text()


def test_the_unified_archive_lists_metadata_rootfs_templates_in_order(ctx_for, tmp_path):
    ctx = ctx_for()
    meta = lxd.write_meta(ctx, lxd.LxdOptions(), tmp_path / "w")
    names = [e.name for e in lxd.unified_entries(meta, ctx.root.path)]
    assert names[:3] == [".", "./metadata.yaml", "./rootfs"]
    assert "./rootfs/etc/passwd" in names and names[-1].startswith("./templates/")
    assert names.index("./templates") > max(i for i, n in enumerate(names) if n.startswith("./rootfs"))


# ---------------------------------------------------------------- a real image in a real LXD


@pytest.fixture(scope="module")
def images(image_build):
    """The default recipe with the tarball, squashfs and lxd targets (tests/conftest.py: image_build)."""
    if reason():
        pytest.skip(reason())
    return image_build


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_the_images_files_and_their_sums(images):
    names = sorted(os.listdir(images))
    assert names == ["SHA256SUMS", "debian12.lxd-meta.tar.zst", "debian12.lxd.tar.zst", "debian12.spdx.json",
                     "debian12.squashfs", "debian12.tar.zst", "manifest.json"], names
    assert imgbuild("verify", images).returncode == 0
    kinds = {a["kind"] for a in json.loads((images / "manifest.json").read_text())["artifacts"]}
    assert {"squashfs", "lxd-metadata", "lxd-image"} <= kinds
    # the squashfs holds what the tarball holds: the same entries, owners, modes and clamped mtimes
    sq = subprocess.run(["sqfs2tar", str(images / "debian12.squashfs")], capture_output=True, timeout=300)
    assert sq.returncode == 0, sq.stderr[-500:]
    tar = subprocess.run(["zstd", "-dc", str(images / "debian12.tar.zst")], capture_output=True, timeout=300).stdout

    def listing(data: bytes, strip: str) -> dict:
        import io
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            return {m.name.removeprefix(strip).strip("/"): (m.type, m.mode, m.uid, m.gid, m.mtime, m.size,
                                                            m.linkname) for m in tf}
    a, b = listing(tar, "."), listing(sq.stdout, "")
    a.pop("", None), b.pop("", None)
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k][1:5] != b[k][1:5]]
    assert not differ, [(k, a[k], b[k]) for k in differ[:5]]


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
@pytest.mark.lxc
def test_lxd_imports_both_layouts_and_launches_them(images):
    with lxd_daemon() as d:
        d.lxc("image", "import", str(images / "debian12.lxd-meta.tar.zst"), str(images / "debian12.squashfs"),
              "--alias", "split")
        d.lxc("image", "import", str(images / "debian12.lxd.tar.zst"), "--alias", "unified")
        files = {"split": (images / "debian12.lxd-meta.tar.zst", images / "debian12.squashfs"),
                 "unified": (images / "debian12.lxd.tar.zst",)}
        for a in ("split", "unified"):
            assert yaml.safe_load(d.lxc("image", "show", a).stdout)["properties"]["os"] == "debian"
            info = d.lxc("image", "info", a).stdout
            assert "Architecture: x86_64" in info and "Type: container" in info, info
            # LXD's fingerprint is the one the build printed: sha256 of the file(s)
            assert f"Fingerprint: {lxd.fingerprint(*files[a])}" in info
        for alias, name in (("split", "from-split"), ("unified", "from-unified")):
            d.lxc("launch", alias, name, "-s", "default")
            state = d.running(name)
            assert state in ("running", "degraded"), f"{name}: systemd says {state!r}"
            assert d.lxc("exec", name, "--", "hostname").stdout.strip() == name
            assert d.lxc("exec", name, "--", "cat", "/etc/hostname").stdout == f"{name}\n"
            assert f"\t{name}" in d.lxc("exec", name, "--", "cat", "/etc/hosts").stdout

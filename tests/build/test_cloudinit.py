"""cloud_init: the NoCloud seed's contents, checked by the real cloud-init (its schema check for user-data, its
own network-config parser for network-config), the seed ISO read back (volume label, the three files), the seed
in the guest (modes, no link followed), disabling, recipe checks, and a clone's own seed (identity rewriters)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.build import manifest
from builder.build.steps import cloudinit
from builder.identity import engine, formats
from tests.build.test_recipe import BASE, paths, problems, write
from tests.support.contexts import make_recipe, small_context

NET = {"eth0": {"address": "10.0.3.2/24", "gateway": "10.0.3.1", "mac": "00:16:3e:00:03:02"}}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2VrZXlmb3J0ZXN0c29ubHkAAAAAAAAAAAAAAAAA ops@example"
USER_DATA = {"users": [{"name": "ops", "ssh_authorized_keys": [KEY], "sudo": "ALL=(ALL) NOPASSWD:ALL",
                        "shell": "/bin/bash"}],
             "chpasswd": {"expire": False, "list": "ops:s3cret-Passw0rd"},
             "packages": ["htop"], "runcmd": [["touch", "/root/cloud-init-ran"]]}


def recipe(**over):
    return make_recipe(**{"hostname": "web1", "network": NET, "dns": ["10.0.3.1"], "search": ["example.org"],
                          "cloud_init": {"user_data": USER_DATA}, **over})


def cloud_init_cli() -> str:
    exe = shutil.which("cloud-init")
    if exe is None:
        pytest.skip("cloud-init is not installed (scripts/setup.sh installs it)")
    return exe


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([cloud_init_cli(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120,
                          stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------ seed contents


def test_seed_files_follow_the_recipe():
    files = cloudinit.seed(recipe())
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "web1", "local-hostname": "web1"}
    assert files["user-data"].startswith(b"#cloud-config\n")
    assert yaml.safe_load(files["user-data"]) == USER_DATA
    net = yaml.safe_load(files["network-config"])
    assert net == {"version": 2, "ethernets": {"eth0": {
        "match": {"macaddress": "00:16:3e:00:03:02"}, "set-name": "eth0", "addresses": ["10.0.3.2/24"],
        "routes": [{"to": "0.0.0.0/0", "via": "10.0.3.1"}],
        "nameservers": {"addresses": ["10.0.3.1"], "search": ["example.org"]}}}}


def test_dhcp_and_no_network():
    files = cloudinit.seed(recipe(network={"eth0": {"dhcp": True}}, dns=[], search=[]))
    assert yaml.safe_load(files["network-config"]) == {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}
    files = cloudinit.seed(recipe(cloud_init={"network": False}))
    assert "network-config" not in files
    assert files["user-data"] == b"#cloud-config\n{}\n"


def test_user_data_file_is_used_as_it_is(tmp_path):
    (tmp_path / "ud").write_bytes(b"#!/bin/sh\necho hi\n")
    files = cloudinit.seed(recipe(cloud_init={"user_data_file": str(tmp_path / "ud")}))
    assert files["user-data"] == b"#!/bin/sh\necho hi\n"


# ------------------------------------------------------------------ the real cloud-init accepts it


def test_user_data_passes_cloud_inits_schema_check(tmp_path):
    (tmp_path / "user-data").write_bytes(cloudinit.seed(recipe())["user-data"])
    r = cli("schema", "--config-file", "user-data", cwd=tmp_path)
    assert r.returncode == 0 and "Valid cloud-config" in r.stdout, r.stdout + r.stderr
    # the check can fail: a wrong type is refused
    (tmp_path / "bad").write_text("#cloud-config\npackages: 5\n")
    r = cli("schema", "--config-file", "bad", cwd=tmp_path)
    assert r.returncode != 0 and "packages" in r.stdout + r.stderr


def test_network_config_is_read_by_cloud_inits_own_parser(tmp_path):
    """cloud-init 22.4 (Debian 12) has no network-config schema (`schema --schema-type` came later): its own
    converter reads the v2 config as the NoCloud source would and writes the guest's ifupdown file from it."""
    (tmp_path / "network-config").write_bytes(cloudinit.seed(recipe())["network-config"])
    help_text = cli("schema", "--help", cwd=tmp_path).stdout
    if "--schema-type" in help_text:
        r = cli("schema", "--schema-type", "network-config", "--config-file", "network-config", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    r = cli("devel", "net-convert", "-p", "network-config", "-k", "yaml", "-D", "debian", "-O", "eni", "-d", "out",
            cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    eni = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "iface eth0 inet static" in eni and "address 10.0.3.2/24" in eni, eni
    assert "default gw 10.0.3.1" in eni and 'ATTR{address}=="00:16:3e:00:03:02", NAME="eth0"' in eni, eni
    # the parser can fail: an address that is none is refused
    (tmp_path / "bad").write_text("version: 2\nethernets:\n  eth0:\n    addresses: [not-an-address]\n")
    r = cli("devel", "net-convert", "-p", "bad", "-k", "yaml", "-D", "debian", "-O", "eni", "-d", "out2",
            cwd=tmp_path)
    assert r.returncode != 0


# ------------------------------------------------------------------ the seed ISO, read back


def _volume_id(iso: Path) -> str:
    """The primary volume descriptor's volume identifier (ISO 9660: sector 16, bytes 40-71), read directly."""
    with open(iso, "rb") as f:
        f.seek(16 * 2048)
        pvd = f.read(2048)
    assert pvd[0] == 1 and pvd[1:6] == b"CD001", "no primary volume descriptor"
    return pvd[40:72].decode("ascii").rstrip()


def test_seed_iso_reads_back(tmp_path):
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is not installed (scripts/setup.sh installs it)")
    files = cloudinit.seed(recipe())
    iso = cloudinit.write_iso(files, tmp_path / "t.seed.iso", 1_700_000_000)
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600          # user-data's passwords and keys
    assert _volume_id(iso) == "cidata"
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(iso)], capture_output=True, text=True)
    assert blkid.stdout.strip() == "cidata", blkid.stdout + blkid.stderr
    out = tmp_path / "x"
    r = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(cloudinit.FILES)
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    # the same seed and epoch: the same bytes (SOURCE_DATE_EPOCH); nothing left beside it
    again = cloudinit.write_iso(files, tmp_path / "again.iso", 1_700_000_000)
    assert again.read_bytes() == iso.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.iso", "t.seed.iso", "x"]


def test_produce_iso_only_when_asked(tmp_path):
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is not installed (scripts/setup.sh installs it)")
    ctx = small_context(tmp_path, hostname="web1", network=NET, cloud_init={"user_data": USER_DATA})
    ctx.stage.mkdir()
    out = cloudinit.produce_iso(ctx)
    assert out == {"seed-iso": ctx.stage / "t1.seed.iso"} and _volume_id(out["seed-iso"]) == "cidata"
    for off in ({"iso": False}, {"disable": True}):
        ctx = small_context(tmp_path / str(len(off)), cloud_init=off)
        assert cloudinit.produce_iso(ctx) == {}
    ctx = small_context(tmp_path / "none")
    assert cloudinit.produce_iso(ctx) == {}


# ------------------------------------------------------------------ in the guest


def test_seed_in_the_guest_is_private(tmp_path):
    ctx = small_context(tmp_path, hostname="web1", network=NET, cloud_init={"user_data": USER_DATA})
    (ctx.root.path / "etc/cloud").mkdir(parents=True)
    (ctx.root.path / "etc/cloud/cloud-init.disabled").write_text("")
    cloudinit.run(ctx, ctx.recipe.cloud_init)
    d = ctx.root.path / "var/lib/cloud/seed/nocloud"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == sorted(cloudinit.FILES)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in d.iterdir())
    assert (d / "user-data").read_bytes() == cloudinit.seed(ctx.recipe)["user-data"]
    assert not (ctx.root.path / "etc/cloud/cloud-init.disabled").exists()    # a seed is there to be read
    # the outputs carrying it are secret outputs (0600), named without the value
    found = manifest.tree_secrets(ctx)
    assert "/var/lib/cloud/seed/nocloud/user-data: cloud-init user-data" in found
    assert not any("s3cret" in f for f in found)


def test_disable_writes_the_marker_and_no_seed(tmp_path):
    ctx = small_context(tmp_path, cloud_init={"disable": True})
    cloudinit.run(ctx, ctx.recipe.cloud_init)
    assert (ctx.root.path / "etc/cloud/cloud-init.disabled").is_file()
    assert not (ctx.root.path / "var/lib/cloud").exists()
    assert cloudinit.secrets(ctx.recipe) == []


def test_no_cloud_init_key_changes_nothing(tmp_path):
    ctx = small_context(tmp_path)
    cloudinit.run(ctx, ctx.recipe.cloud_init)
    assert sorted(p.name for p in ctx.root.path.iterdir()) == ["etc"]


def test_guest_false_writes_only_the_iso_side(tmp_path):
    ctx = small_context(tmp_path, cloud_init={"guest": False, "user_data": {"packages": ["htop"]}})
    cloudinit.run(ctx, ctx.recipe.cloud_init)
    assert not (ctx.root.path / "var/lib/cloud").exists()
    assert cloudinit.secrets(ctx.recipe) == []          # no disk target: no seed ISO either
    with_disk = small_context(tmp_path / "disk", targets={"disk": {}},
                              cloud_init={"guest": False, "user_data": {"packages": ["htop"]}})
    assert cloudinit.secrets(with_disk.recipe) == ["the seed ISO: cloud-init user-data"]


def test_a_link_out_of_the_root_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    ctx = small_context(tmp_path, cloud_init={"user_data": USER_DATA})
    (ctx.root.path / "var/lib").mkdir(parents=True)
    (ctx.root.path / "var/lib/cloud").symlink_to(outside)
    cloudinit.run(ctx, ctx.recipe.cloud_init)
    assert list(outside.iterdir()) == []


def test_user_data_never_reaches_the_log(tmp_path, caplog):
    caplog.set_level("DEBUG")
    ctx = small_context(tmp_path, cloud_init={"user_data": USER_DATA})
    cloudinit.run(ctx, ctx.recipe.cloud_init)
    assert "s3cret" not in caplog.text and "AAAAC3" not in caplog.text


# ------------------------------------------------------------------ a clone's own seed


def test_a_clone_gets_its_own_seed():
    """The identity engine rewrites the seed as it rewrites the guest's network files: a clone's meta-data names
    it (a new instance-id: cloud-init runs its per-instance modules again) and its network-config has its
    address and MAC."""
    files = cloudinit.seed(recipe())
    rewriters = dict(engine.GUEST_FILES)
    rename = formats.Rename.of(hostname="web2", old_hostnames=("web1",), ips={"10.0.3.2": "10.0.3.7"},
                               macs={"00:16:3e:00:03:02": "00:16:3e:00:03:07"})
    meta = rewriters[f"{cloudinit.SEED_DIR}/meta-data"](files["meta-data"].decode(), rename)
    assert yaml.safe_load(meta) == {"instance-id": "web2", "local-hostname": "web2"}
    net = yaml.safe_load(rewriters[f"{cloudinit.SEED_DIR}/network-config"](files["network-config"].decode(), rename))
    eth0 = net["ethernets"]["eth0"]
    assert eth0["addresses"] == ["10.0.3.7/24"] and eth0["match"] == {"macaddress": "00:16:3e:00:03:07"}
    assert eth0["routes"] == [{"to": "0.0.0.0/0", "via": "10.0.3.1"}]


# ------------------------------------------------------------------ recipe checks


@pytest.mark.parametrize("text, key", [
    ("cloud_init: {user_data: {a: 1}, user_data_file: x}\n", "cloud_init.user_data_file"),
    ("cloud_init: {disable: true, user_data: {a: 1}}\n", "cloud_init.disable"),
    ("cloud_init: {user_data_file: missing.yml}\n", "cloud_init.user_data_file"),
    ("cloud_init: {userdata: {}}\n", "cloud_init.userdata"),
    ("cloud_init: {user_data: [a]}\n", "cloud_init.user_data"),
    ("cloud_init: yes\n", "cloud_init"),
])
def test_bad_cloud_init_is_named(tmp_path, text, key):
    assert key in paths(problems(write(tmp_path, BASE + text)))


def test_user_data_file_is_relative_to_the_recipe(tmp_path):
    from builder.build import recipe as rec
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/ud.yml").write_text("#cloud-config\n")
    loaded = rec.load(write(tmp_path / "sub", BASE + "cloud_init: {user_data_file: ud.yml}\n"))
    assert loaded.recipe.cloud_init.user_data_file == str(tmp_path / "sub/ud.yml")
    assert os.path.isfile(loaded.recipe.cloud_init.user_data_file)


def test_user_data_file_is_an_input_of_the_up_to_date_check(tmp_path):
    from builder.build import recipe as rec
    from builder.build import uptodate
    (tmp_path / "ud.yml").write_text("#cloud-config\n")
    r = rec.load(write(tmp_path, BASE + "cloud_init: {user_data_file: ud.yml}\n")).recipe
    assert uptodate.local_files(r) == [str(tmp_path / "ud.yml")]


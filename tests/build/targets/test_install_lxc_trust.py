"""install-lxc at the trust boundary: a name (from --name, manifest.json or nodes.json) never becomes a path outside
the lxcpath; a symlink at LXCPATH/NAME is neither followed nor deleted; --force replaces only a stopped container
imgbuild installed; manifest.json and nodes.json are files an earlier run left, read as untrusted; the new
container goes through the duplicate guard (inventory and the host's guest configs) and is recorded.

The output installed here is tests/support/tiny_output.py's (a busybox tree made by hand, so no build is needed);
tar, the identity engine, the inventory and lxc-start are real. One test uses the real default build for the
exact case of a second container of output/debian12."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.guestconf.lxc import missing_links
from builder.identity import inventory
from tests.conftest import imgbuild
from tests.support import tiny_output

pytestmark = pytest.mark.root


def snapshot(*dirs: Path) -> dict[str, tuple]:
    """Every path under dirs (not following links) with its type and size: to show nothing was written. The
    inventory's lock file (taken to check the guest, holds nothing) does not count."""
    out = {}
    for d in dirs:
        if not os.path.lexists(d):
            continue
        out[str(d)] = ("dir",)
        for dirpath, dirnames, filenames in os.walk(d):
            for n in dirnames + filenames:
                if n == "inventory.yml.lock":
                    continue
                p = Path(dirpath) / n
                st = p.lstat()
                out[str(p)] = (st.st_mode, st.st_size, os.readlink(p) if p.is_symlink() else None)
    return out


def refused(r, *fragments: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


@pytest.fixture
def site(tmp_path):
    """A tiny output, an lxcpath, a private inventory and empty Xen/OpenVZ directories (the guard scans them)."""
    class Site:
        out = tiny_output.make(tmp_path / "out")
        lxcpath = tmp_path / "lxc"
        inv = tmp_path / "inventory.yml"
        env = {**os.environ, inventory.ENV_VAR: str(tmp_path / "inventory.yml")}

        def install(self, *args: str, output: Path | None = None):
            return imgbuild("install-lxc", output or self.out, "--lxcpath", self.lxcpath, *args, env=self.env)

    s = Site()
    s.lxcpath.mkdir()
    return s


# ------------------------------------------------------------------ names never leave the lxcpath

BAD_NAMES = ["../x", "../../etc/imgbuild-pwned", "..", ".", "a/b", "x/../../y", "/tmp/imgbuild-abs-{pid}",
             "a;$(id)", "$(touch /tmp/imgbuild-pwned-{pid})", "a b", ".hidden", "-rf", "vm0\n", "", "x" * 65,
             "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("force", [False, True])
def test_a_bad_name_is_refused_and_nothing_is_written_anywhere(site, tmp_path, name, force):
    name = name.format(pid=os.getpid())
    (site.lxcpath / "keep").mkdir()            # a directory `--name ..` or `--force` must not touch
    (site.lxcpath / "keep" / "data").write_text("user data\n")
    before = snapshot(tmp_path, Path("/tmp/imgbuild-abs-%d" % os.getpid()))
    r = site.install("--name", name, *(["--force"] if force else []))
    refused(r, "--name", "is not a valid name")
    assert snapshot(tmp_path, Path("/tmp/imgbuild-abs-%d" % os.getpid())) == before
    assert not Path(f"/tmp/imgbuild-pwned-{os.getpid()}").exists() and not Path("/etc/imgbuild-pwned").exists()


def test_a_refused_name_does_not_even_create_the_lxcpath(site, tmp_path):
    missing = tmp_path / "new-lxc"
    r = imgbuild("install-lxc", site.out, "--name", "../x", "--lxcpath", missing, env=site.env)
    refused(r, "--name")
    assert not missing.exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["../escaped", "/tmp/imgbuild-abs-m", "a;$(id)", "..", "x/y", 42, None, ["a"]])
def test_a_bad_name_in_manifest_json_is_refused_naming_the_file(site, tmp_path, name):
    m = json.loads((site.out / "manifest.json").read_text())
    m["name"] = name
    (site.out / "manifest.json").write_text(json.dumps(m))
    before = snapshot(tmp_path)
    r = site.install()
    refused(r, str(site.out / "manifest.json"), "name")
    assert snapshot(tmp_path) == before and not (tmp_path / "escaped").exists()


MANIFESTS = {
    "a-list": "[1, 2]",
    "a-string": '"tiny"',
    "no-artifacts": '{"name": "tiny"}',
    "artifacts-not-a-list": '{"name": "tiny", "artifacts": {"tarball": "tiny.tar"}}',
    "artifact-not-an-object": '{"name": "tiny", "artifacts": ["tiny.tar"]}',
    "artifact-path-a-number": '{"name": "tiny", "artifacts": [{"kind": "tarball", "path": 7}]}',
    "artifact-kind-missing": '{"name": "tiny", "artifacts": [{"path": "tiny.tar"}]}',
    "artifact-path-escapes": '{"name": "tiny", "artifacts": [{"kind": "tarball", "path": "../../../etc/passwd"}, '
                             '{"kind": "lxc-config", "path": "lxc.conf"}]}',
    "artifact-path-absolute": '{"name": "tiny", "artifacts": [{"kind": "tarball", "path": "/etc/passwd"}, '
                              '{"kind": "lxc-config", "path": "lxc.conf"}]}',
    "not-json": "{name: tiny",
    "truncated": '{"name": "tiny", "artifacts": [',
    "nested-deep": "[" * 100000 + "]" * 100000,
    "binary": b"\x7fELF\x02\x01\x01\x00\x00\x00",
    "latin1": '{"name": "t\xe9"}'.encode("latin-1"),
    "empty": "",
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_a_manifest_of_the_wrong_shape_is_refused_naming_the_file(site, tmp_path, case):
    data = MANIFESTS[case]
    (site.out / "manifest.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    before = snapshot(tmp_path)
    r = site.install("--name", "vm0")
    refused(r, "manifest.json")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("config", [b"\x7fELF\x00\x01", "lxc.uts.name = t\xe9\n".encode("latin-1"),
                                    b"lxc.uts.name = tiny\n"])
def test_an_lxc_config_that_is_no_config_is_refused_naming_it(site, tmp_path, config):
    (site.out / "lxc.conf").write_bytes(config)
    before = snapshot(tmp_path)
    refused(site.install("--name", "vm0"), str(site.out / "lxc.conf"))
    assert snapshot(tmp_path) == before


def test_an_artifact_that_is_a_symlink_is_refused(site, tmp_path):
    (site.out / "tiny.tar").unlink()
    (site.out / "tiny.tar").symlink_to("/etc/passwd")
    refused(site.install("--name", "vm0"), "tiny.tar", "not a regular file")
    assert not os.listdir(site.lxcpath)


def nodes_json(**node) -> str:
    n = {"name": "n1", "address": "10.0.3.61/24", "mac": "00:16:3e:00:06:01", "vars": {}, **node}
    return json.dumps({"base": {"interface": "eth0", "ip": tiny_output.IP, "mac": tiny_output.MAC,
                                "hostname": "tiny"}, "nodes": [n]})


NODES = {
    "binary": b"\x00\x01\x02garbage\xff",
    "latin1": b'{"base": {}, "nodes": "\xe9"}',
    "not-json": "nodes: [n1]",
    "a-list": '[{"name": "n1"}]',
    "no-nodes": '{"base": {}}',
    "nodes-empty": '{"base": {}, "nodes": []}',
    "base-a-list": '{"base": [], "nodes": [{"name": "n1"}]}',
    "node-a-string": '{"base": {}, "nodes": ["n1"]}',
    "name-traverses": nodes_json(name="../../etc/imgbuild-pwned"),
    "name-absolute": nodes_json(name="/tmp/imgbuild-pwned"),
    "name-shell": nodes_json(name="n1;$(id)"),
    "name-missing": nodes_json(name=None),
    "name-a-number": nodes_json(name=7),
    "address-bad": nodes_json(address="10.0.3.999/24"),
    "address-no-prefix": nodes_json(address="10.0.3.61"),
    "mac-bad": nodes_json(mac="00:16:3e:00:06"),
    "mac-multicast": nodes_json(mac="01:16:3e:00:06:01"),
    "vars-a-list": nodes_json(vars=[1, 2]),
    "name-twice": json.dumps({"base": {}, "nodes": [json.loads(nodes_json())["nodes"][0]] * 2}),
    "base-ip-bad": json.dumps({"base": {"ip": "x"}, "nodes": [json.loads(nodes_json())["nodes"][0]]}),
}


@pytest.mark.parametrize("case", sorted(NODES))
def test_a_garbage_nodes_json_is_refused_naming_the_file(site, tmp_path, case):
    data = NODES[case]
    (site.out / "nodes.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    before = snapshot(tmp_path)
    r = site.install()
    refused(r, "nodes.json")
    assert snapshot(tmp_path) == before
    assert not Path("/etc/imgbuild-pwned").exists() and not Path("/tmp/imgbuild-pwned").exists()


# ------------------------------------------------------------------ symlinks and --force


@pytest.mark.parametrize("force", [False, True])
def test_a_symlink_at_the_destination_is_neither_followed_nor_deleted(site, tmp_path, force):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep me\n")
    (elsewhere / "config").write_text("# written by imgbuild for x\n")   # even a config that looks like ours
    (site.lxcpath / "vm0").symlink_to(elsewhere)
    before = snapshot(tmp_path)
    r = site.install("--name", "vm0", *(["--force"] if force else []))
    refused(r, "is a symbolic link", str(site.lxcpath / "vm0"))
    assert snapshot(tmp_path) == before
    assert os.readlink(site.lxcpath / "vm0") == str(elsewhere) and (elsewhere / "precious").read_text() == "keep me\n"


def test_a_dangling_symlink_at_the_destination_is_not_written_through(site, tmp_path):
    target = tmp_path / "not-there"
    (site.lxcpath / "vm0").symlink_to(target)
    refused(site.install("--name", "vm0", "--force"), "is a symbolic link")
    assert not os.path.lexists(target)


def test_an_lxcpath_that_is_a_symlink_is_fine_and_the_container_lands_in_its_target(site, tmp_path):
    real = tmp_path / "real-lxc"
    real.mkdir()
    link = tmp_path / "lxc-link"
    link.symlink_to(real)
    r = imgbuild("install-lxc", site.out, "--name", "vm0", "--lxcpath", link, env=site.env)
    assert r.returncode == 0, r.stderr
    assert (real / "vm0" / "config").is_file() and not (real / "vm0").is_symlink()
    assert f"lxc.rootfs.path = dir:{real}/vm0/rootfs" in (real / "vm0" / "config").read_text()
    assert sorted(os.listdir(real)) == ["vm0"]     # no temp directory left behind


@pytest.mark.parametrize("config", [None, "lxc.uts.name = mine\n", "# my own container\nlxc.uts.name = mine\n"])
def test_force_replaces_only_a_container_imgbuild_installed(site, tmp_path, config):
    mine = site.lxcpath / "vm0"
    (mine / "rootfs").mkdir(parents=True)
    (mine / "rootfs" / "data").write_text("user data\n")
    if config is not None:
        (mine / "config").write_text(config)
    before = snapshot(tmp_path)
    r = site.install("--name", "vm0", "--force")
    refused(r, str(mine), "not a container imgbuild installed")
    assert snapshot(tmp_path) == before


def test_force_replaces_a_stopped_container_imgbuild_installed_and_keeps_one_record(site):
    assert site.install("--name", "vm0").returncode == 0
    (site.lxcpath / "vm0" / "rootfs" / "old-file").write_text("x")
    r = site.install("--name", "vm0")
    refused(r, "already exists", "--force")
    r = site.install("--name", "vm0", "--force")
    assert r.returncode == 0, r.stderr
    assert not (site.lxcpath / "vm0" / "rootfs" / "old-file").exists()
    assert sorted(os.listdir(site.lxcpath)) == ["vm0"]
    assert [g.name for g in inventory.load(site.inv).guests] == ["vm0"]


# ------------------------------------------------------------------ the duplicate guard and the host name


def test_name_becomes_the_host_name_and_the_guest_is_recorded(site):
    r = site.install("--name", "web7")
    assert r.returncode == 0, r.stderr
    c = site.lxcpath / "web7"
    assert (c / "rootfs/etc/hostname").read_text().strip() == "web7"
    assert "lxc.uts.name = web7" in (c / "config").read_text()
    assert "web7" in (c / "rootfs/etc/hosts").read_text()
    [g] = inventory.load(site.inv).guests
    assert (g.name, g.hostname, g.ips, g.macs, g.where) == ("web7", "web7", (tiny_output.IP,), (tiny_output.MAC,),
                                                            f"lxc:{c}")


def test_a_dotted_name_gives_its_first_label_as_a_clone_does(site):
    r = site.install("--name", "web8.prod")
    assert r.returncode == 0, r.stderr
    assert (site.lxcpath / "web8.prod/rootfs/etc/hostname").read_text().strip() == "web8"


def test_a_name_that_is_no_host_name_says_why_the_host_name_is_kept(site):
    r = site.install("--name", "web_7")
    assert r.returncode == 0, r.stderr
    assert "web_7 is not a host name" in r.stderr and "keeps the build's host name tiny" in r.stderr
    assert (site.lxcpath / "web_7/rootfs/etc/hostname").read_text().strip() == "tiny"


FOREIGN = """lxc.uts.name = {host}
lxc.rootfs.path = dir:/srv/elsewhere/{name}/rootfs
lxc.net.0.type = veth
lxc.net.0.hwaddr = {mac}
lxc.net.0.ipv4.address = {ip}/24
"""


@pytest.mark.parametrize("taken", ["mac", "ip", "hostname"])
def test_an_identity_another_lxc_guest_has_is_refused_naming_both(site, tmp_path, taken):
    """A container not made by imgbuild (only its config, in the lxcpath) holds the MAC, IP or host name."""
    other = {"name": "db1", "host": "db1", "mac": "00:16:3e:00:0f:01", "ip": "10.0.3.201"}
    other.update({"mac": {"mac": tiny_output.MAC}, "ip": {"ip": tiny_output.IP}, "hostname": {"host": "web7"}}[taken])
    (site.lxcpath / "db1").mkdir()
    (site.lxcpath / "db1" / "config").write_text(FOREIGN.format(**other))
    before = snapshot(tmp_path)
    r = site.install("--name", "web7")
    value = {"mac": tiny_output.MAC, "ip": tiny_output.IP, "hostname": "web7"}[taken]
    refused(r, value, "web7", f"db1 (lxc:{site.lxcpath / 'db1'})", "imgbuild clone")
    assert snapshot(tmp_path) == before      # no container, no temp directory, no inventory written


def test_an_identity_the_inventory_remembers_is_refused(site, tmp_path):
    """A guest the inventory remembers (a Xen guest whose config is not in the xen directory searched)."""
    cfg = tmp_path / "elsewhere" / "www.cfg"
    cfg.parent.mkdir()
    cfg.write_text('name = "www"\n')
    inv = inventory.load(site.inv)
    inv.record(inventory.GuestRecord("www", "www", (tiny_output.IP,), ("00:16:3e:00:0f:02",), f"xen:{cfg}"))
    inventory.save(inv)
    r = site.install("--name", "vm9")
    refused(r, tiny_output.IP, f"www (xen:{cfg})")
    assert "stale" not in r.stderr
    assert not os.listdir(site.lxcpath)
    assert [g.name for g in inventory.load(site.inv).guests] == ["www"]


def test_a_second_install_of_one_output_is_refused(site):
    assert site.install("--name", "vm0").returncode == 0
    r = site.install("--name", "other")
    refused(r, tiny_output.MAC, tiny_output.IP, "other", f"vm0 (lxc:{site.lxcpath / 'vm0'})")
    assert sorted(os.listdir(site.lxcpath)) == ["vm0"]


@pytest.mark.network
@pytest.mark.slow
def test_the_default_build_installed_twice_is_refused(debian12_build, tmp_path):
    """`imgbuild install-lxc output/debian12 --name other` beside an installed debian12: the same MAC and IP."""
    env = {**os.environ, inventory.ENV_VAR: str(tmp_path / "inventory.yml")}
    lxcpath = tmp_path / "lxc"
    r = imgbuild("install-lxc", debian12_build, "--lxcpath", lxcpath, env=env)
    assert r.returncode == 0, r.stderr
    r = imgbuild("install-lxc", debian12_build, "--name", "other", "--lxcpath", lxcpath, env=env)
    refused(r, "00:16:3e:00:03:02", "10.0.3.2", f"debian12 (lxc:{lxcpath / 'debian12'})")
    assert sorted(os.listdir(lxcpath)) == ["debian12"]


# ------------------------------------------------------------------ a running container is never replaced


@pytest.mark.lxc
def test_force_refuses_a_running_container(site, tmp_path):
    from builder.build.targets import lxc
    from tests.support.lxc import install_on_bridge, lxc_netns

    name = f"ib-run-{os.getpid()}"
    with lxc_netns(tmp_path / "sandbox", bridge_cidr="10.0.3.1/24") as sb:
        sb.adopt(name)
        install_on_bridge(sb, site.out, name, env=site.env)
        assert lxc.running(sb.lxcpath, name) is None
        sb.start(name)
        assert sb.state(name) == "RUNNING"
        marker = sb.lxcpath / name / "rootfs" / "still-here"
        marker.write_text("x")
        r = imgbuild("install-lxc", site.out, "--name", name, "--lxcpath", sb.lxcpath, "--force", env=site.env)
        refused(r, "is running", "lxc-stop")
        assert marker.exists() and sb.state(name) == "RUNNING"
        assert sorted(os.listdir(sb.lxcpath)) == [name]
        # the monitor is found whatever spelling of the lxcpath started it
        link = tmp_path / "lxc-link"
        link.symlink_to(sb.lxcpath)
        assert "monitor" in (lxc.running(link, name) or "")
        assert lxc.running(sb.lxcpath, name + "x") is None
        sb.run_ns("lxc-stop", "-P", sb.lxcpath, "-n", name, "-k", check=True)
        assert wait_until(lambda: lxc.running(sb.lxcpath, name) is None, 30), lxc.running(sb.lxcpath, name)


def wait_until(pred, timeout: float) -> bool:
    import time

    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def test_install_lxc_on_build_refuses_a_foreign_container_before_building(tmp_path):
    """`imgbuild RECIPE --install-lxc`: the destination is checked before the build (the mirror here is dead, so
    a build that started anyway would fail with another message)."""
    lxcpath = tmp_path / "lxc"
    (lxcpath / "broken" / "rootfs").mkdir(parents=True)
    (lxcpath / "broken" / "config").write_text("lxc.uts.name = broken\n")
    recipe = tmp_path / "r.yml"
    recipe.write_text("name: broken\ndistro: debian\nrelease: bookworm\nbootstrap: {mirror: 'http://127.0.0.1:9/d'}\n"
                      "targets: {tarball: {}, lxc: {}}\n")
    r = imgbuild(recipe, "-o", tmp_path / "out", "--install-lxc", "--lxcpath", lxcpath)
    refused(r, "not a container imgbuild installed")
    assert not (tmp_path / "out").exists() and os.listdir(lxcpath) == ["broken"]
    (lxcpath / "broken").rename(tmp_path / "moved")
    (lxcpath / "broken").symlink_to(tmp_path / "moved")
    refused(imgbuild(recipe, "-o", tmp_path / "out", "--install-lxc", "--lxcpath", lxcpath), "symbolic link")


# ------------------------------------------------------------------ a bridge that is not there


def test_a_missing_bridge_is_named_with_the_command_that_makes_it(site, tmp_path):
    """lxc-start says only 'Received container state "ABORTING"' when the config's bridge is missing: install-lxc
    warns, naming the key, the bridge and how to make it; a link that exists gets no warning."""
    conf = site.out / "lxc.conf"
    conf.write_text(conf.read_text().replace("lxc.net.0.link = lxcbr0", "lxc.net.0.link = ibnobr0"))
    r = site.install("--name", "vm0")
    assert r.returncode == 0, r.stderr
    assert (f"warning: {site.lxcpath}/vm0/config: lxc.net.0.link = ibnobr0: no such interface on this host, so "
            "`lxc-start -n vm0` will fail") in r.stderr, r.stderr
    assert "systemctl enable --now lxc-net" in r.stderr and "ip link add NAME type bridge" in r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("+ ")], r.stderr     # commands only with -v
    other = tiny_output.make(tmp_path / "out2", name="tiny2", ip="10.0.3.51", mac="00:16:3e:00:05:51")
    conf = other / "lxc.conf"
    conf.write_text(conf.read_text().replace("lxc.net.0.link = lxcbr0", "lxc.net.0.link = lo"))
    r = site.install("--name", "vm1", "-v", output=other)
    assert r.returncode == 0 and "no such interface" not in r.stderr, r.stderr
    assert any(ln.startswith("+ tar ") for ln in r.stderr.splitlines()), r.stderr


def test_missing_links_reads_modern_and_legacy_keys(tmp_path):
    (tmp_path / "br0").mkdir()
    config = ("lxc.net.0.link = br0\nlxc.net.1.link=gone1\n# lxc.net.2.link = commented\n"
              "lxc.network.link = gone2\nlxc.net.3.link = ../../etc\n")
    assert missing_links(config, str(tmp_path)) == [("lxc.net.1.link", "gone1"), ("lxc.network.link", "gone2")]

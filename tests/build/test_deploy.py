"""`imgbuild deploy`: a cluster recipe whose nodes name their hosts, built once (for real, from the host's mirror)
and installed on two real ssh hosts (sshd in network namespaces of the test's own, tests/support/sshhost.py):
each node's rootfs and config arrive on its host only, with its own identity; a second deploy changes nothing; a
dry run changes nothing; a MAC another guest on h2 already has is refused on h2 alone (h1 still ok, h2's node
untouched); --start is refused before anything changes on hosts without lxc-start (the test hosts have no LXC,
so only that refusal and its dry run are tested here, not a started container); a node host that is an ssh
option is bad input, exit 2, before any host is contacted."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import imgbuild
from tests.support.clusters import shm_dir
from tests.support.sshhost import shared_hosts, tree_diff, tree_state

LXC = "var/lib/lxc"
RECIPE = """\
name: dpl
distro: debian
release: bookworm
arch: amd64
bootstrap: {method: auto, mirror: auto, variant: minbase, packages: [ifupdown]}
hostname: node0
network:
  eth0: {address: 10.0.3.10/24, gateway: 10.0.3.1, mac: "00:16:3e:00:03:0a"}
dns: [10.0.3.1]
templates: [{path: /etc/node.txt, source: node.j2}]
root_password: {lock: true}
devices: container
targets:
  tarball: {compression: zstd}
  lxc: {bridge: lxcbr0}
nodes:
  - {name: n1, address: 10.0.3.21/24, host: h1}
  - {name: n2, address: 10.0.3.22/24, host: h2}
  - {name: n3, address: 10.0.3.23/24, host: h1}
"""
PLACES = {"n1": "h1", "n2": "h2", "n3": "h1"}


@pytest.fixture
def work():
    d = shm_dir("deploy")          # the build and the nodes' staged trees: removed whatever happens
    yield d
    shutil.rmtree(d, ignore_errors=True)


def rows(stdout: str) -> dict[str, str]:
    return {ln.split()[0]: ln for ln in stdout.splitlines() if re.match(r"^h[12]\s", ln)}


def states(hosts) -> dict[str, dict]:
    return {h.alias: tree_state(h.root / LXC, mtime=True) if (h.root / LXC).exists() else {} for h in hosts}


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_deploy_a_cluster_to_two_hosts(request, tmp_path, work):
    recipe = work / "dpl.yml"
    recipe.write_text(RECIPE)
    (work / "node.j2").write_text("{{ node.name }} {{ node.ip }} of {{ nodes | length }}\n")
    with shared_hosts(request, tmp_path, ("h1", "h2")) as hosts:
        h = {x.alias: x for x in hosts}
        common = ["--ssh-config", hosts[0].ssh_config, "--lxcpath", "/var/lib/lxc", "-o", work / "out",
                  "--logs", work / "logs"]
        # a dry run first: built, both hosts checked, each host's log lists what it would get; nothing there
        r = imgbuild("deploy", recipe, *common, "--dry-run", timeout=1800)
        assert r.returncode == 0 and "nothing was changed on any host" in r.stdout, r.stdout + r.stderr
        assert not any((x.root / LXC).exists() for x in hosts)
        log = sorted((work / "logs").glob("*-h1.log"))[-1].read_text()
        assert re.search(r"^h1:/var/lib/lxc/n1: would send \d+ files", log, re.M), log
        assert re.search(r"^  create \(\d+\):$", log, re.M), log
        assert "/var/lib/lxc/n2" not in log and "/var/lib/lxc/n3: would send" in log, log

        r = imgbuild("deploy", recipe, *common, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "is up to date" in r.stderr, r.stderr           # built once
        log = sorted((work / "logs").glob("*-h2.log"))[-1].read_text()
        assert "/var/lib/lxc/n2/config joins bridge lxcbr0, which h2 does not have" in log, log
        table = rows(r.stdout)
        assert sorted(table) == ["h1", "h2"] and all(" ok " in row for row in table.values()), r.stdout
        nodes = {n["name"]: n for n in json.loads((work / "out/dpl/nodes.json").read_text())["nodes"]}
        assert {n: v["host"] for n, v in nodes.items()} == PLACES
        for name, alias in PLACES.items():
            cdir = h[alias].root / LXC / name
            other = h["h2" if alias == "h1" else "h1"].root / LXC / name
            assert not other.exists(), f"{name} also on the other host"
            assert (cdir / "rootfs/etc/hostname").read_text() == f"{name}\n"
            assert (cdir / "rootfs/etc/node.txt").read_text() == f"{name} {nodes[name]['address'][:-3]} of 3\n"
            assert nodes[name]["address"] in (cdir / "rootfs/etc/network/interfaces").read_text()
            config = (cdir / "config").read_text()
            assert f"lxc.net.0.hwaddr = {nodes[name]['mac']}" in config, config
            assert f"lxc.rootfs.path = dir:/var/lib/lxc/{name}/rootfs" in config and f"lxc.uts.name = {name}" in config
            assert json.loads((cdir / ".imgbuild-deploy").read_text())["node"] == name
            assert not (cdir / "rootfs/.imgbuild-push").exists()
        macs = {re.search(r"hwaddr = (\S+)", (h[a].root / LXC / n / "config").read_text())[1]
                for n, a in PLACES.items()}
        assert len(macs) == 3

        # the same build again: nothing changed anywhere (the staged trees are kept: same ssh host keys)
        before = states(hosts)
        r = imgbuild("deploy", recipe, *common, timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(row.endswith("0 created, 0 changed, 0 deleted") for row in rows(r.stdout).values()), r.stdout
        assert not any(tree_diff(before[a], s) for a, s in states(hosts).items())

        # a dry run and a --start refused (no lxc-start on these hosts) change nothing on either host
        r = imgbuild("deploy", recipe, *common, "--dry-run", timeout=900)
        assert r.returncode == 0 and "nothing was changed" in r.stdout, r.stdout + r.stderr
        r = imgbuild("deploy", recipe, *common, "--start", timeout=900)
        assert r.returncode == 1 and "lxc-start is not installed there" in r.stderr, r.stdout + r.stderr
        assert "2 of 2 hosts failed: h1, h2" in r.stderr, r.stderr
        assert not any(tree_diff(before[a], s) for a, s in states(hosts).items())

        # a foreign container on h2 has n2's MAC: h2 refuses, naming itself, the MAC and the guest; h1 goes on
        other = h["h2"].root / LXC / "other"
        other.mkdir()
        (other / "config").write_text(f"lxc.uts.name = other\nlxc.net.0.type = veth\n"
                                      f"lxc.net.0.hwaddr = {nodes['n2']['mac'].upper()}\n")
        n2_before = tree_state(h["h2"].root / LXC / "n2", mtime=True)
        (h["h1"].root / LXC / "n1/rootfs/etc/motd").write_text("changed on h1\n")   # h1 has work to do
        r = imgbuild("deploy", recipe, *common, timeout=900)
        assert r.returncode == 1, r.stdout + r.stderr
        assert re.search(rf"^h2: MAC {nodes['n2']['mac']} of node n2 is already used by guest other "
                         r"\(/var/lib/lxc/other/config\)", r.stderr, re.M), r.stderr
        assert "error: 1 of 2 hosts failed: h2" in r.stderr, r.stderr
        assert " ok " in rows(r.stdout)["h1"] and "FAILED" in rows(r.stdout)["h2"], r.stdout
        assert "changed on h1" not in (h["h1"].root / LXC / "n1/rootfs/etc/motd").read_text()
        assert not tree_diff(n2_before, tree_state(h["h2"].root / LXC / "n2", mtime=True))


@pytest.mark.root
def test_a_node_host_that_is_an_ssh_option_is_bad_input_before_any_host(tmp_path):
    recipe = tmp_path / "bad.yml"
    (tmp_path / "node.j2").write_text("{{ node.name }}\n")
    recipe.write_text(RECIPE.replace("host: h2", "host: -oProxyCommand=x"))
    r = imgbuild("deploy", recipe, "-o", tmp_path / "out", "--logs", tmp_path / "logs")
    assert r.returncode == 2 and "nodes[1].host" in r.stderr and "not an ssh destination" in r.stderr, r.stderr
    assert not (tmp_path / "logs").exists() and not (tmp_path / "out").exists()   # nothing built, no host run
    recipe.write_text(RECIPE.replace(", host: h2", ""))
    r = imgbuild("deploy", recipe, "-o", tmp_path / "out", "--logs", tmp_path / "logs")
    assert r.returncode == 2 and "nodes[1] (n2): no host" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_install_lxc_host_options_are_checked_before_any_host(tmp_path):
    from tests.support import tiny_output

    single = tiny_output.make(tmp_path / "single")
    r = imgbuild("install-lxc", single, "--dry-run")
    assert r.returncode == 2 and "--dry-run: only with --host" in r.stderr, r.stderr
    r = imgbuild("install-lxc", single, "--host", "h1")
    assert r.returncode == 2 and "not a cluster build" in r.stderr, r.stderr
    out = tmp_path / "c"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "c", "artifacts": []}')
    (out / "nodes.json").write_text('{"base": {"ip": "10.0.3.10", "mac": null}, "nodes": [{"name": "a", '
                                    '"address": "10.0.3.11/24", "mac": "00:16:3e:00:00:01", "host": "h1"}]}')
    for args, said in ((["--host", "-oProxyCommand=x"], "not a host name"), (["--host", "h1", "--name", "x"],
                       "--name does not go with --host"), (["--host", "h1", "--node", "zz"], "zz: not a node"),
                       (["--host", "h1", "--lxcpath", "rel/lxc"], "--lxcpath rel/lxc: give an absolute path")):
        r = imgbuild("install-lxc", out, *args)
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    (out / "nodes.json").write_text((out / "nodes.json").read_text().replace('"h1"', '"-oProxyCommand=x"'))
    r = imgbuild("install-lxc", out, "--host", "h1")
    assert r.returncode == 2 and "nodes[0].host" in r.stderr, r.stderr       # nodes.json is checked again

"""`migrate push --hosts`: one push to three real hosts (sshd in network namespaces of the test's own) in parallel;
the dry run after one changed file names it for every host; with one host's sshd gone the other two still get the
push, the third is named with ssh's error, exit 1. Host lists are checked before any host is contacted."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal

import pytest

from builder.core.errors import InputError, ToolMissing
from builder.migrate import fleet
from tests.conftest import migrate
from tests.support.pushtree import DEST, make_tree
from tests.support.sshhost import shared_hosts, tree_diff, tree_state

ALIASES = ("a", "b", "c")
needs_ansible = pytest.mark.skipif(shutil.which("ansible-inventory") is None,
                                   reason="ansible-core is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def three_hosts(request, tmp_path):
    """Hosts a, b and c sharing one ssh_config, key and known_hosts."""
    with shared_hosts(request, tmp_path, ALIASES) as hosts:
        yield hosts, hosts[0].ssh_config


def comparable(state: dict) -> dict:
    skip = ("etc/hostname", "etc/ssh/ssh_host_ed25519_key", "tmp/scratch", ".", ".imgbuild-push")   # not sent
    return {k: v for k, v in state.items() if k not in skip}


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_push_to_three_hosts_then_a_dry_run_then_one_host_down(three_hosts, tmp_path):
    hosts, config = three_hosts
    source = make_tree(tmp_path / "src")
    logs = tmp_path / "logs"
    common = ["--ssh-config", str(config), "--dest", DEST, "--source", str(source), "--logs", str(logs)]
    r = migrate("push", "--hosts", "a,b,c", "-j", "3", *common, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:4]}
    assert sorted(rows) == ["a", "b", "c"] and all(" ok " in row for row in rows.values()), r.stdout
    for h in hosts:
        diff = tree_diff(comparable(tree_state(source)), comparable(tree_state(h.root / DEST.lstrip("/"))))
        assert not diff, (h.alias, diff)
    assert len(list(logs.glob("*-a.log"))) == 1 and not list(logs.glob(".*.json"))   # results read and removed

    # one file changed: each host's dry run names it (each host's own log holds its listing); the hosts this time
    # from an Ansible inventory, read by ansible-core (scripts/setup.sh installs it)
    (source / "etc" / "app.conf").write_text("setting = 22222\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\na\nb\n\n[db]\nc\n\n[prod:children]\nweb\ndb\n")
    r = migrate("push", "--hosts", f"@{inventory}:prod", "-j", "3", "--dry-run", *common, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^a\s+ok\s.*0 created, 1 changed, 0 deleted$", r.stdout, re.M), r.stdout
    for alias in ALIASES:
        newest = sorted(logs.glob(f"*-{alias}.log"))[-1]
        assert re.search(r"^  change content \(1\):\n    /etc/app.conf$", newest.read_text(), re.M), alias

    # the other remote commands take the same host set: chroot-install on all three, then status reads it back
    r = migrate("chroot-install", "--hosts", "a,b,c", "-j", "3", *common[:4], "--logs", str(logs), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(re.findall(rf"^[abc]\s+ok\s.*installed: the boot script in {DEST}$", r.stdout, re.M)) == 3, r.stdout
    assert all((h.root / DEST.lstrip("/") / "usr/local/sbin/imgbuild-chroot").is_file() for h in hosts)
    r = migrate("status", "--hosts", "a,b,c", "--dest", DEST, "--ssh-config", str(config), "--logs", str(logs))
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(re.findall(rf"^[abc]\s+ok\s.*Debian GNU/Linux 12.*; {DEST}: pushed \d+ s ago, chroot stopped, "
                          r"not started at boot; 0 lxc, 0 xen$", r.stdout, re.M)) == 3, r.stdout
    (hosts[0].root / "var/lib/lxc/web1").mkdir(parents=True)        # one host carries a container
    (hosts[0].root / "var/lib/lxc/web1/config").write_text("lxc.uts.name = web1\n")
    r = migrate("status", "a", "--dest", DEST, "--ssh-config", str(config), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout)
    assert got["hostname"] == "a" and got["lxc"] == {"web1": "unknown"} and got["trees"][0]["chroot_installed"]
    # xen-bridge: each host's files in a directory of its own; a host without the NIC's ifcfg fails alone
    nsdir = hosts[1].root / "etc/sysconfig/network-scripts"
    nsdir.mkdir(parents=True)
    (nsdir / "ifcfg-eth0").write_text("DEVICE=eth0\nBOOTPROTO=static\nIPADDR=192.0.2.10\nNETMASK=255.255.255.0\n")
    review = tmp_path / "review"
    r = migrate("xen-bridge", "--hosts", "a,b", "-o", str(review), "--ssh-config", str(config), "--logs", str(logs))
    assert r.returncode == 1 and "error: 1 of 2 hosts failed: a" in r.stderr, r.stdout + r.stderr
    assert "IPADDR=192.0.2.10" in (review / "b" / "ifcfg-xenbr0").read_text()
    assert not (review / "a").exists() or not list((review / "a").iterdir())

    # c's sshd ends: a and b are pushed, c is named with ssh's own error, exit 1
    os.kill(hosts[2].init_pid, signal.SIGKILL)
    r = migrate("push", "--hosts", "a,b,c", "-j", "3", *common, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: 1 of 3 hosts failed: c" in r.stderr, r.stderr
    assert re.search(r"^c\s+FAILED: ", r.stdout, re.M), r.stdout                     # in the table, shortened
    assert re.search(r"^c: cannot connect: .*Connection refused \(log: ", r.stderr, re.M), r.stderr   # in full
    for h in hosts[:2]:
        assert (h.root / DEST.lstrip("/") / "etc" / "app.conf").read_text() == "setting = 22222\n"
    r = migrate("status", "--hosts", "a,b,c", "--ssh-config", str(config), "--logs", str(logs))
    assert r.returncode == 1 and "error: 1 of 3 hosts failed: c" in r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("spec, words", [
    ("", "names no host"),
    ("a,-oProxyCommand=x", "is not a host name"),
    ("a,b c", "is not a host name"),
    ("@/nonexistent/hosts.txt", "hosts.txt"),
])
def test_a_bad_host_list_is_refused_before_any_host(spec, words):
    with pytest.raises(InputError, match=re.escape(words)):
        fleet.parse_hosts(spec)


def test_a_host_file_gives_one_host_a_line_each_once(tmp_path):
    f = tmp_path / "hosts.txt"
    f.write_text("# web tier\nweb1\nroot@web2   # the old one\n\nweb1\n")
    assert [t.name for t in fleet.parse_hosts(f"db1,@{f},db1")] == ["db1", "web1", "root@web2"]


INI = """[web]
a
b ansible_port=2200

[db]
c ansible_host=192.0.2.5 ansible_user=admin

[prod:children]
web
db
"""
YAML = """all:
  children:
    web:
      hosts:
        a:
        b: {ansible_port: 2200}
"""


@needs_ansible
def test_an_ansible_inventory_is_read_by_ansible_itself(tmp_path):
    ini, yml = tmp_path / "hosts.ini", tmp_path / "hosts.yml"
    ini.write_text(INI)
    yml.write_text(YAML)
    assert fleet.parse_hosts(f"@{ini}:prod") == [fleet.Target("a", "a"), fleet.Target("b", "b", 2200),
                                                 fleet.Target("c", "admin@192.0.2.5")]
    assert fleet.parse_hosts(f"@{ini}:db") == [fleet.Target("c", "admin@192.0.2.5")]
    assert [t.name for t in fleet.parse_hosts(f"@{yml}")] == ["a", "b"]          # all
    with pytest.raises(InputError, match="no group 'nosuch'"):
        fleet.parse_hosts(f"@{ini}:nosuch")


@needs_ansible
def test_an_executable_inventory_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "inventory.yml"
    script.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
    script.chmod(0o755)
    with pytest.raises(InputError, match="Ansible cannot read this inventory"):
        fleet.parse_hosts(f"@{script}:web")
    assert not marker.exists()


def test_without_ansible_an_inventory_names_the_package(tmp_path, monkeypatch):
    ini = tmp_path / "hosts.ini"
    ini.write_text(INI)
    monkeypatch.setenv("PATH", str(tmp_path))          # no ansible-inventory on it
    with pytest.raises(ToolMissing) as e:
        fleet.parse_hosts(f"@{ini}:web")
    assert "ansible-inventory" in e.value.message and "apt-get install ansible-core" in e.value.hint

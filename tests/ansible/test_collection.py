"""The Ansible collection imgbuild.guests (collection/): built and installed with ansible-galaxy into a temp
collections path, its docs rendered by ansible-doc, and the example playbook (docs/examples/fleet.yml) run by
ansible-playbook against three real hosts (sshd in network namespaces, no python on them): check mode changes
nothing, the real run pushes and installs the chroot, a second run reports changed=0; bad input fails with
imgbuild's own message. The modules run imgbuild's CLI of this worktree (.venv/bin) on the controller."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO
from tests.support.pushtree import DEST, make_tree
from tests.support.sshhost import shared_hosts, tree_diff, tree_state

MODULES = ("push", "chroot", "reidentify", "build", "install_lxc")
PLAYBOOK = REPO / "docs" / "examples" / "fleet.yml"
ANSIBLE_PYTHON = "/usr/bin/python3"       # the python ansible-core runs on (not imgbuild's venv)

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None or shutil.which("ansible-galaxy") is None,
                                reason="ansible-core is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def ansible_env(tmp_path_factory) -> dict:
    """The collection built and installed into a temp collections path; an environment that keeps Ansible out
    of ~/.ansible."""
    base = tmp_path_factory.mktemp("ansible")
    (base / "tmp").mkdir()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(base / "collections"), ANSIBLE_LOCAL_TEMP=str(base / "tmp"),
               ANSIBLE_REMOTE_TEMP=str(base / "tmp"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_CONFIG=str(base / "ansible.cfg"),
               ANSIBLE_GALAXY_CACHE_DIR=str(base / "galaxy-cache"), ANSIBLE_PERSISTENT_CONTROL_PATH_DIR=str(base),
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(base / "cp"), ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/",
               HOME=str(base / "home"))
    (base / "home").mkdir()
    (base / "ansible.cfg").write_text("[defaults]\n")
    run(["ansible-galaxy", "collection", "build", str(REPO / "collection"), "--output-path", str(base)], env)
    tarball = base / "imgbuild-guests-0.1.0.tar.gz"
    run(["ansible-galaxy", "collection", "install", "--offline", "-p", str(base / "collections"), str(tarball)], env)
    assert (base / "collections/ansible_collections/imgbuild/guests/plugins/action/push.py").is_file()
    return env


def run(argv: list[str], env: dict, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       cwd=REPO)
    if check:
        assert r.returncode == 0, f"{' '.join(argv)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def recap(out: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, unreachable, failed, ...}."""
    rows = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", out.split("PLAY RECAP")[-1], re.M):
        rows[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return rows


def test_ansible_doc_renders_every_module(ansible_env):
    r = run(["ansible-doc", "--list", "imgbuild.guests"], ansible_env)
    assert sorted(re.findall(r"^imgbuild\.guests\.(\w+)", r.stdout, re.M)) == sorted(MODULES), r.stdout
    for m in MODULES:
        r = run(["ansible-doc", "-t", "module", f"imgbuild.guests.{m}"], ansible_env)
        assert f"IMGBUILD.GUESTS.{m.upper()}" in r.stdout and "OPTIONS" in r.stdout, r.stdout
        assert "runs on the controller" in " ".join(r.stdout.split()).lower() and "bin_dir" in r.stdout, m
        assert "EXAMPLES" in r.stdout and "RETURN VALUES" in r.stdout, m
    r = run(["ansible-doc", "-t", "module", "imgbuild.guests.push"], ansible_env)
    for option in ("= dest", "= source", "- delete", "- exclude", "- ssh_config", "- host", "- port"):
        assert option in r.stdout, option


ARGV_CHECK = r"""
import json, sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible_collections.imgbuild.guests.plugins.action import push, chroot, reidentify, build, install_lxc
out = {
  "push": push.push_argv("migrate", "root@a", ["--port", "2222"], {"dest": "/srv/os", "source": "/t",
                         "exclude": ["*.deb", "--delete"], "delete": True, "bwlimit": 10}, False, "/r.json"),
  "push_dry": push.push_argv("migrate", "a", [], {"dest": "/srv/os", "source": "/t"}, True, "/r.json"),
  "chroot": chroot.chroot_argv("migrate", "a", [], {"dest": "/srv/os", "state": "installed",
                               "services": ["ssh", "cron"], "hostname": "web1", "ssh_port": 2200}, True, "/r.json"),
  "enable": chroot.chroot_argv("migrate", "a", [], {"dest": "/srv/os", "state": "enabled", "via": "unit"},
                               False, "/r.json"),
  "reidentify": reidentify.reidentify_argv("migrate", {"target": "lxc:web2", "hostname": "web2",
                                           "ips": ["10.0.3.2=10.0.3.3"], "macs": ["auto"],
                                           "variables": {"server_id": 2, "peer": "a b"}}, True),
  "build": build.build_argv("imgbuild", {"recipe": "r.yml", "output": "/o", "set": {"hostname": "web1"},
                            "force": True}, True, "/r.json"),
  "install": install_lxc.install_argv("imgbuild", {"output": "/o/x", "name": "web1", "lxcpath": "/l"}, True),
}
try:
    chroot.chroot_argv("migrate", "a", [], {"dest": "/d", "state": "started", "hostname": "x"}, False, "/r")
    out["refused"] = None
except Exception as e:
    out["refused"] = str(e)
print(json.dumps(out))
"""


def test_action_plugins_build_argv_lists(ansible_env):
    r = run([ANSIBLE_PYTHON, "-c", ARGV_CHECK, ansible_env["ANSIBLE_COLLECTIONS_PATH"]], ansible_env)
    a = json.loads(r.stdout)
    assert a["push"] == ["migrate", "push", "--dest", "/srv/os", "--source", "/t", "--exclude", "*.deb",
                         "--exclude", "--delete", "--bwlimit", "10", "--delete", "--result-json", "/r.json",
                         "--port", "2222", "--", "root@a"]
    assert a["push_dry"][-4:] == ["--dry-run", "--json", "--", "a"] and "--result-json" not in a["push_dry"]
    assert a["chroot"] == ["migrate", "chroot-install", "--dest", "/srv/os", "--service", "ssh", "--service", "cron",
                           "--hostname", "web1", "--ssh-port", "2200", "--dry-run", "--result-json", "/r.json",
                           "--", "a"]
    assert a["enable"][:5] == ["migrate", "chroot-enable", "--dest", "/srv/os", "--via"]
    assert a["reidentify"] == ["migrate", "reidentify", "--hostname", "web2", "--ip", "10.0.3.2=10.0.3.3", "--mac",
                               "auto", "--set", "server_id=2", "--set", 'peer="a b"', "--dry-run", "--",
                               "lxc:web2"]
    assert a["build"] == ["imgbuild", "build", "--output", "/o", "--set", 'hostname="web1"', "--force", "--dry-run",
                          "--result-json", "/r.json", "--", "r.yml"]
    assert a["install"] == ["imgbuild", "install-lxc", "--lxcpath", "/l", "--name", "web1", "--force", "--", "/o/x"]
    assert a["refused"] == "hostname: goes with state=installed, not state=started"


FAKE_MIGRATE = """#!/usr/bin/python3
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if "--result-json" in sys.argv:
    with open(sys.argv[sys.argv.index("--result-json") + 1], "w") as f:
        json.dump({"create": [], "change": [], "delete": [], "bytes": 0, "changed": False, "lines": []}, f)
if "--fail" in os.environ.get("FAKE_MODE", ""):
    sys.stderr.write("error: it went wrong\\nhint: do this instead\\n")
    sys.exit(2)
"""

FAKE_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - imgbuild.guests.push: {source: /srv/t, dest: /srv/os}
    - imgbuild.guests.chroot: {dest: /srv/os, state: enabled, via: rc.local, port: 2299,
                              ssh_options: [ConnectTimeout=5]}
"""


def test_the_inventory_names_the_host_its_port_and_user(tmp_path, ansible_env):
    """ansible_host, ansible_port and ansible_user become imgbuild's HOST (after `--`), --port and user@; `host`,
    `port` and `user` options win; nothing reaches the hosts but the command imgbuild runs (a stand-in here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "migrate").write_text(FAKE_MIGRATE)
    (bindir / "migrate").chmod(0o755)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[g]\nweb1 ansible_host=192.0.2.11 ansible_port=3843 ansible_user=admin\nweb2\n")
    book = tmp_path / "play.yml"
    book.write_text(FAKE_PLAY)
    log = tmp_path / "argv.log"
    env = dict(ansible_env, FAKE_LOG=str(log))
    r = run(["ansible-playbook", "-i", str(inventory), str(book), "-e", f"imgbuild_bin_dir={bindir}"], env)
    assert all(row["failed"] == 0 and row["changed"] == 0 for row in recap(r.stdout).values()), r.stdout
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    push = {c[-1]: c for c in calls if c[0] == "push"}
    assert push["admin@192.0.2.11"][-4:-2] == ["--port", "3843"] and push["web2"][-2] == "--", push
    enable = {c[-1]: c for c in calls if c[0] == "chroot-enable"}
    assert enable["admin@192.0.2.11"][-6:] == ["--port", "2299", "--ssh-option", "ConnectTimeout=5", "--",
                                              "admin@192.0.2.11"], enable

    # the CLI's error: and hint: lines are the failed task's message
    r = run(["ansible-playbook", "-i", str(inventory), str(book), "-e", f"imgbuild_bin_dir={bindir}", "--limit",
             "web2"], dict(env, FAKE_MODE="--fail"), check=False)
    assert _failures(r.stdout)[0]["msg"] == "error: it went wrong hint: do this instead", r.stdout


def comparable(state: dict) -> dict:
    """What a push sends (protected and never-sent paths left out)."""
    skip = ("etc/hostname", "etc/ssh/ssh_host_ed25519_key", "tmp/scratch", ".", ".imgbuild-push")
    return {k: v for k, v in state.items() if k not in skip}


def trees(hosts) -> dict:
    """Each host's /srv (the push's parent directory: DEST appears there) and /etc (rc.local, units)."""
    return {h.alias: (tree_state(h.root / "srv"), tree_state(h.root / "etc")) for h in hosts}


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_example_playbook_check_then_run_then_nothing_to_do(request, tmp_path, ansible_env):
    source = make_tree(tmp_path / "src")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[guests]\na\nb\nc\n")
    with shared_hosts(request, tmp_path, ("a", "b", "c")) as hosts:
        known = hosts[0].known_hosts.read_bytes()
        extra = ["-e", f"imgbuild_source={source}", "-e", f"imgbuild_dest={DEST}",
                 "-e", f"imgbuild_ssh_config={hosts[0].ssh_config}", "-e", f"imgbuild_bin_dir={BIN}"]
        play = ["ansible-playbook", "-i", str(inventory), str(PLAYBOOK), *extra]

        # check mode (with the diff): every host reports what would change; nothing changes anywhere
        before = trees(hosts)
        r = run([*play, "--check", "--diff"], ansible_env)
        assert "create /etc/app.conf" in r.stdout, r.stdout
        assert all(row["changed"] == 2 and row["failed"] == 0 for row in recap(r.stdout).values()), r.stdout
        assert sorted(recap(r.stdout)) == ["a", "b", "c"], r.stdout
        after = trees(hosts)
        for h in hosts:
            assert before[h.alias] == after[h.alias], (h.alias, tree_diff(before[h.alias][0], after[h.alias][0]))
        assert hosts[0].known_hosts.read_bytes() == known

        # the real run: the tree on every host, with the chroot's boot script and its own host name
        r = run(play, ansible_env)
        rows = recap(r.stdout)
        assert sorted(rows) == ["a", "b", "c"] and all(row["changed"] == 2 and row["failed"] == 0
                                                       for row in rows.values()), r.stdout
        want = comparable(tree_state(source))
        for h in hosts:
            dest = h.root / DEST.lstrip("/")
            got = tree_state(dest)
            assert not tree_diff(want, {k: got.get(k) for k in want}), (h.alias, tree_diff(want, got))
            assert (dest / "usr/local/sbin/imgbuild-chroot").is_file()
            assert (dest / "etc/hostname").read_text() == f"{h.alias}\n"
            assert (dest / "etc/machine-id").read_text().strip()

        # again: nothing to do, on every host; the same in check mode
        done = trees(hosts)
        for mode in ([], ["--check"]):
            r = run([*play, *mode], ansible_env)
            rows = recap(r.stdout)
            assert sorted(rows) == ["a", "b", "c"] and all(row["changed"] == 0 and row["failed"] == 0
                                                           for row in rows.values()), (mode, r.stdout)
        assert trees(hosts) == done

        # the other chroot states on one host: enabled (an rc.local block: these hosts run no systemd) and disabled,
        # each changed once then not; stopped with nothing running is no change; check mode changes nothing
        states = tmp_path / "states.yml"
        states.write_text(STATES_PLAYBOOK)
        states_play = ["ansible-playbook", "-i", str(inventory), "--limit", "a", str(states), *extra]
        before = trees(hosts)["a"]
        r = run([*states_play, "--check", "-e", "checking=1"], ansible_env)
        assert recap(r.stdout)["a"]["failed"] == 0 and trees(hosts)["a"] == before, r.stdout
        r = run(states_play, ansible_env)
        assert recap(r.stdout)["a"]["failed"] == 0, r.stdout
        assert "imgbuild chroot" not in (hosts[0].root / "etc/rc.local").read_text()
        done = trees(hosts)

        # bad input: imgbuild's own refusal, no traceback, the host unchanged
        bad = tmp_path / "bad.yml"
        bad.write_text(BAD_PLAYBOOK)
        r = run(["ansible-playbook", "-i", str(inventory), "--limit", "a", str(bad), *extra], ansible_env,
                check=False)
        assert recap(r.stdout)["a"]["ignored"] == 3, r.stdout
        assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        results = _failures(r.stdout)
        assert len(results) == 3, r.stdout
        relative, missing, badhost = results
        assert "--dest" in relative["msg"] and "absolute" in relative["msg"], relative
        assert "nosuchdir" in missing["msg"], missing
        assert "not a host name" in badhost["msg"], badhost
        assert trees(hosts)["a"] == done["a"]


START_PLAYBOOK = """
- hosts: all
  gather_facts: false
  module_defaults:
    group/imgbuild.guests.all:
      ssh_config: "{{ ssh_config }}"
      bin_dir: "{{ bin_dir }}"
  tasks:
    - imgbuild.guests.push: {source: "{{ source }}", dest: "{{ dest }}"}
    - imgbuild.guests.chroot: {dest: "{{ dest }}", state: installed, hostname: newos}
    - {imgbuild.guests.chroot: {dest: "{{ dest }}", state: started, wait: 20}, register: s1}
    - {imgbuild.guests.chroot: {dest: "{{ dest }}", state: started}, register: s2}
    - {imgbuild.guests.chroot: {dest: "{{ dest }}", state: stopped}, register: t1}
    - {imgbuild.guests.chroot: {dest: "{{ dest }}", state: stopped}, register: t2}
    - assert:
        that: [s1 is changed, s2 is not changed, t1 is changed, t2 is not changed]
"""


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_chroot_started_then_stopped_each_once(sshhost, tmp_path, ansible_env):
    """A real OS tree (the test hosts' own base, with sshd) pushed, installed, started (its sshd answers on port 22
    of the host), started again (no change), stopped, stopped again (no change)."""
    from tests.support.sshhost import base_tree

    inventory = tmp_path / "hosts.ini"
    inventory.write_text("target\n")
    book = tmp_path / "start.yml"
    book.write_text(START_PLAYBOOK)
    try:
        r = run(["ansible-playbook", "-i", str(inventory), str(book), "-e", f"source={base_tree()}", "-e",
                 f"dest={DEST}", "-e", f"ssh_config={sshhost.ssh_config}", "-e", f"bin_dir={BIN}"], ansible_env)
        assert recap(r.stdout)["target"]["failed"] == 0, r.stdout
        assert sshhost.tcp_banner(22, timeout=1) is None and sshhost.tcp_banner(2222).startswith("SSH-2.0")
    finally:
        subprocess.run([str(BIN / "migrate"), "chroot-stop", "target", "--ssh-config", str(sshhost.ssh_config),
                        "--dest", DEST], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


STATES_PLAYBOOK = """
- hosts: guests
  gather_facts: false
  module_defaults:
    group/imgbuild.guests.all:
      ssh_config: "{{ imgbuild_ssh_config }}"
      bin_dir: "{{ imgbuild_bin_dir }}"
  tasks:
    - {imgbuild.guests.chroot: {dest: "{{ imgbuild_dest }}", state: enabled}, register: e1}
    - {imgbuild.guests.chroot: {dest: "{{ imgbuild_dest }}", state: enabled}, register: e2}
    - {imgbuild.guests.chroot: {dest: "{{ imgbuild_dest }}", state: disabled}, register: d1}
    - {imgbuild.guests.chroot: {dest: "{{ imgbuild_dest }}", state: disabled}, register: d2}
    - {imgbuild.guests.chroot: {dest: "{{ imgbuild_dest }}", state: stopped}, register: s1}
    - name: each state changed once, then not (in check mode nothing is done, so each says it would)
      assert:
        that: "{{ ['e1 is changed', 'e2 is changed', 'd1 is not changed', 'd2 is not changed', 's1 is not changed']
                  if checking | default(false) else
                  ['e1 is changed', 'e2 is not changed', 'd1 is changed', 'd2 is not changed', 's1 is not changed'] }}"
"""

BAD_PLAYBOOK = """
- hosts: guests
  gather_facts: false
  tasks:
    - name: relative dest
      imgbuild.guests.push:
        source: "{{ imgbuild_source }}"
        dest: srv/newos
        ssh_config: "{{ imgbuild_ssh_config }}"
      ignore_errors: true
    - name: missing source
      imgbuild.guests.push:
        source: /nosuchdir/tree
        dest: "{{ imgbuild_dest }}"
        ssh_config: "{{ imgbuild_ssh_config }}"
      ignore_errors: true
    - name: a host that is an option
      imgbuild.guests.chroot:
        host: "-oProxyCommand=touch /tmp/x"
        dest: "{{ imgbuild_dest }}"
        ssh_config: "{{ imgbuild_ssh_config }}"
      ignore_errors: true
"""


def _failures(out: str) -> list[dict]:
    """The result of every failed task, in order (the default callback prints it as JSON after `FAILED! => `)."""
    return [json.loads(m.group(1)) for m in re.finditer(r"^fatal: \[\w+\]: FAILED! => (\{.*\})$", out, re.M)]


CONTROLLER_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    lxcpath: "{{ work }}/lxc"
  tasks:
    - name: build
      imgbuild.guests.build:
        recipe: "{{ recipe }}"
        output: "{{ work }}/out"
        bin_dir: "{{ bin_dir }}"
      register: built
    - name: install
      imgbuild.guests.install_lxc:
        output: "{{ built.output }}"
        name: web7
        lxcpath: "{{ lxcpath }}"
        inventory: "{{ work }}/inventory.yml"
        bin_dir: "{{ bin_dir }}"
    - name: reidentify
      imgbuild.guests.reidentify:
        target: "{{ lxcpath }}/web7"
        hostname: web8
        ips: ["10.0.3.2=10.0.3.77"]
        lxcpath: "{{ lxcpath }}"
        xen_dir: "{{ work }}/xen"
        vz_dir: "{{ work }}/vz"
        inventory: "{{ work }}/inventory.yml"
        bin_dir: "{{ bin_dir }}"
      when: not ansible_check_mode or (lxcpath + '/web7') is directory
"""


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_build_install_lxc_and_reidentify_on_the_controller(tmp_path, ansible_env):
    """build, install_lxc and reidentify in a play for localhost: check mode changes nothing, the run does each
    step, a second run (and a second check) reports changed=0."""
    from tests.conftest import DEFAULT_RECIPE, mirror_reason

    if mirror_reason():
        pytest.skip(mirror_reason())
    work = tmp_path / "work"
    work.mkdir()
    book = tmp_path / "controller.yml"
    book.write_text(CONTROLLER_PLAYBOOK)
    play = ["ansible-playbook", "-i", "localhost,", str(book), "-e", f"work={work}", "-e", f"bin_dir={BIN}",
            "-e", f"recipe={DEFAULT_RECIPE}"]
    env = dict(ansible_env, IMGBUILD_INVENTORY=str(work / "inventory.yml"))

    r = run([*play, "--check", "--diff"], env)
    assert recap(r.stdout)["localhost"]["changed"] == 2 and "would build" in r.stdout, r.stdout
    assert not list(work.rglob("*")), list(work.rglob("*"))                   # nothing made, not even out/

    r = run(play, env, timeout=900)
    assert recap(r.stdout)["localhost"]["changed"] == 3, r.stdout
    cdir = work / "lxc" / "web7"
    assert (cdir / "rootfs/etc/hostname").read_text() == "web8\n"
    assert "10.0.3.77" in (cdir / "rootfs/etc/network/interfaces").read_text()
    assert json.loads((cdir / "imgbuild-source.json").read_text())["output"] == str(work / "out/debian12")

    state = tree_state(cdir)
    for mode in ([], ["--check", "--diff"]):
        r = run([*play, *mode], env, timeout=900)
        assert recap(r.stdout)["localhost"]["changed"] == 0, (mode, r.stdout)
    assert tree_state(cdir) == state


def test_collection_files_are_what_galaxy_needs():
    col = REPO / "collection"
    assert (col / "galaxy.yml").is_file() and (col / "README.md").is_file() and (col / "meta/runtime.yml").is_file()
    for m in MODULES:
        assert (col / "plugins/modules" / f"{m}.py").is_file() and (col / "plugins/action" / f"{m}.py").is_file()
    assert Path(PLAYBOOK).is_file() and (REPO / "docs/examples/hosts.ini").is_file()

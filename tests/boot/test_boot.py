"""`imgbuild boot`: the default build booted under real LXC and real systemd-nspawn, each in a network namespace
the command makes (the LXC boot is also the LXC target's acceptance test: the kept guest has the recipe's
hostname, address, MAC, hook result and no failed unit); a guest that cannot start (no /sbin/init) gives exit 1
and its console's tail; --keep leaves it reachable and --stop removes it; bad input is exit 2 and starts nothing.
After every run nothing of it is left: no namespace, work directory, container cgroup or nspawn cgroup."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from builder.boot import guest_network, ready
from builder.boot.qemu import console_state
from tests.conftest import imgbuild

pytestmark = pytest.mark.root
VERDICT = re.compile(r"^debian12: up in (\d+\.\d) s under (lxc|nspawn): systemd running; sshd answers on "
                     r"10\.0\.3\.2:22$", re.M)


def leftovers(tmpdir: Path) -> list[str]:
    left = [f"netns {n}" for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True
                                                 ).stdout.split() if n.startswith("ib-boot-")]
    left += [f"work dir {p}" for p in tmpdir.glob("imgbuild-boot-*")]
    for top in Path("/sys/fs/cgroup").glob("*/lxc.*.ib-*"):
        left.append(f"cgroup {top}")
    for name in ("payload", "supervisor"):
        if (Path("/sys/fs/cgroup/unified") / name).is_dir():
            left.append(f"nspawn cgroup /sys/fs/cgroup/unified/{name}")
    return left


@pytest.fixture
def env(tmp_path):
    """A TMPDIR of the test's own, so its work directories can be counted."""
    d = tmp_path / "tmp"
    d.mkdir()
    return {**os.environ, "TMPDIR": str(d)}, d


@pytest.mark.parametrize("runtime", ["lxc", "nspawn"])
def test_the_default_build_comes_up(debian12_build, env, runtime):
    e, tmpdir = env
    before = leftovers(Path(tempfile.gettempdir()))
    r = imgbuild("boot", debian12_build, "--in", runtime, env=e, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = VERDICT.search(r.stdout)
    assert m and m.group(2) == runtime, r.stdout
    assert leftovers(tmpdir) == [] and leftovers(Path(tempfile.gettempdir())) == before


def broken_output(src: Path, dest: Path) -> Path:
    """A copy of the default output whose tarball has no /sbin/init."""
    tree = dest.parent / "tree"
    tree.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(src / "debian12.tar.zst"), "-C", str(tree)], check=True)
    (tree / "sbin/init").unlink()
    dest.mkdir()
    subprocess.run(["tar", "--numeric-owner", "--zstd", "-cf", str(dest / "debian12.tar.zst"), "-C", str(tree), "."],
                   check=True)
    shutil.rmtree(tree)
    for f in ("lxc.conf", "manifest.json"):
        shutil.copy2(src / f, dest / f)
    return dest


def test_a_guest_without_init_is_not_up_and_its_console_is_shown(debian12_build, env, tmp_path):
    e, tmpdir = env
    out = broken_output(debian12_build, tmp_path / "broken" / "debian12")
    r = imgbuild("boot", out, "--timeout", "20", env=e, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"^debian12: did not come up under lxc", r.stdout, re.M), r.stdout
    assert "console: " in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert leftovers(tmpdir) == []


def test_keep_leaves_it_reachable_and_stop_removes_everything(debian12_build, env):
    e, tmpdir = env
    r = imgbuild("boot", debian12_build, "--keep", env=e, timeout=300)
    assert r.returncode == 0 and VERDICT.search(r.stdout), r.stdout + r.stderr
    kept = Path(re.search(r"^kept: (\S+)$", r.stdout, re.M).group(1))
    try:
        reach = re.search(r"reach it: (ip netns exec \S+ ssh root@10\.0\.3\.2)$", r.stdout, re.M).group(1)
        netns = reach.split()[3]
        probe = subprocess.run(["ip", "netns", "exec", netns, "ssh-keyscan", "-T", "5", "10.0.3.2"],
                               capture_output=True, text=True, timeout=30)
        assert "ssh-ed25519" in probe.stdout, probe.stderr          # still running, where it said
        attach = re.search(r"reach it: (nsenter .* lxc-attach .*)$", r.stdout, re.M).group(1).split()
        inside = lambda *cmd: subprocess.run([*attach, "--", *cmd], capture_output=True, text=True, timeout=30)
        # the LXC target's output as the recipe made it: hostname, address, MAC, no failed unit, the hook's file
        assert inside("hostname").stdout.strip() == "vm0"
        assert re.search(r"\binet 10\.0\.3\.2/24\b", inside("ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout)
        assert inside("cat", "/sys/class/net/eth0/address").stdout.strip() == "00:16:3e:00:03:02"
        failed = inside("systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
        assert failed.returncode == 0 and failed.stdout.strip() == "", failed.stdout + failed.stderr
        assert inside("cat", "/etc/hello").stdout == "hello\n"
        neigh = subprocess.run(["ip", "-n", netns, "neigh", "show", "10.0.3.2"], capture_output=True, text=True)
        assert "lladdr 00:16:3e:00:03:02" in neigh.stdout, neigh.stdout   # the address answered with the MAC
        assert f"stop it:  imgbuild boot --stop {kept}" in r.stdout
    finally:
        s = imgbuild("boot", "--stop", kept, env=e, timeout=120)
    assert s.returncode == 0 and f"stopped and removed {kept}" in s.stdout, s.stdout + s.stderr
    assert leftovers(tmpdir) == []


def test_bad_input_starts_nothing(tmp_path, env, debian12_build):
    e, tmpdir = env
    r = imgbuild("boot", tmp_path, env=e)
    assert r.returncode == 2 and "not an imgbuild output (no manifest.json)" in r.stderr, r.stderr
    r = imgbuild("boot", debian12_build, "--in", "qemu", env=e)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "boot.json").write_text(json.dumps({"runtime": "lxc", "tag": "../../x", "workdir": str(fake),
                                                "name": "ib-x", "address": None, "pid": 1, "extra": {}}))
    r = imgbuild("boot", "--stop", fake, env=e)
    assert r.returncode == 2 and "nothing was stopped" in r.stderr, r.stderr
    r = imgbuild("boot", "--console", tmp_path, env=e)
    assert r.returncode == 2 and "not a boot kept by `imgbuild boot --keep`" in r.stderr, r.stderr
    assert fake.is_dir() and leftovers(tmpdir) == []


@pytest.mark.parametrize("output, up, text", [
    ("init=systemd\nrunning\nsshd=yes\n", True, "systemd running"),
    ("init=systemd\ndegraded\n", True, "systemd degraded"),
    ("init=systemd\nstarting\n", None, "systemd starting"),
    ("init=systemd\nFailed to connect to bus: No such file or directory\n", None, "systemd Failed to connect"),
    ("init=systemd\nmaintenance\n", False, "systemd maintenance"),
    ("init=sysv\nN 3\n", True, "runlevel 3"),
    ("init=sysv\nunknown\n", None, "no runlevel yet"),
    ("init=sysv\nN 6\n", False, "runlevel 6"),
    ("", None, "no answer yet"),
])
def test_the_guests_answer_is_read(output, up, text):
    s = ready.parse(output)
    assert s.up is up and s.text.startswith(text)
    assert s.has_sshd == ("sshd=yes" in output)


def test_the_bridge_carries_the_recipes_gateway():
    m = {"network": {"eth0": {"address": "10.0.3.2/24", "gateway": "10.0.3.1"}}}
    assert [str(x) for x in guest_network(m)] == ["10.0.3.2", "10.0.3.1/24"]
    m = {"network": {"eth0": {"address": "192.0.2.7/28"}}}            # no gateway: another host of the network
    assert [str(x) for x in guest_network(m)] == ["192.0.2.7", "192.0.2.1/28"]
    assert guest_network({"network": {"eth0": {"dhcp": True}}}) == (None, None)
    assert guest_network({}) == (None, None)


CONSOLE_UP = ("[  OK  ] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m - Multi-User System.\n\n"
              "Debian GNU/Linux 12 vm20 ttyS0\n\nvm20 login: ")
FAILED_UNIT = ("[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39mnetworking.service\x1b[0m - "
               "Raise network interfaces.\n")


@pytest.mark.parametrize("console, up, text", [
    (CONSOLE_UP, True, "systemd running (console: login prompt, no failed unit; bios, tcg)"),
    (FAILED_UNIT + CONSOLE_UP, True, "systemd degraded (failed: networking.service; console: login prompt; bios, tcg)"),
    # a device named in fstab that never came, as systemd 252 wrote it to a converted guest's serial console (its
    # name cut short, inside a colour code), and in the combined status format (unit - description)
    ("[\x1b[0;1;31m TIME \x1b[0m] Timed out waiting for device \x1b[0;1;…e1d2c-3b4a-4c5d-8e6f-0123456789ab.\r\n"
     "[\x1b[0;1;38;5;185mDEPEND\x1b[0m] Dependency failed for swap.target - Swaps.\r\n" + CONSOLE_UP, True,
     "systemd degraded (failed: no device …e1d2c-3b4a-4c5d-8e6f-0123456789ab; console: login prompt; bios, tcg)"),
    ("[ TIME ] Timed out waiting for device dev-vdb.device - /dev/vdb.\r\n" + CONSOLE_UP, True,
     "systemd degraded (failed: no device dev-vdb.device; console: login prompt; bios, tcg)"),
    ("[  OK  ] Reached target multi-user.target - Multi-User System.\n", True,
     "systemd running (console: multi-user.target, no failed unit; bios, tcg)"),
    ("Loading Linux 6.1.0-28-amd64 ...\n", None, "console: no login prompt yet (bios, tcg)"),
    ("---[ end Kernel panic - not syncing: VFS: Unable to mount root fs\n", False, "console: Kernel panic (bios, tcg)"),
    ("You are in emergency mode. After logging in ...\nvm20 login: ", False,
     "console: You are in emergency mode (bios, tcg)"),
])
def test_the_vms_console_is_read(console, up, text):
    state = console_state(console, "bios, tcg")
    assert (state.up, state.text) == (up, text)


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[1;1Hevil\x1b[0;1;31m\x07.service"     # a title, a clear screen, a bell


def test_the_guests_console_reaches_no_terminal_unescaped(tmp_path):
    """What the guest writes to its console is data: a failed unit's name or a console line with a terminal's
    title (OSC), cursor or bell sequences is printed escaped, colours dropped."""
    from builder.boot import _tail

    state = console_state(f"[FAILED] Failed to start {HOSTILE}\n" + CONSOLE_UP, "bios, tcg")
    assert state.up and "\x1b" not in state.text and "\x07" not in state.text, state.text
    assert "\\x1b]0;owned\\x07" in state.text, state.text
    log = tmp_path / "console.log"
    log.write_bytes(f"booting\r\n[\x1b[0;32m  OK  \x1b[0m] Started {HOSTILE}\r\n".encode())
    lines = _tail(log)
    assert lines[0] == "booting" and lines[1].startswith("[  OK  ] Started \\x1b]0;owned\\x07evil"), lines
    assert not any(c in "".join(lines) for c in "\x1b\x07\r"), lines
    s = ready.wait(lambda argv: (0, "init=systemd\ndegraded\n") if argv[0] == "sh" else (0, HOSTILE + " loaded\n"),
                   timeout=1)
    assert s.text.startswith("systemd degraded (failed: \\x1b]0;owned") and "\x1b" not in s.text, s.text


def test_a_seed_iso_and_further_disks_are_attached_and_a_missing_one_refused(tmp_path):
    """qemu's drives for an output: the disk never written (snapshot=on); cloud_init's seed ISO, when the manifest
    lists one, as a read-only CD-ROM; a listed ISO that is not a regular file (a link) is bad input."""
    from builder.boot import qemu
    from builder.core.errors import InputError
    (tmp_path / "vm.qcow2").write_bytes(b"")
    arts = [{"kind": "disk-qcow2", "path": "vm.qcow2"}]
    assert qemu.drives(tmp_path, {"artifacts": arts}) == [
        "-drive", f"file={tmp_path}/vm.qcow2,format=qcow2,if=virtio,snapshot=on"]
    arts.append({"kind": qemu.SEED_ISO, "path": "vm.seed.iso"})
    os.symlink("/etc/shadow", tmp_path / "vm.seed.iso")
    with pytest.raises(InputError, match="seed ISO is missing or not a regular file"):
        qemu.drives(tmp_path, {"artifacts": arts})
    os.unlink(tmp_path / "vm.seed.iso")
    (tmp_path / "vm.seed.iso").write_bytes(b"")
    assert qemu.drives(tmp_path, {"artifacts": arts})[2:] == [
        "-drive", f"file={tmp_path}/vm.seed.iso,format=raw,media=cdrom,readonly=on"]
    # a converted Xen guest's further disk: after the root, not written either; its format is checked
    (tmp_path / "vm-xvdb.qcow2").write_bytes(b"")
    arts.append({"kind": f"{qemu.EXTRA_DISK}xvdb", "path": "vm-xvdb.qcow2", "format": "qcow2"})
    assert qemu.drives(tmp_path, {"artifacts": arts})[2:4] == [
        "-drive", f"file={tmp_path}/vm-xvdb.qcow2,format=qcow2,if=virtio,snapshot=on"]
    arts[-1]["format"] = "vvfat"
    with pytest.raises(InputError, match="has format 'vvfat'"):
        qemu.drives(tmp_path, {"artifacts": arts})

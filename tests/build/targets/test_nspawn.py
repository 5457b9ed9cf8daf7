"""The systemd-nspawn target: the rendered .nspawn settings (golden, per network mode), what real systemd-nspawn
makes of them, and the default recipe's machine booted with `systemd-nspawn --boot` to systemd `running`.

How nspawn runs here (REAL-TESTS.md): PID 1 of this machine is not systemd and there is no system D-Bus, so nspawn
runs with `--register=no --keep-unit`; a tmpfs is mounted on /run/systemd/nspawn for the duration (nspawn writes
there; it also is the documented place for .nspawn files that take full effect) and unmounted afterwards. nspawn
leaves its `payload` and `supervisor` cgroups behind when it runs outside a systemd unit; the ones a test made
are removed again. Every nspawn a test starts is its own child, stopped by pid (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder.build import recipe
from builder.build.targets import nspawn
from tests.conftest import DEFAULT_RECIPE, imgbuild, mounts_under

NSPAWN_RUN = Path("/run/systemd/nspawn")
TMPFS_NAME = "imgbuild-nspawn-test"
BOOT_TIMEOUT = 60
# The nspawn machine gets no eth0: with `network: private` it has only lo (with veth it would have host0), so the
# recipe's `eth0` (ifupdown: auto eth0, static 10.0.3.2) would make networking.service fail ("Cannot find device
# eth0") and systemd end up `degraded`. The build therefore clears the recipe's network for this target.
BUILD_SETS = ("targets={nspawn: {network: private}}", "network={}")


def load(*sets: str):
    return recipe.load(DEFAULT_RECIPE, sets).recipe


# ------------------------------------------------------------------ golden settings files

HEAD = "# written by imgbuild for debian12: /etc/systemd/nspawn/debian12.nspawn\n"
GOLDEN = {
    "veth": ("targets={nspawn: {}}",
             "[Exec]\nBoot=yes\nHostname=vm0\n\n[Network]\nVirtualEthernet=yes\n"),
    "bridge": ("targets={nspawn: {network: bridge, bridge: br7}}",
               "[Exec]\nBoot=yes\nHostname=vm0\n\n[Network]\nBridge=br7\n"),
    "private": ("targets={nspawn: {network: private}}",
                "[Exec]\nBoot=yes\nHostname=vm0\n\n[Network]\nPrivate=yes\nVirtualEthernet=no\n"),
    "host": ("targets={nspawn: {network: host}}",
             "[Exec]\nBoot=yes\nHostname=vm0\n\n[Network]\nPrivate=no\nVirtualEthernet=no\n"),
    "binds-noboot": (("targets={nspawn: {boot: false, binds: [/srv/data, '/srv/logs:/var/log/app', "
                      "'/srv/cache:/var/cache/app:norbind']}}"),
                     ("[Exec]\nBoot=no\nHostname=vm0\n\n[Network]\nVirtualEthernet=yes\n\n[Files]\n"
                      "Bind=/srv/data\nBind=/srv/logs:/var/log/app\nBind=/srv/cache:/var/cache/app:norbind\n")),
}

# Keys systemd.nspawn(5) documents, per section (systemd 252, Debian 12), and which take booleans.
DOCUMENTED = {
    "Exec": {"Boot", "Ephemeral", "ProcessTwo", "Parameters", "Environment", "User", "WorkingDirectory",
             "PivotRoot", "Capability", "DropCapability", "AmbientCapability", "NoNewPrivileges", "KillSignal",
             "Personality", "MachineID", "PrivateUsers", "NotifyReady", "SystemCallFilter", "OOMScoreAdjust",
             "CPUAffinity", "Hostname", "ResolvConf", "Timezone", "LinkJournal", "SuppressSync"},
    "Files": {"ReadOnly", "Volatile", "Bind", "BindReadOnly", "BindUser", "TemporaryFileSystem", "Inaccessible",
              "Overlay", "OverlayReadOnly", "PrivateUsersOwnership"},
    "Network": {"Private", "VirtualEthernet", "VirtualEthernetExtra", "Interface", "MACVLAN", "IPVLAN", "Bridge",
                "Zone", "Port"},
}
BOOLEAN = {"Boot", "Ephemeral", "ProcessTwo", "NoNewPrivileges", "NotifyReady", "ReadOnly", "Private",
           "VirtualEthernet", "SuppressSync"}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_render_golden(case):
    override, body = GOLDEN[case]
    r = load(override)
    got = nspawn.render(r, r.targets.nspawn)
    assert got == HEAD + body, f"{case}:\n{got}"


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_render_uses_only_documented_keys(case):
    r = load(GOLDEN[case][0])
    section = None
    seen: list[tuple[str, str]] = []
    for line in nspawn.render(r, r.targets.nspawn).splitlines():
        if line == "" or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            assert section in DOCUMENTED, f"[{section}] is not a systemd.nspawn(5) section"
            continue
        m = re.fullmatch(r"([A-Za-z]+)=(\S.*)", line)       # no spaces around '=', a value
        assert m and section, repr(line)
        key, value = m.groups()
        assert key in DOCUMENTED[section], f"[{section}] {key}= is not a systemd.nspawn(5) key"
        if key in BOOLEAN:
            assert value in ("yes", "no"), line
        if key != "Bind":
            assert (section, key) not in seen, f"{key}= twice in [{section}]"
        seen.append((section, key))
    assert ("Exec", "Boot") in seen and ("Exec", "Hostname") in seen


# ------------------------------------------------------------------ running nspawn


def _own_cgroups() -> list[Path]:
    """This process's cgroup directory in every mounted hierarchy (where nspawn puts payload/ and supervisor/)."""
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, ctrl, rel = line.split(":", 2)
        name = ctrl.replace("name=", "") if ctrl else "unified"
        for base in (Path("/sys/fs/cgroup") / name, Path("/sys/fs/cgroup")):
            d = base / rel.lstrip("/")
            if (d / "cgroup.procs").exists() and d not in out:
                out.append(d)
                break
    return out


def nspawn_cgroups() -> set[Path]:
    return {d / n for d in _own_cgroups() for n in ("payload", "supervisor") if (d / n).is_dir()}


def _mounted_here(path: Path) -> list[str]:
    """Sources of the mounts stacked on exactly `path`."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ", 1)
        if pre.split()[4] == str(path):
            out.append(post.split()[1])
    return out


@contextmanager
def nspawn_host() -> Iterator[Path]:
    """A tmpfs on /run/systemd/nspawn for the duration; afterwards it is unmounted, the directory removed if it
    was made here, and the cgroups nspawn left behind (only those that did not exist before) removed."""
    if Path("/etc/systemd/nspawn/debian12.nspawn").exists():
        pytest.skip("/etc/systemd/nspawn/debian12.nspawn exists and would take precedence over the built one")
    made_dir = not NSPAWN_RUN.exists()
    NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
    cgroups_before = nspawn_cgroups()
    mounts_before = _mounted_here(NSPAWN_RUN)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", TMPFS_NAME, str(NSPAWN_RUN)], check=True)
    try:
        yield NSPAWN_RUN
    finally:
        if _mounted_here(NSPAWN_RUN)[-1:] == [TMPFS_NAME]:
            subprocess.run(["umount", str(NSPAWN_RUN)], check=True)
        if made_dir:
            NSPAWN_RUN.rmdir()
        for cg in sorted(nspawn_cgroups() - cgroups_before):
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [cg]:
                try:
                    d.rmdir()
                except OSError:
                    pass
        assert _mounted_here(NSPAWN_RUN) == mounts_before, "the tmpfs on /run/systemd/nspawn is still mounted"
        left = nspawn_cgroups() - cgroups_before
        assert not left, f"cgroups left by nspawn: {sorted(map(str, left))}"


def children(ppid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(") ", 1)[1].split()[1]) == ppid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def pids_in_pidns(ns: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "ns" / "pid") == ns:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Machine:
    """A booted nspawn machine: our nspawn child and the container's init (nspawn's child)."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log
        self.init: int | None = None
        self.pidns: str | None = None

    def find_init(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            kids = children(self.proc.pid)
            if len(kids) == 1:
                try:
                    ns = os.readlink(f"/proc/{kids[0]}/ns/pid")
                except OSError:
                    ns = None
                if ns and ns != os.readlink("/proc/self/ns/pid"):   # past nspawn's own fork: the container's init
                    self.init, self.pidns = kids[0], ns
                    return self.init
            time.sleep(0.1)
        raise AssertionError(f"no container init under nspawn {self.proc.pid} (exit {self.proc.poll()}):\n"
                             f"{self.log.read_text(errors='replace')[-3000:]}")

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        assert self.init is not None
        return subprocess.run(["nsenter", "-t", str(self.init), "-a", *cmd], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def wait_running(self, timeout: float = BOOT_TIMEOUT) -> tuple[str, float]:
        t0 = time.monotonic()
        state = ""
        while time.monotonic() - t0 < timeout:
            r = self.run("systemctl", "is-system-running")
            state = r.stdout.strip() or r.stderr.strip()
            if state in ("running", "degraded", "maintenance", "stopping"):
                break
            time.sleep(0.3)
        return state, time.monotonic() - t0

    def stop(self) -> None:
        """SIGTERM to nspawn (it halts the machine); SIGKILL if it is not gone in 30 s; reaped either way."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if self.init and alive(self.init):
                    os.kill(self.init, signal.SIGKILL)       # the container's PID 1: its whole pid namespace goes
                self.proc.kill()
                self.proc.wait(timeout=30)


@contextmanager
def booted(tree: Path, log: Path, *extra: str) -> Iterator[Machine]:
    cmd = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--settings=trusted", "-D", str(tree), *extra,
           "--boot"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    m = Machine(proc, log)
    try:
        m.find_init()
        yield m
    finally:
        m.stop()
        deadline = time.monotonic() + 10
        while m.pidns and pids_in_pidns(m.pidns) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m.proc.poll() is not None, "nspawn is still running"
        assert not (m.pidns and pids_in_pidns(m.pidns)), "processes of the machine are still running"
        assert mounts_under(tree) == [], f"left mounted: {mounts_under(tree)}"


# ------------------------------------------------------------------ the default recipe as an nspawn machine


@pytest.fixture(scope="module")
def nspawn_build(tmp_path_factory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path_factory.mktemp("nspawn-build") / "out"
    args = [a for s in BUILD_SETS for a in ("--set", s)]
    r = imgbuild(DEFAULT_RECIPE, "-o", out, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    yield out / "debian12"
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_nspawn_output(nspawn_build):
    import json

    names = sorted(p.name for p in nspawn_build.iterdir())
    assert names == ["SHA256SUMS", "debian12", "debian12.nspawn", "debian12.spdx.json", "manifest.json"], names
    r = load(*BUILD_SETS)
    assert (nspawn_build / "debian12.nspawn").read_text() == nspawn.render(r, r.targets.nspawn)
    kinds = {a["kind"]: a["path"] for a in json.loads((nspawn_build / "manifest.json").read_text())["artifacts"]}
    assert kinds == {"nspawn-settings": "debian12.nspawn", "nspawn-tree": "debian12", "sbom": "debian12.spdx.json"}
    tree = nspawn_build / "debian12"
    assert (tree / "etc" / "hostname").read_text() == "vm0\n"
    assert os.path.lexists(tree / "sbin" / "init")
    assert "eth0" not in (tree / "etc" / "network" / "interfaces").read_text()


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_nspawn_machine_boots_to_running(nspawn_build, tmp_path):
    tree = nspawn_build / "debian12"
    # The .nspawn file sits next to the tree, as NAME.nspawn beside NAME/: systemd.nspawn(5) finds it there (after
    # /etc/systemd/nspawn and /run/systemd/nspawn, both without a debian12.nspawn here), and --settings=trusted lets
    # its privileged settings (Private=, VirtualEthernet=) take effect; nothing needs copying.
    with nspawn_host() as run_dir:
        assert not (run_dir / "debian12.nspawn").exists()
        with booted(tree, tmp_path / "nspawn.log") as m:
            state, took = m.wait_running()
            if state != "running":
                failed = m.run("systemctl", "--failed", "--no-pager")
                jobs = m.run("systemctl", "list-jobs", "--no-pager")
                pytest.fail(f"systemd in the machine is {state!r} after {took:.1f} s (want 'running')\n"
                            f"{failed.stdout}{failed.stderr}\n{jobs.stdout}{jobs.stderr}\n"
                            f"{(tmp_path / 'nspawn.log').read_text(errors='replace')[-3000:]}")
            print(f"nspawn: systemd running {took:.1f} s after start")
            assert m.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
            assert m.run("hostname").stdout.strip() == "vm0"
            failed = m.run("systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
            assert failed.returncode == 0 and failed.stdout.strip() == "", failed.stdout + failed.stderr
            # Private=yes from debian12.nspawn: only loopback inside (without the file the machine would share
            # this host's network namespace and see its interfaces)
            links = re.findall(r"^\d+: ([^:@]+)", m.run("ip", "-o", "link").stdout, re.MULTILINE)
            host_links = re.findall(r"^\d+: ([^:@]+)", subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                                     text=True, check=True).stdout, re.MULTILINE)
            assert links == ["lo"], links
            assert len(host_links) > 1, "the host has only lo: the check above would prove nothing"
            assert m.run("cat", "/etc/hello").stdout == "hello\n"        # the recipe's hook ran in this tree
        log = (tmp_path / "nspawn.log").read_text(errors="replace")
        assert m.proc.returncode == 0, f"nspawn exit {m.proc.returncode}\n{log[-3000:]}"


def _links_in_modes(tree: Path, run_dir: Path, work: Path, mode: str) -> tuple[list[str], list[str], str]:
    """Render the settings for `mode` (Boot=no, to run a command) as /run/systemd/nspawn/MACHINE.nspawn and run
    nspawn with it inside a throwaway network namespace (`unshare --net`) that holds a bridge br7 and a marker link;
    returns (links seen in the machine, ports of br7 while it ran, nspawn output)."""
    r = load(f"targets={{nspawn: {{network: {mode}, bridge: br7, boot: false}}}}")
    machine = f"imgbt-{mode}"
    (run_dir / f"{machine}.nspawn").write_text(nspawn.render(r, r.targets.nspawn))
    script = ('ip link add br7 type bridge && ip link set br7 up && ip link add imgbt-mark type bridge || exit 9\n'
              'systemd-nspawn -q --register=no --keep-unit --settings=trusted -M "$1" -D "$2" '
              'sh -c "ip -o link; sleep 1" > "$3" 2>&1 &\n'
              'n=$!; sleep 0.6; echo "PORTS: $(ip -o link show master br7 | cut -d: -f2 | tr -d " " | tr "\\n" " ")"\n'
              'wait $n')
    out_file = work / f"{machine}.out"
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", script, "sh", machine, str(tree), str(out_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        outer, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)           # our own process group: unshare, sh, nspawn
        proc.wait()
        raise AssertionError(f"nspawn in mode {mode} did not finish in 60 s") from None
    finally:
        inner = out_file.read_text(errors="replace") if out_file.exists() else ""
        out_file.unlink(missing_ok=True)
    assert proc.returncode == 0, f"{mode}: exit {proc.returncode}\n{outer}\n{inner}"
    links = re.findall(r"^\d+: ([^:@]+)", inner, re.MULTILINE)
    m = re.search(r"PORTS: (.*)", outer)
    ports = m.group(1).split() if m else []
    return links, ports, inner + outer


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_settings_take_effect_in_each_network_mode(nspawn_build, tmp_path):
    tree = nspawn_build / "debian12"
    with nspawn_host() as run_dir:
        links, ports, out = _links_in_modes(tree, run_dir, tmp_path, "veth")
        assert links == ["lo", "host0"] and ports == [], out
        links, ports, out = _links_in_modes(tree, run_dir, tmp_path, "bridge")
        assert links == ["lo", "host0"] and len(ports) == 1 and ports[0].startswith("vb-"), out
        links, ports, out = _links_in_modes(tree, run_dir, tmp_path, "private")
        assert links == ["lo"], out
        links, ports, out = _links_in_modes(tree, run_dir, tmp_path, "host")
        assert links == ["lo", "br7", "imgbt-mark"], out       # the (throwaway) host namespace's own links
    assert mounts_under(tree) == []


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_settings_next_to_the_tree_need_trusted(nspawn_build, tmp_path):
    """What --settings=trusted is for: by default nspawn ignores the network settings of a .nspawn file found next
    to the tree (and says which file it means), so the machine would share the host's network."""
    tree = nspawn_build / "debian12"
    with nspawn_host():
        script = ('ip link add imgbt-mark type bridge && '
                  'exec systemd-nspawn -q --register=no --keep-unit -D "$1" ip -o link')
        r = subprocess.run(["unshare", "--net", "sh", "-c", script, "sh", str(tree)],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Ignoring network settings, file {tree.parent}/debian12.nspawn" in r.stdout + r.stderr, r.stderr
    assert "imgbt-mark" in r.stdout, r.stdout
    assert mounts_under(tree) == []


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_machine_is_stopped_when_a_test_fails(nspawn_build, tmp_path):
    """The cleanup itself: a test that fails while the machine runs leaves no nspawn, no machine processes, no
    mounts and (after nspawn_host) no tmpfs or cgroups behind."""
    tree = nspawn_build / "debian12"
    with nspawn_host():
        with pytest.raises(RuntimeError, match="simulated"), booted(tree, tmp_path / "nspawn.log") as m:
            assert m.init is not None and alive(m.init)
            raise RuntimeError("simulated test failure while the machine runs")
        assert m.proc.poll() is not None and not alive(m.init)
        assert not pids_in_pidns(m.pidns)
    assert mounts_under(tree) == []
    assert TMPFS_NAME not in _mounted_here(NSPAWN_RUN)

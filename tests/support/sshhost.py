"""Real "remote hosts" for tests: network namespaces, each running a real sshd from a debootstrapped Debian tree,
reachable from the test process over a veth pair; and `tree_state`, a byte-for-byte description of a tree.

How a host is made (`ssh_host`):

- The root: a private `cp -a` of one bookworm minbase tree (openssh-server, rsync, iproute2, procps, e2fsprogs),
  built with mmdebstrap once per session from the host's own mirror (`base_tree`). Both live on /dev/shm when that
  is a tmpfs with user xattrs and ACLs (this VM's disk is slow; rsync -X into a host needs xattrs), else in the
  system temp dir. The copy gets a fresh ed25519 host key (its only one), the test's ed25519 key in
  /root/.ssh/authorized_keys, /run/sshd, and its own /etc/ssh/sshd_config set to Port 2222 on 0.0.0.0 (port 22
  stays free for an sshd a test starts in a chroot inside the host).
- The network: a named netns `ibsXXXXXX` and a veth pair (`ibsXXXXXXh` here, `ibsXXXXXXn` in the netns) with a /24
  that exists only on those two ends: 10.231.INDEX.1 here, 10.231.INDEX.2 there. Nothing is routed further, so
  every packet stays between the test and the namespaces it made.
- The process: `setpriv --pdeathsig KILL ip netns exec NS unshare --pid --fork --kill-child --mount
  --propagation private --uts sh -c 'mounts; exec chroot ROOT /usr/sbin/sshd -D -e'`. Inside the host, pid 1 is
  sshd and its root is ROOT, so `/proc/1/root` is the host's own "/" (a process that chroots elsewhere gets back
  with `chroot /proc/1/root`).
  ROOT/proc is a fresh procfs of the new pid namespace, ROOT/sys a sysfs of the netns, ROOT/dev an rbind of the
  real /dev (with /dev/pts) and ROOT/dev/shm a fresh tmpfs (so the host cannot see the test's trees under the
  real /dev/shm). All of these live in the private mount namespace: they never appear in the test's mount table
  and vanish with the host.
- The end: SIGKILL to the one pid we started (setpriv, which execs `ip`, which execs `unshare`). --kill-child gave
  sshd a parent-death signal, sshd is the pid namespace's init, and when it dies the kernel kills everything else
  in the host (the host's hostname is its alias: --uts). Then
  `ip netns del`, the root-side veth end deleted if still there, the host's directory removed. setpriv gives that
  pid a parent-death signal too (it survives the execs), so even a SIGKILLed pytest ends its hosts (only the
  named netns, a mount in /run/netns, would be left then).

Fixtures (tests/conftest.py loads this module as a plugin, so every test has them): `sshhost` is one host with
alias "target"; `two_sshhosts` is (src, dst), with aliases "src" and "dst" in ONE ssh_config, one key and one
known_hosts. They depend on no conftest fixture. The base tree is cached
at module level (a session fixture imported into several modules would be built once per module) and removed at
the end of the session (config cleanup) or at exit.
"""
from __future__ import annotations

import atexit
import fcntl
import ipaddress
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.support.digest import sha256

RELEASE = "bookworm"
PACKAGES = ("openssh-server", "rsync", "iproute2", "procps", "e2fsprogs")
SSH_PORT = 2222
NET_PREFIX = "10.231"          # host INDEX gets 10.231.INDEX.0/24: .1 on our veth end, .2 on the host's
START_TIMEOUT = 10.0
TOOLS = ("mmdebstrap", "ip", "setpriv", "unshare", "chroot", "mount", "ssh", "ssh-keygen", "rsync", "findmnt")

_work: Path | None = None      # this session's directory (base tree, host roots)
_base: Path | None = None
_timings: dict[str, float] = {}


def run(cmd: Sequence[str], timeout: float = 60, check: bool = False, input: str | None = None,
        ) -> subprocess.CompletedProcess:
    r = subprocess.run(list(map(str, cmd)), check=False, capture_output=True, text=True, timeout=timeout, input=input,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def missing_tools() -> list[str]:
    return [t for t in TOOLS if not shutil.which(t)]


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in the test's own mount namespace."""
    out = run(["findmnt", "-rn", "-o", "TARGET"], check=True).stdout.split()
    p = os.path.realpath(path).rstrip("/")
    return [m for m in out if m == p or m.startswith(p + "/")]


def netns_names() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"], check=True).stdout.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name]).returncode == 0


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has already released its namespaces)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _wait(pred, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)


def _rmtree_unless_mounted(path: Path, problems: list[str]) -> None:
    """rmtree, but never through a mount point: something a test mounted into a host's root (or a private mount
    that leaked into our namespace, e.g. the rbind of /dev) would otherwise have its contents deleted."""
    if not os.path.lexists(path):
        return
    left = mounts_under(path)
    if left:
        problems.append(f"{path} not removed, mounts under it: {left}")
        return
    try:
        shutil.rmtree(path)
    except OSError as e:
        problems.append(f"removing {path}: {e}")


# ------------------------------------------------------------------ the session's directory and the base tree


def _tmpfs_dir_usable(d: Path) -> bool:
    """/dev/shm as a work dir: a writable tmpfs that takes user xattrs (Linux >= 6.6) and ACLs, like a disk would."""
    try:
        fstype = (run(["findmnt", "-n", "-o", "FSTYPE", "-T", d]).stdout.split() or [""])[0]  # may be stacked
        if fstype != "tmpfs" or os.statvfs(d).f_flag & os.ST_RDONLY:
            return False
        with tempfile.NamedTemporaryFile(dir=d, prefix="ibs-probe-") as f:
            os.setxattr(f.name, "user.ibs", b"1")
            os.setxattr(f.name, "system.posix_acl_access",       # u::rw- g::r-- o::r-- u:1:r-- m::r--
                        bytes.fromhex("02000000" "01000600ffffffff" "0200040001000000" "04000400ffffffff"
                                      "10000400ffffffff" "20000400ffffffff"))
        return True
    except OSError:
        return False


def work_dir() -> Path:
    """This session's directory for the base tree and the hosts' roots (created on first use, removed at the
    end of the session)."""
    global _work
    if _work is None:
        parent = Path("/dev/shm") if _tmpfs_dir_usable(Path("/dev/shm")) else Path(tempfile.gettempdir())
        _work = Path(tempfile.mkdtemp(prefix=f"ibs-sshhost-{os.getpid()}-", dir=parent))
        atexit.register(remove_work_dir)
    return _work


def remove_work_dir() -> None:
    """Remove the base tree and anything left in the session's directory (never through a mount point)."""
    global _work, _base
    if _work is None:
        return
    problems: list[str] = []
    _rmtree_unless_mounted(_work, problems)
    for p in problems:
        print(f"sshhost cleanup: {p}", file=sys.stderr)
    _work = _base = None


def base_tree() -> Path:
    """The bookworm minbase tree every host's root is copied from, built once per session. Tests must not change
    it (copy it first)."""
    global _base
    if _base is not None and _base.is_dir():
        return _base
    from builder.debian.apt import host_mirror

    work = work_dir()
    target, log = work / "base", work / "base.log"
    tmp = work / "base.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    with open(log, "w") as f:
        r = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", RELEASE, str(tmp),
                            host_mirror(RELEASE)], check=False, stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.STDOUT, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"mmdebstrap of the sshhost base tree failed ({r.returncode}):\n{tail}")
    tmp.rename(target)
    _timings["base_tree"] = time.monotonic() - t0
    _base = target
    return target


# ------------------------------------------------------------------ addresses


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in run(["ip", "-4", "-o", "addr", "show"], check=True).stdout.splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    types = {"unicast", "local", "broadcast", "multicast", "blackhole", "unreachable", "prohibit", "throw", "anycast",
             "nat"}
    for line in run(["ip", "-4", "-o", "route", "show", "table", "all"], check=True).stdout.splitlines():
        words = line.split()
        if words and words[0] in types:
            words = words[1:]
        if words and words[0] != "default":
            try:
                nets.append(ipaddress.ip_network(words[0], strict=False))
            except ValueError:
                pass
    return nets


def subnet(index: int) -> ipaddress.IPv4Network:
    if not 1 <= index <= 254:
        raise ValueError(f"host index {index} not in 1..254")
    return ipaddress.ip_network(f"{NET_PREFIX}.{index}.0/24")


def subnet_free(index: int) -> bool:
    net = subnet(index)
    return not any(net.overlaps(n) for n in _used_networks())


def free_index(start: int = 1) -> int:
    """The first host index whose /24 no address or route on this machine touches."""
    used = _used_networks()
    for i in range(start, 255):
        if not any(subnet(i).overlaps(n) for n in used):
            return i
    raise AssertionError(f"no free /24 in {NET_PREFIX}.0.0/16")


# ------------------------------------------------------------------ one host


def tcp_banner(addr: str, port: int, timeout: float = 5) -> str | None:
    """Connect to addr:port and return the first line the server sends; None if refused or nothing came before
    `timeout` ('' if the server closed without a word)."""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            buf = b""
            while b"\n" not in buf and len(buf) < 255:
                d = s.recv(255)
                if not d:
                    break
                buf += d
    except OSError:       # refused, unreachable, timeout
        return None
    return buf.decode("ascii", "replace").splitlines()[0] if buf else ""


def _proc_table() -> dict[int, int]:
    """pid -> ppid of every process this (the root) pid namespace sees."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                table[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return table


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class SshHost:
    name: str            # netns name
    root: Path           # the host's "/" as seen from the test process
    addr: str            # its IPv4 address (netns end of the veth)
    local_addr: str      # our end of the veth
    port: int            # sshd's port (2222)
    alias: str           # `ssh -F ssh_config alias`
    ssh_config: Path
    key: Path            # private key (ed25519, no passphrase)
    known_hosts: Path
    pid: int             # the process we started (setpriv -> ip -> unshare): kill it and the whole host ends
    veth: str = ""       # our end of the veth pair (the host's end is in the netns)
    init_pid: int = 0    # sshd, pid 1 of the host, as the test's pid namespace numbers it
    log: Path | None = None   # sshd's stderr (-e): connections, errors
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rsh(self) -> list[str]:
        """The ssh command line for `rsync -e` or subprocess: ["ssh", "-F", CONFIG] (then the alias)."""
        return ["ssh", "-F", str(self.ssh_config)]

    def ssh(self, command: str, check: bool = True, timeout: float = 60, input: str | None = None,
            ) -> subprocess.CompletedProcess:
        """Run `command` (a shell command line) on the host as root, text mode."""
        r = run([*self.rsh, self.alias, command], timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"ssh {self.alias} {command!r} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def tcp_banner(self, port: int, timeout: float = 5) -> str | None:
        return tcp_banner(self.addr, port, timeout)

    def processes(self) -> list[tuple[int, str]]:
        """(pid, cmdline) of every process in the host: sshd (its pid 1) and all its descendants (orphans in the
        host are reparented to sshd, as its pid namespace's init). Pids are as the test sees them (usable with
        os.kill); inside the host sshd is 1."""
        if not self.init_pid or not pid_alive(self.init_pid):
            return []
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, ppid in table.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.init_pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children.get(pid, [])
        return [(pid, _cmdline(pid)) for pid in sorted(found) if pid_alive(pid)]

    def leftovers(self) -> list[str]:
        """Anything of this host still present after it ended."""
        left = []
        if self.name in netns_names():
            left.append(f"network namespace {self.name}")
        if self.veth and link_exists(self.veth):
            left.append(f"veth {self.veth}")
        for pid in (self.pid, self.init_pid):
            if pid and pid_alive(pid):
                left.append(f"process {pid} ({_cmdline(pid)})")
        left += [f"mount {m}" for m in mounts_under(self.root)]
        if os.path.lexists(self.root):
            left.append(f"root copy {self.root}")
        return left


def ssh_args(host: SshHost) -> list[str]:
    """How a `migrate` command names the host: its alias and `--ssh-config CONFIG`."""
    return [host.alias, "--ssh-config", str(host.ssh_config)]


SSHD_CONFIG_HEAD = """\
# imgbuild test host (tests/support/sshhost.py). sshd takes the first value it reads, so these come first
# (and a test's own sshd_options before them).
{extra}
Port {port}
ListenAddress 0.0.0.0
PermitRootLogin prohibit-password
PasswordAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
"""

SSH_CONFIG_BLOCK = """\
Host {alias}
    HostName {addr}
    Port {port}
    User root
    IdentityFile "{key}"
    IdentitiesOnly yes
    UserKnownHostsFile "{known_hosts}"
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    LogLevel ERROR
    ConnectTimeout 10

"""

START_SCRIPT = r"""set -e
r=$1 name=$2
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
hostname "$name"
exec chroot "$r" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
"""


def make_key(path: Path) -> Path:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "imgbuild-test", "-f", path], check=True)
    return path


def _prepare_root(root: Path, key: Path, alias: str, sshd_options: Sequence[str]) -> str:
    """Fresh host keys, authorized key, sshd_config, /run/sshd, hostname in the copy; returns the ed25519 host
    public key line."""
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    # only an ed25519 key (named in sshd_config): `ssh-keygen -A` would spend up to a second on an RSA key
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{alias}", "-f",
         root / "etc/ssh/ssh_host_ed25519_key"], check=True)
    conf = root / "etc/ssh/sshd_config"
    conf.write_text(SSHD_CONFIG_HEAD.format(port=SSH_PORT, extra="\n".join(sshd_options)) + "\n" + conf.read_text())
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    auth = dot_ssh / "authorized_keys"
    auth.write_text(Path(f"{key}.pub").read_text())
    auth.chmod(0o600)
    (root / "run/sshd").mkdir(mode=0o755, exist_ok=True)
    (root / "etc/hostname").write_text(alias + "\n")
    return " ".join((root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])


@contextmanager
def _net_lock() -> Iterator[None]:
    """Serialize choosing a /24 and putting it on a veth among all test sessions on this machine (two pytest runs
    in parallel would otherwise both find the same /24 free)."""
    lock_dir = Path("/run/lock") if os.access("/run/lock", os.W_OK) else Path(tempfile.gettempdir())
    with open(lock_dir / "imgbuild-sshhost.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def ssh_host(base: Path, index: int | None, config: Path | None = None, *, alias: str = "target",
             key: Path | None = None, known_hosts: Path | None = None, sshd_options: Sequence[str] = (),
             ) -> Iterator[SshHost]:
    """Yield a running SshHost whose root is a copy of `base`, on 10.231.INDEX.0/24 (INDEX None: the first free
    one, chosen under a machine-wide lock; the fixtures do that).

    `config`, `key`, `known_hosts`: files shared with other hosts (the Host block and the host key line are
    appended, the key is authorized); each one not given is made in the host's own directory. `sshd_options`:
    lines put first in sshd_config (first value wins,
                                    so they override the settings above). On exit (also on error) the host ends and
    everything it made is removed; leftovers raise AssertionError unless the body already failed."""
    tag = secrets.token_hex(3)
    name = f"ibs{tag}"
    veth_here, veth_there = f"{name}h", f"{name}n"
    hostdir = work_dir() / name
    root = hostdir / "root"
    host = SshHost(name=name, root=root, addr="", local_addr="", port=SSH_PORT, alias=alias,
                   ssh_config=Path(config) if config else hostdir / "ssh_config",
                   key=Path(key) if key else hostdir / "id_ed25519",
                   known_hosts=Path(known_hosts) if known_hosts else hostdir / "known_hosts",
                   pid=0, veth=veth_here, log=hostdir / "sshd.log")
    proc: subprocess.Popen | None = None
    netns_made = False
    failed = True
    try:
        t0 = time.monotonic()
        with _net_lock():
            if index is None:
                index = free_index()
            elif not subnet_free(index):
                raise AssertionError(f"{subnet(index)} is already in use on this machine (ip -4 addr / ip route): "
                                     f"pick another index")
            net = subnet(index)
            host.local_addr, host.addr = str(net.network_address + 1), str(net.network_address + 2)
            run(["ip", "netns", "add", name], check=True)
            netns_made = True
            run(["ip", "link", "add", veth_here, "type", "veth", "peer", "name", veth_there, "netns", name],
                check=True)
            run(["ip", "addr", "add", f"{host.local_addr}/24", "dev", veth_here], check=True)
        run(["ip", "link", "set", veth_here, "up"], check=True)
        run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        run(["ip", "-n", name, "addr", "add", f"{host.addr}/24", "dev", veth_there], check=True)
        run(["ip", "-n", name, "link", "set", veth_there, "up"], check=True)

        t1 = time.monotonic()
        hostdir.mkdir()
        run(["cp", "-a", base, root], check=True, timeout=300)
        t2 = time.monotonic()
        if not key:
            make_key(host.key)
        hostkey = _prepare_root(root, host.key, alias, sshd_options)
        with open(host.known_hosts, "a") as f:
            f.write(f"[{host.addr}]:{SSH_PORT} {hostkey}\n")
        with open(host.ssh_config, "a") as f:
            f.write(SSH_CONFIG_BLOCK.format(alias=alias, addr=host.addr, port=SSH_PORT, key=host.key,
                                            known_hosts=host.known_hosts))

        t3 = time.monotonic()
        # stdout/stderr to a file, not a pipe: sshd's children inherit it and must not hold our pipe open
        with open(host.log, "w") as logf:
            proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "ip", "netns", "exec", name,
                 "unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--uts",
                 "sh", "-c", START_SCRIPT, "sh", str(root), alias],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        host.pid = proc.pid
        banner = None
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end and proc.poll() is None:
            banner = host.tcp_banner(SSH_PORT, timeout=1)
            if banner and banner.startswith("SSH-"):
                break
            time.sleep(0.05)
        if not (banner and banner.startswith("SSH-")):
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "still running"
            raise AssertionError(f"sshd of test host {name} ({host.addr}:{SSH_PORT}) did not answer within "
                                 f"{START_TIMEOUT:.0f} s ({state}, last banner {banner!r}); its output:\n"
                                 f"{host.log.read_text(errors='replace')}")
        kids = [pid for pid, ppid in _proc_table().items() if ppid == proc.pid]
        host.init_pid = kids[0] if len(kids) == 1 else 0
        host.timings = {"network": t1 - t0, "copy": t2 - t1, "prepare": t3 - t2, "start": time.monotonic() - t3}
        yield host
        failed = False
    finally:
        problems: list[str] = []
        if proc is not None:
            if proc.poll() is None:
                if not host.init_pid:       # startup failed: still wait below for the host's init to be gone
                    host.init_pid = next((p for p, pp in _proc_table().items() if pp == proc.pid), 0)
                proc.kill()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append(f"process {proc.pid} did not end after SIGKILL")
        if host.init_pid and not _wait(lambda: not pid_alive(host.init_pid), 15):
            problems.append(f"sshd {host.init_pid} of {name} still alive")
        if netns_made:
            r = run(["ip", "netns", "del", name])
            if r.returncode != 0:
                problems.append(f"ip netns del {name}: {r.stderr.strip()}")
        # the pair goes with the namespace, but only once nothing holds the namespace any more
        if link_exists(veth_here) and not _wait(lambda: not link_exists(veth_here), 2):
            run(["ip", "link", "del", veth_here])
        _rmtree_unless_mounted(hostdir, problems)
        problems += [f"left behind: {x}" for x in host.leftovers()]
        for p in problems:
            print(f"sshhost cleanup: {p}", file=sys.stderr)
        if problems and not failed:  # on failure, the original error is the one to see
            raise AssertionError("sshhost cleanup: " + "; ".join(problems))


# ------------------------------------------------------------------ fixtures


def require_base(request) -> Path:
    """The base tree for a test (skips without root or tools; removes the tree at the end of the session)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, chroot, mounts)")
    missing = missing_tools()
    if missing:
        pytest.skip(f"ssh test hosts need {', '.join(missing)} (scripts/setup.sh installs them)")
    if not getattr(request.config, "_ibs_sshhost_cleanup", False):
        request.config.add_cleanup(remove_work_dir)        # at the end of the session
        request.config._ibs_sshhost_cleanup = True
    return base_tree()


@pytest.fixture
def sshhost(request) -> Iterator[SshHost]:
    """One running host, alias "target", with its own ssh_config, key and known_hosts."""
    with ssh_host(require_base(request), None, alias="target") as host:
        yield host


@contextmanager
def shared_hosts(request, tmp_path: Path, aliases: Sequence[str]) -> Iterator[list[SshHost]]:
    """Running hosts, one per alias, on separate /24s, sharing one ssh_config (a Host block each), one key and one
    known_hosts file (in tmp_path/ssh)."""
    base = require_base(request)
    d = tmp_path / "ssh"
    d.mkdir()
    config, known = d / "ssh_config", d / "known_hosts"
    key = make_key(d / "id_ed25519")
    with ExitStack() as stack:
        yield [stack.enter_context(ssh_host(base, None, config, alias=a, key=key, known_hosts=known))
               for a in aliases]


@pytest.fixture
def two_sshhosts(request, tmp_path) -> Iterator[tuple[SshHost, SshHost]]:
    """Two running hosts (src, dst) sharing one ssh_config, key and known_hosts (shared_hosts)."""
    with shared_hosts(request, tmp_path, ("src", "dst")) as (src, dst):
        yield src, dst


# ------------------------------------------------------------------ comparing trees


class Entry(NamedTuple):
    mode: int                     # st_mode: type and permission bits (setuid etc. included)
    uid: int
    gid: int
    size: int | tuple | None      # regular file: size; device: (major, minor); else None (directory sizes differ)
    content: str | None           # regular file: sha256; symlink: its target; else None
    hardlink: str | None          # regular files linked together in the tree: the smallest of their paths
    xattrs: tuple                 # ((name, value bytes), ...) sorted; includes system.posix_acl_access
    mtime_ns: int | None          # only with mtime=True


def _xattrs(path: str) -> tuple:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for n in sorted(names):
        try:
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            pass
    return tuple(out)




def tree_state(path: Path, mtime: bool = False) -> dict[str, Entry]:
    """Every entry under `path` (symlinks not followed; "." is the top itself) -> its Entry: what rsync -aHAX
    must carry over, so two trees compare equal when one is a faithful copy of the other, and a tree compares
    equal to itself before and after something that must not change it. atime and ctime always differ and are left
    out; mtime only with mtime=True. Hardlinks count only among paths inside the tree."""
    top = os.fspath(path)
    raw: dict[str, tuple[os.stat_result, str | None]] = {}

    def walk(rel: str) -> None:
        full = os.path.join(top, rel) if rel != "." else top
        st = os.lstat(full)
        raw[rel] = (st, full)
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(full)):
                walk(name if rel == "." else f"{rel}/{name}")

    walk(".")
    groups: dict[tuple[int, int], list[str]] = {}
    for rel, (st, _) in raw.items():
        if stat.S_ISREG(st.st_mode):
            groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
    state = {}
    for rel, (st, full) in raw.items():
        m = st.st_mode
        size: int | tuple | None = None
        content = link = None
        if stat.S_ISREG(m):
            size, content = st.st_size, sha256(full)
            group = groups[(st.st_dev, st.st_ino)]
            link = min(group) if len(group) > 1 else None
        elif stat.S_ISLNK(m):
            content = os.readlink(full)
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            size = (os.major(st.st_rdev), os.minor(st.st_rdev))
        state[rel] = Entry(m, st.st_uid, st.st_gid, size, content, link, _xattrs(full),
                           st.st_mtime_ns if mtime else None)
    return state


def tree_diff(a: dict[str, Entry], b: dict[str, Entry], limit: int = 20) -> list[str]:
    """Readable differences between two tree_state results (for assertion messages)."""
    out = []
    for rel in sorted(a.keys() | b.keys()):
        if rel not in b:
            out.append(f"only in first: {rel}")
        elif rel not in a:
            out.append(f"only in second: {rel}")
        elif a[rel] != b[rel]:
            fields = [f"{f}: {x!r} != {y!r}" for f, x, y in zip(Entry._fields, a[rel], b[rel]) if x != y]
            out.append(f"{rel}: " + ", ".join(fields))
        if len(out) >= limit:
            out.append("...")
            break
    return out

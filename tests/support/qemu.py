"""Boot a disk image under real qemu (TCG) with a real Debian kernel, for the image target's acceptance test.

Debian's kernels build virtio_blk and ext4 as modules, so a boot needs an initramfs. This module:

- finds the kernel the host's apt knows (`apt-cache depends linux-image-amd64` -> linux-image-VER-amd64),
  downloads it with `apt-get download` from the host's own configured mirror, unpacks it with `dpkg-deb -x` and
  runs `depmod -b DIR VER` (the module order comes from the kernel's own modules.dep via `modprobe --show-depends`);
- builds a small busybox-static initramfs (a newc cpio written here, byte for byte) whose /init insmods the virtio
  and ext4 modules, mounts /dev/vda and switch_roots to /sbin/init;
- runs qemu with `-accel tcg` (/dev/kvm exists on these machines but hangs, see REAL-TESTS.md), the serial console
  to a file, under a hard `timeout`, and always kills qemu by its pid at the end.

Kernel and initramfs are made once per test session under the session's tmp dir (fixture `qemu_kernel`).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# What the initramfs loads (each with its dependencies, in modules.dep order): the disk, the filesystem, the
# crc32c implementation ext4's metadata checksums need (the SSE4.2 one cannot load under TCG's default CPU), and
# the NIC (a container tree masks udev, so nothing in the guest would load it later).
BOOT_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic", "virtio_net")
BUSYBOX = Path("/bin/busybox")          # from busybox-static: no shared libraries to copy
QEMU = "qemu-system-x86_64"
TOOLS = ("apt-cache", "apt-get", "dpkg-deb", "depmod", "modprobe", QEMU, "timeout")

INIT = r"""#!/bin/busybox sh
# imgbuild test initramfs: load the disk and filesystem modules, mount /dev/vda, hand over to its /sbin/init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "IMGBUILD-INITRAMFS-FAILED: $*"; sleep 1; poweroff -f; }
while read -r m; do
    insmod "/lib/modules/$m" 2>/dev/null || echo "imgbuild-initramfs: $m not loaded"
done < /modules.order
n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1)); [ $n -gt 100 ] && fail "no /dev/vda"
    sleep 0.1
done
opt=ro
for w in $(cat /proc/cmdline); do [ "$w" = rw ] && opt=rw; done
mount -t ext4 -o "$opt" /dev/vda /newroot || fail "mount /dev/vda"
[ -x /newroot/sbin/init ] || [ -L /newroot/sbin/init ] || fail "no /sbin/init in the image"
echo "imgbuild-initramfs: /dev/vda mounted $opt, switching to /sbin/init"
mount -o move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
"""


def missing_tools() -> list[str]:
    out = [t for t in TOOLS if not shutil.which(t)]
    if not BUSYBOX.exists():
        out.append(f"{BUSYBOX} (busybox-static)")
    return out


def run(cmd: list, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       stdin=subprocess.DEVNULL, check=False)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


# ------------------------------------------------------------------ the kernel


@dataclass(frozen=True)
class Kernel:
    version: str        # e.g. 6.1.0-50-amd64
    vmlinuz: Path
    root: Path          # the unpacked package: ROOT/lib/modules/VERSION, depmod'ed


def kernel_package() -> str:
    """The kernel package the host's apt resolves linux-image-amd64 to (linux-image-VER-amd64)."""
    out = run(["apt-cache", "depends", "linux-image-amd64"]).stdout
    names = re.findall(r"^\s*Depends:\s*(linux-image-\S+-amd64)\s*$", out, re.MULTILINE)
    if not names:
        raise AssertionError(f"apt-cache depends linux-image-amd64 names no kernel:\n{out}")
    return names[0]


def fetch_kernel(cache: Path) -> Kernel:
    """Download and unpack the host's current Debian kernel into cache/ (once)."""
    pkg = kernel_package()
    version = pkg.removeprefix("linux-image-")
    root = cache / pkg
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    moddir = root / "lib" / "modules" / version
    if vmlinuz.exists() and (moddir / "modules.dep").exists():
        return Kernel(version, vmlinuz, root)
    dl = cache / "debs"
    dl.mkdir(parents=True, exist_ok=True)
    # As root apt would hand the download to the _apt user, who cannot write a pytest tmp dir: download as root.
    run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg], cwd=dl, timeout=600)
    debs = sorted(dl.glob(f"{pkg}_*.deb"))
    assert debs, f"apt-get download {pkg} left no .deb in {dl}"
    tmp = cache / f".{pkg}.unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    run(["dpkg-deb", "-x", debs[-1], tmp], timeout=300)
    run(["depmod", "-b", tmp, version], timeout=300)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    debs[-1].unlink()           # 70 MB we no longer need
    assert vmlinuz.exists(), f"{pkg} has no {vmlinuz.relative_to(root)}"
    return Kernel(version, vmlinuz, root)


def module_files(k: Kernel, names: tuple[str, ...] = BOOT_MODULES) -> list[Path]:
    """The .ko files for `names` with their dependencies, dependencies first, each once."""
    out: list[Path] = []
    for name in names:
        r = run(["modprobe", "-d", k.root, "-S", k.version, "--show-depends", name])
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod":
                p = Path(parts[1])
                if p not in out:
                    out.append(p)
            # `builtin NAME` lines: nothing to load
    assert out, f"no modules found for {names} in {k.root}"
    return out


# ------------------------------------------------------------------ the initramfs


class Cpio:
    """A newc ("070701") cpio archive, as the kernel unpacks an initramfs."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    @staticmethod
    def _pad(n: int) -> bytes:
        return b"\0" * (-n % 4)

    def add(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(body), 0, 0, rdev[0], rdev[1],
                  len(name_b), 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.data += hdr + name_b + self._pad(len(hdr) + len(name_b))
        self.data += body + self._pad(len(body))

    def dir(self, name: str) -> None:
        self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self.add(name, stat.S_IFREG | mode, body)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self.add(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def build_initramfs(k: Kernel, dest: Path) -> Path:
    """A busybox-static initramfs that boots /dev/vda (ext4) with kernel k's modules."""
    mods = module_files(k)
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)      # the kernel opens it for /init's stdio before devtmpfs is mounted
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    order = []
    for m in mods:
        if m.suffix != ".ko":
            raise AssertionError(f"{m}: compressed modules are not handled (busybox insmod wants plain .ko)")
        c.file(f"lib/modules/{m.name}", m.read_bytes())
        order.append(m.name)
    c.file("modules.order", ("\n".join(order) + "\n").encode())
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(c.finish())
    tmp.rename(dest)
    return dest


@dataclass(frozen=True)
class BootKit:
    kernel: Kernel
    initrd: Path
    modules: tuple[str, ...]


def make_bootkit(cache: Path) -> BootKit:
    cache.mkdir(parents=True, exist_ok=True)
    k = fetch_kernel(cache)
    initrd = cache / f"initrd-{k.version}.cpio"
    if not initrd.exists():
        build_initramfs(k, initrd)
    return BootKit(k, initrd, tuple(m.name for m in module_files(k)))


@pytest.fixture(scope="session")
def qemu_kernel(tmp_path_factory) -> Iterator[BootKit]:
    """The host's current Debian kernel and a busybox initramfs for it, made once per session."""
    if os.geteuid() != 0:
        pytest.skip("needs root (depmod into the unpacked kernel, apt-get download)")
    missing = missing_tools()
    if missing:
        pytest.skip(f"qemu boot needs {', '.join(missing)} (scripts/setup.sh installs them)")
    cache = tmp_path_factory.getbasetemp() / "qemu-cache"
    try:
        yield make_bootkit(cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)      # 400 MB of unpacked kernel: not kept past the session


# ------------------------------------------------------------------ running qemu


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Qemu:
    """One qemu process (under `timeout`), its serial console in a file, and its pid from -pidfile."""

    def __init__(self, proc: subprocess.Popen, pidfile: Path, serial: Path, log: Path, started: float):
        self.proc, self.pidfile, self.serial, self.log, self.started = proc, pidfile, serial, log, started

    def qemu_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        # only ever the qemu that our `timeout` started
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return pid if ppid == self.proc.pid else None

    def output(self) -> str:
        try:
            return self.serial.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        """Poll the serial console until `pattern` matches, qemu exits, or timeout seconds pass."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.output())
            if m or self.proc.poll() is not None or time.monotonic() > deadline:
                return m or rx.search(self.output())
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill qemu (by its pid) and the `timeout` around it; reap both. Safe to call twice.

        Only while our `timeout` child is unreaped are its pid and its children's pids surely ours; once it has
        been reaped, qemu (which it waits for) is gone too.
        """
        pids: set[int] = set()
        for _ in range(50):
            if self.proc.poll() is not None:
                break
            pids |= set(children(self.proc.pid))
            pid = self.qemu_pid()
            if pid is not None:
                pids.add(pid)
            if pids:
                break
            time.sleep(0.1)       # `timeout` has not forked qemu yet
        for pid in pids:
            if self.proc.poll() is None and _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()            # the `timeout` process itself (our child)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if _pid_alive(p)]
        assert not left, f"qemu still running: {left}"


def children(ppid: int) -> list[int]:
    """Pids whose parent is ppid (read from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(") ", 1)[1].split()[1]) == ppid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


@contextmanager
def qemu(kit: BootKit, image: Path, workdir: Path, append: str = "", memory: int = 1024,
         hard_timeout: int = 180, nic: str = "none") -> Iterator[Qemu]:
    """Boot `image` (raw ext4, as /dev/vda, snapshot=on: the file is never written) under TCG; yields a Qemu.

    nic: qemu's -nic value; "none", or e.g. "user,model=virtio-net-pci,restrict=on" (slirp with no way out: the
    guest gets an eth0 and nothing leaves the VM).

    qemu runs under `timeout -s KILL hard_timeout`, so even a killed test run cannot leave it behind for long; at
    the end it is killed by its pid whatever happened.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    serial, pidfile, log = workdir / "serial.log", workdir / "qemu.pid", workdir / "qemu.out"
    for f in (serial, pidfile):
        f.unlink(missing_ok=True)
    cmd = ["timeout", "-s", "KILL", str(hard_timeout),
           QEMU, "-accel", "tcg", "-m", str(memory), "-smp", "1", "-nographic", "-no-reboot",
           "-monitor", "none", "-serial", f"file:{serial}", "-nic", nic, "-pidfile", str(pidfile),
           "-kernel", str(kit.kernel.vmlinuz), "-initrd", str(kit.initrd),
           "-append", f"console=ttyS0 panic=-1 {append}".strip(),
           "-drive", f"file={image},format=raw,if=virtio,snapshot=on"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    q = Qemu(proc, pidfile, serial, log, time.monotonic())
    try:
        yield q
    finally:
        q.kill()
        pidfile.unlink(missing_ok=True)


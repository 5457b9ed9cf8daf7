"""`imgbuild boot --in qemu`: a built disk (the disk target's qcow2 or raw) booted by real qemu in the sandbox's
network namespace: a tap on the sandbox's bridge is the guest's virtio NIC (with the recipe's MAC), the disk is
opened with snapshot=on (the output is never written), the serial console is a socket in the work directory
(`imgbuild boot --console DIR` attaches to a kept one) logged to a file. KVM when this host has a working one (the
kvm_intel or kvm_amd module loaded and /dev/kvm), else TCG; the verdict says which.

A VM cannot be asked from inside without changing its image, so "up" is read from its serial console (a login
prompt, or systemd reaching multi-user.target) and then its sshd is asked on the recipe's address."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from builder.boot import sandbox
from builder.boot.ready import InitState
from builder.boot.sandbox import BRIDGE, Sandbox, State
from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.untrusted import CSI, shown

TAP = "ibtap0"
CONSOLE = "console.sock"
UP = re.compile(r"(?m)^\S+ login: |Reached target .*Multi-User System")
DOWN = re.compile(r"Kernel panic|You are in emergency mode|Give root password for maintenance|"
                  r"Failed to mount .*/sysroot|ALERT! .* does not exist")
ANSI = CSI      # colour sequences in the console text
FAILED = re.compile(r"\[FAILED\] Failed to start (\S+?)(?: - |\.?\r?$)", re.M)
# a device in fstab that never came (systemd waits 90 s, then boots on without what needed it)
TIMED_OUT = re.compile(r"\[ TIME \] Timed out waiting for device (\S+?)(?: - |\.?\r?$)", re.M)
CUT_CSI = re.compile(r"\x1b\[[0-9;]*(?=…)")     # a colour code systemd cut short with an ellipsis
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
EXTRA_DISK = "extra-disk-"   # the manifest kind prefix of further disks (builder/migrate/xen_kvm.py)
SEED_ISO = "seed-iso"        # the manifest kind of cloud_init's NoCloud seed (builder/build/steps/cloudinit.py)


def needs(manifest: dict) -> bool:
    return bool({a["kind"] for a in manifest["artifacts"]} & {"disk-qcow2", "disk-raw"})


def _opt(path: Path) -> str:
    """A path inside a qemu option value: a comma is written twice."""
    return str(path).replace(",", ",,")


def accel() -> str:
    usable = os.path.exists("/dev/kvm") and any(os.path.isdir(f"/sys/module/{m}") for m in ("kvm_intel", "kvm_amd"))
    return "kvm" if usable else "tcg"


def _file(output: Path, path: str, what: str) -> Path:
    p = Path(os.path.abspath(Path(output) / path))      # qemu runs in the work directory
    if p.is_symlink() or not p.is_file():
        raise InputError(f"{p}: the output's {what} is missing or not a regular file", "build again")
    return p


def drives(output: Path, manifest: dict) -> list[str]:
    """qemu's -drive options: the disk (never written: snapshot=on) and, when the build made one, cloud_init's
    seed ISO as a read-only CD-ROM (as the libvirt domain attaches it)."""
    files = {a["kind"]: a["path"] for a in manifest["artifacts"]}
    kind = "disk-qcow2" if "disk-qcow2" in files else "disk-raw"
    disk = _file(output, files[kind], "disk")
    out = ["-drive", f"file={_opt(disk)},format={kind.split('-')[1]},if=virtio,snapshot=on"]
    for a in manifest["artifacts"]:     # a converted Xen guest's further disks, after the root, in their order
        if a["kind"].startswith(EXTRA_DISK):
            fmt = a.get("format")
            if fmt not in ("raw", "qcow2"):
                raise InputError(f"{output}/manifest.json: {a['kind']} has format {fmt!r}", "convert again")
            more = _file(output, a["path"], a["kind"])
            out += ["-drive", f"file={_opt(more)},format={fmt},if=virtio,snapshot=on"]
    if SEED_ISO in files:
        out += ["-drive", f"file={_opt(_file(output, files[SEED_ISO], 'seed ISO'))},format=raw,media=cdrom,"
                          "readonly=on"]
    return out


def start(output: Path, manifest: dict, sb: Sandbox) -> float:
    disks = drives(output, manifest)
    macs = [nic["mac"] for _n, nic in sorted((manifest.get("network") or {}).items()) if nic.get("mac")]
    runner.run(["ip", "-n", sb.netns, "tuntap", "add", "dev", TAP, "mode", "tap"])
    runner.run(["ip", "-n", sb.netns, "link", "set", TAP, "master", BRIDGE, "up"])
    fw: list[str] = []
    if sb.state.extra.get("firmware") == "uefi":
        vars_copy = sb.workdir / "OVMF_VARS.fd"
        vars_copy.write_bytes(OVMF_VARS.read_bytes())
        fw = ["-drive", f"if=pflash,format=raw,readonly=on,file={_opt(OVMF_CODE)}",
              "-drive", "if=pflash,format=raw,file=OVMF_VARS.fd"]
    a = accel()
    sb.state.extra["accel"] = a
    nic = f"virtio-net-pci,netdev=n0{',mac=' + macs[0] if macs else ''}"
    launched = time.monotonic()
    proc = runner.start(sb.ns("qemu-system-x86_64", "-name", sb.state.name, "-accel", a, "-m", "1024", "-smp", "1",
                              "-nographic", "-no-reboot", "-monitor", "none",
                              # the serial console: a socket `imgbuild boot --console` attaches to, logged to a
                              # file (what wait_up reads); names relative to the work directory, qemu's cwd
                              "-chardev", f"socket,id=ser0,path={CONSOLE},server=on,wait=off,logfile=console.log",
                              "-serial", "chardev:ser0", *fw,
                              "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no", "-device", nic,
                              *disks),
                        output=sb.workdir / "qemu.out", cwd=sb.workdir)
    sb.state.pid = proc.pid
    return launched


def wait_up(sb: Sandbox, st: State, timeout: float) -> InitState:
    console = Path(st.workdir) / "console.log"
    end = time.monotonic() + timeout
    how = f"{st.extra.get('firmware')}, {st.extra.get('accel')}"
    while time.monotonic() < end and running(sb, st):
        text = console.read_bytes()[-262144:].decode("utf-8", "replace") if console.exists() else ""
        state = console_state(text, how)
        if state.up is not None:
            return state
        time.sleep(0.5)
    return InitState(None, f"console: no login prompt yet ({how})")


def console_state(text: str, how: str) -> InitState:
    """What the serial console says: down (a panic, emergency mode ...), up (systemd reached multi-user.target or
    a login prompt; degraded when systemd printed a unit that failed to start or a device it waited for in vain,
    each named), or still starting."""
    text = CUT_CSI.sub("", ANSI.sub("", text))
    down = DOWN.search(text)
    if down:
        return InitState(False, f"console: {down.group(0)} ({how})")
    if not UP.search(text):
        return InitState(None, f"console: no login prompt yet ({how})")
    seen = "login prompt" if re.search(r"(?m)^\S+ login: ", text) else "multi-user.target"
    failed = [shown(u, 80) for u in dict.fromkeys(FAILED.findall(text))][:10]     # the guest's words: escaped
    failed += [f"no device {shown(d, 80)}" for d in dict.fromkeys(TIMED_OUT.findall(text))][:5]
    if failed:
        return InitState(True, f"systemd degraded (failed: {', '.join(failed)}; console: {seen}; {how})",
                         has_sshd=True)
    return InitState(True, f"systemd running (console: {seen}, no failed unit; {how})", has_sshd=True)


def running(sb: Sandbox, st: State) -> bool:
    return bool(st.pid) and _ours(st)


def log_file(st: State) -> Path:
    return Path(st.workdir) / "qemu.out"


def reach(st: State) -> list[str]:
    return [f"imgbuild boot --console {st.workdir}    (its serial console; Ctrl-] leaves it)"]


def _ours(st: State) -> bool:
    return sandbox.ours(st.pid, "qemu-system-x86_64", st.name)


def stop(sb: Sandbox, st: State) -> list[str]:
    # snapshot=on: nothing of the disk to flush
    return [] if sandbox.end(st.pid, lambda: _ours(st), signal.SIGKILL, 10) else [f"qemu {st.pid} did not end"]

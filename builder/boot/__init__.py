"""`imgbuild boot OUTPUT`: prove a built output starts. It is started in a throwaway runtime (RUNTIMES) inside a
sandbox of its own (a network namespace with one bridge carrying the guest's gateway address: sandbox.py), asked
whether its init system is up (ready.py), its sshd asked for its host keys on the guest's address, and a one-line
verdict with the boot time returned; on failure the tail of its console. Everything is removed afterwards, also on
an error or Ctrl-C, unless `keep`: then the sandbox's boot.json says what to stop (`stop_kept`).

The guest's address, gateway and MAC come from manifest.json's `network` (what the recipe gave); an output
without one boots on a bridge without an address, and sshd is not asked.

A runtime module has needs(manifest), start(output, manifest, sandbox) -> start time, running, log_file, reach
(how a kept guest is reached), stop; and how "up" is learnt: a container is asked from inside (run_in: a
command runner for ready.wait), a VM, which cannot be entered without changing its disk, is read from outside
(wait_up: its serial console)."""
from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from builder.boot import lxc, nspawn, qemu, ready
from builder.boot.sandbox import Sandbox, read_state, sandbox_of
from builder.build.manifest import read_manifest
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError, Interrupted, ToolMissing
from builder.core.untrusted import console_line

# in the order a runtime is chosen when --in is not given
RUNTIMES: dict[str, ModuleType] = {"lxc": lxc, "qemu": qemu, "nspawn": nspawn}
CONSOLE_TAIL = 40


@dataclass
class Verdict:
    name: str
    runtime: str
    up: bool
    seconds: float
    init: str
    ssh: str
    console: list[str] = field(default_factory=list)
    kept: Path | None = None
    reach: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.up:
            return f"{self.name}: up in {self.seconds:.1f} s under {self.runtime}: {self.init}; {self.ssh}"
        return f"{self.name}: did not come up under {self.runtime} ({self.seconds:.0f} s): {self.init}; {self.ssh}"


def choose(manifest: dict, output: Path, want: str | None) -> str:
    """The runtime: the one asked for, else the first the output has what it needs for."""
    if want is not None:
        if want not in RUNTIMES:
            raise InputError(f"--in {want}: not a runtime imgbuild boots with", f"one of: {', '.join(RUNTIMES)}")
        if not RUNTIMES[want].needs(manifest):
            raise InputError(f"{output}: the build has nothing {want} can start",
                             "lxc needs the tarball and lxc targets, qemu the disk target, nspawn a tarball or the "
                             "nspawn target")
        return want
    for name, mod in RUNTIMES.items():
        if mod.needs(manifest):
            return name
    raise InputError(f"{output}: the build has nothing to boot (no tarball, LXC config, disk or nspawn tree)",
                     "add targets: {tarball: {}, lxc: {}} to the recipe and build again")


def guest_network(manifest: dict) -> tuple[str | None, ipaddress.IPv4Interface | None]:
    """(the guest's first static address, the bridge's address: the recipe's gateway, else another address of
    that network); (None, None) when the recipe gave no static IPv4 address."""
    for _ifname, nic in sorted((manifest.get("network") or {}).items()):
        try:
            addr = ipaddress.ip_interface(nic.get("address", ""))
        except ValueError:
            continue
        if addr.version != 4:
            continue
        gw = nic.get("gateway")
        try:
            gw_ip = ipaddress.ip_address(gw) if gw else None
        except ValueError:
            gw_ip = None
        if gw_ip is None or gw_ip not in addr.network or gw_ip == addr.ip:
            gw_ip = next(h for h in addr.network.hosts() if h != addr.ip)
        return str(addr.ip), ipaddress.IPv4Interface(f"{gw_ip}/{addr.network.prefixlen}")
    return None, None


def boot(output: Path, want: str | None = None, timeout: float = 120.0, keep: bool = False,
         workdir_parent: str | None = None, firmware: str = "bios") -> Verdict:
    manifest = read_manifest(output)
    name = choose(manifest, output, want)
    mod = RUNTIMES[name]
    address, gateway = guest_network(manifest)
    sb = Sandbox(name, gateway, workdir_parent)
    sb.state.address = address
    sb.state.extra["firmware"] = firmware
    started = kept = False
    try:
        sb.create()
        t0 = time.monotonic()
        started = True
        try:
            t0 = mod.start(output, manifest, sb)     # when the runtime was started (after unpacking)
            if hasattr(mod, "wait_up"):        # a VM: read from its console
                state = mod.wait_up(sb, sb.state, timeout)
            else:
                state = ready.wait(mod.run_in(sb, sb.state), timeout, lambda: mod.running(sb, sb.state))
            if state.up is None and not mod.running(sb, sb.state):
                state.text = f"the guest stopped ({state.text})"
        except (InputError, ToolMissing, Interrupted):
            raise
        except BuilderError as e:         # the runtime refused to start it: a verdict, with what it said
            state = ready.InitState(False, f"{name} could not start it: {e.message}")
        seconds = time.monotonic() - t0
        if not state.up:
            ssh = "sshd not asked"
        elif not address:
            ssh = "sshd not asked (the recipe gives no static address)"
        elif not state.has_sshd:
            ssh = "no sshd in the guest"
        elif sb.ssh_answers(address, max(10.0, timeout - seconds)):
            ssh = f"sshd answers on {address}:22"
        else:
            ssh = f"no sshd answered on {address}:22"
        up = bool(state.up) and not ssh.startswith("no sshd answered")
        v = Verdict(manifest["name"], name, up, seconds, state.text, ssh)
        if not up:
            v.console = _tail(sb.workdir / "console.log") or _tail(mod.log_file(sb.state))
        if keep:
            v.kept, v.reach = sb.keep(), mod.reach(sb.state)
            if address:
                v.reach.append(f"ip netns exec {sb.netns} ssh root@{address}")
            kept = True
        return v
    finally:
        if not kept:
            with runner.cleanup():
                problems = (mod.stop(sb, sb.state) if started else []) + sb.remove()
            if problems:
                raise BuilderError("boot: could not remove everything it made: " + "; ".join(problems),
                                   "remove those by hand")


def stop_kept(workdir: Path) -> list[str]:
    """Stop what `boot(..., keep=True)` left in WORKDIR and remove it; returns what could not be removed."""
    st = read_state(workdir)
    if st.runtime not in RUNTIMES:
        raise InputError(f"{workdir}: runtime {st.runtime!r} is not one imgbuild boots with", "remove it by hand")
    sb = sandbox_of(st)
    with runner.cleanup():
        return RUNTIMES[st.runtime].stop(sb, st) + sb.remove()


def _tail(f: Path) -> list[str]:
    try:
        data = f.read_bytes()[-65536:]
    except OSError:
        return []
    # the guest wrote it: colours dropped, every other control character escaped before it reaches a terminal
    return [console_line(ln.rstrip("\r")) for ln in data.decode("utf-8", "replace").splitlines()[-CONSOLE_TAIL:]]

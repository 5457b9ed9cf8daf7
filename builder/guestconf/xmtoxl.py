"""An xm config's settings as xl's: a handler for each key that xm and xl spell differently (HANDLERS), every
other key carried over; then the checks on the whole result (a name, a kernel or bootloader, maxmem >= memory,
keys and text xl can read). Disks go through --disk-map, vif bridges through --bridge-map.

A setting whose value only Python could give (XmConfig.unresolved: read_xm reported it as an error) goes to its
handler too, with an Unknown value: the handlers in TAKES_UNKNOWN drop a setting xl takes in no form whatever its
value (xend's device_model, the kernel ip= keys, hvmloader as an HVM guest's kernel), or write one whose xl
value does not depend on the unknown part (pygrub by any path: "pygrub"), which withdraws the error; any other
setting keeps it, and the file is not converted."""
from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from builder.guestconf import xl
from builder.guestconf.xm import (
    XEND_ONLY,
    XM_KERNEL_IP,
    Finding,
    Level,
    Setting,
    Unknown,
    Unresolved,
    Value,
    XmConfig,
    is_setting,
    show_value,
)
from builder.guestconf.xmdevices import DiskError, convert_disk, parse_vif

# keys whose value xl reads as a number
NUMERIC = {"memory", "maxmem", "vcpus", "maxvcpus", "cpu_weight", "cap", "shadow_memory", "videoram",
           "max_grant_frames", "max_maptrack_frames", "rtc_timeoffset", "localtime", "acpi", "apic", "pae",
           "hpet", "nx", "viridian", "stdvga", "vnc", "vncunused", "sdl", "opengl", "nographic", "usb",
           "pci_permissive", "pci_msitranslate", "pci_seize", "pci_power_mgmt", "e820_host", "nomigrate",
           "driver_domain", "vcpu_avail"}
ACTIONS = {"destroy", "restart", "rename-restart", "preserve", "coredump-destroy", "coredump-restart",
           "soft-reset"}
ACTION_KEYS = ("on_poweroff", "on_reboot", "on_crash", "on_watchdog", "on_soft_reset")
# xm's restart = "...": the actions it stands for, on_poweroff, on_reboot, on_crash
RESTARTS = {"onreboot": ("destroy", "restart", "destroy"), "always": ("restart",) * 3, "never": ("destroy",) * 3}
VIF_KEYS = {"mac", "bridge", "gatewaydev", "netdev", "type", "model", "vifname", "script", "ip", "backend", "rate",
            "devid", "mtu", "trusted", "untrusted"}

_DROPPED = object()


@dataclass
class _Move:
    """One conversion under way: the maps, the settings written so far and what was found."""

    cfg: XmConfig
    disk_map: list[tuple[str, str]]
    bridges: dict[str, str]
    findings: list[Finding]
    out: list[Setting] = field(default_factory=list)

    @property
    def hvm(self) -> bool:
        return self.cfg.get("builder") == "hvm" or self.cfg.get("type") == "hvm"

    @property
    def has_bootloader(self) -> bool:
        return "bootloader" in self.cfg.settings or "bootloader" in self.cfg.unresolved

    def add(self, key: str, v: Value, line: int) -> None:
        self.out.append(Setting(key, v, line))

    def note(self, s: Setting, msg: str, level: Level = "note") -> None:
        self.findings.append(Finding(s.line, level, msg))

    def unresolved(self, s: Setting) -> None:
        """`s` has an Unknown value and xl would keep it: read_xm's error for it stands."""
        for f in self.cfg.unresolved[s.key].findings:
            if f not in self.findings:
                self.findings.append(f)


Handler = Callable[[_Move, Setting, Any], None]


def convert(cfg: XmConfig, disk_map: Iterable[tuple[str, str]] = (), bridge_map: Iterable[tuple[str, str]] = (),
            ) -> tuple[list[Setting], list[Finding]]:
    """The xl settings for an xm config, and what the move found."""
    pending = {id(f) for u in cfg.unresolved.values() for f in u.findings}
    move = _Move(cfg, list(disk_map), dict(bridge_map), [f for f in cfg.findings if id(f) not in pending])
    for s in cfg.settings.values():
        v = _plain(move, s)
        if v is not _DROPPED:
            HANDLERS.get(s.key, _carry)(move, s, v)
    for u in cfg.unresolved.values():
        _unresolved(move, u)
    _check_result(move)
    move.findings.sort(key=lambda f: (f.line, {"error": 0, "warning": 1, "note": 2}[f.level]))
    return move.out, move.findings


def _unresolved(move: _Move, u: Unresolved) -> None:
    """A setting whose value only Python could give: dropped if its handler drops it whatever the value, else
    read_xm's error for it is reported."""
    s = Setting(u.key, u.value, u.line)      # type: ignore[arg-type]  (an Unknown value: the handlers below)
    handler = HANDLERS.get(u.key)
    if handler in TAKES_UNKNOWN:
        handler(move, s, u.value)
    else:
        move.unresolved(s)


def _needing_python(v: Any) -> str:
    """For a drop note: why the value was not known (it does not matter: the setting goes either way)."""
    if not isinstance(v, Unknown):
        return ""
    return f" (that its value needs Python does not matter here: {v.cause or 'it is ' + v.why})"


def _plain(move: _Move, s: Setting) -> Any:
    """The value as xl can hold it (True is 1), or _DROPPED with a finding saying why."""
    key, v = s.key, s.value
    if isinstance(v, bool):
        v = int(v)
    if v is None:
        move.note(s, f"{key} = None: dropped (xl has no None; xl's default applies)", "warning")
        return _DROPPED
    if isinstance(v, float):
        move.note(s, f"{key} = {v}: xl takes no fractions", "error")
        return _DROPPED
    if isinstance(v, list) and any(isinstance(x, (float, type(None))) for x in v):
        move.note(s, f"{key}: xl lists take strings and whole numbers only", "error")
        return _DROPPED
    return v


def _carry(move: _Move, s: Setting, v: Any, key: str | None = None) -> None:
    """A setting xl takes as xm wrote it (under `key`): numbers made numbers, helper variables dropped and keys
    xl does not know reported."""
    key = key or s.key
    if key in NUMERIC:
        if isinstance(v, str) and re.fullmatch(r"-?\d{1,18}", v.strip(), re.ASCII):
            v = int(v.strip())       # also "-1": how this module writes a negative number (xl has no minus)
        elif not isinstance(v, int):
            move.note(s, f"{key} = {show_value(v)}: xl wants a whole number", "error")
            return
    if not is_setting(key) and key in move.cfg.referenced:
        move.note(s, f"{key}: a helper variable of the script (other settings were computed from it): dropped",
                  "warning")
        return
    if not is_setting(key):
        move.note(s, f"{key} is not a setting xl.cfg(5) knows: carried over (xl ignores it)", "warning")
    move.add(key, v, s.line)


def _xend_only(move: _Move, s: Setting, v: Any) -> None:
    move.note(s, f"{s.key}: dropped: {XEND_ONLY[s.key]}{_needing_python(v)}", "warning")


def _device_model(move: _Move, s: Setting, v: Any) -> None:
    """xend's path to qemu-dm (xmexample.hvm: '/usr/' + arch_libdir + '/xen/bin/qemu-dm'): xl picks its own
    device model, so Xen's own qemu-dm is dropped with a note; any other program with a warning (the guest ran a
    device model of its own: device_model_override is xl's way, if it must)."""
    name = v.file_name() if isinstance(v, Unknown) else posixpath.basename(v) if isinstance(v, str) else None
    if name == "qemu-dm":
        move.note(s, f"device_model: dropped: Xen 3's qemu-dm; xl picks its own device model{_needing_python(v)}")
    else:
        _xend_only(move, s, v)


def _kernel_ip(move: _Move, s: Setting, v: Any) -> None:
    move.note(s, f"{s.key}: dropped: xm made the kernel's ip= argument from it, xl does not; the guest's own "
                 f"network config must say it{_needing_python(v)}", "warning")


def _builder(move: _Move, s: Setting, v: Any) -> None:
    """xm's builder; xl.cfg(5) has `type` instead (builder is deprecated since Xen 4.10, and xl refuses a builder
    that contradicts type)."""
    if v in ("linux", "generic"):
        move.note(s, f'builder = "{v}": dropped (a PV guest is xl\'s default; xl refuses "linux")')
    elif v != "hvm":
        move.note(s, f"builder = {show_value(v)}: xl knows only generic (PV) and hvm", "error")
    elif "type" in move.cfg.settings:
        if move.cfg.get("type") != "hvm":
            move.note(s, f'builder = "hvm" and type = {show_value(move.cfg.get("type"))} contradict each other',
                      "error")
        else:
            move.note(s, 'builder = "hvm": dropped (type = "hvm" says it)')
    else:
        move.add("type", "hvm", s.line)
        move.note(s, 'builder = "hvm": written as type = "hvm" (xl.cfg(5): builder is deprecated)')


def _restart(move: _Move, s: Setting, v: Any) -> None:
    if not isinstance(v, str) or v not in RESTARTS:
        move.note(s, f"restart = {show_value(v)}: unknown (onreboot, always, never)", "error")
        return
    for k, action in zip(("on_poweroff", "on_reboot", "on_crash"), RESTARTS[v]):
        if k not in move.cfg.settings:
            move.add(k, action, s.line)
    move.note(s, f'restart = "{v}" (deprecated in xm, unknown to xl): written as on_poweroff/on_reboot/on_crash')


def _action(move: _Move, s: Setting, v: Any) -> None:
    if not isinstance(v, str) or v not in ACTIONS:
        move.note(s, f"{s.key} = {show_value(v)}: not an action xl knows ({', '.join(sorted(ACTIONS))})", "error")
    else:
        _carry(move, s, v)


def _cpu_cap(move: _Move, s: Setting, v: Any) -> None:
    move.note(s, "cpu_cap: written as cap (xl's name)")
    _carry(move, s, v, "cap")


def _bootargs(move: _Move, s: Setting, v: Any) -> None:
    try:
        args = shlex.split(v) if isinstance(v, str) else None
    except ValueError as e:
        move.note(s, f"bootargs = {show_value(v)}: not shell words ({e})", "error")
        return
    if args is not None:
        move.add("bootloader_args", args, s.line)
        move.note(s, "bootargs: written as bootloader_args, a list (xl's name and form)")
    else:
        move.note(s, "bootargs must be a string", "error")


def _bootloader(move: _Move, s: Setting, v: Any) -> None:
    """pygrub by any path (also '/usr/' + arch_libdir + '/xen/bin/pygrub', whose directory needed Python): xl's
    own `pygrub`."""
    if isinstance(v, Unknown):
        if v.file_name() != "pygrub":
            move.unresolved(s)
            return
        move.note(s, f'bootloader: written as "pygrub" (xl finds its own; Xen 4 installs it elsewhere)'
                     f"{_needing_python(v)}")
        v = "pygrub"
    elif isinstance(v, str) and posixpath.basename(v) == "pygrub" and v != "pygrub":
        move.note(s, f'bootloader "{v}": written as "pygrub" (xl finds its own; Xen 4 installs it elsewhere)')
        v = "pygrub"
    _carry(move, s, v)


def _kernel(move: _Move, s: Setting, v: Any) -> None:
    """xm's HVM guests named hvmloader as their kernel; xl loads it itself (a kernel of an HVM guest means direct
    kernel boot there, xl.cfg(5)). Known by its file name also when its directory needed Python."""
    name = v.file_name() if isinstance(v, Unknown) else posixpath.basename(v) if isinstance(v, str) else None
    if move.hvm and name == "hvmloader":
        shown = f"kernel {v}" if isinstance(v, str) else "kernel"
        move.note(s, f"{shown}: dropped: xl loads hvmloader itself (a kernel here means direct boot)"
                     f"{_needing_python(v)}")
    elif isinstance(v, Unknown):
        move.unresolved(s)
    else:
        _boot_file(move, s, v)


def _boot_file(move: _Move, s: Setting, v: Any) -> None:
    """kernel or ramdisk: xl reads them from the new host."""
    if not move.has_bootloader and not move.hvm and isinstance(v, str):
        move.note(s, f"{s.key} {v} is read from the new host's filesystem: copy it there (or boot with pygrub)",
                  "warning")
    _carry(move, s, v)


def _strings(s: Setting, findings: list[Finding]) -> list[str] | None:
    v = s.value
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        findings.append(Finding(s.line, "error", f"{s.key} must be a list of strings, not {show_value(s.value)}"))
        return None
    return v


def _disks(move: _Move, s: Setting, v: Any) -> None:
    disks = _strings(s, move.findings)
    if disks is None:
        return
    specs = [new for i, d in enumerate(disks) if (new := _disk(move, s, i, d)) is not None]
    move.add("disk", specs, s.line)


def _disk(move: _Move, s: Setting, i: int, d: str) -> str | None:
    """Disk i as an xl spec, --disk-map applied; None when xl cannot take it (reported)."""
    try:
        new, hit = convert_disk(d, move.disk_map)
    except DiskError as e:
        move.note(s, f"disk {i}: {e}", "error")
        return None
    if move.disk_map and not hit and "target" in new:
        move.note(s, f"disk {i}: {d!r}: no --disk-map matched; its path is kept", "warning")
    if xl.available():
        problem = xl.check_disk(new)
        if problem:
            move.note(s, f"disk {i}: xl's disk parser refuses {new!r}: {problem}", "error")
            return None
    return new


def _vifs(move: _Move, s: Setting, v: Any) -> None:
    vifs = _strings(s, move.findings)
    if vifs is None:
        return
    specs = [_vif(move, s, i, spec) for i, spec in enumerate(vifs)]
    macs = [val.lower() for spec in specs for k, val in parse_vif(spec) if k == "mac"]
    for mac in sorted({m for m in macs if macs.count(m) > 1}):
        move.note(s, f"vif: the MAC {mac} is given twice", "error")
    used = sorted({val for spec in specs for k, val in parse_vif(spec) if k == "bridge"}
                  | ({"xenbr0"} if any("bridge=" not in x for x in specs) else set()))
    for b in used:
        move.note(s, f"bridge {b} must exist on the new host before the guest starts: xl never creates bridges "
                     "(Xen 3's network-bridge script did); define it in the host's network config", "warning")
    move.add("vif", specs, s.line)


def _vif(move: _Move, s: Setting, i: int, spec: str) -> str:
    """Vif i as an xl spec: keys xl does not know dropped, its bridge through --bridge-map."""
    bridges = move.bridges
    pairs = []
    keys = set()
    for k, val in parse_vif(spec):
        if k not in VIF_KEYS:
            move.note(s, f"vif {i}: {k} is not an xl vif setting (xl-network-configuration(5)): dropped", "warning")
            continue
        new_bridge = bridges.get(val, bridges.get("*")) if k == "bridge" else None
        if new_bridge and new_bridge != val:
            move.note(s, f"vif {i}: bridge {val} -> {new_bridge}")
            val = new_bridge
        keys.add(k)
        pairs.append((k, val))
    default = bridges.get("xenbr0", bridges.get("*"))
    if "bridge" not in keys and default:
        pairs.append(("bridge", default))
        move.note(s, f"vif {i}: no bridge (xend's default, xenbr0) -> bridge={default}")
    if "mac" not in keys:
        move.note(s, f"vif {i} has no mac: xl makes up a new one at every start (old guests' udev then renames the "
                     "NIC); copy the MAC the guest had", "warning")
    return ",".join(f"{k}={val}" if val or k not in ("trusted", "untrusted") else k for k, val in pairs)


HANDLERS: dict[str, Handler] = {
    "builder": _builder, "restart": _restart, "cpu_cap": _cpu_cap, "bootargs": _bootargs,
    "bootloader": _bootloader, "kernel": _kernel, "ramdisk": _boot_file, "disk": _disks, "vif": _vifs,
    **{k: _action for k in ACTION_KEYS},
    **{k: _kernel_ip for k in XM_KERNEL_IP},
    **{k: _xend_only for k in XEND_ONLY},
    "device_model": _device_model,
}
# the handlers that take an Unknown value (a setting only Python could compute): the others never see one
TAKES_UNKNOWN = {_xend_only, _device_model, _kernel_ip, _kernel, _bootloader}


def _check_result(move: _Move) -> None:
    """What xl needs of the whole config, and of every key and string in it."""
    out, cfg, findings = move.out, move.cfg, move.findings
    names = [s for s in out if s.key == "name"]
    if not names and "name" not in cfg.unknown:
        findings.append(Finding(0, "error", "no name = \"...\": xl needs the domain's name"))
    if not move.hvm and not any(s.key in ("kernel", "bootloader") for s in out) \
            and not {"kernel", "bootloader"} & cfg.unknown:
        findings.append(Finding(0, "error", "neither kernel nor bootloader: a PV guest needs one of them"))
    mem = next((s.value for s in out if s.key == "memory"), None)
    maxmem = next((s for s in out if s.key == "maxmem"), None)
    if isinstance(mem, int) and maxmem is not None and isinstance(maxmem.value, int) and maxmem.value < mem:
        findings.append(Finding(maxmem.line, "error", f"maxmem {maxmem.value} is below memory {mem}; xl wants "
                                                      "maxmem >= memory"))
    for s in out:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s.key, re.ASCII):
            findings.append(Finding(s.line, "error", f"{show_value(s.key)}: xl keys are ASCII letters, digits and _"))
        for text in _flatten(s.value):
            if isinstance(text, str) and (any(ord(c) < 32 for c in text) or "\x7f" in text):
                findings.append(Finding(s.line, "error", f"{s.key}: a control character in {show_value(text)}"))
            elif isinstance(text, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
                findings.append(Finding(s.line, "error", f"{s.key}: {show_value(text)} is not UTF-8 text"))


def _flatten(v: Value) -> list:
    if isinstance(v, list):
        return [y for x in v for y in _flatten(x)]
    return [v]

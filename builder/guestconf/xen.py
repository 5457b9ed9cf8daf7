"""Xen 3 (xm) domain configs to xl (Xen 4): `migrate convert-xen`.

An xm config is a Python script that xend ran; xl reads only `KEY = VALUE` lines. This module never runs the
old file: it parses it with `ast`, takes assignments of literals (and of simple arithmetic or `%` formatting on
values assigned earlier in the file, with a warning), and reports everything else line by line: a warning for
what can be dropped (imports, calls, xend's managed-domain settings ...), an error for what xl cannot take or
what cannot be known without running Python (a value set inside an `if`, a `w!` disk ...).

Then the xm idioms are moved to xl's: disks to xl-disk-configuration(5) specs (`format=raw, vdev=xvda1,
access=rw, target=/new/path`, backendtype=phy for block devices) with --disk-map applied, the hard-coded
pygrub path to `pygrub`, vif bridges through --bridge-map; the rest is carried over. The result is read back
with xl's own parser (builder.guestconf.xl) and is only handed out if xl reads it back as intended.

The old file is outside input (it may come from a guest host being moved): read_xm() returns settings and
findings, or raises InputError (exit 2) naming the line for a file no xm config looks like: larger than
MAX_BYTES, expressions nested deeper than MAX_DEPTH, more than MAX_UNREADABLE lines Python cannot read, or text
that is not UTF-8. Values are bounded too: numbers to 64 bits, computed strings and lists to MAX_BYTES.
"""
from __future__ import annotations

import ast
import logging
import posixpath
import re
import shlex
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Union

from builder.guestconf import xl
from builder.core.errors import InputError

log = logging.getLogger("imgbuild")

Value = Union[str, int, list["Value"]]

MAX_BYTES = 256 << 10      # an xm config is a few KB; a computed value may not grow past this either
MAX_DEPTH = 50             # expression nesting (real configs nest 3 to 5 deep)
MAX_UNREADABLE = 20        # lines Python cannot read before the file is refused as not an xm config
MAX_INT = 1 << 64          # xl reads numbers as C longs
MAX_FORMAT_WIDTH = 1000    # a width or precision in a % format (`%08x` is 8)
Level = Literal["note", "warning", "error"]

# keys whose value xl reads as a number
NUMERIC = {"memory", "maxmem", "vcpus", "maxvcpus", "cpu_weight", "cap", "shadow_memory", "videoram",
           "max_grant_frames", "max_maptrack_frames", "rtc_timeoffset", "localtime", "acpi", "apic", "pae",
           "hpet", "nx", "viridian", "stdvga", "vnc", "vncunused", "sdl", "opengl", "nographic", "usb",
           "pci_permissive", "pci_msitranslate", "pci_seize", "pci_power_mgmt", "e820_host", "nomigrate",
           "driver_domain", "vcpu_avail"}
ACTIONS = {"destroy", "restart", "rename-restart", "preserve", "coredump-destroy", "coredump-restart",
           "soft-reset"}
# xm put these on a direct-boot kernel's command line (ip=...); xl never did
XM_KERNEL_IP = ("dhcp", "ip", "netmask", "gateway", "hostname", "nfs_server", "nfs_root")
XEND_ONLY = {
    "on_xend_start": "xend's managed-domain setting (xm new); xl has no managed domains: start the guest at "
                     "boot by linking its config into /etc/xen/auto (xendomains)",
    "on_xend_stop": "xend's managed-domain setting (xm new); xl has no managed domains: xendomains saves or "
                    "shuts down the guests in /etc/xen/auto when the host stops",
    "vcpu_avail": "xend's vCPU bitmask; xl starts `vcpus` of `maxvcpus` online instead",
    "device_model": "xend's qemu-dm path; xl picks its own device model (device_model_override only if you "
                    "must)",
    "xen_shell": "xen-tools' xen-shell admin list, not a Xen setting",
}
# the keys xl.cfg(5) of Xen 4.17 documents
XL_KEYS = set("""acpi acpi_firmware acpi_laptop_slate acpi_s3 acpi_s4 altp2m altp2mhvm apic bios bios_path_override
boot bootloader bootloader_args builder cap channel cmdline cpu_weight cpuid cpus cpus_soft device_model_args
device_model_args_hvm device_model_args_pv device_model_override device_model_stubdomain_override
device_model_stubdomain_seclabel device_model_user device_model_version device_tree disk dm_restrict driver_domain
dtdev e820_host extra firmware gfx_passthru gic_version hap hdtype hpet init_seclabel iomem ioports irqs kernel
keymap localtime max_event_channels max_grant_frames max_grant_version max_maptrack_frames maxmem maxvcpus mca_caps
memory mmio_hole ms_vm_genid msr_relaxed name nestedhvm nographic nomigrate nx on_crash on_poweroff on_reboot
on_soft_reset on_watchdog oos opengl p9 pae passthrough pci pci_msitranslate pci_permissive pci_power_mgmt
pci_seize pool pvcalls pvshim pvshim_cmdline pvshim_extra pvshim_path ramdisk rdm rdm_mem_boundary root
rtc_timeoffset sdl seclabel serial shadow_memory smbios_firmware soundhw spice spice_clipboard_sharing
spice_image_compression spice_streaming_video spiceagent_mouse spicedisable_ticketing spicehost spicepasswd
spiceport spicetls_port spiceusbredirection spicevdagent stdvga stubdomain_cmdline stubdomain_kernel
stubdomain_memory stubdomain_ramdisk tee timer_mode tsc_mode type usb usbctrl usbdev usbdevice usbversion uuid
vcpus vdispl vendor_device vfb vga videoram vif viridian vkb vkb_device vmtrace_buf_kb vnc vncdisplay vnclisten
vncpasswd vncunused vnuma vpmu vpt_align vsnd vtpm vuart xen_platform_pci xend_suspend_evtchn_compat
vscsi""".split())
# xm keys this module moves, renames or drops
XM_KEYS = {"restart", "cpu_cap", "bootargs", "vcpu_avail", "features", "cpu", "security", "blkif", "netif",
           "tpmif"}
VIF_KEYS = {"mac", "bridge", "gatewaydev", "netdev", "type", "model", "vifname", "script", "ip", "backend", "rate",
            "devid", "mtu", "trusted", "untrusted"}
# deprecated xm disk prefixes -> xl format
TAP_FORMATS = {"aio": "raw", "sync": "raw", "qcow": "qcow", "qcow2": "qcow2", "vhd": "vhd"}
SCRIPT_PREFIXES = ("drbd", "iscsi", "nbd", "enbd")


@dataclass(frozen=True)
class Finding:
    line: int          # 0: the file as a whole
    level: Level
    message: str

    def show(self, source: str) -> str:
        return f"{source}:{self.line}: {self.message}" if self.line else f"{source}: {self.message}"


@dataclass
class Setting:
    key: str
    value: Value
    line: int


@dataclass
class XmConfig:
    """What the old file assigns (last assignment wins, first position kept) and what was left behind."""

    settings: dict[str, Setting] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)     # names only Python could give a value (reported)
    referenced: set[str] = field(default_factory=set)  # names the script reads (helper variables)

    def get(self, key: str, default=None):
        s = self.settings.get(key)
        return s.value if s else default


@dataclass
class Conversion:
    settings: list[Setting]
    findings: list[Finding]
    text: str | None              # the xl config; None when there are errors
    checked: bool = False         # read back by xl's parser

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


# ------------------------------------------------------------------ reading the Python file


class _NotConstant(Exception):
    pass


_UNKNOWN = object()


def _evaluate(node: ast.AST, env: dict[str, Any]) -> tuple[Any, bool]:
    """The value of an expression made of literals, names assigned earlier and a few operators.
    Returns (value, computed) where computed says something beyond a literal was involved."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) >= MAX_INT:
            raise _NotConstant("a number larger than 64 bits")
        if isinstance(node.value, (str, int, float, bool)) or node.value is None:
            return node.value, False
        raise _NotConstant(f"a {type(node.value).__name__} literal")
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_evaluate(e, env) for e in node.elts]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(node, ast.Name):
        if node.id not in env or env[node.id] is _UNKNOWN:
            raise _NotConstant(f"`{node.id}` has no value this file gives")
        return env[node.id], True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v, _ = _evaluate(node.operand, env)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _NotConstant("a sign on something that is not a number")
        return (-v if isinstance(node.op, ast.USub) else v), True
    if isinstance(node, ast.BinOp):
        a, _ = _evaluate(node.left, env)
        b, _ = _evaluate(node.right, env)
        op = type(node.op)
        num = lambda x: isinstance(x, int) and not isinstance(x, bool)  # noqa: E731
        if op is ast.Add and ((num(a) and num(b)) or (isinstance(a, str) and isinstance(b, str))
                              or (isinstance(a, list) and isinstance(b, list))):
            if not num(a) and _size(a) + _size(b) > MAX_BYTES:
                raise _NotConstant(f"a value larger than {MAX_BYTES} bytes")
            return _bounded(a + b), True
        if op in (ast.Sub, ast.Mult, ast.FloorDiv) and num(a) and num(b):
            if op is ast.FloorDiv and b == 0:
                raise _NotConstant("a division by zero")
            return _bounded({ast.Sub: a - b, ast.Mult: a * b, ast.FloorDiv: a // b if b else 0}[op]), True
        if op is ast.Div and num(a) and num(b) and b and a % b == 0:
            return a // b, True
        if op is ast.Mod and isinstance(a, str):
            args = tuple(b) if isinstance(node.right, ast.Tuple) else b
            _check_format(a, args)
            try:
                return _bounded(a % args), True
            except (TypeError, ValueError, OverflowError) as e:
                raise _NotConstant(f"a % format that fails ({e})") from None
        if op is ast.Mod and num(a) and num(b) and b:
            return a % b, True
        raise _NotConstant(f"the operator {op.__name__} on these values")
    if isinstance(node, ast.Call):
        raise _NotConstant(f"a call of {_unparse(node.func)}()")
    raise _NotConstant(f"`{_unparse(node)}`")


def _unparse(node: ast.AST, limit: int = 70) -> str:
    """Source text for a message, shortened; never fails (a huge number literal cannot be unparsed)."""
    try:
        s = ast.unparse(node)
    except (ValueError, RecursionError):
        s = f"a {type(node).__name__} expression"
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _size(v: Any) -> int:
    """Roughly the bytes a value takes when written out: string lengths plus list items (bounded depth)."""
    if isinstance(v, str):
        return len(v)
    if isinstance(v, list):
        return len(v) + sum(_size(x) for x in v)
    return 8


def _bounded(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_INT:
        raise _NotConstant("a number larger than 64 bits")
    if isinstance(v, (str, list)) and _size(v) > MAX_BYTES:
        raise _NotConstant(f"a value larger than {MAX_BYTES} bytes")
    return v


_FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.?)", re.S)


def _check_format(fmt: str, args: Any) -> None:
    """Refuse a % format whose output would be huge (`%0999999999d`) before Python builds it."""
    total = len(fmt) + _size(list(args) if isinstance(args, tuple) else args)
    for m in _FORMAT_SPEC.finditer(fmt):
        for part in (m.group(1), m.group(2)):
            if part == "*":
                raise _NotConstant("a % format with a * width")
            if part and (len(part) > 4 or int(part) > MAX_FORMAT_WIDTH):
                raise _NotConstant(f"a % format with a width of {part[:12]}")
            total += int(part) if part and part != "*" else 0
    if total > MAX_BYTES:
        raise _NotConstant(f"a value larger than {MAX_BYTES} bytes")


def _assigned_names(nodes: Iterable[ast.AST]) -> list[str]:
    out: list[str] = []
    for n in nodes:
        for sub in ast.walk(n):
            if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                for t in targets:
                    for name in ast.walk(t):
                        if isinstance(name, ast.Name) and name.id not in out:
                            out.append(name.id)
    return out


def _refuse_at(source: str | None, line: int, what: str) -> InputError:
    where = (f"{source}:{line}" if line else source) if source else (f"line {line}" if line else "the config")
    return InputError(f"{where}: not an xm domain config: {what}",
                      "give the domain's config file (KEY = VALUE lines, e.g. /etc/xen/NAME.cfg); xm configs are "
                      "small and flat")


def _deepest_line(text: str) -> int:
    """The line whose statement nests deepest, by its tokens (for a file Python's parser cannot even build:
    ast.parse runs out of stack on `- - - ... 1`). 0 if the tokens do not tell."""
    import io
    import tokenize

    nesting = {"(", "[", "{", "-", "+", "~", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "@", ".",
               "not", "lambda", "if", "and", "or", "await"}
    best, best_line, count, start = 0, 0, 0, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                count, start = 0, 0
                continue
            if not start and tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                start = tok.start[0]
            if tok.string in nesting:
                count += 1
                if count > best:
                    best, best_line = count, start
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    return best_line


def _depth(tree: ast.AST) -> tuple[int, int]:
    """(how deep the tree nests, the line of its deepest node), without recursion."""
    deepest, line = 0, 0
    stack = [(tree, 0, 0)]
    while stack:
        node, d, ln = stack.pop()
        ln = getattr(node, "lineno", ln) or ln
        if d > deepest:
            deepest, line = d, ln
            if d > MAX_DEPTH:
                break
        stack.extend((child, d + 1, ln) for child in ast.iter_child_nodes(node))
    return deepest, line


def _universal(text: str) -> tuple[str, list[int]]:
    """The text with Python's line ends (CRLF, a lone CR, LF) all as LF, and for each of its lines (index
    n - 1) the line of the file as grep -n, editors and xl count them (by LF)."""
    parts = re.split(r"(\r\n|\r|\n)", text)
    lines, seps = parts[0::2], parts[1::2]
    file_line, numbers = 1, [1]
    for sep in seps:
        file_line += "\n" in sep
        numbers.append(file_line)
    return "\n".join(lines), numbers


def _parse_tolerant(text: str, findings: list[Finding], source: str | None = None,
                    numbers: list[int] | None = None) -> ast.Module:
    """ast.parse, blanking lines Python 3 cannot read (a Python 2 print statement, 0644-style octals ...) one
    at a time, each reported as an error. InputError for what no xm config is (see the module docstring)."""
    lines = text.split("\n")
    unreadable = 0

    def _refuse(source: str | None, line: int, what: str) -> InputError:
        return _refuse_at(source, numbers[line - 1] if numbers and 0 < line <= len(numbers) else line, what)

    for _ in range(len(lines) + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")        # SyntaxWarning for `1if x`: the findings say what counts
                tree = ast.parse("\n".join(lines))
        except (MemoryError, RecursionError):
            # CPython's parser gives up on deep nesting with these (its own stack is bounded)
            raise _refuse(source, _deepest_line("\n".join(lines)),
                          f"expressions nested too deeply for Python's parser (more than {MAX_DEPTH} levels are "
                          "refused)") from None
        except SyntaxError as e:
            if e.msg in ("too many nested parentheses", "too many levels of indentation"):
                raise _refuse(source, e.lineno or 0, f"{e.msg} (more than {MAX_DEPTH} levels are refused)"
                              ) from None
            unreadable += 1
            if unreadable > MAX_UNREADABLE:
                raise _refuse(source, e.lineno or 0, f"more than {MAX_UNREADABLE} lines are not readable as "
                                                     "Python") from None
            n = e.lineno or 1
            if n > len(lines):
                n = len(lines)
            shown = lines[n - 1].strip() if n >= 1 else ""
            if re.match(r"print\b", shown):
                findings.append(Finding(n, "warning", f"{shown!r}: a Python 2 print statement, dropped"))
            else:
                findings.append(Finding(n, "error", f"not readable as Python ({e.msg}): {shown!r}; xl cannot take "
                                                    "it either: write it as KEY = VALUE"))
            if n < 1 or lines[n - 1] == "":
                break
            lines[n - 1] = ""
            continue
        depth, line = _depth(tree)
        if depth > MAX_DEPTH:
            raise _refuse(source, line, f"expressions nested more than {MAX_DEPTH} levels deep")
        return tree
    return ast.Module(body=[], type_ignores=[])


def _check_text(text: str, source: str | None) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise _refuse_at(source, 0, f"{size} bytes, more than the {MAX_BYTES} an xm config can be")
    if "\0" in text:
        raise _refuse_at(source, text.count("\n", 0, text.index("\0")) + 1, "it holds a NUL byte (a binary file?)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _refuse_at(source, text.count("\n", 0, e.start) + 1, "it is not UTF-8 text") from None


def read_xm(text: str, source: str | None = None) -> XmConfig:
    """The settings an xm config makes, without running it; findings for the rest. InputError (naming `source`
    and the line) for a text no xm config looks like: see the module docstring."""
    _check_text(text, source)
    text, numbers = _universal(text)
    cfg = XmConfig()
    tree = _parse_tolerant(text, cfg.findings, source, numbers)
    cfg.referenced = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    env: dict[str, Any] = {}
    src = text.split("\n")

    def shown(node: ast.AST) -> str:
        return _unparse(node)

    def store(name: str, value: Any, line: int) -> None:
        env[name] = value
        if name in cfg.settings:
            cfg.settings[name].value, cfg.settings[name].line = value, line
        else:
            cfg.settings[name] = Setting(name, value, line)

    def forget(name: str) -> None:
        env[name] = _UNKNOWN
        cfg.unknown.add(name)
        cfg.settings.pop(name, None)

    for stmt in tree.body:
        line = stmt.lineno
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if stmt.value is None:
                continue
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if len(names) != len(targets):
                cfg.findings.append(Finding(line, "error", f"{shown(stmt)}: only NAME = VALUE can be converted"))
                for n in _assigned_names([stmt]):
                    forget(n)
                continue
            node = stmt.value
            if isinstance(stmt, ast.AugAssign):
                node = ast.BinOp(left=ast.Name(id=names[0], ctx=ast.Load()), op=stmt.op, right=stmt.value)
            try:
                value, computed = _evaluate(node, env)
            except _NotConstant as e:
                if any(_is_setting(n) for n in names):
                    cfg.findings.append(Finding(line, "error", f"{shown(stmt)}: needs Python to compute ({e}); "
                                                               "xl takes no expressions: write the value itself"))
                else:
                    cfg.findings.append(Finding(line, "warning", f"{shown(stmt)}: a helper variable needing Python "
                                                                 f"({e}): dropped; a setting using it cannot be "
                                                                 "converted"))
                for n in names:
                    forget(n)
                continue
            if computed or isinstance(stmt, ast.AugAssign):
                cfg.findings.append(Finding(line, "warning", f"{shown(stmt)}: computed as {_show(value)} (xl "
                                                             "takes no expressions)"))
            for n in names:
                store(n, value, line)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            cfg.findings.append(Finding(line, "warning", f"{shown(stmt)}: dropped (xl configs run no Python)"))
        elif isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                continue   # a docstring
            cfg.findings.append(Finding(line, "warning", f"{shown(stmt)}: dropped (xl configs run no Python)"))
        elif isinstance(stmt, ast.Pass):
            continue
        else:
            kind = {ast.If: "an if", ast.For: "a for loop", ast.While: "a while loop", ast.Try: "a try block",
                    ast.With: "a with block", ast.FunctionDef: "a function", ast.ClassDef: "a class"}.get(
                        type(stmt), f"a {type(stmt).__name__} statement")
            first = src[line - 1].strip() if 0 < line <= len(src) else ""
            names = _assigned_names([stmt]) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) else []
            settings = [n for n in names if _is_setting(n)]
            if settings:
                cfg.findings.append(Finding(line, "error", f"{first!r}: {kind} sets {', '.join(settings)} depending "
                                                           "on Python at run time; xl has no conditionals or loops: "
                                                           "write the values this guest needs"))
            elif names:
                cfg.findings.append(Finding(line, "warning", f"{first!r}: {kind} setting helper variables "
                                                             f"({', '.join(names)}), dropped"))
            if names:
                for n in names:
                    forget(n)
            else:
                cfg.findings.append(Finding(line, "warning", f"{first!r}: {kind}, dropped (xl configs run no "
                                                             "Python)"))
    # Python counts a lone CR as a line end too; findings name the file's lines
    at = lambda n: numbers[n - 1] if 0 < n <= len(numbers) else n  # noqa: E731
    cfg.findings = [Finding(at(f.line), f.level, f.message) for f in cfg.findings]
    for setting in cfg.settings.values():
        setting.line = at(setting.line)
    return cfg


def _is_setting(name: str) -> bool:
    """A key xl or xm reads (not a helper variable of the script)."""
    return name in XL_KEYS or name in XM_KEYS or name in XEND_ONLY or name in XM_KERNEL_IP


def _show(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else f'"{v}"'
    return s if len(s) <= 80 else s[:77] + "..."


# ------------------------------------------------------------------ xm idioms -> xl


def parse_map(items: Iterable[str], what: str) -> list[tuple[str, str]]:
    """OLD=NEW pairs (ValueError with the bad item)."""
    out = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ValueError(f"{what} {item!r}: expected OLD=NEW")
        out.append((old, new))
    return out


def map_path(path: str, disk_map: list[tuple[str, str]]) -> tuple[str, bool]:
    """The path after --disk-map: an exact match first, else the longest directory prefix."""
    for old, new in disk_map:
        if path == old:
            return new, True
    best = None
    for old, new in disk_map:
        base = old.rstrip("/")
        if base and path.startswith(base + "/") and (best is None or len(base) > len(best[0])):
            best = (base, new.rstrip("/"))
    if best:
        return best[1] + path[len(best[0]):], True
    return path, False


@dataclass
class _Disk:
    target: str | None
    vdev: str
    access: str
    format: str = "raw"
    devtype: str | None = None
    script: str | None = None

    def spec(self) -> str:
        parts = [f"format={self.format}", f"vdev={self.vdev}", f"access={self.access}"]
        if self.devtype:
            parts.append(f"devtype={self.devtype}")
        if self.script:
            parts.append(f"script={self.script}")
        elif self.target and self.target.startswith("/dev/") and self.format == "raw":
            parts.append("backendtype=phy")
        if self.target:
            parts.append(f"target={self.target}")
        return ", ".join(parts)


class DiskError(ValueError):
    pass


def xm_disk(spec: str) -> _Disk:
    """An xm disk stanza (`PREFIX:PATH,VDEV[:cdrom],MODE`) as its parts; DiskError for what xl cannot take."""
    fields = spec.split(",")
    if len(fields) != 3:
        raise DiskError(f"{spec!r} is not an xm disk (UNAME,DEV,MODE)")
    uname, dev, mode = (f.strip() for f in fields)
    access = {"w": "rw", "rw": "rw", "r": "ro", "ro": "ro"}.get(mode)
    if mode in ("w!", "r!", "!"):
        raise DiskError(f"{spec!r}: mode {mode} (write even if another domain has the disk) does not exist in xl, "
                        "whose parser refuses it; give the disk to one guest with access rw")
    if access is None:
        raise DiskError(f"{spec!r}: unknown mode {mode!r} (r or w)")
    devtype = None
    if dev.startswith("ioemu:"):
        dev = dev[len("ioemu:"):]
    if ":" in dev:
        dev, _, kind = dev.partition(":")
        if kind == "cdrom":
            devtype = "cdrom"
        elif kind != "disk":
            raise DiskError(f"{spec!r}: unknown device type {kind!r}")
    if not re.fullmatch(r"(xvd|hd|sd)[a-z]+[0-9]*", dev):
        raise DiskError(f"{spec!r}: {dev!r} is not a virtual device name xl knows (xvdX, hdX, sdX)")
    if devtype == "cdrom" and access == "rw":
        access = "ro"
    if uname == "":
        if devtype != "cdrom":
            raise DiskError(f"{spec!r}: a disk with no path")
        return _Disk(None, dev, access, devtype=devtype)
    words = uname.split(":")
    fmt, script = "raw", None
    if words[0] == "file" and len(words) >= 2:
        path = ":".join(words[1:])
    elif words[0] == "phy" and len(words) >= 2:
        path = ":".join(words[1:])
        if not path.startswith("/"):
            path = "/dev/" + path
    elif words[0] in ("tap", "tap2") and len(words) >= 3:
        rest = words[1:]
        if rest[0] == "tapdisk" and len(rest) >= 3:
            rest = rest[1:]
        kind = rest[0]
        if kind not in TAP_FORMATS:
            raise DiskError(f"{spec!r}: {words[0]}:{kind} images cannot be used by xl (it reads raw, qcow, qcow2, "
                            "vhd and qed); convert it, e.g. qemu-img convert -O raw")
        fmt = TAP_FORMATS[kind]
        path = ":".join(rest[1:])
    elif words[0] in SCRIPT_PREFIXES and len(words) >= 2:
        script = f"block-{words[0]}"
        path = ":".join(words[1:])
    elif uname.startswith("/"):
        path = uname
    else:
        raise DiskError(f"{spec!r}: unknown disk type {words[0]!r}: (file:, phy:, tap:aio:, tap:qcow: ...)")
    return _Disk(path, dev, access, format=fmt, devtype=devtype, script=script)


def convert_disk(spec: str, disk_map: list[tuple[str, str]]) -> tuple[str, bool]:
    """One disk entry as an xl spec, --disk-map applied; returns (spec, mapped)."""
    if "=" in spec or spec.count(",") != 2:
        # already xl syntax: map its target (the last, target= form, or the first positional parameter)
        m = re.search(r"(^|,)\s*target=(.*)$", spec)
        if m:
            new, hit = map_path(m.group(2), disk_map)
            return spec[:m.start(2)] + new, hit
        first, sep, rest = spec.partition(",")
        if first and "=" not in first:
            new, hit = map_path(first.strip(), disk_map)
            return new + sep + rest, hit
        return spec, False
    d = xm_disk(spec)
    hit = False
    if d.target and not d.script:
        d.target, hit = map_path(d.target, disk_map)
    return d.spec(), hit


def parse_vif(spec: str) -> list[tuple[str, str]]:
    pairs = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        pairs.append((k.strip(), v.strip() if sep else ""))
    return pairs


def _strings(s: Setting, findings: list[Finding]) -> list[str] | None:
    v = s.value
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        findings.append(Finding(s.line, "error", f"{s.key} must be a list of strings, not {_show(s.value)}"))
        return None
    return v


def convert(cfg: XmConfig, disk_map: Iterable[tuple[str, str]] = (), bridge_map: Iterable[tuple[str, str]] = (),
            ) -> tuple[list[Setting], list[Finding]]:
    """The xl settings for an xm config, and what the move found."""
    disk_map = list(disk_map)
    bridges = dict(bridge_map)
    findings = list(cfg.findings)
    out: list[Setting] = []
    add = lambda key, v, line: out.append(Setting(key, v, line))  # noqa: E731
    note = lambda s, msg, level="note": findings.append(Finding(s.line, level, msg))  # noqa: E731

    builder = cfg.get("builder")
    hvm = builder == "hvm"
    has_bootloader = "bootloader" in cfg.settings
    for s in cfg.settings.values():
        key, v = s.key, s.value
        if isinstance(v, bool):
            v = int(v)
        if v is None:
            note(s, f"{key} = None: dropped (xl has no None; xl's default applies)", "warning")
            continue
        if isinstance(v, float):
            note(s, f"{key} = {v}: xl takes no fractions", "error")
            continue
        if isinstance(v, list) and any(isinstance(x, (float, type(None))) for x in v):
            note(s, f"{key}: xl lists take strings and whole numbers only", "error")
            continue
        if key in XEND_ONLY:
            note(s, f"{key}: dropped: {XEND_ONLY[key]}", "warning")
            continue
        if key in XM_KERNEL_IP:
            note(s, f"{key}: dropped: xm made the kernel's ip= argument from it, xl does not; the guest's own "
                    "network config must say it", "warning")
            continue
        if key == "builder":
            if v in ("linux", "generic"):
                note(s, f'builder = "{v}": dropped (a PV guest is xl\'s default; xl refuses "linux")')
                continue
            if v != "hvm":
                note(s, f"builder = {_show(v)}: xl knows only generic (PV) and hvm", "error")
                continue
        if key == "restart":
            table = {"onreboot": ("destroy", "restart", "destroy"), "always": ("restart",) * 3,
                     "never": ("destroy",) * 3}
            if not isinstance(v, str) or v not in table:
                note(s, f"restart = {_show(v)}: unknown (onreboot, always, never)", "error")
                continue
            for k, action in zip(("on_poweroff", "on_reboot", "on_crash"), table[v]):
                if k not in cfg.settings:
                    out.append(Setting(k, action, s.line))
            note(s, f'restart = "{v}" (deprecated in xm, unknown to xl): written as on_poweroff/on_reboot/on_crash')
            continue
        if key.startswith("on_") and key in ("on_poweroff", "on_reboot", "on_crash", "on_watchdog",
                                             "on_soft_reset"):
            if not isinstance(v, str) or v not in ACTIONS:
                note(s, f"{key} = {_show(v)}: not an action xl knows ({', '.join(sorted(ACTIONS))})", "error")
                continue
        if key == "cpu_cap":
            key = "cap"
            note(s, "cpu_cap: written as cap (xl's name)")
        if key == "bootargs":
            try:
                args = shlex.split(v) if isinstance(v, str) else None
            except ValueError as e:
                note(s, f"bootargs = {_show(v)}: not shell words ({e})", "error")
                continue
            if args is not None:
                add("bootloader_args", args, s.line)
                note(s, "bootargs: written as bootloader_args, a list (xl's name and form)")
            else:
                note(s, "bootargs must be a string", "error")
            continue
        if key == "bootloader" and isinstance(v, str) and posixpath.basename(v) == "pygrub" and v != "pygrub":
            note(s, f'bootloader "{v}": written as "pygrub" (xl finds its own; Xen 4 installs it elsewhere)')
            v = "pygrub"
        if key == "kernel" and hvm and isinstance(v, str) and posixpath.basename(v) == "hvmloader":
            note(s, f"kernel {v}: dropped: xl loads hvmloader itself (a kernel here means direct boot)", "warning")
            continue
        if key in ("kernel", "ramdisk") and not has_bootloader and not hvm and isinstance(v, str):
            note(s, f"{key} {v} is read from the new host's filesystem: copy it there (or boot with pygrub)",
                 "warning")
        if key in NUMERIC:
            if isinstance(v, str) and re.fullmatch(r"-?\d{1,18}", v.strip(), re.ASCII):
                v = int(v.strip())       # also "-1": how this module writes a negative number (xl has no minus)
            elif not isinstance(v, int):
                note(s, f"{key} = {_show(v)}: xl wants a whole number", "error")
                continue
        if key == "disk":
            disks = _strings(s, findings)
            if disks is None:
                continue
            specs = []
            for i, d in enumerate(disks):
                try:
                    new, hit = convert_disk(d, disk_map)
                except DiskError as e:
                    note(s, f"disk {i}: {e}", "error")
                    continue
                if disk_map and not hit and "target" in new:
                    note(s, f"disk {i}: {d!r}: no --disk-map matched; its path is kept", "warning")
                if xl.available():
                    problem = xl.check_disk(new)
                    if problem:
                        note(s, f"disk {i}: xl's disk parser refuses {new!r}: {problem}", "error")
                        continue
                specs.append(new)
            add(key, specs, s.line)
            continue
        if key == "vif":
            vifs = _strings(s, findings)
            if vifs is None:
                continue
            specs = []
            for i, spec in enumerate(vifs):
                pairs = []
                keys = set()
                for k, val in parse_vif(spec):
                    if k not in VIF_KEYS:
                        note(s, f"vif {i}: {k} is not an xl vif setting (xl-network-configuration(5)): dropped",
                             "warning")
                        continue
                    new_bridge = bridges.get(val, bridges.get("*")) if k == "bridge" else None
                    if new_bridge and new_bridge != val:
                        note(s, f"vif {i}: bridge {val} -> {new_bridge}")
                        val = new_bridge
                    keys.add(k)
                    pairs.append((k, val))
                default = bridges.get("xenbr0", bridges.get("*"))
                if "bridge" not in keys and default:
                    pairs.append(("bridge", default))
                    note(s, f"vif {i}: no bridge (xend's default, xenbr0) -> bridge={default}")
                if "mac" not in keys:
                    note(s, f"vif {i} has no mac: xl makes up a new one at every start (old guests' udev then "
                            "renames the NIC); copy the MAC the guest had", "warning")
                specs.append(",".join(f"{k}={val}" if val or k not in ("trusted", "untrusted") else k
                                      for k, val in pairs))
            macs = [val.lower() for spec in specs for k, val in parse_vif(spec) if k == "mac"]
            for mac in sorted({m for m in macs if macs.count(m) > 1}):
                note(s, f"vif: the MAC {mac} is given twice", "error")
            used = sorted({val for spec in specs for k, val in parse_vif(spec) if k == "bridge"}
                          | ({"xenbr0"} if any("bridge=" not in x for x in specs) else set()))
            for b in used:
                note(s, f"bridge {b} must exist on the new host before the guest starts: xl never creates bridges "
                        "(Xen 3's network-bridge script did); define it in the host's network config", "warning")
            add(key, specs, s.line)
            continue
        if not _is_setting(key) and key in cfg.referenced:
            note(s, f"{key}: a helper variable of the script (other settings were computed from it): dropped",
                 "warning")
            continue
        if not _is_setting(key):
            note(s, f"{key} is not a setting xl.cfg(5) knows: carried over (xl ignores it)", "warning")
        add(key, v, s.line)

    names = [s for s in out if s.key == "name"]
    if not names and "name" not in cfg.unknown:
        findings.append(Finding(0, "error", "no name = \"...\": xl needs the domain's name"))
    if not hvm and not any(s.key in ("kernel", "bootloader") for s in out) \
            and not {"kernel", "bootloader"} & cfg.unknown:
        findings.append(Finding(0, "error", "neither kernel nor bootloader: a PV guest needs one of them"))
    mem = next((s.value for s in out if s.key == "memory"), None)
    maxmem = next((s for s in out if s.key == "maxmem"), None)
    if isinstance(mem, int) and maxmem is not None and isinstance(maxmem.value, int) and maxmem.value < mem:
        findings.append(Finding(maxmem.line, "error", f"maxmem {maxmem.value} is below memory {mem}; xl wants "
                                                      "maxmem >= memory"))
    for s in out:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s.key, re.ASCII):
            findings.append(Finding(s.line, "error", f"{_show(s.key)}: xl keys are ASCII letters, digits and _"))
        for text in _flatten(s.value):
            if isinstance(text, str) and (any(ord(c) < 32 for c in text) or "\x7f" in text):
                findings.append(Finding(s.line, "error", f"{s.key}: a control character in {_show(text)}"))
            elif isinstance(text, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in text):
                findings.append(Finding(s.line, "error", f"{s.key}: {_show(text)} is not UTF-8 text"))
    findings.sort(key=lambda f: (f.line, {"error": 0, "warning": 1, "note": 2}[f.level]))
    return out, findings


def _flatten(v: Value) -> list:
    if isinstance(v, list):
        return [y for x in v for y in _flatten(x)]
    return [v]


# ------------------------------------------------------------------ writing xl syntax


def quote(s: str) -> str:
    """A string as xl (and Python) read it: double quotes, backslash escapes for \\ and \"."""
    if any(ord(c) < 32 for c in s):
        raise ValueError(f"{s!r}: control characters cannot be written into an xl config")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def value_text(v: Value, indent: int = 0) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v) if v >= 0 else quote(str(v))   # xl's lexer has no minus sign; get_long reads "-1"
    if isinstance(v, str):
        return quote(v)
    if not v:
        return "[ ]"
    items = [value_text(x, indent + 4) for x in v]
    if len(items) == 1 and len(items[0]) < 90:
        return f"[ {items[0]} ]"
    pad = " " * (indent + 4)
    return "[\n" + "".join(f"{pad}{i},\n" for i in items) + " " * indent + "]"


def render(settings: list[Setting], header: Iterable[str] = ()) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    width = max((len(s.key) for s in settings), default=0)
    lines += [f"{s.key.ljust(width)} = {value_text(s.value)}" for s in settings]
    return "\n".join(lines) + "\n"


def _expected(v: Value) -> Any:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return [_expected(x) for x in v]
    return v


def verify(text: str, settings: list[Setting]) -> list[Finding]:
    """Read the text back with xl's parser: every setting must come back as written."""
    try:
        got = xl.parse(text)
    except xl.XlParseError as e:
        return [Finding(e.line or 0, "error", f"xl's parser refuses the result: {e.xen_message}")]
    out = []
    for s in settings:
        want = _expected(s.value)
        if got.get(s.key) != want:
            out.append(Finding(s.line, "error", f"{s.key}: xl reads back {got.get(s.key)!r}, not {want!r}"))
        elif isinstance(s.value, int) and not isinstance(s.value, bool) and s.value >= 0 \
                and got.longs.get(s.key) != s.value:
            out.append(Finding(s.line, "error", f"{s.key}: xl does not read {s.value} as a number"))
    return out


def convert_text(text: str, source: str = "config", disk_map: Iterable[tuple[str, str]] = (),
                 bridge_map: Iterable[tuple[str, str]] = ()) -> Conversion:
    """The whole move: read (never run) the xm config, convert, render, check with xl's parser."""
    settings, findings = convert(read_xm(text, source), disk_map, bridge_map)
    if any(f.level == "error" for f in findings):
        return Conversion(settings, findings, None)
    base = "".join(c if c.isprintable() else "?" for c in posixpath.basename(source))
    out = render(settings, [f"converted from {base} (xm, Xen 3) by imgbuild "
                            "(migrate convert-xen): xl syntax, Xen 4"])
    if not xl.available():
        findings.append(Finding(0, "warning", f"not checked with xl's parser: {xl.why_unavailable()}"))
        return Conversion(settings, findings, out)
    problems = verify(out, settings)
    if problems:
        return Conversion(settings, findings + problems, None)
    return Conversion(settings, findings, out, checked=True)

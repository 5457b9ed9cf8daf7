"""Reading a Xen 3 (xm) domain config without running it: the settings it makes, and findings for the rest.

An xm config is a Python script that xend ran; xl reads only `KEY = VALUE` lines. This module never runs the
old file: it parses it with `ast`, takes assignments of literals (and of simple arithmetic or `%` formatting on
values assigned earlier in the file, with a warning), and reports everything else line by line: a warning for
what can be dropped (imports, calls, xend's managed-domain settings ...), an error for what xl cannot take or
what cannot be known without running Python (a value set inside an `if`, a `w!` disk ...).

A name whose value only running Python could give (the `arch_libdir` Xen 3's xmexample.hvm sets inside an `if`
on os.uname(), a `vmid` given on xm create's command line through xm_vars) is unknown, never guessed: nothing
from the file is run or called. A setting computed from an unknown value is reported as an error and kept in
XmConfig.unresolved with that error, so the conversion (xmtoxl) can drop it with a note instead when xl takes
no such setting whatever its value (xend's device_model, the kernel ip= keys ...): only a setting xl keeps
fails the file.

The old file is outside input (it may come from a guest host being moved): read_xm() returns settings and
findings, or raises InputError (exit 2) naming the line for a file no xm config looks like: larger than
MAX_BYTES, expressions nested deeper than MAX_DEPTH, more than MAX_UNREADABLE lines Python cannot read, or text
that is not UTF-8. Values are bounded too: numbers to 64 bits, computed strings and lists to MAX_BYTES.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Union

from builder.core.errors import InputError

Value = Union[str, int, list["Value"]]

MAX_BYTES = 256 << 10      # an xm config is a few KB; a computed value may not grow past this either
MAX_DEPTH = 50             # expression nesting (real configs nest 3 to 5 deep)
MAX_UNREADABLE = 20        # lines Python cannot read before the file is refused as not an xm config
MAX_INT = 1 << 64          # xl reads numbers as C longs
MAX_FORMAT_WIDTH = 1000    # a width or precision in a % format (`%08x` is 8)
Level = Literal["note", "warning", "error"]

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
# xm keys the conversion moves, renames or drops
XM_KEYS = {"restart", "cpu_cap", "bootargs", "vcpu_avail", "features", "cpu", "security", "blkif", "netif",
           "tpmif"}


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


@dataclass(frozen=True)
class Unknown:
    """The value of a name that only running the file's Python could give: why (for messages: "`NAME` is
    {why}"), the cause itself when the name was computed from something unknown (`arch_libdir` is set inside an
    if ...), and the literal the value ends with when the expression ends in one (`'/usr/' + arch_libdir +
    '/xen/bin/qemu-dm'` ends with '/xen/bin/qemu-dm': its file name is known even though its directory is not)."""

    why: str
    cause: str | None = None
    ends_with: str | None = None

    def file_name(self) -> str | None:
        """The last path component the value certainly has, or None."""
        if not self.ends_with or "/" not in self.ends_with:
            return None
        return self.ends_with.rsplit("/", 1)[1] or None


@dataclass
class Unresolved:
    """A setting whose value is Unknown, and the errors read_xm reported for it (each line that left it unknown;
    the conversion withdraws them when xl drops the setting whatever its value)."""

    key: str
    line: int
    value: Unknown
    findings: tuple[Finding, ...]


@dataclass
class XmConfig:
    """What the old file assigns (last assignment wins, first position kept) and what was left behind."""

    settings: dict[str, Setting] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    unknown: set[str] = field(default_factory=set)     # names only Python could give a value (reported)
    unresolved: dict[str, Unresolved] = field(default_factory=dict)   # settings among them, with their error
    referenced: set[str] = field(default_factory=set)  # names the script reads (helper variables)

    def get(self, key: str, default=None):
        s = self.settings.get(key)
        return s.value if s else default



# ------------------------------------------------------------------ reading the Python file


class _NotConstant(Exception):
    pass


WHY_LIMIT = 160            # characters of a reason carried into another name's reason (chains stay bounded)


def _short(text: str, limit: int = WHY_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
        if node.id not in env:
            raise _NotConstant(f"`{node.id}` has no value this file gives")
        if isinstance(env[node.id], Unknown):
            raise _NotConstant(f"`{node.id}` is {env[node.id].why}")
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
        num = lambda x: isinstance(x, int) and not isinstance(x, bool)
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


def _ends_with(node: ast.AST) -> str | None:
    """The string literal a `+` expression ends with (`'/usr/' + libdir + '/xen/bin/qemu-dm'`), or None."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.Constant) \
            and isinstance(node.right.value, str):
        return node.right.value
    return None


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
    reader = _Reader(cfg, text.split("\n"))
    for stmt in tree.body:
        reader.statement(stmt)
    # Python counts a lone CR as a line end too; findings name the file's lines
    at = lambda n: numbers[n - 1] if 0 < n <= len(numbers) else n
    moved = {id(f): Finding(at(f.line), f.level, f.message) for f in cfg.findings}
    cfg.findings = [moved[id(f)] for f in cfg.findings]
    for setting in cfg.settings.values():
        setting.line = at(setting.line)
    for u in cfg.unresolved.values():
        u.line, u.findings = at(u.line), tuple(moved[id(f)] for f in u.findings)
    return cfg


_BLOCKS = {ast.If: "an if", ast.For: "a for loop", ast.While: "a while loop", ast.Try: "a try block",
           ast.With: "a with block", ast.FunctionDef: "a function", ast.ClassDef: "a class"}


class _Reader:
    """One pass over the module's statements: the values assigned so far (env) and what they make of cfg."""

    def __init__(self, cfg: XmConfig, src: list[str]):
        self.cfg, self.src = cfg, src
        self.env: dict[str, Any] = {}

    def store(self, name: str, value: Any, line: int) -> None:
        self.env[name] = value
        self.cfg.unresolved.pop(name, None)
        settings = self.cfg.settings
        if name in settings:
            settings[name].value, settings[name].line = value, line
        else:
            settings[name] = Setting(name, value, line)

    def forget(self, name: str, value: Unknown, line: int, finding: Finding | None = None) -> None:
        """`name` has a value only Python could give; a setting among them is unresolved, with its error."""
        self.env[name] = value
        self.cfg.unknown.add(name)
        self.cfg.settings.pop(name, None)
        if finding is not None and is_setting(name):
            before = self.cfg.unresolved.get(name)
            self.cfg.unresolved[name] = Unresolved(name, line, value, (before.findings if before else ()) + (finding,))
        else:
            self.cfg.unresolved.pop(name, None)

    def find(self, line: int, level: Level, message: str) -> Finding:
        finding = Finding(line, level, message)
        self.cfg.findings.append(finding)
        return finding

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            self.assignment(stmt)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            self.find(stmt.lineno, "warning", f"{_unparse(stmt)}: dropped (xl configs run no Python)")
        elif isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                return   # a docstring
            if not self.xm_var(stmt):
                self.find(stmt.lineno, "warning", f"{_unparse(stmt)}: dropped (xl configs run no Python)")
        elif not isinstance(stmt, ast.Pass):
            self.block(stmt)

    def xm_var(self, stmt: ast.Expr) -> bool:
        """`xm_vars.var('vmid', ...)` (Xen's xmexample2): a variable given on xm create's command line
        (`xm create FILE vmid=3`). Its value is unknown unless the file gives one before."""
        call, line = stmt.value, stmt.lineno
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "var"
                and isinstance(call.func.value, ast.Name) and call.func.value.id == "xm_vars" and call.args
                and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
                and call.args[0].value.isidentifier()):
            return False
        name = call.args[0].value
        if name in self.env and not isinstance(self.env[name], Unknown):
            self.find(line, "warning", f"{_unparse(stmt)}: xm create's command-line variable {name}, dropped (this "
                                       f"file gives it the value {show_value(self.env[name])})")
            return True
        value = Unknown(f"given on xm create's command line (xm_vars.var on line {line})")
        if is_setting(name):
            finding = self.find(line, "error", f"{_unparse(stmt)}: {name} is given on xm create's command line; "
                                               "xl has no command-line variables: write its value")
        else:
            finding = None
            self.find(line, "warning", f"{_unparse(stmt)}: xm create's command-line variable {name}, dropped; a "
                                       f"setting xl keeps cannot be computed from it: write `{name} = VALUE` (the "
                                       "value the guest was created with) before this line")
        self.forget(name, value, line, finding)
        return True

    def assignment(self, stmt: ast.Assign | ast.AnnAssign | ast.AugAssign) -> None:
        line = stmt.lineno
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if stmt.value is None:
            return
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if len(names) != len(targets):
            finding = self.find(line, "error", f"{_unparse(stmt)}: only NAME = VALUE can be converted")
            for n in _assigned_names([stmt]):
                self.forget(n, Unknown(f"changed on line {line} in a way only Python can follow"), line, finding)
            return
        node = stmt.value
        if isinstance(stmt, ast.AugAssign):
            node = ast.BinOp(left=ast.Name(id=names[0], ctx=ast.Load()), op=stmt.op, right=stmt.value)
        try:
            value, computed = _evaluate(node, self.env)
        except _NotConstant as e:
            finding = None
            if any(is_setting(n) for n in names):
                finding = self.find(line, "error", f"{_unparse(stmt)}: needs Python to compute ({e}); xl takes no "
                                                   "expressions: write the value itself")
            else:
                self.find(line, "warning", f"{_unparse(stmt)}: a helper variable needing Python ({e}): dropped; "
                                           "a setting xl keeps cannot be computed from it")
            cause = _short(str(e))
            unknown = Unknown(f"computed by Python on line {line} ({cause})", cause, _ends_with(node))
            for n in names:
                self.forget(n, unknown, line, finding)
            return
        if computed or isinstance(stmt, ast.AugAssign):
            self.find(line, "warning", f"{_unparse(stmt)}: computed as {show_value(value)} (xl takes no "
                                       "expressions)")
        for n in names:
            self.store(n, value, line)

    def block(self, stmt: ast.stmt) -> None:
        """An if, a loop, a function ...: what it sets cannot be known without running it (xmexample.hvm's
        `if os.uname()[0] == 'Linux' and re.search('64', arch): arch_libdir = 'lib64'`): every name it
        assigns is unknown from here on."""
        line = stmt.lineno
        kind = _BLOCKS.get(type(stmt), f"a {type(stmt).__name__} statement")
        first = self.src[line - 1].strip() if 0 < line <= len(self.src) else ""
        names = _assigned_names([stmt]) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) else []
        settings = [n for n in names if is_setting(n)]
        finding = None
        if settings:
            finding = self.find(line, "error", f"{first!r}: {kind} sets {', '.join(settings)} depending on Python at "
                                               "run time; xl has no conditionals or loops: write the values this "
                                               "guest needs")
        elif names:
            self.find(line, "warning", f"{first!r}: {kind} setting helper variables ({', '.join(names)}), dropped; "
                                       "their value is unknown: a setting xl keeps cannot be computed from them")
        if names:
            unknown = Unknown(f"set inside {kind} on line {line}, which only running Python decides")
            for n in names:
                self.forget(n, unknown, line, finding)
        else:
            self.find(line, "warning", f"{first!r}: {kind}, dropped (xl configs run no Python)")


def is_setting(name: str) -> bool:
    """A key xl or xm reads (not a helper variable of the script)."""
    return name in XL_KEYS or name in XM_KEYS or name in XEND_ONLY or name in XM_KERNEL_IP


def show_value(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else f'"{v}"'
    return s if len(s) <= 80 else s[:77] + "..."


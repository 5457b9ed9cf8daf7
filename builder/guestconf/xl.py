"""Xen's own config parser, through ctypes: libxlutil (the library `xl` reads domain configs with) and
libxenlight (for the disk structure `xlu_disk_parse` fills in). No hypervisor is needed.

    cfg = xl.parse(text)               # XlParseError (Xen's message, line) on a syntax error
    cfg["memory"], cfg.long("memory"), cfg.strings("disk")
    xl.check_disk("format=raw, vdev=xvda, access=rw, target=/x.img")   # None, or Xen's message

`available()` says whether the libraries load (xen-utils-4.17); without them nothing here works and callers
skip the check, saying so.

The C code does not survive every input, and when it fails it takes the whole process with it: a NUL inside a
quoted string fails an assertion in xlu__cfgl_dequote (abort), and a control character in a disk spec jams the
disk lexer (flex exits with status 2). Both are refused here before the library sees them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Union

from builder.core.errors import BuilderError

XLUTIL = ("libxlutil.so.4.17", "libxlutil.so")
XENLIGHT = ("libxenlight.so.4.17", "libxenlight.so")
# sizeof(libxl_device_disk) is about 200 bytes on 4.17; the buffer is far larger so a newer layout fits too
DISK_BUFFER = 16384

XLU_STRING, XLU_LIST = 0, 1

Value = Union[str, list["Value"]]


class XlUnavailable(BuilderError):
    def __init__(self, why: str):
        super().__init__(f"Xen's config parser is not available: {why}",
                         "install it: apt-get install xen-utils-4.17")


class XlParseError(BuilderError):
    """xl's parser rejected a config: Xen's own message, and the line it names (None if it names none)."""

    def __init__(self, message: str, line: int | None, status: int):
        super().__init__(f"xl's parser rejects the config: {message}",
                         "xl takes KEY = VALUE lines only: strings in quotes, numbers, [lists]; no Python")
        self.xen_message = message
        self.line = line
        self.status = status


@dataclass
class _Libs:
    xlu: ctypes.CDLL
    xl: ctypes.CDLL
    libc: ctypes.CDLL


def _load(names: tuple[str, ...]) -> ctypes.CDLL:
    last: OSError | None = None
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError as e:
            last = e
    raise OSError(str(last))


@functools.cache
def _libs() -> _Libs:
    try:
        xl = _load(XENLIGHT)
        xlu = _load(XLUTIL)
    except OSError as e:
        raise XlUnavailable(str(e)) from None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
    libc.open_memstream.restype = vp
    libc.fclose.argtypes = [vp]
    libc.fflush.argtypes = [vp]
    libc.free.argtypes = [vp]
    sigs = {
        "xlu_cfg_init": ([vp, cp], vp),
        "xlu_cfg_readdata": ([vp, cp, ci], ci),
        "xlu_cfg_destroy": ([vp], None),
        "xlu_cfg_get_string": ([vp, cp, ctypes.POINTER(cp), ci], ci),
        "xlu_cfg_get_long": ([vp, cp, ctypes.POINTER(ctypes.c_long), ci], ci),
        "xlu_cfg_get_list": ([vp, cp, ctypes.POINTER(vp), ctypes.POINTER(ci), ci], ci),
        "xlu_cfg_get_listitem2": ([vp, ci], vp),
        "xlu_cfg_value_type": ([vp], ci),
        "xlu_cfg_value_get_string": ([vp, vp, ctypes.POINTER(cp), ci], ci),
        "xlu_cfg_value_get_list": ([vp, vp, ctypes.POINTER(vp), ci], ci),
        "xlu_disk_parse": ([vp, ci, ctypes.POINTER(cp), vp], ci),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(xlu, name)
        fn.argtypes, fn.restype = args, res
    xl.libxl_device_disk_init.argtypes = [vp]
    xl.libxl_device_disk_init.restype = None
    xl.libxl_device_disk_dispose.argtypes = [vp]
    xl.libxl_device_disk_dispose.restype = None
    return _Libs(xlu, xl, libc)


def available() -> bool:
    """Whether libxlutil and libxenlight load on this host."""
    try:
        _libs()
        return True
    except XlUnavailable:
        return False


def why_unavailable() -> str | None:
    try:
        _libs()
        return None
    except XlUnavailable as e:
        return e.message


# libxlutil keeps no global state, but one report stream per call keeps messages apart; calls are serialised
# so a message always belongs to the call that printed it.
_lock = threading.Lock()


class _Report:
    """A FILE* in memory (open_memstream) that libxlutil writes its messages to."""

    def __init__(self, libs: _Libs):
        self.libs = libs
        self.buf = ctypes.c_void_p()
        self.size = ctypes.c_size_t()
        self.fp = libs.libc.open_memstream(ctypes.byref(self.buf), ctypes.byref(self.size))
        if not self.fp:
            raise OSError(ctypes.get_errno(), "open_memstream failed")
        self.text = ""

    def close(self) -> str:
        if self.fp:
            self.libs.libc.fclose(self.fp)
            self.fp = None
            if self.buf.value:
                self.text = ctypes.string_at(self.buf.value, self.size.value).decode("utf-8", "replace")
                self.libs.libc.free(self.buf)
        return self.text


_KEY = re.compile(r"(?:^|;)\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", re.M)
_LINE = re.compile(r"^[^:\n]*:(\d+)(?:\.\d+)?(?:-\d+(?:\.\d+)?)?:")


def _bytes(text: str) -> bytes:
    """Text as the bytes it came from (surrogateescape), or with any other lone surrogate passed through as
    the invalid UTF-8 it is: xl's parser gets bytes and never a Python exception."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _line_of(message: str) -> int | None:
    m = _LINE.match(message)
    return int(m.group(1)) if m else None


@dataclass
class XlConfig:
    """A config as xl's parser read it. values: key -> str or (nested) list of str, in file order.

    libxlutil stores numbers as their text; long() reads one the way xl reads memory= or vcpus=.
    """

    values: dict[str, Value] = field(default_factory=dict)
    longs: dict[str, int] = field(default_factory=dict)
    report: str = ""      # anything the parser printed (warnings)

    def __getitem__(self, key: str) -> Value:
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def long(self, key: str) -> int:
        """The value as xl's xlu_cfg_get_long reads it (KeyError if it is not a number)."""
        return self.longs[key]

    def string(self, key: str) -> str:
        v = self.values[key]
        if not isinstance(v, str):
            raise TypeError(f"{key} is a list, not a string")
        return v

    def strings(self, key: str) -> list[str]:
        """A list of strings (disk, vif ...); [] if the key is absent."""
        v = self.values.get(key, [])
        if isinstance(v, str):
            raise TypeError(f"{key} is a string, not a list")
        return [x if isinstance(x, str) else repr(x) for x in v]


def _value(libs: _Libs, cfg, val) -> Value:
    xlu = libs.xlu
    if xlu.xlu_cfg_value_type(val) == XLU_STRING:
        s = ctypes.c_char_p()
        xlu.xlu_cfg_value_get_string(cfg, val, ctypes.byref(s), 1)
        return (s.value or b"").decode("utf-8", "surrogateescape")
    lst = ctypes.c_void_p()
    xlu.xlu_cfg_value_get_list(cfg, val, ctypes.byref(lst), 1)
    out: list[Value] = []
    i = 0
    while True:
        item = xlu.xlu_cfg_get_listitem2(lst, i)
        if not item:
            return out
        out.append(_value(libs, cfg, item))
        i += 1


def _read(libs: _Libs, cfg, key: str) -> tuple[Value | None, int | None]:
    xlu = libs.xlu
    k = key.encode()
    s = ctypes.c_char_p()
    rc = xlu.xlu_cfg_get_string(cfg, k, ctypes.byref(s), 1)
    if rc == errno.ESRCH:
        return None, None
    if rc == 0:
        text = (s.value or b"").decode("utf-8", "surrogateescape")
        n = ctypes.c_long()
        num = n.value if xlu.xlu_cfg_get_long(cfg, k, ctypes.byref(n), 1) == 0 else None
        return text, num
    lst, count = ctypes.c_void_p(), ctypes.c_int()
    if xlu.xlu_cfg_get_list(cfg, k, ctypes.byref(lst), ctypes.byref(count), 1) != 0:
        return None, None
    out: list[Value] = []
    for i in range(count.value):
        out.append(_value(libs, cfg, xlu.xlu_cfg_get_listitem2(lst, i)))
    return out, None


def parse(text: str, name: str = "config") -> XlConfig:
    """Read a config with xl's parser. Raises XlParseError with Xen's message (and its line) if xl would
    refuse the file, XlUnavailable if the library is not installed."""
    libs = _libs()
    data = _bytes(text)
    if b"\0" in data:                 # libxlutil aborts the process on it (an assertion in its dequoting)
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise XlParseError(f"{name}:{line}: a NUL byte", line, errno.EINVAL)
    with _lock:
        rep = _Report(libs)
        cfg = libs.xlu.xlu_cfg_init(rep.fp, name.encode())
        if not cfg:
            rep.close()
            raise BuilderError("xlu_cfg_init failed (out of memory?)")
        try:
            rc = libs.xlu.xlu_cfg_readdata(cfg, data, len(data))
            if rc != 0:
                libs.libc.fflush(rep.fp)
                msg = rep.close().strip() or os.strerror(rc)
                raise XlParseError(msg, _line_of(msg), rc)
            out = XlConfig()
            for key in dict.fromkeys(_KEY.findall(text)):
                v, n = _read(libs, cfg, key)
                if v is not None:
                    out.values[key] = v
                    if n is not None:
                        out.longs[key] = n
        finally:
            libs.xlu.xlu_cfg_destroy(cfg)
            rep.close()
        out.report = rep.text
        return out


def check_disk(spec: str) -> str | None:
    """None if xl's disk parser (xlu_disk_parse) accepts the spec, else its message."""
    libs = _libs()
    bad = next((c for c in spec if ord(c) < 32 or c == "\x7f"), None)
    if bad is not None:               # xl's disk lexer jams on some of them and exits the process
        return f"a control character ({bad!r}) in the disk spec"
    with _lock:
        rep = _Report(libs)
        cfg = libs.xlu.xlu_cfg_init(rep.fp, b"disk")
        disk = ctypes.create_string_buffer(DISK_BUFFER)
        libs.xl.libxl_device_disk_init(disk)
        try:
            specs = (ctypes.c_char_p * 1)(_bytes(spec))
            rc = libs.xlu.xlu_disk_parse(cfg, 1, specs, disk)
        finally:
            libs.xl.libxl_device_disk_dispose(disk)
            libs.xlu.xlu_cfg_destroy(cfg)
            text = rep.close().strip()
    if rc == 0:
        return None
    return text or f"rejected ({os.strerror(rc)})"

"""`imgbuild boot --console DIR`: the serial console of a VM `imgbuild boot --keep` left running (qemu's console
socket in the kept work directory), on this terminal. On a terminal it is raw (keys go to the guest as typed) and
Ctrl-] leaves; with stdin from a pipe or file, what it holds is sent and the guest's answer read until it is quiet
for 2 s (10 s at most).
"""
from __future__ import annotations

import os
import select
import socket
import stat
import sys
import termios
import time
import tty
from pathlib import Path

from builder.boot.qemu import CONSOLE
from builder.boot.sandbox import read_state
from builder.core.errors import InputError

ESCAPE = b"\x1d"           # Ctrl-]
DRAIN = 2.0                # after a piped stdin ends: read the guest's answer until it is quiet this long,
MAX_DRAIN = 10.0           # but no longer than this


def attach(workdir: Path, stdin=None, stdout=None) -> None:
    st = read_state(workdir)
    if st.runtime != "qemu":
        raise InputError(f"{workdir}: a {st.runtime} container has no serial console to attach to",
                         "use the `reach it:` command `imgbuild boot --keep` printed (a shell inside it)")
    sock_path = Path(workdir) / CONSOLE
    try:
        is_sock = stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    except OSError:
        is_sock = False
    if not is_sock:
        raise InputError(f"{sock_path}: no console socket (has the VM stopped?)", f"imgbuild boot --stop {workdir}")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    os.chdir(workdir)                   # a relative name: the socket's full path may be longer than AF_UNIX takes
    try:
        s.connect(CONSOLE)
    except OSError as e:
        raise InputError(f"{sock_path}: the VM's console does not answer ({e.strerror})",
                         f"imgbuild boot --stop {workdir}") from None
    finally:
        os.chdir(here)
    _relay(s, (stdin or sys.stdin).fileno(), (stdout or sys.stdout).fileno())


def _relay(s: socket.socket, fin: int, fout: int) -> None:
    raw = os.isatty(fin)
    saved = termios.tcgetattr(fin) if raw else None
    if raw:
        os.write(2, b"connected to the serial console; Ctrl-] leaves it\r\n")
        tty.setraw(fin)
    until = None                        # when a piped stdin has ended: read the answer until then
    ended = 0.0
    try:
        while until is None or time.monotonic() < until:
            watch = [s] if until is not None else [s, fin]
            ready, _, _ = select.select(watch, [], [], 0.2)
            if s in ready:
                data = s.recv(65536)
                if not data:
                    break               # the VM ended
                os.write(fout, data)
                if until is not None:   # a piped stdin has ended: read on while the guest still answers
                    until = min(max(until, time.monotonic() + DRAIN), ended + MAX_DRAIN)
            if fin in ready:
                data = os.read(fin, 4096)
                if raw and ESCAPE in data:
                    data = data[:data.index(ESCAPE)]
                    if data:
                        s.sendall(data)
                    break
                if not data:
                    ended = time.monotonic()
                    until = ended + DRAIN
                else:
                    s.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fin, termios.TCSADRAIN, saved)
            os.write(2, b"\r\n")
        s.close()

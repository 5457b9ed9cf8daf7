"""The only place that starts subprocesses.

Every command is logged as `+ argv` (secrets shown as ***) and its output is streamed to the log, both at debug
level (`-v` shows them); output that the caller reads and reports itself (rsync's list of every file) goes one
level lower, TRACE (`-vv`). The last lines are kept, so a failure can say what went wrong without the user
re-running anything.

Interrupts (Ctrl-C, SIGTERM, SIGHUP): the console scripts install `install_signal_handlers()`, whatever
disposition they inherited (a job started in the background by a shell inherits SIGINT ignored, and Python then
keeps it ignored). Every child runs in its own process group, registered here while it runs. The first signal
marks the process interrupted, sends SIGTERM to the group of every child started before it and raises
KeyboardInterrupt; a child that ends while an interrupt is marked ends its run() with KeyboardInterrupt whatever
its exit status (a hook killed by us is not "a failing hook"), and `check_interrupt()` between phases stops
a build that an interrupt reached while no child ran. Code that must finish (unmounting, removing a work
directory) runs in `with cleanup():` - a signal there is held until the block ends, and the children it starts
are never killed by one. Later signals do not raise again (the cleanup must complete); they SIGKILL children
started before the first one.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from shutil import which as _which
from typing import IO, Callable, Iterable, Iterator, Sequence

from builder.core.errors import CommandError, ToolMissing

log = logging.getLogger("imgbuild")
TRACE = 5               # below DEBUG: every line of output the caller summarises itself (-vv)
logging.addLevelName(TRACE, "TRACE")

TAIL_LINES = 25

# program -> Debian package, for the "command not found" hint
PACKAGES = {
    "debootstrap": "debootstrap", "mmdebstrap": "mmdebstrap", "lxc-start": "lxc", "lxc-attach": "lxc",
    "lxc-stop": "lxc", "lxc-ls": "lxc", "systemd-nspawn": "systemd-container", "rpm": "rpm", "dnf": "dnf",
    "createrepo_c": "createrepo-c", "rsync": "rsync", "ssh": "openssh-client", "ssh-keyscan": "openssh-client",
    "ssh-keygen": "openssh-client", "sshd": "openssh-server",
    "zstd": "zstd", "xz": "xz-utils", "pigz": "pigz", "gzip": "gzip", "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs", "openssl": "openssl", "chroot": "coreutils",
    "mount": "mount", "umount": "mount", "tar": "tar", "gpgv": "gpgv", "qemu-system-x86_64": "qemu-system-x86",
    "ip": "iproute2", "unshare": "util-linux", "setfacl": "acl", "getfattr": "attr", "sfdisk": "fdisk",
    "mkfs.fat": "dosfstools", "mcopy": "mtools", "qemu-img": "qemu-utils",
    "virt-xml-validate": "libvirt-clients", "xmllint": "libxml2-utils", "ansible-inventory": "ansible-core",
    "tar2sqfs": "squashfs-tools-ng", "sqfs2tar": "squashfs-tools-ng", "unsquashfs": "squashfs-tools",
    "gpg": "gnupg", "lxd": "lxd",
    "xorriso": "xorriso",
}


class Secret:
    """A string that is passed to a program but never printed: repr/str give ***."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


Arg = str | os.PathLike | Secret


def _real(argv: Sequence[Arg]) -> list[str]:
    return [a.reveal() if isinstance(a, Secret) else os.fspath(a) for a in argv]


def show(argv: Sequence[Arg]) -> str:
    """The command as it is logged: shell-quoted, secrets masked."""
    return " ".join("***" if isinstance(a, Secret) else shlex.quote(os.fspath(a)) for a in argv)


@dataclass
class Result:
    returncode: int
    stdout: str
    tail: list[str]


# ------------------------------------------------------------------------------------------------ interrupts

_SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class _State:
    interrupts = 0        # signals received
    hold = 0              # > 0: a child is being started or stopped: the handler does not raise
    cleaning = 0          # > 0: in cleanup(): the handler does not raise, new children are not killable
    pending = False       # a signal came while held: raise when it is safe


_S = _State()


@dataclass
class _Child:
    proc: subprocess.Popen
    killable: bool        # started before any interrupt, outside cleanup(): an interrupt stops it


_children: dict[int, _Child] = {}


def _on_signal(signum: int, frame) -> None:
    _S.interrupts += 1
    first = _S.interrupts == 1
    for c in list(_children.values()):
        if c.killable:
            _kill_group(c.proc.pid, signal.SIGTERM if first else signal.SIGKILL)
    if not first:
        log.warning("%s again: still cleaning up (mounts, work directory); the children are killed",
                    _SIGNALS.get(signum, signum))
        return
    if _S.hold or _S.cleaning:
        _S.pending = True
        return
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM (and SIGHUP unless ignored, as under nohup) stop the command as Ctrl-C does."""
    signal.signal(signal.SIGINT, _on_signal)       # also when inherited as ignored
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _on_signal)


def interrupted() -> bool:
    """An interrupt signal has arrived (the command is stopping)."""
    return _S.interrupts > 0


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived (between phases; a no-op inside cleanup())."""
    if _S.interrupts and not _S.cleaning and not _S.hold:
        _S.pending = False
        raise KeyboardInterrupt


def _raise_pending() -> None:
    if _S.pending and not _S.hold and not _S.cleaning:
        _S.pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def _held() -> Iterator[None]:
    _S.hold += 1
    try:
        yield
    finally:
        _S.hold -= 1


@contextlib.contextmanager
def cleanup() -> Iterator[None]:
    """Code that must run to its end (unmount, remove a work directory): an interrupt signal during it is held
    and raised when it ends (unless another exception is on its way already), and its children are not killed."""
    _S.cleaning += 1
    try:
        yield
    finally:
        _S.cleaning -= 1
    if sys.exc_info()[0] is None:
        _raise_pending()


def _register(proc: subprocess.Popen) -> _Child:
    c = _Child(proc, killable=not _S.cleaning and not _S.interrupts)
    _children[proc.pid] = c
    return c


def _unregister(c: _Child) -> None:
    _children.pop(c.proc.pid, None)


def _was_interrupted(c: _Child) -> bool:
    """An interrupt arrived while this child ran: it was (or is being) stopped for it."""
    return c.killable and _S.interrupts > 0


def run(
    argv: Sequence[Arg],
    *,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    input: str | bytes | Secret | None = None,
    capture: bool = False,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    hint: str | None = None,
    trace_output: bool = False,
    reap_group: bool = False,
    split_cr: bool = False,
    max_output: int | None = None,
) -> Result:
    """Run argv, stream its output to the log, raise CommandError on failure.

    capture=True returns stdout (stderr still goes to the log and the tail). on_line gets every output line
    (e.g. to turn a tool's progress into ours). input is fed on stdin (a Secret stays out of the log).
    reap_group=True kills whatever the command left running in its process group (chroot hooks).
    split_cr=True also ends a line at a carriage return (progress meters redraw one line with \\r).
    max_output bounds what is read from a command whose output is not ours (a remote host's answer): past that
    many bytes of stdout the command is killed and CommandError says so. Lines are read at most 64 KiB at a time.
    """
    shown = show(argv)
    log.debug("+ %s", shown)
    proc, child = _start(argv, cwd, env, input is not None, capture)
    reader = _Reader(proc, on_line, split_cr, max_output, TRACE if trace_output else logging.DEBUG)
    threads = [threading.Thread(target=reader.pump, args=(proc.stderr, False), daemon=True)] if capture else []
    try:
        _raise_pending()
        for t in threads:
            t.start()
        if input is not None:
            _feed(proc, input)
        reader.pump(proc.stdout, capture)
        rc = proc.wait()
        for t in threads:
            t.join()
        if reap_group:
            _kill_group(proc.pid, signal.SIGKILL)
    except BaseException:
        _stop(proc)
        raise
    finally:
        _unregister(child)
    if _was_interrupted(child):
        raise KeyboardInterrupt      # stopped for the interrupt, whatever its exit status says
    stdout = b"".join(reader.out).decode("utf-8", "replace")
    if reader.over:
        raise CommandError(shown, rc, [f"more than {max_output} bytes of output: stopped reading"], hint)
    if rc != 0 and check:
        if rc == 127 and not reader.tail:
            prog = os.path.basename(os.fspath(argv[0]))
            raise ToolMissing(prog, PACKAGES.get(prog))
        raise CommandError(shown, rc, list(reader.tail) or stdout.splitlines()[-TAIL_LINES:], hint)
    return Result(rc, stdout, list(reader.tail))


def _start(argv: Sequence[Arg], cwd: str | Path | None, env: dict[str, str] | None, stdin: bool,
           capture: bool) -> tuple[subprocess.Popen, _Child]:
    """The child, started in a process group of its own and registered (so an interrupt stops it with us)."""
    with _held():    # a signal now is raised only once the child is registered (and so stopped with us)
        try:
            # Own process group: Ctrl-C reaches only us, and we stop the child with all of its children.
            proc = subprocess.Popen(
                _real(argv), cwd=cwd, env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture else subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            prog = os.path.basename(os.fspath(argv[0]))
            raise ToolMissing(prog, PACKAGES.get(prog)) from None
        return proc, _register(proc)


def _feed(proc: subprocess.Popen, input: str | bytes | Secret) -> None:
    data = input.reveal() if isinstance(input, Secret) else input
    try:
        proc.stdin.write(data.encode() if isinstance(data, str) else data)
        proc.stdin.close()
    except BrokenPipeError:
        pass


class _Reader:
    """A child's output: lines to the log, the tail and on_line; or (kept) stdout's bytes, at most max_output."""

    def __init__(self, proc: subprocess.Popen, on_line: Callable[[str], None] | None, split_cr: bool,
                 max_output: int | None, level: int = logging.DEBUG) -> None:
        self.proc, self.on_line, self.split_cr, self.max_output = proc, on_line, split_cr, max_output
        self.level = level
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.out: list[bytes] = []
        self.kept = 0               # bytes of stdout kept so far
        self.over = False           # max_output was passed: the command was killed

    def pump(self, stream: IO[bytes], keep: bool) -> None:
        lines = _cr_lines(stream) if self.split_cr and not keep else iter(lambda: stream.readline(1 << 16), b"")
        for raw in lines:
            if keep:
                self.out.append(raw)
                self.kept += len(raw)
                if self.max_output is not None and self.kept > self.max_output:
                    self.over = True
                    _kill_group(self.proc.pid, signal.SIGKILL)
                    break
                continue
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            log.log(self.level, "  %s", line)
            if self.on_line:
                self.on_line(line)


def _cr_lines(stream: IO[bytes]) -> Iterable[bytes]:
    """Lines ended by \\n or \\r, as they arrive."""
    buf = b""
    while chunk := stream.read1(65536):
        buf += chunk
        *done, buf = re.split(rb"[\r\n]", buf)
        yield from (d for d in done if d)
    if buf:
        yield buf


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    """Stop a child we started and everything it started (Ctrl-C, error): TERM, then KILL, always reaped.
    A signal meanwhile does not cut this short (it is raised afterwards, or the exception on its way wins)."""
    with _held():
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()
    if sys.exc_info()[0] is None:
        _raise_pending()


def start(argv: Sequence[Arg], output: Path | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """A long-lived helper process (an ssh control master, a booted machine): stdout discarded and stderr kept for
    its error, or both into the file `output`; its own process group; run in `cwd` if given. End it with stop()."""
    log.debug("+ %s &", show(argv))
    with _held():
        try:
            out = open(output, "ab") if output is not None else None
            try:
                proc = subprocess.Popen(_real(argv), stdin=subprocess.DEVNULL, cwd=cwd,
                                        stdout=out if out else subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT if out else subprocess.PIPE, start_new_session=True)
            finally:
                if out:
                    out.close()
        except FileNotFoundError:
            prog = os.path.basename(os.fspath(argv[0]))
            raise ToolMissing(prog, PACKAGES.get(prog)) from None
        _register(proc)
    try:
        _raise_pending()
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """End a process start() began (TERM, then KILL), and its group."""
    try:
        if proc.poll() is None:
            _stop(proc)
    finally:
        _children.pop(proc.pid, None)


def output(argv: Sequence[Arg], **kw) -> str:
    """stdout of a command that must succeed, stripped."""
    return run(argv, capture=True, **kw).stdout.strip()


def which(program: str) -> str | None:
    return _which(program)


class Pipe:
    """A child process that reads our bytes on stdin and writes to a file: `with Pipe(["zstd", ...], f) as w:`.

    Used for compressors. Raises CommandError if the child fails; stops it on error or Ctrl-C.
    """

    def __init__(self, argv: Sequence[Arg], stdout: IO[bytes]):
        self.argv = argv
        self.stdout = stdout

    def __enter__(self) -> int:
        log.debug("+ %s", show(self.argv))
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wakeups between us and the compressor
        except OSError:
            pass
        with _held():
            try:
                self.proc = subprocess.Popen(_real(self.argv), stdin=r, stdout=self.stdout,
                                             stderr=subprocess.PIPE, start_new_session=True)
            except FileNotFoundError:
                os.close(r)
                os.close(w)
                prog = os.path.basename(os.fspath(self.argv[0]))
                raise ToolMissing(prog, PACKAGES.get(prog)) from None
            os.close(r)
            self.fd = w
            self.child = _register(self.proc)
        try:
            _raise_pending()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return w

    def __exit__(self, et, ev, tb) -> None:
        try:
            try:
                os.close(self.fd)
            except OSError:
                pass
            if et is not None:
                _stop(self.proc)
                if _was_interrupted(self.child) and issubclass(et, OSError):
                    raise KeyboardInterrupt from None   # a write into the compressor we stopped for it
                return
            err = self.proc.stderr.read().decode("utf-8", "replace")
            rc = self.proc.wait()
        except BaseException:
            _stop(self.proc)
            raise
        finally:
            _unregister(self.child)
        if _was_interrupted(self.child):
            raise KeyboardInterrupt
        if rc != 0:
            raise CommandError(show(self.argv), rc, err.splitlines()[-TAIL_LINES:])


def versions(programs: Iterable[str]) -> dict[str, str]:
    """First line of `PROGRAM --version` for each installed program (for the manifest)."""
    found = {}
    with tempfile.TemporaryDirectory(prefix="imgbuild-home-") as home:
        env = dict(os.environ, HOME=home)   # Debian's dnf/rpm create ~/.rpmdb even for --version
        for p in programs:
            if which(p):
                found.update(_version(p, env))
    return found


def _version(p: str, env: dict[str, str]) -> dict[str, str]:
    try:
        r = run([p, "--version"], capture=True, check=False, env=env)
    except CommandError:
        return {}
    text = (r.stdout or "\n".join(r.tail)).strip().splitlines()
    return {p: text[0].strip()} if text else {}

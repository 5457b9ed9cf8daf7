"""The only place that starts subprocesses.

Every command is logged as `+ argv` (secrets shown as ***), its output is streamed to the debug log and the last
lines are kept, so a failure can say what went wrong without the user re-running anything.
"""
from __future__ import annotations

import collections
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence

from .errors import CommandError, ToolMissing

log = logging.getLogger("imgbuild")

TAIL_LINES = 25

# program -> Debian package, for the "command not found" hint
PACKAGES = {
    "debootstrap": "debootstrap", "mmdebstrap": "mmdebstrap", "lxc-start": "lxc", "lxc-attach": "lxc",
    "lxc-stop": "lxc", "lxc-ls": "lxc", "systemd-nspawn": "systemd-container", "rpm": "rpm", "dnf": "dnf",
    "createrepo_c": "createrepo-c", "rsync": "rsync", "ssh": "openssh-client", "sshd": "openssh-server",
    "zstd": "zstd", "xz": "xz-utils", "pigz": "pigz", "gzip": "gzip", "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs", "openssl": "openssl", "chroot": "coreutils",
    "mount": "mount", "umount": "mount", "tar": "tar", "gpgv": "gpgv", "qemu-system-x86_64": "qemu-system-x86",
    "ip": "iproute2", "unshare": "util-linux", "setfacl": "acl", "getfattr": "attr",
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
    quiet: bool = False,
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
    (log.debug if quiet else log.info)("+ %s", shown)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        # Own process group: Ctrl-C reaches only us, and we stop the child with all of its children.
        proc = subprocess.Popen(
            _real(argv), cwd=cwd, env=env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        prog = os.path.basename(os.fspath(argv[0]))
        raise ToolMissing(prog, PACKAGES.get(prog)) from None

    over: list[int] = []       # not empty once max_output was passed
    kept = [0]                 # bytes of stdout kept so far

    def pump(stream: IO[bytes], keep: list[bytes] | None) -> None:
        for raw in (_cr_lines(stream) if split_cr and keep is None else iter(lambda: stream.readline(1 << 16), b"")):
            if keep is not None:
                keep.append(raw)
                kept[0] += len(raw)
                if max_output is not None and kept[0] > max_output:
                    over.append(1)
                    _kill_group(proc.pid, signal.SIGKILL)
                    break
                continue
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            log.debug("  %s", line)
            if on_line:
                on_line(line)

    out: list[bytes] = []
    threads = []
    if capture:
        threads.append(threading.Thread(target=pump, args=(proc.stderr, None), daemon=True))
    try:
        for t in threads:
            t.start()
        if input is not None:
            data = input.reveal() if isinstance(input, Secret) else input
            try:
                proc.stdin.write(data.encode() if isinstance(data, str) else data)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        pump(proc.stdout, out if capture else None)
        rc = proc.wait()
        for t in threads:
            t.join()
    except BaseException:
        _stop(proc)
        raise
    if reap_group:
        _kill_group(proc.pid, signal.SIGKILL)
    stdout = b"".join(out).decode("utf-8", "replace")
    if over:
        raise CommandError(shown, rc, [f"more than {max_output} bytes of output: stopped reading"], hint)
    if rc != 0 and check:
        if rc == 127 and not tail:
            prog = os.path.basename(os.fspath(argv[0]))
            raise ToolMissing(prog, PACKAGES.get(prog))
        raise CommandError(shown, rc, list(tail) or stdout.splitlines()[-TAIL_LINES:], hint)
    return Result(rc, stdout, list(tail))


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
    """Stop a child we started and everything it started (Ctrl-C, error): TERM, then KILL, always reaped."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def start(argv: Sequence[Arg]) -> subprocess.Popen:
    """A long-lived helper process (an ssh control master): stdout discarded, stderr kept for its error, its own
    process group. End it with stop()."""
    log.debug("+ %s &", show(argv))
    try:
        return subprocess.Popen(_real(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        prog = os.path.basename(os.fspath(argv[0]))
        raise ToolMissing(prog, PACKAGES.get(prog)) from None


def stop(proc: subprocess.Popen) -> None:
    """End a process start() began (TERM, then KILL), and its group."""
    if proc.poll() is None:
        _stop(proc)


def output(argv: Sequence[Arg], **kw) -> str:
    """stdout of a command that must succeed, stripped."""
    return run(argv, capture=True, quiet=True, **kw).stdout.strip()


def which(program: str) -> str | None:
    from shutil import which as _which

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
            import fcntl

            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wakeups between us and the compressor
        except OSError:
            pass
        try:
            self.proc = subprocess.Popen(_real(self.argv), stdin=r, stdout=self.stdout, stderr=subprocess.PIPE,
                                         start_new_session=True)
        except FileNotFoundError:
            os.close(r)
            os.close(w)
            prog = os.path.basename(os.fspath(self.argv[0]))
            raise ToolMissing(prog, PACKAGES.get(prog)) from None
        os.close(r)
        self.fd = w
        return w

    def __exit__(self, et, ev, tb) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        if et is not None:
            _stop(self.proc)
            return
        err = self.proc.stderr.read().decode("utf-8", "replace")
        rc = self.proc.wait()
        if rc != 0:
            raise CommandError(show(self.argv), rc, err.splitlines()[-TAIL_LINES:])


def versions(programs: Iterable[str]) -> dict[str, str]:
    """First line of `PROGRAM --version` for each installed program (for the manifest)."""
    import tempfile

    found = {}
    with tempfile.TemporaryDirectory(prefix="imgbuild-home-") as home:
        env = dict(os.environ, HOME=home)   # Debian's dnf/rpm create ~/.rpmdb even for --version
        for p in programs:
            if which(p):
                found.update(_version(p, env))
    return found


def _version(p: str, env: dict[str, str]) -> dict[str, str]:
    try:
        r = run([p, "--version"], capture=True, check=False, quiet=True, env=env)
    except CommandError:
        return {}
    text = (r.stdout or "\n".join(r.tail)).strip().splitlines()
    return {p: text[0].strip()} if text else {}

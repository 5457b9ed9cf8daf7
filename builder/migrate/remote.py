"""A remote host reached with the user's own ssh: their ssh config, keys and known_hosts are honoured.

Host keys are always checked (StrictHostKeyChecking=yes); a host not yet in known_hosts is accepted only when the
user says so (accept-new, which still refuses a *changed* key). Every remote command is a short POSIX sh script
(the receivers may be CentOS 5 or a minimal VPS image: no bash, python or GNU-only options assumed), run with
BatchMode so ssh never waits for a password prompt nobody sees.

A remote host's answers are data, never code: every value that enters a remote script is quoted (shlex.quote) or
checked against a strict pattern first, what a host prints is read up to a bound (MAX_ANSWER) and parsed line by
line into expected keys, and any of it shown to the user passes through `shown()` (no terminal control
characters, bounded length).

A dry run (`Remote(..., dry_run=True)`) changes nothing on this machine either: ssh is told not to update
known_hosts (UpdateHostKeys=no, CheckHostIP=no), and with --accept-new-host-key an unknown host's key is accepted
into a temporary known_hosts file for this run only (the user's own files are still read, so a CHANGED key is
refused as always); the real run records it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

from builder.core import proc as runner
from builder.core.errors import BuilderError, CommandError, InputError
from builder.core.untrusted import CONTROL, shown  # noqa: F401  (shown: used by the commands that print hosts' answers)

log = logging.getLogger("imgbuild")

SSH_FAILED = 255
MAX_ANSWER = 16 << 20        # bytes of output read from one remote script; more is refused

# [user@]host: a host name, an IPv4 address, an IPv6 literal (bare or in brackets) or a Host alias of the ssh config
_HOST = re.compile(r"(?:[A-Za-z0-9_.+%-]{1,64}@)?"
                   r"(?:[A-Za-z0-9_.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}(?:%[A-Za-z0-9_.-]+)?\]?)")
_SSH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*=[^\x00-\x1f\x7f]*")


def remote_path(path: str, what: str) -> str:
    """A path on a remote host given by the user (or read from a host's file): absolute, no NUL, newline or other
    control character, no `..`; returned normalized. Any other character is allowed: every script quotes it."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InputError(f"{what} {shown(str(path))}: give an absolute path", "e.g. /etc/xen")
    if CONTROL.search(path):
        raise InputError(f"{what} {shown(path)}: a path with a newline or control character",
                         "give the path without them")
    if ".." in path.split("/"):
        raise InputError(f"{what} {shown(path)}: a path with `..`", "give the path without `..`")
    norm = "/" + os.path.normpath(path).lstrip("/")
    return norm


@dataclass(frozen=True)
class SshOptions:
    port: int | None = None
    config: str | None = None            # ssh -F
    identity: str | None = None          # ssh -i
    accept_new_host_key: bool = False
    options: tuple[str, ...] = ()        # extra -o KEY=VALUE

    def __post_init__(self) -> None:
        for o in self.options:
            if not _SSH_OPTION.fullmatch(o):
                raise InputError(f"--ssh-option {shown(o)}: not an ssh option KEY=VALUE",
                                 "e.g. --ssh-option ConnectTimeout=5 (no newlines or control characters)")
        for flag, v in (("--ssh-config", self.config), ("-i", self.identity)):
            if v is not None and (CONTROL.search(v) or not v):
                raise InputError(f"{flag} {shown(v)}: a file name with a control character", "rename the file")
            if v is not None and not os.path.isfile(v):     # ssh would wait forever on a fifo, read /dev/zero
                raise InputError(f"{flag} {shown(v)}: not a regular file", "give the path of the file itself")

    def check(self) -> None:
        """ssh itself reads the options and the config (`ssh -G`, no connection): a bad one is bad input."""
        r = runner.run(["ssh", *self.argv(), "-T", "-G", "imgbuild-check.invalid"], capture=True, check=False)
        if r.returncode != 0:
            said = next((t.strip() for t in r.tail if t.strip()), "") or "ssh refused the options"
            raise InputError(f"ssh options: {shown(said)}", "check --ssh-option, --ssh-config and -i")

    def argv(self) -> list[str]:
        a = ["-o", "BatchMode=yes",
             "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}"]
        if self.config:
            a += ["-F", self.config]
        if self.identity:
            a += ["-i", self.identity]
        if self.port:
            a += ["-p", str(self.port)]
        for o in self.options:
            a += ["-o", o]
        return a


@dataclass
class Remote:
    host: str                             # [user@]host, or an alias from the ssh config
    opts: SshOptions = field(default_factory=SshOptions)
    dry_run: bool = False                 # change nothing on this machine either (see the module's docstring)
    _control: str | None = field(default=None, repr=False)   # the control socket of session()
    _kh: list[str] = field(default_factory=list, repr=False)  # a dry run's known_hosts options (session())

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or self.host.startswith("-") or not _HOST.fullmatch(self.host):
            raise InputError(f"{shown(str(self.host))!r}: not a host name",
                             "give [user@]host or a Host alias of your ssh config")

    # ---------------------------------------------------------------- ssh and rsync command lines

    def _opts_argv(self) -> list[str]:
        if not self.dry_run:
            return self.opts.argv()
        # a dry run: nothing written to known_hosts; an unknown key is accepted (when asked) only into the
        # session's temporary file, else refused
        kh = self._kh or ["-o", "StrictHostKeyChecking=yes"]
        return [*kh, "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no", *self.opts.argv()]

    def ssh_argv(self) -> list[str]:
        extra = ["-o", f"ControlPath={self._control}", "-o", "ControlMaster=no"] if self._control else []
        return ["ssh", *self._opts_argv(), *extra]

    def _user_known_hosts(self) -> list[str]:
        """The user's known_hosts files as ssh sees them (after their config and options)."""
        out = runner.output(["ssh", *self.opts.argv(), "-T", "-G", self.host])
        line = next((ln for ln in out.splitlines() if ln.startswith("userknownhostsfile ")), "")
        words = line.split(" ")[1:]
        files: list[str] = []
        i = 0
        while i < len(words):       # `ssh -G` joins the names with spaces: a name with a space is the longest
            j = next((j for j in range(len(words), i, -1) if os.path.isfile(" ".join(words[i:j]))), i + 1)
            files.append(" ".join(words[i:j]))
            i = j
        return [f for f in files if f]

    def _dry_known_hosts(self, d: str) -> None:
        if not (self.dry_run and self.opts.accept_new_host_key):
            return
        files = self._user_known_hosts()
        odd = [f for f in files if '"' in f or "\\" in f or CONTROL.search(f)]
        if odd:
            raise InputError(f"{self.host}: a dry run cannot keep your known_hosts {shown(odd[0])} unchanged while "
                             "accepting a new host key", "run the dry run without --accept-new-host-key after "
                             "you have checked the host's key and added it (ssh to it once)")
        tmp = os.path.join(d, "known_hosts")
        open(tmp, "w").close()
        names = " ".join(f'"{f}"' for f in [tmp, *files])
        self._kh = ["-o", f"UserKnownHostsFile={names}", "-o", "StrictHostKeyChecking=accept-new"]

    def _note_dry_key(self, d: str) -> None:
        tmp = os.path.join(d, "known_hosts")
        if self._kh and os.path.getsize(tmp) > 0:
            fp = runner.run(["ssh-keygen", "-l", "-f", tmp], capture=True, check=False).stdout.strip()
            log.warning("%s: its host key (%s) was accepted for this dry run only; your known_hosts is unchanged "
                        "(the real run with --accept-new-host-key records it)", self.host,
                        shown(fp.splitlines()[0]) if fp else "new")

    @contextlib.contextmanager
    def session(self, timeout: float = 60.0) -> Iterator["Remote"]:
        """One ssh connection for everything inside the `with`: every later ssh and rsync call rides on it as a
        new channel (ControlMaster), so a push pays for one handshake, as plain rsync does. The master is our
        child and ends with the block."""
        d = tempfile.mkdtemp(prefix="imgbuild-ssh-")
        sock = os.path.join(d, "cm")
        proc = None
        try:
            self._dry_known_hosts(d)
            proc = runner.start(["ssh", *self._opts_argv(), *self._cipher_preference(), "-o", "ControlMaster=yes",
                                 "-o", f"ControlPath={sock}", "-o", "ControlPersist=no", "-N", "-T", self.host])
            deadline = time.monotonic() + timeout
            while not os.path.exists(sock):
                if proc.poll() is not None:
                    raise self.ssh_error(proc.stderr.read().decode("utf-8", "replace").splitlines())
                if time.monotonic() > deadline:
                    raise BuilderError(f"{self.host}: no ssh connection after {timeout:.0f} s",
                                       "check the host name and port (ssh -v HOST)")
                time.sleep(0.005)
            self._control = sock
            self._note_dry_key(d)
            yield self
        finally:
            self._control = None
            self._kh = []
            if proc is not None:
                runner.stop(proc)
            shutil.rmtree(d, ignore_errors=True)

    def rsh(self) -> str:
        """rsync's -e value: the same ssh, the same options."""
        return " ".join(shlex.quote(a) for a in self.ssh_argv())

    def spec(self, path: str) -> str:
        """rsync's HOST:PATH (an IPv6 literal in brackets)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{path}"

    def endpoint(self) -> tuple[str, int]:
        """The address and port ssh really connects to, after the user's ssh config (`ssh -G`)."""
        out = runner.output(["ssh", *self.opts.argv(), "-T", "-G", self.host])
        conf = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        return conf.get("hostname", self.host), int(conf.get("port", "22"))

    def fingerprints(self, timeout: int = 5) -> list[str]:
        """The host keys the host answers with now, as `TYPE SHA256:...` (ssh-keyscan; [] when it cannot say).
        Only for a message: a key is trusted by the user comparing it, never by this."""
        try:
            host, port = self.endpoint()
            scan = runner.run(["ssh-keyscan", "-T", str(timeout), "-p", str(port), "--", host], capture=True,
                              check=False, max_output=64 << 10)
            out = runner.run(["ssh-keygen", "-l", "-f", "-"], capture=True, check=False, input=scan.stdout)
        except BuilderError:
            return []
        fps = []
        for line in out.stdout.splitlines()[:8]:      # "256 SHA256:... host (ED25519)"
            f = line.split()
            if len(f) >= 3 and f[1].startswith("SHA256:") and f[-1].startswith("("):
                fps.append(f"{f[-1].strip('()')} {shown(f[1], 80)}")
        return fps

    def _cipher_preference(self) -> list[str]:
        """AES-GCM first (the rest of ssh's defaults kept, in order), when the user's config leaves the ciphers
        at ssh's defaults: with AES-NI it is the cheaper AEAD cipher for a bulk copy (about 5 % on a 200 MB push
        here, docs/benchmarks.md). A user's own Ciphers setting is never overridden."""
        try:
            mine = runner.output(["ssh", *self._opts_argv(), "-T", "-G", self.host])
            stock = runner.output(["ssh", "-F", "/dev/null", "-T", "-G", self.host])
        except BuilderError:
            return []
        pick = lambda out: next((ln for ln in out.splitlines() if ln.startswith("ciphers ")), None)
        if pick(mine) is None or pick(mine) != pick(stock) or "aes128-gcm@openssh.com" not in pick(mine):
            return []
        return ["-o", "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com"]

    # ---------------------------------------------------------------- running commands

    def sh(self, script: str, *, input: str | bytes | None = None, check: bool = True,
           what: str = "a command", max_output: int = MAX_ANSWER) -> runner.Result:
        """Run a POSIX sh script on the host; stdout is returned (at most max_output bytes: a longer answer is
        refused). ssh's own failures (host key, refused, auth) become errors naming the host and what to do.
        Every value in `script` must already be quoted (shlex.quote) or checked against a strict pattern."""
        argv = [*self.ssh_argv(), self.host, "sh -c " + shlex.quote(script)]
        try:
            r = runner.run(argv, capture=True, check=False, input=input, max_output=max_output)
        except CommandError:
            raise BuilderError(f"{self.host}: {what}: the host answered with more than {max_output} bytes; "
                               "nothing more was done", "log in and check the host") from None
        if r.returncode == SSH_FAILED:
            raise self.ssh_error(r.tail)
        if check and r.returncode != 0:
            raise BuilderError(f"{self.host}: {what} failed (exit {r.returncode}): "
                               + (shown("; ".join(r.tail[-3:])) or "no output"),
                               "run it with -v to see the commands, or log in and check the host")
        return r

    def ssh_error(self, tail: list[str]) -> BuilderError:
        text = "\n".join(tail)
        h = self.host
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key for" in text and "has changed" in text:
            return InputError(f"{h}: its ssh host key has CHANGED since it was recorded in known_hosts; "
                              "nothing was done", "if the host was reinstalled, check the new key's fingerprint "
                              f"out of band, then `ssh-keygen -R {h}`; otherwise this may be an attack")
        if "Host key verification failed" in text or "No ED25519 host key is known" in text \
                or "host key is not known" in text:
            fps = self.fingerprints()
            shown_fps = f" (it answers with {'; '.join(fps)})" if fps else ""
            return InputError(f"{h}: its ssh host key is not in your known_hosts; nothing was done{shown_fps}",
                              "compare that fingerprint with the one the host shows on its console "
                              "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there), then rerun with "
                              "--accept-new-host-key (or ssh to it once)")
        if "Permission denied" in text:
            return InputError(f"{h}: ssh login refused (Permission denied)",
                              "check the user and key (-i KEY, or the host's entry in your ssh config)")
        if "Connection refused" in text or "Connection timed out" in text or "No route to host" in text \
                or "Could not resolve" in text or "Network is unreachable" in text:
            last = next((t.strip() for t in reversed(tail) if t.strip()), "")
            return BuilderError(f"{h}: cannot connect: {shown(last)}",
                                "check the host name and --port (or Port in your ssh config)")
        last = next((t.strip() for t in reversed(tail) if t.strip()), "ssh failed")
        return BuilderError(f"{h}: ssh failed: {shown(last)}", "try `ssh HOST true` with the same options")

    def read_text(self, path: str) -> str | None:
        """A remote file's text, or None if it does not exist."""
        q = shlex.quote(path)
        r = self.sh(f"if [ -f {q} ]; then echo yes; cat {q}; else echo no; fi", what=f"reading {path}")
        head, _, rest = r.stdout.partition("\n")
        return rest if head == "yes" else None

    def read_glob(self, *patterns: tuple[str, str]) -> dict[str, str]:
        """Every regular file matching the patterns, by path (one ssh round trip). A pattern is (DIR, NAME):
        DIR and the literal part of NAME are quoted; only `*` in NAME is a wildcard. Paths the host answers
        with that are not under one of the DIRs, or hold a newline, are dropped."""
        words, dirs = [], []
        for d, name in patterns:
            d = d.rstrip("/") or "/"
            dirs.append(d)
            glob = "*".join(shlex.quote(part) if part else "" for part in name.split("*"))
            words.append(f"{shlex.quote(d)}/{glob}")
        marker = "@@imgbuild-file-" + os.urandom(8).hex() + " "     # a file's text cannot guess it
        out = self.sh(f"for f in {' '.join(words)}; do [ -f \"$f\" ] || continue; "
                      f"printf '\\n{marker}%s\\n' \"$f\"; cat \"$f\"; done; true", what="reading files").stdout
        files = {}
        for piece in out.split("\n" + marker)[1:]:
            path, _, text = piece.partition("\n")
            if any(path.startswith(d.rstrip("/") + "/") for d in dirs) and not CONTROL.search(path):
                files[path] = text
        return files

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a remote file atomically (temp file in the same directory, then rename)."""
        q = shlex.quote(path)
        tmp = shlex.quote(f"{path}.imgbuild-tmp")
        self.sh(f"set -e; mkdir -p \"$(dirname {q})\"; umask 077; rm -f {tmp}; cat > {tmp}; chmod {mode:o} {tmp}; "
                f"mv -f {tmp} {q}", input=text, what=f"writing {path}")


def tcp_banner(host: str, port: int, timeout: float = 10.0) -> str | None:
    """The first line a TCP service sends (an sshd says `SSH-2.0-...`), retried until `timeout`; None if nothing
    answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                s.settimeout(2)
                data = s.recv(256)
                if data:
                    return data.decode("utf-8", "replace").splitlines()[0]
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)

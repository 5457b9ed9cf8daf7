"""A remote host reached with the user's own ssh: their ssh config, keys and known_hosts are honoured.

Host keys are always checked (StrictHostKeyChecking=yes); a host not yet in known_hosts is accepted only when the
user says so (accept-new, which still refuses a *changed* key). Every remote command is a short POSIX sh script
(the receivers may be CentOS 5 or a minimal VPS image: no bash, python or GNU-only options assumed), run with
BatchMode so ssh never waits for a password prompt nobody sees.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

from . import run as runner
from .errors import BuilderError, InputError

SSH_FAILED = 255


@dataclass(frozen=True)
class SshOptions:
    port: int | None = None
    config: str | None = None            # ssh -F
    identity: str | None = None          # ssh -i
    accept_new_host_key: bool = False
    options: tuple[str, ...] = ()        # extra -o KEY=VALUE

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
    _control: str | None = field(default=None, repr=False)   # the control socket of session()

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("-") or re.search(r"[\s'\"`$;|&<>]", self.host):
            raise InputError(f"{self.host!r}: not a host name", "give [user@]host or a Host alias of your ssh config")

    # ---------------------------------------------------------------- ssh and rsync command lines

    def ssh_argv(self) -> list[str]:
        extra = ["-o", f"ControlPath={self._control}", "-o", "ControlMaster=no"] if self._control else []
        return ["ssh", *self.opts.argv(), *extra]

    @contextlib.contextmanager
    def session(self, timeout: float = 60.0) -> Iterator["Remote"]:
        """One ssh connection for everything inside the `with`: every later ssh and rsync call rides on it as a
        new channel (ControlMaster), so a push pays for one handshake, as plain rsync does. The master is our
        child and ends with the block."""
        d = tempfile.mkdtemp(prefix="imgbuild-ssh-")
        sock = os.path.join(d, "cm")
        proc = runner.start(["ssh", *self.opts.argv(), *self._cipher_preference(), "-o", "ControlMaster=yes",
                             "-o", f"ControlPath={sock}", "-o", "ControlPersist=no", "-N", self.host])
        try:
            deadline = time.monotonic() + timeout
            while not os.path.exists(sock):
                if proc.poll() is not None:
                    raise self.ssh_error(proc.stderr.read().decode("utf-8", "replace").splitlines())
                if time.monotonic() > deadline:
                    raise BuilderError(f"{self.host}: no ssh connection after {timeout:.0f} s",
                                       "check the host name and port (ssh -v HOST)")
                time.sleep(0.005)
            self._control = sock
            yield self
        finally:
            self._control = None
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
        out = runner.output(["ssh", *self.opts.argv(), "-G", self.host])
        conf = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        return conf.get("hostname", self.host), int(conf.get("port", "22"))

    def _cipher_preference(self) -> list[str]:
        """AES-GCM first (the rest of ssh's defaults kept, in order), when the user's config leaves the ciphers
        at ssh's defaults: with AES-NI it is the cheaper AEAD cipher for a bulk copy (about 5 % on a 200 MB push
        here, docs/benchmarks.md). A user's own Ciphers setting is never overridden."""
        try:
            mine = runner.output(["ssh", *self.opts.argv(), "-G", self.host])
            stock = runner.output(["ssh", "-F", "/dev/null", "-G", self.host])
        except BuilderError:
            return []
        pick = lambda out: next((ln for ln in out.splitlines() if ln.startswith("ciphers ")), None)  # noqa: E731
        if pick(mine) is None or pick(mine) != pick(stock) or "aes128-gcm@openssh.com" not in pick(mine):
            return []
        return ["-o", "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com"]

    # ---------------------------------------------------------------- running commands

    def sh(self, script: str, *, input: str | bytes | None = None, check: bool = True,
           what: str = "a command") -> runner.Result:
        """Run a POSIX sh script on the host; stdout is returned. ssh's own failures (host key, refused, auth)
        become errors naming the host and what to do."""
        argv = [*self.ssh_argv(), self.host, "sh -c " + shlex.quote(script)]
        r = runner.run(argv, capture=True, quiet=True, check=False, input=input)
        if r.returncode == SSH_FAILED:
            raise self.ssh_error(r.tail)
        if check and r.returncode != 0:
            raise BuilderError(f"{self.host}: {what} failed (exit {r.returncode}): "
                               + ("; ".join(r.tail[-3:]) or "no output"),
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
            return InputError(f"{h}: its ssh host key is not in your known_hosts; nothing was done",
                              "check its fingerprint, then rerun with --accept-new-host-key (or ssh to it once)")
        if "Permission denied" in text:
            return InputError(f"{h}: ssh login refused (Permission denied)",
                              "check the user and key (-i KEY, or the host's entry in your ssh config)")
        if "Connection refused" in text or "Connection timed out" in text or "No route to host" in text \
                or "Could not resolve" in text or "Network is unreachable" in text:
            last = next((t for t in reversed(tail) if t.strip()), "")
            return BuilderError(f"{h}: cannot connect: {last}",
                                "check the host name and --port (or Port in your ssh config)")
        last = next((t for t in reversed(tail) if t.strip()), "ssh failed")
        return BuilderError(f"{h}: ssh failed: {last}", "try `ssh HOST true` with the same options")

    def read_text(self, path: str) -> str | None:
        """A remote file's text, or None if it does not exist."""
        q = shlex.quote(path)
        r = self.sh(f"if [ -f {q} ]; then echo yes; cat {q}; else echo no; fi", what=f"reading {path}")
        head, _, rest = r.stdout.partition("\n")
        return rest if head == "yes" else None

    def read_glob(self, *patterns: str) -> dict[str, str]:
        """Every regular file matching the shell glob patterns, by path (one ssh round trip)."""
        marker = "@@imgbuild-file "
        pats = " ".join(patterns)   # globs from our own code, not from the user
        out = self.sh(f"for f in {pats}; do [ -f \"$f\" ] || continue; printf '\\n{marker}%s\\n' \"$f\"; "
                      "cat \"$f\"; done; true", what="reading files").stdout
        files = {}
        for piece in out.split("\n" + marker)[1:]:
            path, _, text = piece.partition("\n")
            files[path] = text
        return files

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a remote file atomically (temp file in the same directory, then rename)."""
        q = shlex.quote(path)
        tmp = shlex.quote(f"{path}.imgbuild-tmp")
        self.sh(f"set -e; mkdir -p \"$(dirname {q})\"; umask 077; cat > {tmp}; chmod {mode:o} {tmp}; mv -f {tmp} {q}",
                input=text, what=f"writing {path}")


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

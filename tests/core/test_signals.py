"""Interrupts reach every child, at once, however the command was started (builder/core/proc.py).

Each test runs a small driver (a real Python process using builder.core.proc as the console scripts do), waits until
its child says it runs (the child writes its pid into a fifo: no sleeps, no polling), sends the signal and
checks that the driver stops the way a Ctrl-C should: exit 130 and the child gone. Every case is run with
SIGINT inherited as the default and as ignored - a job a non-interactive shell starts in the background gets
SIGINT ignored, Python then keeps it ignored, and a Ctrl-C (or `kill -INT`) was lost.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

DISPOSITIONS = ["default", "ignored"]
PRELUDE = """
import os, sys
sys.path.insert(0, {repo!r})
import click
from builder.core import proc as r
from builder.cli.common import run_cli
FIFO, OUT = {fifo!r}, {out!r}

@click.command()
def main():
{body}
    print("not interrupted", file=sys.stderr)

run_cli(main)     # the console scripts' error boundary: signal handlers, exit codes
"""


def driver(tmp_path: Path, body: str, disposition: str) -> tuple[subprocess.Popen, Path, Path]:
    fifo, out = tmp_path / "ready", tmp_path / "out"
    os.mkfifo(fifo)
    code = PRELUDE.format(repo=str(REPO), fifo=str(fifo), out=str(out),
                          body=textwrap.indent(textwrap.dedent(body), "    "))
    argv = [sys.executable, "-c", code]
    if disposition == "ignored":     # as `cmd &` in a script does it
        argv = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv]
    # SIGHUP as a terminal session gives it, also when this suite runs under nohup (which ignores it, and
    # imgbuild then rightly keeps it ignored)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    return proc, fifo, out


def ready(proc: subprocess.Popen, fifo: Path, timeout: float = 120) -> int:
    """The pid the child wrote into the fifo (blocks until it has; fails if the driver ended first)."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            assert proc.poll() is None, f"the driver ended before its child was ready: {proc.communicate()}"
            assert time.monotonic() < deadline, "the child never said it runs"
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                data += os.read(fd, 100)
    finally:
        os.close(fd)
    return int(data.split()[0])


def group_gone(pgid: int) -> bool:
    """No live process is left in process group pgid (the child ran in a group of its own, which it leads)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the driver did not stop after the signal:\n{err}")
    return err


def kill_left(pgid: int) -> None:
    """Whatever a failed test left running in the child's group."""
    if not group_gone(pgid):
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.parametrize("disposition", DISPOSITIONS)
@pytest.mark.parametrize("how", ["plain", "capture", "reap_group"])
def test_sigint_stops_run_and_its_child(tmp_path, disposition, how):
    kw = {"plain": "", "capture": ", capture=True", "reap_group": ", reap_group=True"}[how]
    proc, fifo, _ = driver(tmp_path, f"""
        r.run(["/bin/sh", "-c", "echo $$ > " + FIFO + "; sleep 3600; echo slept"]{kw})
        """, disposition)
    child = ready(proc, fifo)
    try:
        os.kill(proc.pid, signal.SIGINT)
        err = finish(proc)
        assert proc.returncode == 130, err
        assert "error: interrupted" in err and "not interrupted" not in err and "Traceback" not in err
        assert group_gone(child), "the child (or its own child) outlived the interrupt"
    finally:
        kill_left(child)


@pytest.mark.parametrize("disposition", DISPOSITIONS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_stop_signal_stops_a_compressor_pipe(tmp_path, disposition, sig):
    """A compressor that stops reading (as under load): the writer blocks in write(); the signal ends it."""
    proc, fifo, _ = driver(tmp_path, """
        with open(os.devnull, "wb") as f, r.Pipe(["/bin/sh", "-c", "echo $$ > " + FIFO + "; exec sleep 3600"],
                                                  f) as fd:
            while True:
                os.write(fd, b"x" * 65536)
        """, disposition)
    child = ready(proc, fifo)
    try:
        os.kill(proc.pid, sig)
        err = finish(proc)
        assert proc.returncode == 130, err
        assert group_gone(child)
    finally:
        kill_left(child)


@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_a_second_signal_kills_a_child_that_ignores_sigterm(tmp_path, disposition):
    """The first signal asks the child's group to stop (SIGTERM) and unwinds; a child that ignores it gets
    SIGKILL on the second, and the driver still ends as interrupted."""
    proc, fifo, _ = driver(tmp_path, """
        r.run(["/bin/sh", "-c", "trap '' TERM; echo $$ > " + FIFO + "; while :; do sleep 1; done"])
        """, disposition)
    child = ready(proc, fifo)
    try:
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGINT)
        err = finish(proc)
        assert proc.returncode == 130, err
        assert group_gone(child)
    finally:
        kill_left(child)


@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_cleanup_runs_to_its_end_then_the_interrupt_is_raised(tmp_path, disposition):
    """A signal during cleanup() (unmounting, removing a work directory) neither kills the cleanup's children
    nor cuts it short; it is raised when the cleanup is done."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    proc, fifo, out = driver(tmp_path, f"""
        with r.cleanup():
            r.run(["/bin/sh", "-c", "echo $$ > " + FIFO + "; read x < {gate}; echo done > " + OUT])
            open(OUT, "a").write("after the child\\n")
        open(OUT, "a").write("after the cleanup\\n")
        """, disposition)
    child = ready(proc, fifo)
    try:
        os.kill(proc.pid, signal.SIGINT)
        with open(gate, "w") as g:       # only now may the cleanup's child finish
            g.write("go\n")
        err = finish(proc)
        assert proc.returncode == 130, err
        assert out.read_text() == "done\nafter the child\n"
    finally:
        kill_left(child)


@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_a_started_helper_is_stopped_with_us(tmp_path, disposition):
    """start() (an ssh control master) runs beside us; an interrupt stops it too."""
    proc, fifo, _ = driver(tmp_path, """
        h = r.start(["/bin/sh", "-c", "echo $$ > " + FIFO + "; exec sleep 3600"])
        try:
            r.run(["sleep", "3600"])
        finally:
            r.stop(h)
        """, disposition)
    child = ready(proc, fifo)
    try:
        os.kill(proc.pid, signal.SIGINT)
        err = finish(proc)
        assert proc.returncode == 130, err
        assert group_gone(child)
    finally:
        kill_left(child)

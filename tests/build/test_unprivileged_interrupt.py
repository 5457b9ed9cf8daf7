"""An unprivileged build stops on a signal sent to the command the user started, like a root build.

The build runs again inside `unshare` (builder/build/unprivileged.py), and unshare blocks SIGINT and SIGTERM while it
waits for its child: when imgbuild exec'd unshare, `kill PID` of the user's own command never reached the
build, which ran on. The user (the fixture `user`, tests/support/unprivileged.py) builds with a chroot hook
that blocks; the test sends SIGTERM (as systemd, `timeout` or a CI runner do) to the user's imgbuild process and
expects exit 130 with everything cleaned up. The pause is a fifo: no timing."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import mounts_under
from tests.support.unprivileged import USER

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]


def _read_fifo(path: Path, proc: subprocess.Popen, timeout: float = 900) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            assert proc.poll() is None, f"the build ended first:\n{proc.communicate()[1]}"
            assert time.monotonic() < deadline, "no word from the build"
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                data += os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode().strip()


def _tree(pid: int) -> dict[int, int]:
    """pid -> start time of pid and all its descendants."""
    stat = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                f = Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stat[int(e)] = (int(f[1]), int(f[19]))
    out, todo = {pid: stat[pid][1]} if pid in stat else {}, [pid]
    while todo:
        p = todo.pop()
        for c, (ppid, start) in stat.items():
            if ppid == p:
                out[c] = start
                todo.append(c)
    return out


def _alive(procs: dict[int, int]) -> list[int]:
    left = []
    for pid, start in procs.items():
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[19]) == start and f[0] != "Z":
            left.append(pid)
    return left


def test_sigterm_to_the_users_command_stops_an_unprivileged_build(user, tmp_path):
    home = Path(user["home"])
    ready = home / "ready"
    os.mkfifo(ready)
    os.chown(ready, user["uid"], -1)
    recipe = home / "paused.yml"
    recipe.write_text(yaml.safe_dump({"extends": str(user["code"] / "recipes" / "debian12.yml"), "hooks": {
        "post-files": [{"host": f'mkfifo "$IMGBUILD_ROOT/tmp/inside" && echo "$IMGBUILD_ROOT" > {ready}'},
                       {"run": "echo in > /tmp/inside; sleep 3600; echo slept"}]}}))
    os.chown(recipe, user["uid"], -1)
    out = home / "out"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONPATH": f"{user['code']}:{user['site']}"}
    proc = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                             user["python"], "-m", "builder", str(recipe), "-o", str(out),
                             "--set", "bootstrap.packages=[]", "--set", "init=none"],
                            cwd=user["code"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started: dict[int, int] = {}
    try:
        root = Path(_read_fifo(ready, proc))
        # the tree is an overlay mounted in the build's own mount namespace: the host sees it through a
        # process of that namespace
        _read_fifo(_in_namespace_of(proc.pid) / str(root).lstrip("/") / "tmp" / "inside", proc)   # the hook runs
        started = _tree(proc.pid)
        (command,) = [p for p in started if _parent(p) == proc.pid]     # runuser's child: the user's imgbuild
        os.kill(command, signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for pid in _alive(started):        # the build holds our pipes: stop all of it before reading them
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the unprivileged build did not stop on SIGTERM:\n{proc.communicate()[1]}")
        assert proc.returncode == 130, stderr
        assert "error: interrupted" in stderr and "Traceback" not in stderr, stderr
        assert "==> hooks pre-pack" not in stderr
        assert not _alive(started), "processes of the build outlived it"
        assert not (out / ".work").exists() and not (out / "debian12").exists()
    finally:
        started = started or _tree(proc.pid)     # a failure before the signal: the build is still to be stopped
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _alive(started):
            os.kill(pid, signal.SIGKILL)
        for mp in sorted(mounts_under(out), key=lambda p: p.count("/"), reverse=True):
            subprocess.run(["umount", "--lazy", mp], capture_output=True)


def _in_namespace_of(pid: int) -> Path:
    """/proc/P/root of a descendant P of pid that lives in another mount namespace than ours."""
    ours = os.readlink("/proc/self/ns/mnt")
    for p in _tree(pid):
        try:
            if os.readlink(f"/proc/{p}/ns/mnt") != ours:
                return Path(f"/proc/{p}/root")
        except OSError:
            continue
    pytest.fail("no process of the build in a mount namespace of its own")


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0

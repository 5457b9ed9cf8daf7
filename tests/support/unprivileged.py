"""An ordinary user for the unprivileged-build tests: made with its own /etc/subuid range, given a world-readable
copy of imgbuild and its libraries, and removed afterwards (the fixture `user` in tests/conftest.py)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder.build import unprivileged as unpriv

USER = "ibunpriv"


def user_python() -> str:
    """An interpreter the user may run, of this venv's Python version (the venv's own may sit under /root)."""
    for cand in ("/usr/bin/python3", sys._base_executable):
        if cand and os.path.exists(cand):
            ver = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True).stdout.strip()
            if ver == str(tuple(sys.version_info[:2])) and all(
                    os.stat(p).st_mode & 0o001 for p in Path(os.path.realpath(cand)).parents):
                return cand
    pytest.fail("no Python of this version that an ordinary user can run (apt-get install python3)")


@contextmanager
def ordinary_user(repo: Path) -> Iterator[dict]:
    """An ordinary user with a subordinate id range, a world-readable copy of imgbuild (from `repo`) and its
    libraries, and a directory of its own; all removed afterwards."""
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    base = Path(tempfile.mkdtemp(prefix="imgbuild-unpriv-", dir="/var/tmp"))
    try:
        pw = pwd.getpwnam(USER)
        if unpriv.subrange(USER, pw.pw_uid, unpriv.SUBUID) is None or \
                unpriv.subrange(USER, pw.pw_uid, unpriv.SUBGID) is None:
            subprocess.run(["usermod", "--add-subuids", "300000-365535", "--add-subgids", "300000-365535", USER],
                           check=True)
        os.chmod(base, 0o755)
        code = base / "code"
        for d in ("builder", "recipes", "hooks"):
            shutil.copytree(repo / d, code / d, ignore=shutil.ignore_patterns("__pycache__"))
        site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
        shutil.copytree(site, base / "site", symlinks=True)
        home = base / "home"
        home.mkdir()
        os.chown(home, pw.pw_uid, pw.pw_gid)
        yield {"uid": pw.pw_uid, "code": code, "site": base / "site", "home": home, "python": user_python()}
    finally:
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["userdel", "-r", USER], capture_output=True)
        for f in (unpriv.SUBUID, unpriv.SUBGID):   # userdel removes them; make sure
            lines = f.read_text().splitlines(keepends=True)
            kept = [x for x in lines if not x.startswith(f"{USER}:")]
            if kept != lines:
                f.write_text("".join(kept))

"""Cluster recipes, built for real and booted in real LXC containers on a bridge inside a network namespace the
test makes (tests/support/lxc.py). Builds and containers live on /dev/shm: this VM's disk is rate-limited."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import REPO, imgbuild

BOOT_TIMEOUT = 90


def shm_dir(prefix: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"imgbuild-{prefix}-", dir=base))


def build(recipe: str, out: Path, env: dict) -> tuple[Path, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    r = imgbuild(REPO / "recipes" / recipe, "-o", out, env=env, timeout=1200)
    assert r.returncode == 0, f"build of {recipe} failed:\n{r.stdout}{r.stderr[-4000:]}"
    print(f"build {recipe}: {time.monotonic() - t0:.1f} s")
    return out / recipe.removesuffix(".yml"), r


def install(output: Path, sandbox, env: dict, names: list[str]) -> subprocess.CompletedProcess:
    """install-lxc every node into the sandbox's lxcpath, each on the sandbox's bridge."""
    for n in names:
        sandbox.adopt(n)          # stopped and removed at the end whatever happens
    r = imgbuild("install-lxc", output, "--lxcpath", sandbox.lxcpath, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for n in names:
        cfg = sandbox.lxcpath / n / "config"
        text = cfg.read_text()
        cfg.write_text(re.sub(r"^lxc\.net\.0\.link = .*$", f"lxc.net.0.link = {sandbox.bridge}", text, flags=re.M))
    return r


def wait_running(sandbox, name: str, timeout: float = BOOT_TIMEOUT) -> str:
    t0 = time.monotonic()
    state = ""
    while time.monotonic() - t0 < timeout:
        r = sandbox.attach(name, "systemctl", "is-system-running")
        state = r.stdout.strip() or r.stderr.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    return state


def wait_for(fn, timeout: float, step: float = 1.0):
    """fn() until it returns something true; returns the last value."""
    end = time.monotonic() + timeout
    value = None
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(step)
    return value


def journal(sandbox, name: str, unit: str, lines: int = 40) -> str:
    r = sandbox.attach(name, "journalctl", "-u", unit, "--no-pager", "-n", str(lines))
    return r.stdout + r.stderr


def assert_no_secret(value: str, *texts: str, files: list[Path] = ()) -> None:
    assert len(value) >= 8
    for t in texts:
        assert value not in t, "a secret appeared in command output"
    for f in files:
        if f.is_file():
            assert value.encode() not in f.read_bytes(), f"a secret appeared in {f}"


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def env_with(secrets_dir: Path, inventory: Path) -> dict:
    return {**os.environ, "IMGBUILD_SECRETS_DIR": str(secrets_dir), "IMGBUILD_INVENTORY": str(inventory)}

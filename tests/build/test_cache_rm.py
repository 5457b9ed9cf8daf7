"""`imgbuild cache rm NAME|KEY...`: one recipe's bootstrap entries (or one entry) removed, the others left; a
name that matches nothing, an ambiguous key or an entry a running build reads removes nothing at all."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO

KEYS = {"debian12": ["a1b2c3d4e5f6a7b8c9d0e1f2", "a1b2c3ffffffffffffffffff"], "centos6": ["0123456789abcdef01234567"]}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """$IMGBUILD_CACHE with three bootstrap entries: two of debian12 (keys sharing 6 characters), one of centos6."""
    base = tmp_path / "cache"
    for name, keys in KEYS.items():
        for k in keys:
            d = base / "bootstrap" / k
            d.mkdir(parents=True)
            (d / "meta.json").write_text(json.dumps({"name": name, "size": 1 << 20, "last_used": 0}))
            (d / "tree").mkdir()
    return base


def rm(cache: Path, *names: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMGBUILD_CACHE": str(cache)}
    return subprocess.run([str(BIN / "imgbuild"), "cache", "rm", *names], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)


def left(cache: Path) -> set[str]:
    return {d.name for d in (cache / "bootstrap").iterdir() if not d.name.startswith(".")}


def test_a_recipe_name_removes_all_its_entries_and_only_them(cache):
    r = rm(cache, "debian12")
    assert r.returncode == 0, r.stderr
    assert left(cache) == set(KEYS["centos6"])
    assert r.stdout.count("removed ") == 2 and "debian12" in r.stdout


def test_a_unique_key_prefix_removes_that_entry(cache):
    r = rm(cache, "a1b2c3d4")
    assert r.returncode == 0, r.stderr
    assert left(cache) == {KEYS["debian12"][1], *KEYS["centos6"]}


@pytest.mark.parametrize("names, says", [
    (("nosuch",), "no entry 'nosuch'"),
    (("centos6", "nosuch"), "no entry 'nosuch'"),       # the valid name is not removed either
    (("a1b2c3",), "is the start of 2 keys"),
    (("a1b2",), "no entry 'a1b2'"),                     # under 6 characters: not taken as a key
])
def test_a_bad_name_removes_nothing(cache, names, says):
    before = left(cache)
    r = rm(cache, *names)
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr and says in r.stderr and "Traceback" not in r.stderr
    assert left(cache) == before


def test_an_entry_a_running_build_reads_is_not_removed(cache):
    """A build reading an entry holds it shared (locks.using, as bootcache.fetch does): rm exits 1 naming the
    holder's pid, and removes nothing, not even the other entries it was asked for."""
    entry = cache / "bootstrap" / KEYS["centos6"][0]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom builder.core import locks\n"
        f"with locks.using({str(entry)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = left(cache)
        r = rm(cache, "debian12", "centos6")
        assert r.returncode == 1, r.stderr
        assert "in use by a running imgbuild" in r.stderr and f"pid {holder.pid}" in r.stderr
        assert left(cache) == before
    finally:
        holder.kill()
        holder.wait()
    r = rm(cache, "centos6")
    assert r.returncode == 0, r.stderr
    assert left(cache) == set(KEYS["debian12"])

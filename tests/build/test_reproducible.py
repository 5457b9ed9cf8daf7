"""Rebuilding recipes/debian12.yml into another output directory gives a byte-identical tarball.

On a mismatch the assertion message says where the two archives differ: the entries whose `tar -tv` line
differs, and the regular files whose content or extended headers differ."""
from __future__ import annotations

import difflib
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import BIN, DEFAULT_RECIPE, REPO, sha256


def _listing(tarball: Path) -> list[str]:
    r = subprocess.run(["tar", "--zstd", "--full-time", "-tvf", str(tarball)], capture_output=True, text=True)
    return r.stdout.splitlines()


def _contents(tarball: Path) -> dict[str, tuple]:
    """name -> (sha256 of the data, pax headers) for every member."""
    p = subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE)
    out = {}
    try:
        with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
            for m in tf:
                digest = hashlib.sha256(tf.extractfile(m).read()).hexdigest() if m.isfile() else ""
                out[m.name] = (digest, sorted(m.pax_headers.items()))
    finally:
        p.stdout.close()
        p.wait()
    return out


def explain(a: Path, b: Path) -> str:
    """Where two tarballs differ, for the assertion message."""
    la, lb = _listing(a), _listing(b)
    diff = list(difflib.unified_diff(la, lb, "first", "second", lineterm="", n=0))
    ca, cb = _contents(a), _contents(b)
    changed = [n for n in sorted(set(ca) | set(cb)) if ca.get(n) != cb.get(n)]
    return ("tar -tv differences:\n" + "\n".join(diff[:60]) +
            f"\n\n{len(changed)} entries differ in content or extended headers:\n" + "\n".join(changed[:60]))


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_rebuild_is_byte_identical(debian12_build: Path, tmp_path: Path):
    out = tmp_path / "again"
    # this rebuild may start from the bootstrap cache; tests/build/test_bootcache.py compares a bootstrap from scratch
    r = subprocess.run([str(BIN / "imgbuild"), str(DEFAULT_RECIPE), "-o", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    first, second = debian12_build / "debian12.tar.zst", out / "debian12" / "debian12.tar.zst"
    m1 = json.loads((debian12_build / "manifest.json").read_text())
    m2 = json.loads((out / "debian12" / "manifest.json").read_text())
    assert m1["source_date_epoch"] == m2["source_date_epoch"], "the mirror changed between the builds"
    if sha256(first) != sha256(second):
        pytest.fail(f"the rebuilt tarball differs from the first build:\n{explain(first, second)}")
    # the manifests agree on what was built, from what and with what (timings and resources vary per run)
    for key in ("artifacts", "packages", "recipe", "tools", "name", "release", "arch", "hostname"):
        assert m1[key] == m2[key], key
    drop_cache = (lambda b: {k: v for k, v in b.items() if k != "cache"})
    assert drop_cache(m1["bootstrap"]) == drop_cache(m2["bootstrap"])
    assert (debian12_build / "lxc.conf").read_bytes() == (out / "debian12" / "lxc.conf").read_bytes()

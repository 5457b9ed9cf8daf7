"""`bootstrap.method: debootstrap` builds for real: a small bookworm, a gzip tarball, a manifest that says so."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import BIN, DEFAULT_RECIPE, REPO, mounts_under


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_debootstrap_builds_a_gzip_tarball(tmp_path: Path):
    out = tmp_path / "out"
    r = subprocess.run([str(BIN / "imgbuild"), str(DEFAULT_RECIPE), "-o", str(out),
                        "--set", "bootstrap.method=debootstrap", "--set", "bootstrap.packages=[]",
                        "--set", "init=none", "--set", "targets={tarball: {compression: gz}}"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert "debootstrap" in r.stderr  # the bootstrap phase names its method
    final = out / "debian12"
    assert sorted(p.name for p in final.iterdir()) == ["SHA256SUMS", "debian12.spdx.json", "debian12.tar.gz",
                                                       "manifest.json"]
    assert mounts_under(out) == []
    assert sorted(os.listdir(out)) == ["debian12"]

    m = json.loads((final / "manifest.json").read_text())
    assert m["bootstrap"]["method"] == "debootstrap"
    assert m["tools"]["debootstrap"].startswith("debootstrap ")
    assert "mmdebstrap" not in m["tools"]
    tarball = final / "debian12.tar.gz"
    [art] = [a for a in m["artifacts"] if a["kind"] == "tarball"]
    assert (art["kind"], art["path"], art["size"]) == ("tarball", "debian12.tar.gz", tarball.stat().st_size)
    assert art["sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert "systemd-sysv" not in m["packages"] and "dpkg" in m["packages"]

    # a valid gzip stream ...
    assert tarball.read_bytes()[:2] == b"\x1f\x8b"
    t = subprocess.run(["gzip", "-t", str(tarball)], capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    # ... of a tar that Python's tarfile reads ...
    with tarfile.open(tarball, "r:gz") as tf:
        members = {x.name: x for x in tf}
        version = tf.extractfile(members["./etc/debian_version"]).read().decode()
    assert re.match(r"^12\.\d+", version), version
    null = members["./dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3) and (null.uid, null.gid) == (0, 0)
    assert max(x.mtime for x in members.values()) <= m["source_date_epoch"]
    assert not [n for n in members if n.startswith("./debootstrap")], "debootstrap's work dir was shipped"
    # ... and GNU tar lists /dev/null as a char device 1,3 owned by 0/0
    lv = subprocess.run(["tar", "-tvzf", str(tarball), "./dev/null"], capture_output=True, text=True)
    assert lv.returncode == 0, lv.stderr
    assert re.match(r"^crw-rw-rw- 0/0\s+1,\s*3 \S+ \S+ \./dev/null$", lv.stdout.strip()), lv.stdout

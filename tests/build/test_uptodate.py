"""The no-change rebuild check (builder/build/uptodate.py): the build key follows every input, and an output whose
artifacts no longer match their sha256 is built again. (The real no-change rebuild is in test_bootcache.py.)"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from builder.build import recipe, uptodate
from builder.build.bootstrap.mmdebstrap import METHOD
from builder.build.pipeline import Preflight
from builder.core import sums
from tests.conftest import DEFAULT_RECIPE


def _key(path, *sets, epoch=1):
    return uptodate.key(recipe.load(path, sets), Preflight(METHOD, "http://127.0.0.1:9/debian", epoch))


def test_the_key_follows_the_recipe_its_files_and_the_bootstrap(tmp_path):
    src = tmp_path / "motd"
    src.write_text("one\n")
    r = tmp_path / "r.yml"
    r.write_text(Path(DEFAULT_RECIPE).read_text() + "\n# the same recipe with a file from this host\n")
    r.write_text(r.read_text().replace('  - {path: /etc/motd, content: "built by imgbuild\\n", mode: "0644"}',
                                       '  - {path: /etc/motd, source: motd}'))
    k = _key(r)
    assert k == _key(r) and len(k) == 64
    assert _key(r, "hostname=other") != k
    assert _key(r, epoch=2) != k                    # SOURCE_DATE_EPOCH is a bootstrap input
    pre = Preflight(METHOD, "http://127.0.0.1:9/debian", 1)
    signed = uptodate.key(recipe.load(r), pre, sums.Signing(gpg_key="ABCD"))
    assert signed != k and signed != uptodate.key(recipe.load(r), pre, sums.Signing(ssh_key=Path("/k")))
    assert uptodate.key(recipe.load(r), pre, sums.UNSIGNED) == k
    src.write_text("two\n")
    assert _key(r) != k                             # a file the recipe names changed
    assert str(src) in uptodate.local_files(recipe.load(r).recipe)


def test_recipes_with_secrets_are_always_built():
    assert _key(Path(DEFAULT_RECIPE).parent / "rabbitmq.yml") is None


def _output(tmp_path, key):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.tar").write_bytes(b"tarball")
    art = [{"kind": "tarball", "path": "a.tar", "size": 7, "sha256": hashlib.sha256(b"tarball").hexdigest()}]
    (out / "manifest.json").write_text(json.dumps({"build_key": key, "artifacts": art}))
    (out / "SHA256SUMS").write_text(f"{art[0]['sha256']}  a.tar\n")
    return out


def test_current_only_with_the_same_key_and_intact_outputs(tmp_path):
    out = _output(tmp_path, "k1")
    assert uptodate.current(out, "k1")
    assert not uptodate.current(out, "k2")
    (out / "SHA256SUMS").unlink()                    # an output without its checksums is built again
    assert not uptodate.current(out, "k1")
    (out / "SHA256SUMS").write_text("x")
    (out / "a.tar").write_bytes(b"tarbalL")           # same size, other content
    assert not uptodate.current(out, "k1")
    (out / "a.tar").unlink()
    assert not uptodate.current(out, "k1")
    assert not uptodate.current(tmp_path / "nothing", "k1")
    for bad in ("{not json", "[1, 2]", '{"build_key": "k1", "artifacts": [3]}', '{"build_key": "k1", "artifacts": {}}'):
        (out / "manifest.json").write_text(bad)
        assert not uptodate.current(out, "k1")


def test_a_directory_artifact_is_always_built_again(tmp_path):
    out = _output(tmp_path, "k")
    m = json.loads((out / "manifest.json").read_text())
    m["artifacts"].append({"kind": "nspawn", "path": "tree", "type": "directory", "size": 1})
    (out / "manifest.json").write_text(json.dumps(m))
    assert not uptodate.current(out, "k")

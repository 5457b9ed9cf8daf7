"""SHA256SUMS of a real build (the session's recipes/debian12.yml output), `imgbuild verify` on it, a signed
build (GnuPG and ssh), and the checksums of an output after `migrate reidentify` repacked its tarball."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_RECIPE, imgbuild, migrate, sha256
from tests.support.signing import gpg_signer, ssh_signer

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]


def listed(d: Path) -> dict[str, str]:
    return {name: h for h, name in (line.split("  ", 1) for line in (d / "SHA256SUMS").read_text().splitlines())}


def test_sums_cover_the_manifest_and_every_artifact(debian12_build):
    m = json.loads((debian12_build / "manifest.json").read_text())
    want = {a["path"]: a["sha256"] for a in m["artifacts"]}
    assert set(want) == {"debian12.tar.zst", "lxc.conf", "debian12.spdx.json"}
    want["manifest.json"] = sha256(debian12_build / "manifest.json")
    assert listed(debian12_build) == want
    r = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=debian12_build, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_verify_passes_then_names_the_flipped_file(debian12_build, tmp_path):
    r = imgbuild("verify", debian12_build)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"{debian12_build}: ok (4 files")
    copy = tmp_path / "debian12"
    shutil.copytree(debian12_build, copy)
    with open(copy / "debian12.tar.zst", "r+b") as f:
        f.seek(1 << 20)
        b = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([b[0] ^ 0x40]))
    r = imgbuild("verify", copy)
    assert r.returncode == 1, r.stdout
    assert f"{copy / 'debian12.tar.zst'}: sha256" in r.stdout and "does not match SHA256SUMS" in r.stdout
    assert "manifest.json:" not in r.stdout and "lxc.conf:" not in r.stdout


@pytest.fixture(scope="module")
def signed(debian12_build, tmp_path_factory):
    """The default recipe built again (from the bootstrap cache) with --sign and --sign-ssh."""
    where = tmp_path_factory.mktemp("signed")
    with gpg_signer(where) as g:
        s = ssh_signer(where)
        out = where / "out"
        args = (DEFAULT_RECIPE, "-o", out, "--sign", g.fingerprint, "--sign-ssh", s.key)
        r = imgbuild(*args, env=g.env())
        assert r.returncode == 0, r.stderr
        yield out / "debian12", g, s, args


def test_a_signed_build_verifies_with_both_signatures(signed):
    final, g, s, _ = signed
    assert {"SHA256SUMS.asc", "SHA256SUMS.sig"} <= {p.name for p in final.iterdir()}
    r = imgbuild("verify", final, "--keyring", g.keyring, "--allowed-signers", s.allowed_signers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"signed by gpg {g.fingerprint}, ssh builds@example.invalid" in r.stdout


def test_the_same_signed_build_is_up_to_date_and_an_unsigned_one_is_not(signed):
    final, g, s, args = signed
    before = (final / "SHA256SUMS.asc").stat().st_ino
    r = imgbuild(*args, env=g.env())
    assert r.returncode == 0 and "is up to date" in r.stderr, r.stderr
    assert (final / "SHA256SUMS.asc").stat().st_ino == before
    r = imgbuild(*args[:3], "-n")
    assert r.returncode == 0 and r.stdout.startswith("would build"), r.stdout


def test_an_unknown_key_stops_the_build_before_it_starts(tmp_path, signed):
    _, g, _, _ = signed
    r = imgbuild(DEFAULT_RECIPE, "-o", tmp_path / "o", "--sign", "nobody@example.invalid", env=g.env())
    assert r.returncode == 2 and "--sign nobody@example.invalid: no such secret key" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_reidentify_renews_the_sums_and_drops_the_signature(signed, tmp_path):
    final, g, s, _ = signed
    copy = tmp_path / "out" / "debian12"
    shutil.copytree(final, copy)
    r = migrate("reidentify", copy, "--hostname", "web7")
    assert r.returncode == 0, r.stderr
    assert "its signature (SHA256SUMS.asc, SHA256SUMS.sig) was removed" in r.stderr
    assert not (copy / "SHA256SUMS.asc").exists() and not (copy / "SHA256SUMS.sig").exists()
    assert listed(copy)["debian12.tar.zst"] == sha256(copy / "debian12.tar.zst") != listed(final)["debian12.tar.zst"]
    assert imgbuild("verify", copy).returncode == 0
    r = imgbuild("sign", copy, "--key", g.fingerprint, env=g.env())
    assert r.returncode == 0, r.stderr
    r = imgbuild("verify", copy, "--keyring", g.keyring)
    assert r.returncode == 0 and "signed by gpg" in r.stdout, r.stdout

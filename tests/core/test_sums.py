"""SHA256SUMS, its signatures and `imgbuild verify` / `imgbuild sign`, with real sha256sum, gpg, gpgv and
ssh-keygen on small directories (a real build's output: tests/build/test_verify_output.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.core import sums
from builder.core.errors import InputError
from tests.conftest import imgbuild, sha256
from tests.support.signing import gpg_signer, ssh_signer


@pytest.fixture(scope="module")
def gpg(tmp_path_factory):
    with gpg_signer(tmp_path_factory.mktemp("gpg")) as s:
        yield s


@pytest.fixture(scope="module")
def other_gpg(tmp_path_factory):
    with gpg_signer(tmp_path_factory.mktemp("gpg2"), "someone else <other@example.invalid>") as s:
        yield s


def a_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir(parents=True)
    (d / "a.tar").write_bytes(os.urandom(4096))
    (d / "lxc.conf").write_text("lxc.uts.name = a\n")
    sums.write(d, {n: sha256(d / n) for n in ("a.tar", "lxc.conf")})
    return d


def flip(p: Path, at: int = 100) -> None:
    data = bytearray(p.read_bytes())
    data[at] ^= 1
    p.write_bytes(bytes(data))


def test_sha256sum_reads_what_is_written(tmp_path):
    d = a_dir(tmp_path)
    r = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["a.tar: OK", "lxc.conf: OK"]


def test_verify_ok_then_a_flipped_byte_is_named(tmp_path):
    d = a_dir(tmp_path)
    r = imgbuild("verify", d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"{d}: ok (2 files")
    flip(d / "a.tar")
    r = imgbuild("verify", d)
    assert r.returncode == 1
    assert f"{d / 'a.tar'}: sha256" in r.stdout and "does not match SHA256SUMS" in r.stdout
    assert "lxc.conf" not in r.stdout.split("FAILED")[1], "only the changed file is named"
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("damage, named", [
    ("missing", "a.tar: missing"),
    ("link", "a.tar: a symbolic link"),
    ("bad line", "line 3"),
    ("path", "line 3"),
    ("sums is a link", "SHA256SUMS: a symbolic link"),
])
def test_hostile_directories_are_refused_by_name(tmp_path, damage, named):
    d = a_dir(tmp_path)
    secret = tmp_path / "host-file"
    secret.write_text("not the guest's\n")
    if damage == "missing":
        (d / "a.tar").unlink()
    elif damage == "link":       # same content through a link: still refused, nothing is read through it
        (tmp_path / "elsewhere").write_bytes((d / "a.tar").read_bytes())
        (d / "a.tar").unlink()
        (d / "a.tar").symlink_to(tmp_path / "elsewhere")
    elif damage == "bad line":
        with open(d / "SHA256SUMS", "a") as f:
            f.write("not a checksum line\n")
    elif damage == "path":
        with open(d / "SHA256SUMS", "a") as f:
            f.write(f"{sha256(secret)}  ../host-file\n")
    else:
        (tmp_path / "sums").write_bytes((d / "SHA256SUMS").read_bytes())
        (d / "SHA256SUMS").unlink()
        (d / "SHA256SUMS").symlink_to(tmp_path / "sums")
    r = imgbuild("verify", d)
    assert r.returncode == 1, r.stdout + r.stderr
    assert named in r.stdout, r.stdout
    assert "Traceback" not in r.stderr


def test_a_file_not_listed_is_named_as_not_covered(tmp_path):
    d = a_dir(tmp_path)
    (d / "added.sh").write_text("echo\n")
    r = imgbuild("verify", d)
    assert r.returncode == 0 and "not covered by SHA256SUMS: added.sh" in r.stdout, r.stdout


def test_no_sums_anywhere_is_bad_input(tmp_path):
    r = imgbuild("verify", tmp_path)
    assert r.returncode == 2 and f"{tmp_path}: no SHA256SUMS in it or under it" in r.stderr


def test_a_tree_is_checked_directory_by_directory(tmp_path):
    a, b = a_dir(tmp_path / "x"), a_dir(tmp_path / "y")
    flip(b / "lxc.conf", 3)
    r = imgbuild("verify", tmp_path)
    assert r.returncode == 1
    assert f"{a}: ok" in r.stdout and f"{b}: FAILED" in r.stdout and f"{b / 'lxc.conf'}: sha256" in r.stdout


def test_gpg_signature_good_wrong_key_and_tampered(tmp_path, gpg, other_gpg):
    d = a_dir(tmp_path)
    r = imgbuild("sign", d, "--key", gpg.fingerprint, env=gpg.env())
    assert r.returncode == 0, r.stderr
    assert (d / "SHA256SUMS.asc").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    # gpg itself accepts it
    v = subprocess.run(["gpgv", "--keyring", str(gpg.keyring), str(d / "SHA256SUMS.asc"), str(d / "SHA256SUMS")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    r = imgbuild("verify", d, "--keyring", gpg.keyring)
    assert r.returncode == 0 and f"signed by gpg {gpg.fingerprint}" in r.stdout, r.stdout + r.stderr
    r = imgbuild("verify", d, "--keyring", other_gpg.keyring)
    assert r.returncode == 1 and "SHA256SUMS.asc: no good signature" in r.stdout, r.stdout
    # a file changed and SHA256SUMS rewritten to match it: the signature no longer does
    flip(d / "a.tar")
    (d / "SHA256SUMS").write_text(sums.render({"a.tar": sha256(d / "a.tar"), "lxc.conf": sha256(d / "lxc.conf")}))
    r = imgbuild("verify", d, "--keyring", gpg.keyring)
    assert r.returncode == 1 and "SHA256SUMS.asc: bad signature" in r.stdout, r.stdout


def test_asking_for_a_signature_that_is_not_there_fails(tmp_path, gpg):
    d = a_dir(tmp_path)
    r = imgbuild("verify", d, "--keyring", gpg.keyring)
    assert r.returncode == 1 and "SHA256SUMS.asc: missing" in r.stdout
    r = imgbuild("verify", d)
    assert r.returncode == 0 and "no GnuPG signature" in r.stdout


def test_ssh_signature_good_and_tampered(tmp_path):
    s = ssh_signer(tmp_path)
    d = a_dir(tmp_path)
    r = imgbuild("sign", d, "--ssh-key", s.key)
    assert r.returncode == 0, r.stderr
    r = imgbuild("verify", d, "--allowed-signers", s.allowed_signers)
    assert r.returncode == 0 and "signed by ssh builds@example.invalid" in r.stdout, r.stdout + r.stderr
    r = imgbuild("verify", d)
    assert r.returncode == 0 and "SHA256SUMS.sig not checked" in r.stdout
    (d / "SHA256SUMS").write_text((d / "SHA256SUMS").read_text().replace("lxc.conf", "lxc.conf ", 1))
    r = imgbuild("verify", d, "--allowed-signers", s.allowed_signers)
    assert r.returncode == 1 and "SHA256SUMS.sig: bad signature" in r.stdout, r.stdout
    (tmp_path / "o").mkdir()
    other = ssh_signer(tmp_path / "o", "other@example.invalid")
    r = imgbuild("verify", d, "--allowed-signers", other.allowed_signers)
    assert r.returncode == 1 and "not made by a key of" in r.stdout, r.stdout


def test_sign_refuses_a_directory_whose_files_do_not_match(tmp_path):
    s = ssh_signer(tmp_path)
    d = a_dir(tmp_path)
    flip(d / "a.tar")
    r = imgbuild("sign", d, "--ssh-key", s.key)
    assert r.returncode == 2 and "not signed, its files do not match SHA256SUMS" in r.stderr
    assert not (d / "SHA256SUMS.sig").exists()


def test_an_unknown_gpg_key_is_refused_before_anything(gpg, monkeypatch):
    monkeypatch.setenv("GNUPGHOME", str(gpg.home))
    sums.check_signing(sums.Signing(gpg_key=gpg.fingerprint))
    with pytest.raises(InputError, match="no such secret key in the GnuPG keyring"):
        sums.check_signing(sums.Signing(gpg_key="nobody@example.invalid"))


def test_per_file_signatures_are_listed_checked_and_renewed(tmp_path, gpg, other_gpg, monkeypatch):
    d = a_dir(tmp_path)
    monkeypatch.setenv("GNUPGHOME", str(gpg.home))
    written = sums.write(d, {n: sha256(d / n) for n in ("a.tar", "lxc.conf")}, sums.Signing(gpg.fingerprint),
                         detached=("a.tar",))
    assert written == ["a.tar.asc", "SHA256SUMS", "SHA256SUMS.asc"]
    assert "a.tar.asc" in sums.parse(d, sums.Report(d))            # SHA256SUMS covers the signature's bytes
    v = subprocess.run(["gpgv", "--keyring", str(gpg.keyring), str(d / "a.tar.asc"), str(d / "a.tar")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    report = sums.verify(d, gpg.keyring)
    assert not report.problems and sorted(report.checked) == ["a.tar", "a.tar.asc", "lxc.conf"]
    # a signature of other bytes, SHA256SUMS rewritten and signed to cover it: the per-file check names it
    (d / "a.tar.asc").write_bytes(subprocess.run(
        ["gpg", "--batch", "--armor", "--detach-sign", "-u", gpg.fingerprint, "-o", "-", str(d / "lxc.conf")],
        capture_output=True, check=True).stdout)
    sums.write(d, sums.parse(d, sums.Report(d)) | {"a.tar.asc": sha256(d / "a.tar.asc")},
               sums.Signing(gpg.fingerprint))
    report = sums.verify(d, gpg.keyring)
    assert [p for p in report.problems if p.startswith(f"{d / 'a.tar.asc'}: bad signature")], report.problems
    # signing again (another key) renews the per-file signature it finds listed; ssh only drops it
    monkeypatch.setenv("GNUPGHOME", str(other_gpg.home))
    sums.resign(d, sums.Signing(other_gpg.fingerprint))
    assert not sums.verify(d, other_gpg.keyring).problems
    s = ssh_signer(tmp_path)
    sums.resign(d, sums.Signing(ssh_key=s.key))
    assert sorted(os.listdir(d)) == ["SHA256SUMS", "SHA256SUMS.sig", "a.tar", "lxc.conf"]
    assert not sums.verify(d, None, s.allowed_signers).problems

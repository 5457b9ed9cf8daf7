"""The Debian mirror's signed index (builder/debian/apt.py): only the text gpgv verified is read, a file with anything
outside its one signed block is refused, no gpgv or no keyring refuses the build (exit 2), and an unsigned local
mirror needs the recipe's explicit `bootstrap.unsigned: true`.

A real signing key is made with gpg in a temporary GNUPGHOME, a real Release is clearsigned with it and served
by a mirror on 127.0.0.1 that the test makes; real gpgv checks it against a keyring holding only that key
($IMGBUILD_KEYRING, which points imgbuild at a mirror signed with your own key)."""
from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import http.server
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from builder.core.errors import InputError, MirrorError
from builder.debian import apt
from tests.conftest import imgbuild
from tests.support import REPO

pytestmark = pytest.mark.skipif(not shutil.which("gpg") or not shutil.which("gpgv"),
                                reason="needs gpg and gpgv (scripts/setup.sh installs them)")

TRUSTED, STRANGER = "Test Mirror <mirror@example.invalid>", "Stranger <stranger@example.invalid>"
# keys made in 2020 (gpg's faked system time): one expired a day later, one that never expires; both trusted
EXPIRED, OLD, PAST = "Expired <expired@example.invalid>", "Old <old@example.invalid>", "20200101T000000"


# ---------------------------------------------------------------------------------------------- keys and mirror


class Signer:
    """A GNUPGHOME with two ed25519 keys; keyring holds only the TRUSTED one's public key."""

    def __init__(self, home: Path):
        self.home = home
        home.mkdir(mode=0o700)
        for uid in (TRUSTED, STRANGER):
            self.gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        for uid, expiry in ((EXPIRED, "1d"), (OLD, "never")):
            self.gpg("--faked-system-time", PAST, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign",
                     expiry)
        self.keyring = home.parent / "trusted.gpg"
        self.keyring.write_bytes(self.gpg("--export", TRUSTED, EXPIRED, OLD).stdout)
        fpr = self.gpg("--with-colons", "--fingerprint", TRUSTED).stdout.decode()
        self.fingerprint = next(ln.split(":")[9] for ln in fpr.splitlines() if ln.startswith("fpr:"))

    def gpg(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--quiet", "--pinentry-mode",
                               "loopback", *args], input=input, capture_output=True, check=True)

    def clearsign(self, text: str, *uids: str, digest: str = "SHA256", at: str | None = None) -> bytes:
        who = [a for u in (uids or (TRUSTED,)) for a in ("--local-user", u)]
        when = ["--faked-system-time", at] if at else []
        return self.gpg(*when, "--digest-algo", digest, *who, "--clearsign", input=text.encode()).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    s = Signer(tmp_path_factory.mktemp("gpg") / "home")
    yield s
    s.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch, signer):
    """A Debian-shaped mirror on 127.0.0.1 (tmp/mirror), a fresh cache, and the test keyring for imgbuild."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(apt.KEYRING_ENV, str(signer.keyring))
    m = Mirror(root, f"http://127.0.0.1:{server.server_address[1]}/debian", signer)
    yield m
    server.shutdown()
    server.server_close()
    t.join()


def stanza(name: str) -> str:
    return (f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nFilename: pool/main/{name}_1.0_amd64.deb\n"
            f"Size: 3\nSHA256: {hashlib.sha256(name.encode()).hexdigest()}\n")


GOOD = "\n".join(stanza(n) for n in ("alpha", "beta")).encode()
EVIL = "\n".join(stanza(n) for n in ("alpha", "beta", "evil")).encode()
DATE = "Sat, 11 Jul 2026 10:16:37 UTC"


class Mirror:
    def __init__(self, root: Path, url: str, signer: Signer):
        self.root, self.url, self.signer = root, url, signer
        self.dists = root / "debian" / "dists" / "bookworm"
        (self.dists / "main" / "binary-amd64").mkdir(parents=True)

    def packages(self, data: bytes) -> bytes:
        """Serve data as main/binary-amd64/Packages.gz; returns the compressed bytes."""
        gz = gzip.compress(data, mtime=0)
        (self.dists / "main/binary-amd64/Packages.gz").write_bytes(gz)
        return gz

    @staticmethod
    def release(files: dict[str, bytes], date: str | None = DATE, extra: str = "", suite: str = "bookworm") -> str:
        lines = ["Origin: Test", "Label: Test", "Suite: stable", f"Codename: {suite}"]
        if date is not None:
            lines.append(f"Date: {date}")
        lines += ["Architectures: amd64", "Components: main"]
        text = "\n".join(lines) + "\n" + extra
        return text + "SHA256:\n" + "".join(f" {hashlib.sha256(d).hexdigest()} {len(d)} {n}\n"
                                             for n, d in files.items())

    def serve(self, inrelease: bytes | None = None, release: str | None = None) -> None:
        for name, data in (("InRelease", inrelease), ("Release", release)):
            p = self.dists / name
            if data is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(data.encode() if isinstance(data, str) else data)

    def good(self) -> str:
        """Serve the genuine index (alpha, beta), signed; returns its Release text."""
        rel = self.release({"main/binary-amd64/Packages.gz": self.packages(GOOD)})
        self.serve(self.signer.clearsign(rel))
        return rel

    def fetch(self, **kw) -> apt.Index:
        return apt.fetch_index(self.url, "bookworm", "amd64", **kw)


# ---------------------------------------------------------------------------------------------- what is accepted


def test_a_good_signature_is_accepted_and_recorded(mirror, signer):
    mirror.good()
    idx = mirror.fetch()
    assert idx.names == {"alpha", "beta"}
    assert idx.signed_by == (signer.fingerprint,) and idx.keyring == str(signer.keyring)
    assert idx.date == int(email.utils.parsedate_to_datetime(DATE).timestamp())


def test_a_signature_by_an_unknown_key_beside_a_good_one_is_accepted(mirror, signer):
    """Debian signs each InRelease with the keys of several releases; a keyring that lacks one of them (an older
    host) still verifies the others, as apt does."""
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)})
    mirror.serve(signer.clearsign(rel, STRANGER, TRUSTED))
    assert mirror.fetch().signed_by == (signer.fingerprint,)


def test_a_signature_by_an_expired_key_counts_for_nothing(mirror, signer):
    """gpgv exits 0 for a signature by an expired key (EXPKEYSIG, then VALIDSIG): alone it is refused; beside a
    good one it is no reason to refuse."""
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)})
    mirror.serve(signer.clearsign(rel, EXPIRED, at="20200101T010000"))
    with pytest.raises(MirrorError, match="bad or unknown signature"):
        mirror.fetch()
    mirror.serve(signer.clearsign(rel, EXPIRED, OLD, at="20200101T010000"))
    assert len(mirror.fetch().signed_by) == 1


# ---------------------------------------------------------------------------------------------- what is refused
# Each attack serves the attacker's Packages index (with "evil") and tries to make imgbuild take its hash.


def _evil_release(m: Mirror) -> str:
    return m.release({"main/binary-amd64/Packages.gz": gzip.compress(EVIL, mtime=0)},
                     date="Mon, 01 Jan 2024 00:00:00 UTC")


ATTACKS = {
    # an unsigned paragraph before the signed block: gpgv still says "Good signature"
    "paragraph-before": lambda m, s, good, evil: evil.encode() + b"\n" + s.clearsign(good),
    "blank-line-before": lambda m, s, good, evil: b"\n" + s.clearsign(good),
    "text-after": lambda m, s, good, evil: s.clearsign(good) + b"\n" + evil.encode(),
    "two-signed-blocks": lambda m, s, good, evil: s.clearsign(evil) + s.clearsign(good),
    "two-blocks-good-first": lambda m, s, good, evil: s.clearsign(good) + s.clearsign(evil),
    # the signed text itself changed: gpgv's BADSIG
    "tampered-signed-text": lambda m, s, good, evil: s.clearsign(good).replace(b"Label: Test", b"Label: Evil"),
    # a header smuggled between the BEGIN line and the message
    "armor-header": lambda m, s, good, evil: s.clearsign(good).replace(b"Hash: SHA256\n",
                                                                       b"Hash: SHA256\nDate: now\n", 1),
    "signed-by-a-stranger": lambda m, s, good, evil: s.clearsign(evil, STRANGER),
    "not-signed-at-all": lambda m, s, good, evil: evil.encode(),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_anything_but_one_good_signed_block_is_refused(mirror, signer, attack):
    good = mirror.release({"main/binary-amd64/Packages.gz": gzip.compress(GOOD, mtime=0)})
    mirror.packages(EVIL)         # what the mirror serves: the attacker's index
    mirror.serve(ATTACKS[attack](mirror, signer, good, _evil_release(mirror)))
    with pytest.raises(MirrorError) as e:
        mirror.fetch()
    assert "InRelease" in str(e.value) and e.value.hint
    assert not list((Path(os.environ["IMGBUILD_CACHE"]) / "indexes").glob("*.names"))   # nothing kept


def test_a_weak_digest_is_refused(mirror, signer):
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)})
    try:
        signed = signer.clearsign(rel, digest="SHA1")
    except subprocess.CalledProcessError:
        pytest.skip("this gpg will not sign with SHA1 and ed25519")
    mirror.serve(signed)
    with pytest.raises(MirrorError, match="weak hash"):
        mirror.fetch()


def _twice(m: Mirror, gz: bytes) -> str:
    evil = gzip.compress(EVIL, mtime=0)
    return (m.release({"main/binary-amd64/Packages.gz": gz})
            + f" {hashlib.sha256(evil).hexdigest()} {len(evil)} main/binary-amd64/Packages.gz\n")


def _malformed(m: Mirror, gz: bytes) -> str:
    return m.release({"main/binary-amd64/Packages.gz": gz}) + " not-a-hash 3 main/binary-amd64/Packages\n"


RELEASES = {
    "no-date": (dict(date=None), "no valid Date"),
    "bad-date": (dict(date="yesterday"), "no valid Date"),
    "two-sha256-fields": (dict(extra="SHA256:\n " + "0" * 64 + " 3 main/binary-amd64/Packages.gz\n"),
                          "SHA256 given more than once"),
    "one-file-twice": (_twice, "lists main/binary-amd64/Packages.gz more than once"),
    "malformed-sha256-line": (_malformed, "is not `sha256 size name`"),
    "expired": (dict(extra="Valid-Until: Mon, 01 Jan 2024 00:00:00 UTC\n"), "expired"),
    "another-suite": (dict(suite="trixie"), "not bookworm"),
    "two-paragraphs": (dict(extra="\nOrigin: Other\n"), "2 paragraphs"),
}


@pytest.mark.parametrize("case", RELEASES)
def test_a_signed_release_that_is_not_one_clear_answer_is_refused(mirror, signer, case):
    make, message = RELEASES[case]
    gz = mirror.packages(GOOD)
    rel = make(mirror, gz) if callable(make) else mirror.release({"main/binary-amd64/Packages.gz": gz}, **make)
    mirror.serve(signer.clearsign(rel))
    with pytest.raises(MirrorError, match=message):
        mirror.fetch()


def test_a_valid_until_in_the_future_is_fine(mirror, signer):
    until = email.utils.formatdate(time.time() + 86400 * 7, usegmt=True)
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)}, extra=f"Valid-Until: {until}\n")
    mirror.serve(signer.clearsign(rel))
    assert mirror.fetch().names == {"alpha", "beta"}


@pytest.mark.parametrize("change", ["content", "size-only"])
def test_a_packages_index_the_signed_release_does_not_cover_is_refused(mirror, signer, change):
    mirror.good()
    gz = mirror.dists / "main/binary-amd64/Packages.gz"
    if change == "content":
        mirror.packages(EVIL)
    else:
        gz.write_bytes(gz.read_bytes() + b"\0")
    with pytest.raises(MirrorError, match="checksum differs from the Release file"):
        mirror.fetch()


# ---------------------------------------------------------------------------------------------- no gpgv, no keyring


def test_no_gpgv_refuses_with_the_package_to_install(mirror, monkeypatch, tmp_path):
    mirror.good()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="gpgv is not installed") as e:
        mirror.fetch()
    assert "apt-get install gpgv" in e.value.hint and "bootstrap.unsigned" in e.value.hint


def test_no_keyring_refuses_with_the_package_to_install(mirror, monkeypatch, tmp_path):
    mirror.good()
    monkeypatch.delenv(apt.KEYRING_ENV)
    monkeypatch.setattr(apt, "KEYRING", tmp_path / "debian-archive-keyring.gpg")
    with pytest.raises(InputError, match="keyring .* is missing") as e:
        mirror.fetch()
    assert e.value.hint == "apt-get install debian-archive-keyring"
    monkeypatch.setenv(apt.KEYRING_ENV, str(tmp_path / "mine.gpg"))
    with pytest.raises(InputError, match=r"mine.gpg is missing \(\$IMGBUILD_KEYRING\)"):
        mirror.fetch()


def test_the_default_keyring_is_debian_archive_keyrings(monkeypatch):
    """Without $IMGBUILD_KEYRING: debian-archive-keyring's, which holds the keys of bullseye to trixie (and so
    sid's) on this host."""
    monkeypatch.delenv(apt.KEYRING_ENV, raising=False)
    assert apt.keyring() == Path("/usr/share/keyrings/debian-archive-keyring.gpg")


# ---------------------------------------------------------------------------------------------- the opt-out


def test_unsigned_reads_the_plain_release_with_a_warning(mirror, caplog):
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)})
    mirror.serve(release=rel)
    with pytest.raises(apt.UnknownSuite, match="no signed index") as e:
        mirror.fetch()                    # without the opt-out: refused, and the opt-out named
    assert e.value.key == "bootstrap.unsigned" and "bootstrap.unsigned: true" in e.value.hint
    with caplog.at_level(logging.WARNING, logger="imgbuild"):
        idx = mirror.fetch(unsigned=True)
    assert idx.names == {"alpha", "beta"} and idx.signed_by == () and idx.keyring == ""
    assert any("bootstrap.unsigned" in r.getMessage() and "not checked" in r.getMessage() for r in caplog.records)


def test_unsigned_still_checks_the_packages_hashes(mirror):
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)})
    mirror.serve(release=rel)
    mirror.packages(EVIL)
    with pytest.raises(MirrorError, match="checksum differs"):
        mirror.fetch(unsigned=True)


# ---------------------------------------------------------------------------------------------- the console script


def _recipe(tmp_path: Path, mirror: Mirror, extra: str = "", packages: str = "[alpha]") -> Path:
    p = tmp_path / "r.yml"
    p.write_text(f"name: sig\ndistro: debian\nrelease: bookworm\narch: amd64\n"
                 f"bootstrap: {{method: mmdebstrap, mirror: '{mirror.url}', packages: {packages}{extra}}}\n")
    return p


def _env(**kw) -> dict:
    return {**os.environ, **kw}


def _no_traceback(r) -> None:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


def _path_without_gpgv(tmp_path: Path) -> str:
    d = tmp_path / "bin"
    d.mkdir()
    for tool in ("mmdebstrap", "debootstrap"):
        if shutil.which(tool):
            os.symlink(shutil.which(tool), d / tool)
    return str(d)


@pytest.mark.parametrize("command", ["validate", "build"])
def test_console_no_gpgv_or_no_keyring_is_exit_2_and_nothing_written(mirror, tmp_path, command):
    mirror.good()
    recipe = _recipe(tmp_path, mirror)
    out = tmp_path / "out"
    args = ["validate", recipe] if command == "validate" else [recipe, "-o", out]
    for env, hint in ((_env(PATH=_path_without_gpgv(tmp_path)), "hint: apt-get install gpgv"),
                      (_env(IMGBUILD_KEYRING=str(tmp_path / "none.gpg")), "IMGBUILD_KEYRING")):
        r = imgbuild(*args, env=env, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "error: cannot check the Debian mirror's signature" in r.stderr and hint in r.stderr
        _no_traceback(r)
        assert not out.exists()


def test_console_an_unsigned_paragraph_before_the_block_is_refused(mirror, signer, tmp_path):
    """The reported attack, end to end: the attacker's paragraph names a Packages index with "evil"; the old
    reader took it, and `validate` said ok for a recipe asking for "evil"."""
    good = mirror.release({"main/binary-amd64/Packages.gz": gzip.compress(GOOD, mtime=0)})
    mirror.packages(EVIL)
    mirror.serve(_evil_release(mirror).encode() + b"\n" + signer.clearsign(good))
    out = tmp_path / "out"
    for args in (["validate", _recipe(tmp_path, mirror, packages="[evil]")],
                 [_recipe(tmp_path, mirror, packages="[evil]"), "-o", out]):
        r = imgbuild(*args, env=_env(), timeout=120)
        assert r.returncode == 1, r.stderr
        assert "error: " in r.stderr and "InRelease: text before the signed message" in r.stderr
        assert "ok" not in r.stdout
        _no_traceback(r)
        assert not out.exists()


def test_console_the_opt_out_is_a_warning(mirror, tmp_path):
    rel = mirror.release({"main/binary-amd64/Packages.gz": mirror.packages(GOOD)})
    mirror.serve(release=rel)
    r = imgbuild("validate", _recipe(tmp_path, mirror), env=_env(), timeout=120)
    assert r.returncode == 2 and "bootstrap.unsigned" in r.stderr, r.stderr        # no InRelease, no opt-out
    _no_traceback(r)
    r = imgbuild("validate", _recipe(tmp_path, mirror, extra=", unsigned: true"), env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr.lower() and "bootstrap.unsigned" in r.stderr and "not checked" in r.stderr


def test_the_unsigned_key_is_in_the_schema_and_its_docs():
    from builder.build.recipe import Bootstrap

    assert Bootstrap().unsigned is False
    text = (REPO / "docs" / "recipes.md").read_text()
    assert "| `unsigned` | boolean | `false` |" in text


# ---------------------------------------------------------------------------------------------- a real unsigned build


class _Proxy(http.server.BaseHTTPRequestHandler):
    """The host's mirror seen through 127.0.0.1, without its signatures: an unsigned local mirror."""

    upstream = ""
    UNSIGNED = ("/InRelease", "/Release.gpg")

    def do_GET(self) -> None:
        import requests

        if self.path.endswith(self.UNSIGNED):
            self.send_error(404)
            return
        r = requests.get(self.upstream + self.path.removeprefix("/debian"), timeout=60)
        self.send_response(r.status_code)
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    def do_HEAD(self) -> None:
        self.send_error(404) if self.path.endswith(self.UNSIGNED) else self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_an_unsigned_local_mirror_builds_with_mmdebstraps_own_downloads(tmp_path):
    """bootstrap.unsigned: true against a mirror that has no signature at all, mmdebstrap downloading itself
    (IMGBUILD_PREPARED=0, no bootstrap cache): apt is told the mirror is trusted=yes, the build warns, the
    manifest records it and the guest's sources.list says what it was given."""
    from builder.debian.apt import host_mirror

    handler = type("P", (_Proxy,), {"upstream": host_mirror("bookworm")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/debian"
        recipe = tmp_path / "u.yml"
        recipe.write_text(f"name: unsigned\ndistro: debian\nrelease: bookworm\n"
                          f"bootstrap: {{method: mmdebstrap, mirror: '{url}', unsigned: true}}\n"
                          "targets: {tarball: {compression: none}}\n")
        out = tmp_path / "out"
        r = imgbuild("validate", recipe, env=_env(), timeout=300)
        assert r.returncode == 0, r.stderr
        no_opt_out = tmp_path / "signed.yml"
        no_opt_out.write_text(recipe.read_text().replace(", unsigned: true", ""))
        r = imgbuild("validate", no_opt_out, env=_env(), timeout=300)
        assert r.returncode == 2 and "no signed index (InRelease)" in r.stderr, r.stderr
        r = imgbuild(recipe, "-o", out, "--no-cache", "--keep-tree", env=_env(IMGBUILD_PREPARED="0"), timeout=900)
        assert r.returncode == 0, r.stderr
        assert "bootstrap.unsigned" in r.stderr
        m = __import__("json").loads((out / "unsigned" / "manifest.json").read_text())
        assert m["bootstrap"]["signature"] == {"checked": False, "why": "bootstrap.unsigned: true"}
        sources = (out / "unsigned.rootfs" / "etc/apt/sources.list").read_text()
        assert sources.strip() == f"deb [trusted=yes] {url} bookworm main"
    finally:
        server.shutdown()
        server.server_close()
        t.join()

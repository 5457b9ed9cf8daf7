from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from builder.build.steps import password
from builder.core.errors import InputError

HASH = "$6$saltsalt$Q7yKe4rHkSNR2ss0jbHI7Kgq0W3Flq.0nQg3F6vZzcb5wcy3ydoGdkdJ7kGZUPvIWjRYlJxg8iMSLIvKXBlEw1"


def _root_entry(ctx):
    return next(line for line in (ctx.root.path / "etc/shadow").read_text().splitlines() if line.startswith("root:"))


def test_lock(ctx_for):
    ctx = ctx_for(root_password={"lock": True})
    password.run(ctx, ctx.recipe.root_password)
    f = _root_entry(ctx).split(":")
    assert f[1] == "!*" and f[2] == str(1_700_000_000 // 86400)
    assert stat.S_IMODE((ctx.root.path / "etc/shadow").stat().st_mode) == 0o640
    assert "sshd:!:19000" in (ctx.root.path / "etc/shadow").read_text()


def test_hash_is_written_and_never_in_repr(ctx_for):
    ctx = ctx_for(root_password={"hash": HASH})
    assert HASH not in repr(ctx.recipe) and HASH not in str(ctx.recipe)
    password.run(ctx, ctx.recipe.root_password)
    assert _root_entry(ctx).split(":")[1] == HASH


@pytest.fixture(autouse=True)
def secrets(tmp_path, monkeypatch):
    """This host's secrets directory, for the salt key (never the real /var/lib/imgbuild/secrets)."""
    d = tmp_path / "secrets"
    monkeypatch.setenv("IMGBUILD_SECRETS_DIR", str(d))
    return d


PASSWORD = "s3cret-pass"


def _hash_for(ctx_for, tmp_path, **over) -> str:
    pw = tmp_path / "pw"
    pw.write_text(f"{PASSWORD}\nignored second line\n")
    ctx = ctx_for(root_password={"from_file": str(pw)}, **over)
    password.run(ctx, ctx.recipe.root_password)
    return _root_entry(ctx).split(":")[1]


def _host_crypt(pw: str, setting: str) -> str:
    """crypt(3) as the host's perl calls it: libcrypt, by another way than imgbuild's."""
    return subprocess.run(["perl", "-e", "print crypt($ENV{PW}, $ARGV[0])", setting], env={"PW": pw},
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("over, prefix", [
    ({}, "$y$j9T$"),                                         # bookworm: yescrypt at Debian's default cost
    ({"release": "trixie"}, "$y$j9T$"),
    ({"release": "bullseye"}, "$y$j9T$"),
    ({"release": "buster"}, "$6$"),                          # before bullseye: SHA-512, 5000 rounds
    ({"distro": "centos", "release": "7"}, "$6$"),           # EL: SHA-512, 5000 rounds (the default: not written)
])
def test_from_file_uses_the_targets_default_scheme_and_verifies(ctx_for, tmp_path, over, prefix):
    h = _hash_for(ctx_for, tmp_path, **over)
    assert h.startswith(prefix) and "rounds=" not in h and "s3cret" not in h
    assert _host_crypt(PASSWORD, h) == h
    assert _host_crypt(PASSWORD + "x", h) != h
    if prefix == "$6$":
        salt = h.split("$")[2]
        assert len(salt) == 16
        again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=PASSWORD,
                               capture_output=True, text=True, check=True).stdout.strip()
        assert again == h


def test_same_host_twice_gives_the_same_hash(ctx_for, tmp_path, secrets):
    first = _hash_for(ctx_for, tmp_path)
    key = (secrets / password.HOST_KEY).read_bytes()
    assert _hash_for(ctx_for, tmp_path) == first
    assert (secrets / password.HOST_KEY).read_bytes() == key            # made once, kept


def test_two_hosts_give_two_hashes_for_the_same_password(ctx_for, tmp_path, monkeypatch):
    hashes = set()
    for host in ("a", "b", "c"):
        monkeypatch.setenv("IMGBUILD_SECRETS_DIR", str(tmp_path / f"host-{host}"))
        hashes.add(_hash_for(ctx_for, tmp_path))
    assert len(hashes) == 3


def test_two_builds_on_one_host_give_two_hashes(ctx_for, tmp_path):
    assert len({_hash_for(ctx_for, tmp_path, name=n) for n in ("web1", "web2", "db1")}) == 3


def test_the_salt_is_not_derivable_from_the_manifests_data(ctx_for, tmp_path):
    """Everything the manifest and the recipe say (name, host name, epoch) does not give the salt: the same
    inputs under another key give another salt, and neither is a plain hash of those inputs (the old salt)."""
    import base64
    import hashlib

    h = _hash_for(ctx_for, tmp_path)
    salt = h.split("$")[3]
    ctx = ctx_for()
    public = f"imgbuild:{ctx.recipe.name}:{ctx.recipe.hostname}:{ctx.epoch}".encode()
    old = base64.b64encode(hashlib.sha256(public).digest(), b"./").decode()[:16]
    assert old not in h
    mine = password.salt_bytes(ctx, "yescrypt")
    assert password.salt_bytes(ctx, "yescrypt", key=b"\0" * 32) != mine
    assert password.salt_bytes(ctx, "yescrypt", key=password.host_key()) == mine
    for guess in (hashlib.sha256(public).digest(), hashlib.sha256(ctx.recipe.name.encode()).digest()):
        assert guess[:password.SALT_BYTES] != mine
    assert len(salt) >= 22


def test_the_key_is_private_and_made_once_even_by_builds_at_once(tmp_path):
    import concurrent.futures
    import multiprocessing

    d = tmp_path / "secrets"
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
        keys = list(pool.map(password.host_key, [d] * 8))
    assert len(set(keys)) == 1 and len(keys[0]) == password.HOST_KEY_BYTES
    assert stat.S_IMODE((d / password.HOST_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert [p.name for p in d.iterdir()] == [password.HOST_KEY]        # no temp files left


@pytest.mark.parametrize("bad", ["world-readable", "symlink", "short", "directory", "fifo"])
def test_a_key_file_that_is_not_private_is_refused(tmp_path, bad):
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    k = d / password.HOST_KEY
    if bad == "world-readable":
        k.write_bytes(b"k" * 32)
        k.chmod(0o644)
    elif bad == "symlink":
        (tmp_path / "elsewhere").write_bytes(b"k" * 32)
        k.symlink_to(tmp_path / "elsewhere")
    elif bad == "short":
        k.write_bytes(b"k" * 5)
        k.chmod(0o600)
    elif bad == "fifo":
        os.mkfifo(k, 0o600)
    else:
        k.mkdir(mode=0o700)
    with pytest.raises(InputError, match=str(k)):
        password.host_key(d)


def test_empty_password_file_is_refused(ctx_for, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("")
    ctx = ctx_for(root_password={"from_file": str(pw)})
    with pytest.raises(InputError, match="is empty"):
        password.run(ctx, ctx.recipe.root_password)


@pytest.mark.root
def test_the_guests_own_libcrypt_accepts_the_hash(debian12_build, ctx_for, tmp_path):
    """The hash made for bookworm checks with the built tree's own libcrypt (perl-base is essential)."""
    tree = debian12_build.parent / "debian12.rootfs"
    h = _hash_for(ctx_for, tmp_path)
    check = [shutil.which("chroot"), str(tree), "perl", "-e", "print crypt($ENV{PW}, $ARGV[0])", h]
    assert subprocess.run(check, env={"PW": PASSWORD}, capture_output=True, text=True, check=True).stdout == h
    assert subprocess.run(check, env={"PW": "wrong"}, capture_output=True, text=True, check=True).stdout != h

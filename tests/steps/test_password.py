from __future__ import annotations

import stat
import subprocess

import pytest

from builder.errors import InputError
from builder.steps import password

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


def test_from_file_is_sha512_crypt_verifiable_and_reproducible(ctx_for, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pass\nignored second line\n")
    ctx = ctx_for(root_password={"from_file": str(pw)})
    password.run(ctx, ctx.recipe.root_password)
    h = _root_entry(ctx).split(":")[1]
    assert h.startswith("$6$") and "s3cret" not in h
    salt = h.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input="s3cret-pass",
                           capture_output=True, text=True, check=True).stdout.strip()
    assert again == h
    password.run(ctx, ctx.recipe.root_password)
    assert _root_entry(ctx).split(":")[1] == h


def test_empty_password_file_is_refused(ctx_for, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("")
    ctx = ctx_for(root_password={"from_file": str(pw)})
    with pytest.raises(InputError, match="is empty"):
        password.run(ctx, ctx.recipe.root_password)

from __future__ import annotations

import stat

import pytest

from builder.build.steps import files
from builder.core.errors import InputError


def test_inline_and_source(ctx_for, tmp_path):
    src = tmp_path / "motd.src"
    src.write_bytes(b"\x00binary ok\n")
    ctx = ctx_for(files=[{"path": "/etc/motd", "content": "hi\n", "mode": "0600", "owner": "sshd", "group": "adm"},
                         {"path": "/opt/x/bin", "source": str(src), "mode": "0755"}])
    files.run(ctx, ctx.recipe.files)
    motd = ctx.root.path / "etc/motd"
    st = motd.stat()
    assert motd.read_text() == "hi\n" and stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (100, 4)
    assert (ctx.root.path / "opt/x/bin").read_bytes() == b"\x00binary ok\n"


def test_unknown_group(ctx_for):
    ctx = ctx_for(files=[{"path": "/etc/x", "content": "", "group": "nogroup-here"}])
    with pytest.raises(InputError, match=r"files\[0\]\.group"):
        files.run(ctx, ctx.recipe.files)

"""A build Context on a small temp tree with a real recipe object, for tests of steps and of what the outputs hold:
no bootstrap needed (the fixture `ctx_for` in tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

from builder.build.context import Context
from builder.build.families import family_of
from builder.build.recipe import Recipe
from builder.core import schema
from builder.core.rootfs import RootFS

BASE = {"name": "t1", "distro": "debian", "release": "bookworm"}
PASSWD = "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
GROUP = "root:x:0:\ntty:x:5:\nadm:x:4:\n"
SHADOW = "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n"


def make_recipe(**over) -> Recipe:
    loader = schema.Loader("test.yml")
    r = loader.load(Recipe, {**BASE, **over}, "")
    assert not loader.problems, loader.problems
    return r


def small_context(tmp_path: Path, **over) -> Context:
    """A Context for the recipe BASE + `over`, on TMP_PATH/root holding only passwd, group and shadow."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "etc/shadow").write_text(SHADOW)
    (root / "etc/shadow").chmod(0o640)
    r = make_recipe(**over)
    return Context(recipe=r, source=Path(tmp_path / "test.yml"), root=RootFS(root), work=tmp_path,
                   stage=tmp_path / "stage", epoch=1_700_000_000, family=family_of(r.distro))

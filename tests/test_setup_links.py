"""scripts/link-commands.sh (run by scripts/setup.sh): the README's commands (`imgbuild ...`, `migrate ...`) work
as written because setup links them into /usr/local/bin; only where nothing is, or an earlier setup's link; a
file or another tool's link of that name is left alone and named. Run here against a temporary bin directory."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "link-commands.sh"


def link(bindir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT)], env={**os.environ, "IMGBUILD_BINDIR": str(bindir)}, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_setup_runs_it():
    assert "./scripts/link-commands.sh" in (REPO / "scripts/setup.sh").read_text()


def test_commands_are_linked_where_nothing_or_an_earlier_setup_is(tmp_path):
    bindir = tmp_path / "bin"
    r = link(bindir)
    assert r.returncode == 0, r.stderr
    for c in ("imgbuild", "migrate"):
        assert os.readlink(bindir / c) == str(REPO / ".venv/bin" / c)
    r = subprocess.run([str(bindir / "imgbuild"), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    (bindir / "migrate").unlink()
    (bindir / "migrate").symlink_to("/old/checkout/.venv/bin/migrate")      # an earlier setup's, now dangling
    assert link(bindir).returncode == 0
    assert os.readlink(bindir / "migrate") == str(REPO / ".venv/bin/migrate")


def test_a_file_or_another_link_of_that_name_is_left_alone(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "imgbuild").write_text("#!/bin/sh\necho someone else's\n")
    (bindir / "migrate").symlink_to("/usr/bin/true")
    r = link(bindir)
    assert r.returncode == 0, r.stderr
    assert (bindir / "imgbuild").read_text() == "#!/bin/sh\necho someone else's\n"
    assert os.readlink(bindir / "migrate") == "/usr/bin/true"
    assert f"{bindir}/imgbuild exists and is not imgbuild's link: left alone" in r.stderr
    assert f"{bindir}/migrate is a link to /usr/bin/true, not to imgbuild: left alone" in r.stderr
    assert ". .venv/bin/activate" in r.stderr

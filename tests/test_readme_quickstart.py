"""The README's quick start, exactly its lines, as a user runs them: build, install, clone, boot two containers,
push one's tree to a host over ssh. They run in a world the test makes (tests/support/quickstart.py): an lxcbr0
bridge of its own (no address: the containers reach each other only), the ssh host vps1 in a network namespace,
private mounts over /var/lib/lxc and /root/.ssh; everything is stopped and removed afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.support.sshhost import require_base

pytestmark = pytest.mark.root


def quick_start() -> str:
    """The sh block under the README's "## Quick start" heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0] + "\n"


def test_the_block_is_what_the_readme_promises():
    block = quick_start()
    for command in ("imgbuild recipes/debian12.yml", "imgbuild install-lxc", "imgbuild clone", "lxc-start",
                    "migrate push vps1"):
        assert command in block
    assert ".venv" not in block          # the commands as they are on PATH


def test_the_readme_quick_start_runs_as_written(request, tmp_path, debian12_build):
    """debian12_build: the default recipe built once per session, so the quick start's build is a cache hit."""
    base = require_base(request)
    script = tmp_path / "quickstart.sh"
    script.write_text(quick_start())
    had_bridge = os.path.exists("/sys/class/net/lxcbr0")
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
                            "tests.support.quickstart", str(tmp_path), str(base), str(script)],
                           cwd=REPO, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    finally:
        if not had_bridge and os.path.exists("/sys/class/net/lxcbr0"):     # the driver died before its cleanup
            subprocess.run(["ip", "link", "del", "lxcbr0"], check=False)
    log = (tmp_path / "quickstart.log").read_text(errors="replace") if (tmp_path / "quickstart.log").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + log[-4000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["returncode"] == 0, log[-6000:]
    assert result["cleanup_problems"] == [], result
    assert (result["web1_hostname"], result["web2_hostname"]) == ("web1", "web2"), log[-3000:]
    assert "\nrunning\n" in log and "10.0.3.3/24" in log, log[-3000:]
    assert "would send" in log and "not sent (per-host files" in log
    assert result["pushed_os_release"] and result["pushed_marker"] and not result["pushed_hostname"], result

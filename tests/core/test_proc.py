"""The one subprocess wrapper: logging, tails, secrets, missing tools."""
from __future__ import annotations

import logging

import pytest

from builder.core import proc as runner
from builder.core.errors import CommandError, ToolMissing
from builder.core.proc import Secret


def test_secret_never_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="imgbuild"):
        r = runner.run(["sh", "-c", 'echo "len=${#1}"', "sh", Secret("hunter2")], capture=True)
    assert r.stdout.strip() == "len=7"
    assert "hunter2" not in caplog.text and "***" in caplog.text
    assert "hunter2" not in repr(Secret("hunter2")) and str(Secret("hunter2")) == "***"


def test_secret_on_stdin():
    assert runner.output(["cat"], input=Secret("s3cret")) == "s3cret"


def test_failure_names_command_status_and_tail():
    with pytest.raises(CommandError) as e:
        runner.run(["sh", "-c", "for i in $(seq 1 40); do echo line$i; done; exit 3"])
    assert e.value.status == 3 and e.value.tail[-1] == "line40" and len(e.value.tail) == runner.TAIL_LINES
    assert "exit status 3" in str(e.value) and "line40" in str(e.value)


def test_missing_tool_names_the_package():
    with pytest.raises(ToolMissing) as e:
        runner.run(["mmdebstrap-not-installed-xyz"])
    assert "command not found" in str(e.value)
    with pytest.raises(ToolMissing) as e:
        runner.run(["/nonexistent/mke2fs"])
    assert e.value.hint == "install it: apt-get install e2fsprogs"


def test_on_line_sees_output():
    seen = []
    runner.run(["sh", "-c", "echo I: one; echo two >&2"], on_line=seen.append)
    assert seen == ["I: one", "two"]


def test_versions():
    v = runner.versions(["tar", "no-such-tool-xyz"])
    assert v["tar"].startswith("tar (GNU tar)") and "no-such-tool-xyz" not in v

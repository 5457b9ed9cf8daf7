"""Tool versions in the manifest are remembered by program (path, size, mtime), not asked on every build."""
from __future__ import annotations

import os

from builder.build import manifest


def test_versions_are_asked_once_per_program_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    count = tmp_path / "count"
    tool = bindir / "faketool"
    tool.write_text(f"#!/bin/sh\necho x >> {count}\necho 'faketool 1.0'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert manifest.tool_versions(["faketool", "no-such-tool"]) == {"faketool": "faketool 1.0"}
    assert manifest.tool_versions(["faketool"]) == {"faketool": "faketool 1.0"}
    assert count.read_text().count("x") == 1                       # the second answer came from the cache
    tool.write_text(f"#!/bin/sh\necho x >> {count}\necho 'faketool 2.0 (upgraded)'\n")
    assert manifest.tool_versions(["faketool"]) == {"faketool": "faketool 2.0 (upgraded)"}
    assert count.read_text().count("x") == 2


def test_a_damaged_store_is_asked_again(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    (tmp_path / "tool-versions.json").write_text('["not", "a", "map"]')
    assert manifest.tool_versions(["sh"]) == manifest.tool_versions(["sh"])    # no crash; the store rewritten
    assert (tmp_path / "tool-versions.json").read_text().lstrip().startswith("{")

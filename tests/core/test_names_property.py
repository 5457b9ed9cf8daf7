"""Properties of the Name check and of the readers of files an earlier run left (manifest.json, nodes.json):
whatever the input, a name that passes is one path component that stays a direct child of its parent and needs
no shell quoting, and a reader returns a value of the expected shape or raises InputError, never another
exception. A bounded number of examples, so the suite stays fast."""
from __future__ import annotations

import json
import os
import shlex
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.build import cluster
from builder.build.manifest import read_manifest
from builder.core import checks
from builder.core.errors import InputError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# names near the edge: dots, slashes, shell characters, whitespace, non-ASCII, and plain ones
names = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "._-/ ;$()`'\"\\\n\t*?~&|<>!#", max_size=70),
    st.text(max_size=20),
    st.sampled_from(["..", ".", "", "/", "a/..", "../a", "a\n", "-a", "a" * 64, "a" * 65, "vm0", "web.1", "x_y"]),
)


@SETTINGS
@given(names)
def test_a_name_that_passes_is_one_safe_path_component(v):
    try:
        checks.name(v)
    except ValueError:
        return
    assert "/" not in v and "\0" not in v and v not in (".", "..") and not v.startswith((".", "-"))
    assert 1 <= len(v) <= 64 and v.isascii() and v.isprintable() and not any(c.isspace() for c in v)
    assert os.path.normpath(os.path.join("/parent", v)) == f"/parent/{v}"
    assert shlex.quote(v) == v


@pytest.fixture(scope="module")
def parent():
    with tempfile.TemporaryDirectory() as d:
        real = Path(d) / "real"
        real.mkdir()
        (Path(d) / "link").symlink_to(real)
        (real / "taken").symlink_to("/etc")
        yield Path(d) / "link", real


@SETTINGS
@given(st.one_of(names, st.just("taken")))
def test_child_is_a_direct_child_of_the_resolved_parent_or_an_input_error(parent, v):
    link, real = parent
    try:
        p = checks.child(link, v, "--name")
    except InputError as e:
        assert e.message.startswith("--name: ")
        return
    assert p.parent == real and p.name == v and not p.is_symlink()


# JSON values: what a changed or corrupted manifest.json / nodes.json might hold
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)


def manifest_like():
    art = st.fixed_dictionaries({"kind": st.sampled_from(["tarball", "lxc-config", "x"]) | json_values,
                                 "path": st.sampled_from(["t.tar", "../x", "/etc/passwd", "", ".", "lxc.conf"])
                                 | json_values})
    return st.fixed_dictionaries({"name": names | json_values, "artifacts": st.lists(art, max_size=3) | json_values})


def nodes_like():
    node = st.fixed_dictionaries({
        "name": names | json_values, "address": st.sampled_from(["10.0.3.11/24", "10.0.3.11", "x"]) | json_values,
        "mac": st.sampled_from(["00:16:3e:00:00:01", "01:00:5e:00:00:01", "zz"]) | json_values,
        "vars": st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values})
    base = st.fixed_dictionaries({"ip": st.sampled_from(["10.0.3.10", None, "x"]) | json_values,
                                  "mac": st.sampled_from(["00:16:3e:00:00:09", None, "x"]) | json_values})
    return st.fixed_dictionaries({"base": base | json_values, "nodes": st.lists(node, max_size=3) | json_values})


def payloads(shaped):
    return st.one_of(shaped.map(lambda v: json.dumps(v).encode()), json_values.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=64))


@pytest.fixture(scope="module")
def out():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@SETTINGS
@given(payloads(manifest_like()))
def test_read_manifest_gives_a_checked_manifest_or_an_input_error(out, data):
    (out / "manifest.json").write_bytes(data)
    try:
        m = read_manifest(out)
    except InputError as e:
        assert "manifest.json" in e.message
        return
    checks.name(m["name"])
    for a in m["artifacts"]:
        assert isinstance(a["kind"], str) and (out / a["path"]).parent == out


@SETTINGS
@given(payloads(nodes_like()))
def test_read_nodes_gives_checked_nodes_or_an_input_error(out, data):
    (out / "nodes.json").write_bytes(data)
    try:
        d = cluster.read_nodes(out)
    except InputError as e:
        assert "nodes.json" in e.message
        return
    assert d["nodes"]
    for n in d["nodes"]:
        checks.name(n["name"])
        checks.hostname(n["name"])
        checks._interface(n["address"])
        checks.mac(n["mac"])
        assert isinstance(n.get("vars", {}), dict)

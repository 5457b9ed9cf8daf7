"""Every YAML file imgbuild reads goes through one strict reader (builder/core/untrusted.py): alias bombs, recursive
aliases, duplicate keys, binary and non-UTF-8 files are refused with exit status 2, `error:` and a hint naming the
file (and line), fast and without a traceback, and nothing is written. Also click's own usage errors in the
project's error:/hint: form, and property tests of the readers.

The console scripts are run for real; each subprocess has a timeout only as the guard against a hang (an alias
bomb used to hang `imgbuild validate`), never as a measure of speed.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.build import recipe
from builder.core import untrusted
from builder.core.errors import InputError, RecipeError
from builder.identity import inventory, kept
from tests.conftest import BIN
from tests.support.guests import make_container, tree_state

GUARD = 60      # seconds: a hang fails the test instead of stalling the suite
DEAD_MIRROR = "http://127.0.0.1:9/debian"
HEAD = f"name: t\ndistro: debian\nrelease: bookworm\nbootstrap: {{mirror: '{DEAD_MIRROR}'}}\n"


def run(script: str, *args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=GUARD, env=env)


def refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "error: " in r.stderr and "hint: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def bomb(levels: int, width: int = 10, indent: str = "  ", mapping: bool = False) -> str:
    """A "billion laughs" block: level n refers `width` times to level n-1, so it expands to width**levels
    values; a few hundred bytes."""
    lines = [f"{indent}a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        if mapping:
            body = "{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(width)) + "}"
        else:
            body = "[" + ", ".join([f"*a{i - 1}"] * width) + "]"
        lines.append(f"{indent}a{i}: &a{i} {body}")
    return "\n".join(lines) + "\n"


BOMBS = {"1e6": bomb(6), "1e8": bomb(8), "1e8-mappings": bomb(8, mapping=True), "1e12": bomb(12)}


# ================================================================== alias bombs


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_an_alias_bomb_in_a_recipe_is_refused_by_validate_and_build(case, tmp_path):
    rfile = tmp_path / "bomb.yml"
    rfile.write_text(HEAD + "vars:\n" + BOMBS[case])
    assert rfile.stat().st_size < 1000        # a few hundred bytes ...
    for args in (["validate", "--offline", rfile], ["validate", rfile], [rfile, "-o", tmp_path / "out"],
                 ["build", rfile, "-o", tmp_path / "out"]):
        r = run("imgbuild", *args, cwd=tmp_path)
        refused(r, f"{rfile}: line ", "expands to more than")      # ... refused, not expanded
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["bomb.yml"]


def test_an_alias_bomb_in_an_extended_recipe_or_a_set_value_is_refused(tmp_path):
    (tmp_path / "base.yml").write_text(HEAD + "vars:\n" + BOMBS["1e8"])
    (tmp_path / "child.yml").write_text("extends: base.yml\nname: child\n")
    r = run("imgbuild", "validate", "--offline", "child.yml", cwd=tmp_path)
    refused(r, "base.yml: line ", "expands to more than")
    setbomb = "{" + "a0: &a0 [x,x,x,x,x,x,x,x,x,x], " + ", ".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)) + "}"
    (tmp_path / "clean.yml").write_text(HEAD)
    r = run("imgbuild", "validate", "--offline", "clean.yml", "--set", f"vars.x={setbomb}", cwd=tmp_path)
    refused(r, "--set vars.x: line 1", "expands to more than")
    r = run("imgbuild", "clean.yml", "-o", tmp_path / "out", "--set", f"vars.x={setbomb}", cwd=tmp_path)
    refused(r, "--set vars.x: line 1", "expands to more than")
    assert sorted(os.listdir(tmp_path)) == ["base.yml", "child.yml", "clean.yml"]


@pytest.mark.root
@pytest.mark.parametrize("case", ["1e6", "1e8"])
def test_an_alias_bomb_in_the_inventory_or_a_guests_vars_is_refused(case, tmp_path):
    cdir = make_container(tmp_path / "lxc", "vm0")
    opts = ["--lxcpath", tmp_path / "lxc", "--xen-dir", tmp_path / "xen", "--vz-dir", tmp_path / "vz"]
    inv = tmp_path / "inventory.yml"
    inv.write_text("guests:\n  - name: old\n    macs: []\n" + "x:\n" + BOMBS[case])
    inv_before = inv.read_bytes()
    env = {**os.environ, inventory.ENV_VAR: str(inv)}
    before = tree_state(tmp_path / "lxc")
    for script, args in (("migrate", ["reidentify", cdir, "--hostname", "web1", "--dry-run"]),
                         ("migrate", ["reidentify", cdir, "--hostname", "web1"]),
                         ("imgbuild", ["clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.9"])):
        r = run(script, *args, *opts, cwd=tmp_path, env=env)
        refused(r, f"{inv}:", "expands to more than")
        r = run(script, *args, *opts, "--inventory", inv, cwd=tmp_path)
        refused(r, f"{inv}:", "expands to more than")
    assert inv.read_bytes() == inv_before
    assert tree_state(tmp_path / "lxc") == before

    # the same bomb in the guest's own vars.yml
    inv.unlink()
    (cdir / "rootfs" / kept.STORE.lstrip("/")).mkdir(parents=True)
    source = f"{kept.STORE}/0-app.j2"
    (cdir / "rootfs" / source.lstrip("/")).write_text("{{ hostname }}\n")
    (cdir / "rootfs/etc/imgbuild").mkdir()
    (cdir / "rootfs" / kept.INDEX.lstrip("/")).write_text(
        f"- {{path: /etc/app, template: {source}, mode: '0644', uid: 0, gid: 0}}\n")
    (cdir / "rootfs" / kept.VARS.lstrip("/")).write_text(BOMBS[case].replace("  a", "a"))
    before = tree_state(tmp_path / "lxc")
    for dry in (["--dry-run"], []):
        r = run("migrate", "reidentify", cdir, "--hostname", "web1", *dry, *opts, cwd=tmp_path, env=env)
        refused(r, f"rootfs:{kept.VARS}: line ", "expands to more than")
    assert tree_state(tmp_path / "lxc") == before
    assert not inv.exists()


# ================================================================== duplicate keys


@pytest.mark.parametrize("text, line, key", [
    (HEAD + "hostname: a\nhostname: b\n", 6, "hostname"),
    (HEAD + "network:\n  eth0: {dhcp: true}\n  eth0: {dhcp: false}\n", 7, "eth0"),
    (HEAD + "vars: {a: 1, b: 2, a: 3}\n", 5, "a"),
    (HEAD + "files:\n  - {path: /etc/x, content: a, content: b}\n", 6, "content"),
    (HEAD + "base: &b {x: 1}\nvars: {<<: *b, y: 2, y: 3}\n", 6, "y"),
])
def test_duplicate_keys_in_a_recipe_are_refused_naming_file_and_line(text, line, key, tmp_path):
    rfile = tmp_path / "dup.yml"
    rfile.write_text(text)
    r = run("imgbuild", "validate", "--offline", rfile, cwd=tmp_path)
    refused(r, f"{rfile}: line {line}, column ", f"duplicate key '{key}'")
    (tmp_path / "child.yml").write_text("extends: dup.yml\nname: child\n")     # the base is the one named
    r = run("imgbuild", "child.yml", "-o", tmp_path / "out", cwd=tmp_path)
    refused(r, f"error: dup.yml: line {line}, column ", f"duplicate key '{key}'")
    assert not (tmp_path / "out").exists()


def test_yaml_merge_keys_still_work(tmp_path):
    rfile = tmp_path / "merge.yml"
    rfile.write_text(HEAD + "vars:\n  base: &b {a: 1, b: 2}\n  node: {<<: *b, b: 3}\n")
    loaded = recipe.load(rfile).recipe
    assert dict(loaded.vars["node"]) == {"a": 1, "b": 3}


@pytest.mark.parametrize("text, line, words", [
    ("guests:\n  - name: a\n    name: b\n", 3, "duplicate key 'name'"),
    ("guests:\n  - name: a\n    macs: []\n    macs: ['00:16:3e:00:00:01']\n", 4, "duplicate key 'macs'"),
    ("guests: []\nguests:\n  - name: a\n", 2, "duplicate key 'guests'"),
])
def test_duplicate_keys_in_the_inventory_are_refused_naming_file_and_line(text, line, words, tmp_path):
    p = tmp_path / "inventory.yml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        inventory.load(p)
    assert str(e.value).startswith(f"{p}:{line}: ") and words in str(e.value), str(e.value)
    r = run("migrate", "reidentify", tmp_path / "nosuch", "--inventory", p, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ================================================================== bad recipe files (exit 2, never 70)


BAD_FILES = {
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00\x00garbage\x00\xff", "binary file"),
    "latin-1": (b"name: caf\xe9\ndistro: debian\nrelease: bookworm\n", "not UTF-8"),
    "utf-16": ("name: t\n".encode("utf-16"), "binary file"),
    "self-alias": (b"name: t\ndistro: debian\nrelease: bookworm\nvars: &v {me: *v}\n", "alias"),
    "self-alias-list": (b"a: &a [*a]\n", "alias"),
    "undefined-alias": (b"name: *nowhere\n", "alias"),
    "python-tag": (b"name: !!python/object/apply:os.system ['true']\n", "constructor"),
    "deep": (b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested"),
    "list": (b"- name: t\n", "must be a YAML mapping"),
    "key-is-a-list": (b"? [a]\n: 1\n", "a key must be a plain value"),
    "control-chars": (b"name: t\x07\n", "unacceptable character"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_recipe_file_is_an_input_error(case, tmp_path):
    data, says = BAD_FILES[case]
    rfile = tmp_path / "bad.yml"
    rfile.write_bytes(data)
    for args in (["validate", "--offline", rfile], [rfile, "-o", tmp_path / "out"]):
        r = run("imgbuild", *args, cwd=tmp_path)
        refused(r, str(rfile), says)
    assert sorted(os.listdir(tmp_path)) == ["bad.yml"]


def test_validate_reports_each_recipe_and_still_checks_the_others(tmp_path):
    ok = HEAD.replace("name: t", "name: good")
    (tmp_path / "ok1.yml").write_text(ok)
    (tmp_path / "ok2.yml").write_text(ok.replace("good", "good2"))
    (tmp_path / "cyc_a.yml").write_text("extends: cyc_b.yml\nname: a\n")
    (tmp_path / "cyc_b.yml").write_text("extends: cyc_a.yml\nname: b\n")
    (tmp_path / "self.yml").write_text("extends: self.yml\nname: s\n")
    (tmp_path / "bin.yml").write_bytes(b"\x00\x01\x02")
    (tmp_path / "latin.yml").write_bytes(b"name: \xe9\n")
    (tmp_path / "alias.yml").write_text("a: &a [*a]\n")
    (tmp_path / "bomb.yml").write_text(HEAD + "vars:\n" + BOMBS["1e8"])
    (tmp_path / "dup.yml").write_text(HEAD + "name: again\n")
    deep = tmp_path / "deep"
    deep.mkdir()
    for i in range(40):                                  # a chain of extends longer than any sane one
        (deep / f"r{i}.yml").write_text((f"extends: r{i + 1}.yml\n" if i < 39 else HEAD) + f"name: r{i}\n")
    bad = ["cyc_a.yml", "self.yml", "bin.yml", "latin.yml", "alias.yml", "bomb.yml", "dup.yml", "deep/r0.yml"]
    order = ["ok1.yml", *bad[:4], "ok2.yml", *bad[4:]]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run("imgbuild", "validate", "--offline", *order, cwd=tmp_path)
    refused(r)
    assert r.stdout.splitlines() == ["ok1.yml: ok", "ok2.yml: ok"], r.stdout
    for name in bad:
        assert f"{name}: invalid" in r.stderr, (name, r.stderr)
    for says in ("cycle", "binary file", "not UTF-8", "alias", "expands to more than", "duplicate key 'name'",
                 "more than 32 recipes extend each other"):
        assert says in r.stderr, (says, r.stderr)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ================================================================== click's own usage errors


@pytest.mark.parametrize("script, args, says", [
    ("imgbuild", ["validate", "--bogus", "x.yml"], "No such option '--bogus'"),
    ("imgbuild", ["validate"], "Missing argument 'RECIPES...'"),
    ("imgbuild", ["build"], "Missing argument 'RECIPE'"),
    ("imgbuild", ["x.yml", "--output"], "Option '--output' requires an argument"),
    ("imgbuild", ["clone", "lxc:vm0"], "Missing argument 'NEW'"),
    ("imgbuild", ["cache", "nosuch"], "No such command 'nosuch'"),
    ("imgbuild", ["validate", "."], "is a directory"),
    ("imgbuild", ["--nope"], "No such option '--nope'"),
    ("migrate", ["reidentify", "--nope", "x"], "No such option '--nope'"),
    ("migrate", ["reidentify"], "Missing argument 'TARGET'"),
    ("migrate", ["push"], "Missing option '--dest'"),
    ("migrate", ["convert-lxc", "x", "--to", "ancient"], "Invalid value for '--to'"),
    ("migrate", ["nosuch"], "No such command 'nosuch'"),
])
def test_click_usage_errors_say_error_and_hint(script, args, says, tmp_path):
    r = run(script, *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert lines[1].startswith("hint: ") and "--help" in lines[1], r.stderr
    assert "Error:" not in r.stderr and "Usage:" not in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert os.listdir(tmp_path) == []


# ================================================================== the readers: properties


YAMLISH = st.text(alphabet=st.sampled_from(list("ab:- \n[]{},&*!|>'\"#%@`?<=0123456789.\t\\\x00\xe9")), max_size=120)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _data():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
    return st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                        max_leaves=20)


@PROPERTY
@given(st.one_of(YAMLISH.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=80)))
def test_load_yaml_gives_a_value_or_a_recipe_error(data):
    try:
        untrusted.load_yaml(data, "x.yml")
    except RecipeError as e:
        assert e.exit_code == 2 and "x.yml" in str(e)


@PROPERTY
@given(st.one_of(YAMLISH, _data().map(lambda d: yaml.safe_dump({"guests": d}))))
def test_the_inventory_reader_gives_guests_or_an_input_error(text):
    try:
        guests = inventory.parse(text, "inv.yml")
    except InputError as e:
        assert e.exit_code == 2 and "inv.yml" in str(e)
    else:
        assert all(isinstance(g, inventory.GuestRecord) for g in guests)


@PROPERTY
@given(st.one_of(YAMLISH, _data().map(yaml.safe_dump)))
def test_the_guest_template_readers_give_entries_or_an_input_error(text):
    for read in (kept.read_index, kept.read_vars):
        try:
            value = read(text.encode("utf-8", "surrogatepass"), "rootfs:/etc/imgbuild/x.yml")
        except InputError as e:
            assert e.exit_code == 2 and "rootfs:/etc/imgbuild/x.yml: " in str(e)
        else:
            assert isinstance(value, (tuple, dict))


@PROPERTY
@given(st.one_of(YAMLISH, _data().map(lambda d: yaml.safe_dump({**(d if isinstance(d, dict) else {"x": d}),
                                                                 "name": "t", "distro": "debian",
                                                                 "release": "bookworm"}))))
def test_the_recipe_loader_gives_a_recipe_or_an_input_error(tmp_path, text):
    rfile = tmp_path / "r.yml"
    rfile.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        recipe.load(rfile)
    except InputError as e:
        assert e.exit_code == 2

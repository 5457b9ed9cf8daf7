"""The `imgbuild` console script as a user meets it: broken recipes, help, schema, validate, --set, --debug,
exit statuses, and docs/recipes.md kept equal to `imgbuild schema --markdown`."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, DEFAULT_RECIPE, REPO, imgbuild

DOCS = REPO / "docs" / "recipes.md"
MARKER = "<!-- generated: imgbuild schema --markdown -->"
REGENERATE = (f"sed -i '/^{MARKER}$/q' docs/recipes.md && .venv/bin/imgbuild schema --markdown >> docs/recipes.md")

# A mirror nobody listens on. Broken recipes use it so that, should one of them be accepted by mistake, the build
# stops at the mirror check in a second (and fails the test) instead of bootstrapping a whole system.
DEAD_MIRROR = "http://127.0.0.1:9/debian"
HEAD = "name: broken\ndistro: debian\nrelease: bookworm\n"


def recipe_text(body: str) -> str:
    """A body starting with `name:` is a whole recipe; anything else goes after HEAD (and the dead mirror)."""
    if body.startswith("name:"):
        return body
    if "bootstrap:" not in body:
        body = f"bootstrap: {{mirror: '{DEAD_MIRROR}'}}\n" + body
    return HEAD + body


def empty_or_missing(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------------------------- broken recipes
# (id, YAML (after HEAD and a bootstrap line), what stderr must show after "FILE: ", a fragment of the message)

B = f"mirror: '{DEAD_MIRROR}'"
BROKEN = [
    ("unknown-key", "hostnme: vm1\n", "hostnme: ", "did you mean hostname?"),
    ("wrong-type", "dns: 10.0.3.1\n", "dns: ", "expected a list, got a string"),
    ("bad-address", "network: {eth0: {address: 10.0.3.2, gateway: 10.0.3.1}}\n", "network.eth0.address: ",
     "needs a prefix length"),
    ("gateway-outside", "network: {eth0: {address: 10.0.3.2/24, gateway: 10.0.9.1}}\n", "network.eth0.gateway: ",
     "gateway 10.0.9.1 is not in 10.0.3.0/24"),
    ("bad-mode", "files: [{path: /etc/motd, content: hi, mode: 'u=rw'}]\n", "files[0].mode: ", 'quoted, e.g. "0644"'),
    # BUG: unquoted 0644 is read by YAML as 420 and accepted as mode 0o420 (see tests/build/test_recipe.py)
    ("bad-mode-unquoted", "files: [{path: /etc/motd, content: hi, mode: 0644}]\n", "files[0].mode: ", "quote"),
    ("unknown-method", f"bootstrap: {{{B}, method: mmdebstrapp}}\n", "bootstrap.method: ",
     "did you mean mmdebstrap?"),
    ("unknown-variant", f"bootstrap: {{{B}, method: debootstrap, variant: essential}}\n", "bootstrap.variant: ",
     "is not a variant of debootstrap"),
    ("bad-package-name", f"bootstrap: {{{B}, packages: [vim, 'Vim!']}}\n", "bootstrap.packages[1]: ",
     "is not a package name"),
    ("missing-hook-script", "hooks: {post-files: [{script: nothere.sh}]}\n", "hooks.post-files[0].script: ",
     "nothere.sh: no such file"),
    ("missing-file-source", "files: [{path: /etc/motd, source: motd.txt}]\n", "files[0].source: ",
     "motd.txt: no such file"),
    ("bad-mac", "network: {eth0: {dhcp: true, mac: '00:16:3e:00:03'}}\n", "network.eth0.mac: ",
     "is not a MAC address"),
    ("multicast-mac", "network: {eth0: {dhcp: true, mac: '03:16:3e:00:03:02'}}\n", "network.eth0.mac: ",
     "multicast"),
    ("bad-hostname", "hostname: web_1\n", "hostname: ", "is not a valid host name"),
    ("yaml-syntax", "dns: [10.0.3.1]\n  search: [example.com]\n", "line 6, column ", "YAML syntax"),
    ("duplicate-key", "release: trixie\n", "line 5, column 1: ", "duplicate key 'release'"),
    ("unknown-target", "targets: {tarball: {}, lxcc: {}}\n", "targets.lxcc: ", "did you mean lxc?"),
    ("bad-compression", "targets: {tarball: {compression: bzip2}}\n", "targets.tarball.compression: ",
     "is not one of: zst, zstd, xz, gz, none"),
    ("two-passwords", "root_password: {lock: true, from_file: /etc/hostname}\n", "root_password: ",
     "give exactly one of lock, hash, from_file"),
    ("unknown-init", "init: upstart\n", "init: ", "is not one of"),
    ("bad-arch", "arch: x86_64\n", "arch: ", "is not a debian architecture"),
    ("missing-release", f"name: broken\ndistro: debian\nbootstrap: {{{B}}}\n", "release: ",
     "missing required key"),
    ("unknown-distro", f"name: broken\ndistro: gentoo\nrelease: 17\nbootstrap: {{{B}}}\n", "distro: ",
     "is not one of: debian"),
    ("extends-itself", "extends: broken.yml\n", "extends: ", "cycle"),
]


def _write(tmp_path: Path, body: str) -> Path:
    rfile = tmp_path / "broken.yml"
    rfile.write_text(recipe_text(body))
    return rfile


def _assert_rejected(r: subprocess.CompletedProcess, rfile: Path, where: str, fragment: str) -> None:
    assert r.returncode == 2, f"exit status {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    assert f"{rfile}: {where}" in r.stderr, r.stderr
    assert fragment in r.stderr, r.stderr
    assert f"error: {rfile}: " in r.stderr or "error: 2 problems:" in r.stderr, r.stderr


@pytest.mark.root
@pytest.mark.parametrize("body, where, fragment", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_build_refuses_broken_recipe(tmp_path, body, where, fragment):
    """Project acceptance: `imgbuild RECIPE -o OUT` on a broken recipe: exit 2, FILE: KEY.PATH on stderr, no
    traceback, nothing under OUT."""
    rfile = _write(tmp_path, body)
    out = tmp_path / "out"
    r = imgbuild(rfile, "-o", out, timeout=120)
    _assert_rejected(r, rfile, where, fragment)
    assert empty_or_missing(out), sorted(out.rglob("*"))


@pytest.mark.parametrize("body, where, fragment", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_validate_offline_refuses_broken_recipe(tmp_path, body, where, fragment):
    rfile = _write(tmp_path, body)
    r = imgbuild("validate", "--offline", rfile, timeout=120)
    _assert_rejected(r, rfile, where, fragment)
    assert f"{rfile}: invalid" in r.stderr
    assert r.stdout == ""


def test_broken_recipe_list_is_long_enough():
    """The acceptance point asks for at least 10 different broken recipes."""
    assert len({where for _, _, where, _ in BROKEN}) >= 10


@pytest.mark.root
def test_build_refuses_broken_recipe_existing_empty_output(tmp_path):
    rfile = _write(tmp_path, "hostnme: vm1\nnetwork: {eth0: {dhcp: true, mac: zz}}\n")
    out = tmp_path / "out"
    out.mkdir()
    r = imgbuild("build", rfile, "-o", out)
    _assert_rejected(r, rfile, "hostnme: ", "2 problems:")
    assert f"{rfile}: network.eth0.mac: " in r.stderr
    assert list(out.iterdir()) == []


def _unknown_package_recipe(tmp_path: Path) -> Path:
    rfile = tmp_path / "pkg.yml"
    rfile.write_text(DEFAULT_RECIPE.read_text().replace(
        "packages: [systemd-sysv, ifupdown, iproute2, openssh-server]",
        "packages: [ifupdown, systemd-sysvv, iproute2]"))
    assert "systemd-sysvv" in rfile.read_text()
    return rfile


@pytest.mark.root
@pytest.mark.network
def test_build_refuses_unknown_package(tmp_path):
    rfile = _unknown_package_recipe(tmp_path)
    out = tmp_path / "out"
    r = imgbuild(rfile, "-o", out, timeout=300)
    _assert_rejected(r, rfile, "bootstrap.packages[1]: ", "'systemd-sysvv'")
    close = re.search(r"close: (.*)", r.stderr)
    assert close and "systemd-sysv" in [c.strip() for c in close.group(1).split(",")], r.stderr
    assert "ifupdown" not in r.stderr.replace("bootstrap.packages", "")  # only the unknown one is reported
    assert empty_or_missing(out), sorted(out.rglob("*"))


@pytest.mark.network
def test_validate_refuses_unknown_package(tmp_path):
    rfile = _unknown_package_recipe(tmp_path)
    r = imgbuild("validate", rfile, timeout=300)
    _assert_rejected(r, rfile, "bootstrap.packages[1]: ", "close: systemd-sysv")


@pytest.mark.root
@pytest.mark.network
def test_build_refuses_unknown_release(tmp_path):
    """A misspelt release is a recipe problem like any other: FILE: release: ...

    Currently FAILS: apt.fetch_index raises a plain InputError ("release 'bookwrm' is not on the mirror ...")
    that names neither the recipe file nor the key.
    """
    rfile = tmp_path / "rel.yml"
    rfile.write_text(DEFAULT_RECIPE.read_text().replace("release: bookworm", "release: bookwrm"))
    out = tmp_path / "out"
    r = imgbuild(rfile, "-o", out, timeout=300)
    _assert_rejected(r, rfile, "release: ", "bookwrm")
    assert empty_or_missing(out)


# ---------------------------------------------------------------------------------------------- paths, usage


@pytest.mark.parametrize("args", [["{p}", "-o", "{out}"], ["build", "{p}", "-o", "{out}"], ["validate", "{p}"],
                                  ["validate", "--offline", "{p}"]], ids=["default", "build", "validate", "offline"])
def test_missing_recipe_file(tmp_path, args):
    p, out = tmp_path / "nothere.yml", tmp_path / "out"
    r = imgbuild(*[a.format(p=p, out=out) for a in args])
    assert r.returncode == 2
    assert f"error: {p}: no such recipe" in r.stderr
    assert "hint: give the path of a .yml recipe" in r.stderr
    assert "Usage:" not in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, says", [
    (["build"], "Missing argument 'RECIPE'"),
    (["validate"], "Missing argument 'RECIPES...'"),
    (["build", "--bogus", "x.yml"], "No such option '--bogus'"),
])
def test_usage_errors_exit_2_and_say_so(args, says):
    r = imgbuild(*args)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"error: {says}"), r.stderr
    assert lines[1].startswith(f"hint: usage: imgbuild {args[0]} [OPTIONS]") and "--help" in lines[1], r.stderr
    assert "Error:" not in r.stderr and "Usage:" not in r.stderr and "Traceback" not in r.stderr


def test_directory_as_recipe_is_a_usage_error(tmp_path):
    r = imgbuild("validate", tmp_path)
    assert r.returncode == 2
    assert "is a directory" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- --set


@pytest.mark.parametrize("command", [["validate", "--offline"], ["validate"]], ids=["offline", "online"])
def test_set_without_equals(command):
    r = imgbuild(*command, DEFAULT_RECIPE, "--set", "hostname")
    assert r.returncode == 2
    assert "error: --set hostname: expected KEY=VALUE" in r.stderr
    assert "hint: e.g. --set hostname=vm1" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.root
def test_build_set_without_equals(tmp_path):
    out = tmp_path / "out"
    r = imgbuild(DEFAULT_RECIPE, "--set", "hostname", "-o", out)
    assert r.returncode == 2
    assert "--set hostname: expected KEY=VALUE" in r.stderr and "hint: e.g. --set hostname=vm1" in r.stderr
    assert not out.exists()


def test_set_bad_key_path():
    r = imgbuild("validate", "--offline", DEFAULT_RECIPE, "--set", "network..eth0=x")
    assert r.returncode == 2
    assert "--set network..eth0: not a key path" in r.stderr and "hint: use dots and [n]" in r.stderr


def test_set_checked_like_the_recipe():
    r = imgbuild("validate", "--offline", DEFAULT_RECIPE, "--set", "network.eth0.mac=01:00:5e:00:00:01",
                 "--set", "targets.tarball.compression=lz4")
    assert r.returncode == 2
    # each problem is blamed on the option that brought it, not on the recipe file
    assert "--set network.eth0.mac=01:00:5e:00:00:01: network.eth0.mac: " in r.stderr
    assert "--set targets.tarball.compression=lz4: targets.tarball.compression: " in r.stderr
    assert f"{DEFAULT_RECIPE}: network" not in r.stderr


def test_set_good_override_validates():
    r = imgbuild("validate", "--offline", DEFAULT_RECIPE, "--set", "hostname=web1",
                 "--set", "network.eth0.address=10.0.3.9/24", "--set", 'files[0].mode="0600"')
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{DEFAULT_RECIPE}: ok\n"


# ---------------------------------------------------------------------------------------------- validate


@pytest.mark.network
def test_validate_default_recipe():
    r = imgbuild("validate", "recipes/debian12.yml", timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "recipes/debian12.yml: ok\n"


def test_validate_offline_default_recipe():
    r = imgbuild("validate", "--offline", "recipes/debian12.yml")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "recipes/debian12.yml: ok\n"


def test_validate_offline_bad_recipe(tmp_path):
    rfile = _write(tmp_path, "hostnme: vm1\n")
    r = imgbuild("validate", "--offline", rfile)
    assert r.returncode == 2
    assert f"{rfile}: invalid" in r.stderr and f"{rfile}: hostnme: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_several_recipes(tmp_path):
    bad1 = tmp_path / "a" / "bad.yml"
    bad2 = tmp_path / "b" / "bad.yml"
    bad1.parent.mkdir()
    bad2.parent.mkdir()
    bad1.write_text(recipe_text("hostnme: vm1\n"))
    bad2.write_text(recipe_text("dns: nope\n"))
    r = imgbuild("validate", "--offline", bad1, DEFAULT_RECIPE, bad2)
    assert r.returncode == 2
    assert r.stdout == f"{DEFAULT_RECIPE}: ok\n"
    assert f"{bad1}: invalid" in r.stderr and f"{bad2}: invalid" in r.stderr
    assert f"{bad1}: hostnme: " in r.stderr and f"{bad2}: dns: " in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_traceback_plain_does_not(tmp_path, where):
    rfile = _write(tmp_path, "hostnme: vm1\n")
    args = ["validate", "--offline", rfile]
    debug_args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    plain, debug = imgbuild(*args), imgbuild(*debug_args)
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr and "RecipeError" in debug.stderr
    for r in (plain, debug):
        assert f"error: {rfile}: hostnme: unknown key" in r.stderr


@pytest.mark.root
def test_debug_build_shows_traceback(tmp_path):
    rfile = _write(tmp_path, "hostnme: vm1\n")
    out = tmp_path / "out"
    r = imgbuild("--debug", rfile, "-o", out)
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr and f"error: {rfile}: hostnme: " in r.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- not root


@pytest.mark.root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is not installed")
def test_build_as_a_user_without_subordinate_ids_says_what_is_missing(tmp_path):
    """nobody has no /etc/subuid range: an unprivileged build (tests/build/test_unprivileged.py) is not possible."""
    out = tmp_path / "out"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(BIN / "imgbuild"),
                        str(DEFAULT_RECIPE), "-o", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
                            "LANG": "C.UTF-8"})
    assert r.returncode == 2, r.stderr
    assert "error: an unprivileged build needs 65536 ids for nobody in /etc/subuid" in r.stderr
    assert "hint: ask your admin: usermod --add-subuids" in r.stderr and "or build as root" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- help


def test_help_teaches():
    for flag in ("--help", "-h"):
        r = imgbuild(flag)
        assert r.returncode == 0
        out = r.stdout
        assert "Examples:" in out and "imgbuild recipes/debian12.yml" in out and "--set" in out
        assert re.search(r"Exit status: 0 ok, 1 build failed, 2 bad\s+input, 130 interrupted", out), out
        assert "docs/recipes.md" in out
        for command in ("build", "validate", "schema", "install-lxc"):
            assert re.search(rf"^\s+{command}\s", out, re.M), command


def test_build_help_teaches():
    """`imgbuild build --help` is where a user lands from `Try 'imgbuild build --help'`: it must show examples
    and the exit statuses too.

    Currently FAILS: the build command in builder/cli/imgbuild.py has no epilog (only the group has EPILOG).
    """
    r = imgbuild("build", "--help")
    assert r.returncode == 0
    assert "--set KEY=VALUE" in r.stdout and "--output" in r.stdout and "--keep-tree" in r.stdout
    assert re.search(r"Examples?:", r.stdout), r.stdout
    assert re.search(r"imgbuild( build)? recipes/debian12\.yml", r.stdout), r.stdout
    assert re.search(r"Exit status", r.stdout, re.I) and re.search(r"\b2\b[^\n]*bad", r.stdout), r.stdout


def test_validate_help():
    r = imgbuild("validate", "--help")
    assert r.returncode == 0
    assert "--offline" in r.stdout and "exit 2" in r.stdout


def test_version():
    r = imgbuild("--version")
    assert r.returncode == 0 and re.fullmatch(r"imgbuild, version \d+\.\d+\.\d+\S*\n", r.stdout)


def test_migrate_help():
    r = subprocess.run([str(BIN / "migrate"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: migrate")
    assert "imgbuild --help" in r.stdout
    v = subprocess.run([str(BIN / "migrate"), "--version"], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and v.stdout.startswith("migrate, version ")


# ---------------------------------------------------------------------------------------------- schema


def _schema() -> dict:
    r = imgbuild("schema")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


_TYPES = {"string": lambda v: isinstance(v, str), "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "boolean": lambda v: isinstance(v, bool), "array": lambda v: isinstance(v, list),
          "object": lambda v: isinstance(v, dict), "null": lambda v: v is None}


def _errors(schema: dict, value, root: dict, at: str = "$") -> list[str]:
    """A small JSON Schema checker for the keywords `imgbuild schema` uses (no jsonschema dependency)."""
    out: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        out += _errors(root["$defs"][ref.removeprefix("#/$defs/")], value, root, at)
    if "anyOf" in schema and not any(not _errors(s, value, root, at) for s in schema["anyOf"]):
        out.append(f"{at}: matches none of anyOf")
    if "oneOf" in schema and sum(not _errors(s, value, root, at) for s in schema["oneOf"]) != 1:
        out.append(f"{at}: does not match exactly one of oneOf")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: {value!r} not in enum")
    if "type" in schema and not _TYPES[schema["type"]](value):
        return out + [f"{at}: {value!r} is not of type {schema['type']}"]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        out.append(f"{at}: {value} < minimum")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                out.append(f"{at}: missing {k}")
        for k, v in value.items():
            if "propertyNames" in schema:
                out += _errors(schema["propertyNames"], k, root, f"{at}.{k}(name)")
            if k in props:
                out += _errors(props[k], v, root, f"{at}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{at}: {k} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += _errors(schema["additionalProperties"], v, root, f"{at}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += _errors(schema["items"], v, root, f"{at}[{i}]")
    return out


def test_schema_is_json_schema():
    s = _schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$ref"] == "#/$defs/Recipe"
    rec = s["$defs"]["Recipe"]
    assert rec["type"] == "object" and rec["additionalProperties"] is False
    assert set(rec["required"]) == {"name", "distro", "release"}
    default = yaml.safe_load(DEFAULT_RECIPE.read_text())
    assert set(default) <= set(rec["properties"]), set(default) - set(rec["properties"])
    # every object definition is closed and documented, every $ref resolves
    for name, d in s["$defs"].items():
        assert d["type"] == "object" and d["additionalProperties"] is False, name
        assert d["description"], name
        for key, prop in d["properties"].items():
            assert prop.get("description"), f"{name}.{key} has no description"
    refs = re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(s))
    assert refs and all(r in s["$defs"] for r in refs)
    assert s["$defs"]["Hooks"]["properties"].keys() == {"post-bootstrap", "post-files", "pre-pack"}
    assert s["$defs"]["Targets"]["properties"].keys() >= {"tarball", "lxc"}


def test_schema_accepts_default_recipe_and_rejects_broken_ones():
    s = _schema()
    default = yaml.safe_load(DEFAULT_RECIPE.read_text())
    assert _errors(s, default, s) == []
    for broken in ({**default, "hostnme": "x"}, {**default, "dns": "10.0.3.1"},
                   {**default, "targets": {"lxcc": {}}}, {**default, "bootstrap": {"method": "apt-get"}},
                   {k: v for k, v in default.items() if k != "release"},
                   {**default, "root_password": {"lock": True, "hash": "$6$x"}},
                   {**default, "files": [{"path": "/x", "content": "x", "mode": 420}]}):
        assert _errors(s, broken, s), broken
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(s)
    jsonschema.validate(default, s)


def test_schema_markdown_is_the_docs_tables():
    r = imgbuild("schema", "--markdown")
    assert r.returncode == 0
    assert r.stdout.startswith("### Recipe\n")
    for cls in ("Bootstrap", "Interface", "RootPassword", "FileSpec", "Hooks", "Hook", "Targets"):
        assert f"\n### {cls}\n" in r.stdout


# ---------------------------------------------------------------------------------------------- docs


def test_docs_recipes_md_matches_schema_markdown():
    """docs/recipes.md = hand-written introduction + MARKER line + exactly `imgbuild schema --markdown`."""
    assert DOCS.is_file(), f"{DOCS} is missing"
    text = DOCS.read_text()
    lines = text.split("\n")
    assert lines.count(MARKER) == 1, f"docs/recipes.md needs exactly one line {MARKER!r}"
    intro, generated = text.split(MARKER + "\n", 1)
    assert len(intro.strip()) > 500, "the hand-written introduction is missing"
    r = imgbuild("schema", "--markdown")
    assert r.returncode == 0, r.stderr
    assert generated == r.stdout, (
        "docs/recipes.md is out of date with the recipe schema. Regenerate it (from the project directory):\n  "
        + REGENERATE)


def test_docs_intro_covers_the_essentials():
    intro = DOCS.read_text().split(MARKER, 1)[0]
    for needle in ("extends", "--set", "post-bootstrap", "post-files", "pre-pack", "cleanup", "root_password",
                   "recipes/debian12.yml", "imgbuild schema"):
        assert needle in intro, needle
    section = intro.split("## What a build does", 1)[1].split("\n## ", 1)[0]
    order = [section.find(w) for w in ("**bootstrap**", "`post-bootstrap` hooks", "(`devices`)", "(`network`)",
                                       "(`root_password`)", "(`init`)", "`files`", "`post-files` hooks",
                                       "`pre-pack` hooks", "**cleanup**", "**targets**")]
    assert -1 not in order and order == sorted(order), "the build order is not described in order"


def test_docs_extends_example_loads(tmp_path):
    """The `extends` example of the introduction is a working recipe."""
    from builder.build import recipe

    intro = DOCS.read_text().split(MARKER, 1)[0]
    example = next(b for b in re.findall(r"```yaml\n(.*?)```", intro, re.S) if b.startswith("# sites/web1.yml"))
    (tmp_path / "recipes").mkdir()
    (tmp_path / "sites").mkdir()
    shutil.copy(DEFAULT_RECIPE, tmp_path / "recipes" / "debian12.yml")
    (tmp_path / "sites" / "web1.yml").write_text(example)
    r = recipe.load(tmp_path / "sites" / "web1.yml").recipe
    assert (r.name, r.hostname) == ("web1", "web1")
    assert str(r.network["eth0"].gateway) == "10.0.3.1"          # merged from the base, as the text says
    assert r.bootstrap.packages[-1] == "nginx" and r.bootstrap.method == "auto"


def test_docs_example_is_the_default_recipe():
    """The introduction shows recipes/debian12.yml verbatim; it must not drift from the file either."""
    intro = DOCS.read_text().split(MARKER, 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", intro, re.S)
    assert DEFAULT_RECIPE.read_text() in blocks, ("the ```yaml block of recipes/debian12.yml in docs/recipes.md "
                                                  "differs from the file; copy the file into it again")

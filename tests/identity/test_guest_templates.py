"""A guest's templates and their files are data, never code: `migrate reidentify` and `imgbuild clone` read a
guest's /etc/imgbuild/templates.yml and vars.yml strictly and render its templates in the sandbox, in a confined
child process with bounded work, memory and output.

Each guest here is a small root made by make_container (no build needed), with a template planted where imgbuild
keeps them. Every command runs the real console scripts with the inventory and guest directories in tmp_path.
A payload that would run code tries to create a marker file; the test checks that the file never appears.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.core import templating
from builder.core.errors import InputError
from builder.identity import inventory, kept
from tests.conftest import BIN, REPO
from tests.support.guests import make_container, tree_state

pytestmark = pytest.mark.root      # the guest's files are owned by root, as in a real container

KEPT = f"{kept.STORE}/0123456789abcdef-app.conf.j2"
GOOD = "# {{ hostname }} at {{ ip }}, server {{ server_id }}\n"


def run(script: str, *args, env: dict) -> subprocess.CompletedProcess:
    # the timeout is only the failure guard for a hang, not a measure of speed
    return subprocess.run([str(BIN / script), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, inventory.ENV_VAR: str(tmp_path / "inventory.yml")}


@pytest.fixture
def opts(tmp_path) -> list[str]:
    return ["--lxcpath", str(tmp_path / "lxc"), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]


def guest(tmp_path: Path, template: str = GOOD, index: str | None = None, variables: str = "server_id: 1\n",
          name: str = "vm0") -> Path:
    """LXCPATH/vm0 with one kept template (rendered to /etc/app.conf), its templates.yml and vars.yml."""
    cdir = make_container(tmp_path / "lxc", name)
    root = cdir / "rootfs"
    (root / KEPT.lstrip("/")).parent.mkdir(parents=True)
    (root / KEPT.lstrip("/")).write_text(template)
    (root / "etc/imgbuild").mkdir()
    if index is None:
        index = f"- {{path: /etc/app.conf, template: {KEPT}, mode: '0644', uid: 0, gid: 0}}\n"
    (root / kept.INDEX.lstrip("/")).write_text(index)
    (root / kept.VARS.lstrip("/")).write_text(variables)
    return cdir


def refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") or "\nerror: " in r.stderr, r.stderr
    assert "hint: " in r.stderr and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def test_a_good_guest_template_is_rendered_for_the_dry_run_and_the_real_run(tmp_path, env, opts):
    """The baseline the refusals below are measured against: the same guest with a plain template works."""
    cdir = guest(tmp_path)
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", "--set", "server_id=7", "--dry-run", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert "+# web1 at 10.0.3.2, server 7\n" in r.stdout
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", "--set", "server_id=7", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert (cdir / "rootfs/etc/app.conf").read_text() == "# web1 at 10.0.3.2, server 7\n"
    assert yaml.safe_load((cdir / "rootfs" / kept.VARS.lstrip("/")).read_text()) == {"server_id": 7}


# ================================================================== code execution (server-side template injection)


def payloads(marker: Path) -> dict[str, str]:
    m = str(marker)
    return {
        "cycler-globals": f"{{{{ cycler.__init__.__globals__.os.system('touch {m}') }}}}",
        "joiner-globals": f"{{{{ joiner.__init__.__globals__.os.system('touch {m}') }}}}",
        "namespace-globals": f"{{{{ namespace.__init__.__globals__.os.popen('touch {m}').read() }}}}",
        "lipsum-globals": f"{{{{ lipsum.__globals__['os'].system('touch {m}') }}}}",
        "mro-subclasses": ("{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
                           f"{{{{ c(['touch', '{m}']) }}}}{{% endif %}}{{% endfor %}}"),
        "mro-via-getitem": ("{{ ''['__class__']['__mro__'][1]['__subclasses__']()[0]"
                            f".__init__.__globals__['sys'].modules['os'].system('touch {m}') }}}}"),
        "attr-filter": ("{{ cycler|attr('__init__')|attr('__globals__')|attr('__getitem__')('os')"
                        f"|attr('system')('touch {m}') }}}}"),
        "attr-filter-format": ("{{ ('{0.__init__.__globals__[os].system}'|attr('format'))(cycler) }}"
                               f"{{{{ cycler.__init__.__globals__.os.system('touch {m}') }}}}"),
        "str-format": "{{ '{0.__init__.__globals__[os].system}'.format(cycler) }}",
        "str-format-map": "{{ '{x.__init__.__globals__[os]}'.format_map({'x': joiner}) }}",
        "format-indirect": "{% set f = '{0.__class__.__mro__[1].__subclasses__}'.format %}{{ f(cycler) }}",
        "self-context": ("{{ self._TemplateReference__context.cycler.__init__.__globals__.os"
                         f".system('touch {m}') }}}}"),
        "self-dict": "{{ self.__dict__ }}",
        "dict-update": "{% set d = {} %}{{ d.update({'a': 1}) }}",
        "include": "{% include '/etc/shadow' %}",
        "import": "{% import '/etc/passwd' as x %}",
        "extends": "{% extends '/etc/passwd' %}",
    }


MARKER_CASES = sorted(payloads(Path("/x")))


@pytest.mark.parametrize("case", MARKER_CASES)
def test_a_guest_template_cannot_run_code_in_reidentify_dry_run(case, tmp_path, env, opts):
    marker = tmp_path / "PWNED"
    cdir = guest(tmp_path, payloads(marker)[case])
    before = tree_state(tmp_path / "lxc")
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", "--dry-run", *opts, env=env)
    refused(r, f"rootfs:{KEPT}", "/etc/app.conf")
    assert not marker.exists(), "the guest's template ran code on the host"
    assert "__globals__" not in r.stdout and "built-in function" not in r.stdout and "<module" not in r.stdout
    assert tree_state(tmp_path / "lxc") == before
    assert not (tmp_path / "inventory.yml").exists()


@pytest.mark.parametrize("case", ["cycler-globals", "mro-subclasses", "attr-filter", "str-format", "self-context"])
def test_a_guest_template_cannot_run_code_in_clone_or_a_real_reidentify(case, tmp_path, env, opts):
    marker = tmp_path / "PWNED"
    cdir = guest(tmp_path, payloads(marker)[case])
    before = tree_state(tmp_path / "lxc")
    r = run("imgbuild", "clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.9", *opts, env=env)
    refused(r, f"rootfs:{KEPT}")
    assert not (tmp_path / "lxc" / "vm1").exists(), "the clone was made"
    assert sorted(os.listdir(tmp_path / "lxc")) == ["vm0"]
    r = run("imgbuild", "clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.9", "--dry-run", *opts, env=env)
    refused(r, f"rootfs:{KEPT}")
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", *opts, env=env)
    refused(r, f"rootfs:{KEPT}")
    assert not marker.exists(), "the guest's template ran code on the host"
    assert tree_state(tmp_path / "lxc") == before, "a refused run changed the guest"
    assert not (tmp_path / "inventory.yml").exists()


# ================================================================== unbounded work, memory and output


BOMBS = {
    "string-times-huge": ("{{ 'x' * 10**9 }}", "longer than"),
    "list-times-huge": ("{{ [1, 2] * 10**9 }}", "longer than"),
    "power": ("{{ 7 ** (10 ** 8) }}", "bits"),
    "percent-width": ("{{ '%999999999d' % 1 }}", "longer than"),
    "range": ("{{ range(10**9)|list|length }}", "MAX_RANGE"),
    "nested-loops": ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
                     "loop iterations"),
    "recursive-loop": ("{% for x in range(50) recursive %}{{ loop(range(50)) }}{% endfor %}", ""),
    "recursive-macro": ("{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}", "nests too deeply"),
    "output": ("{% for i in range(100000) %}{{ 'y' * 100 }}\n{% endfor %}", "characters"),
    "center": ("{{ 'x'|center(2000000000) }}", "memory"),
    "format-width": ("{{ '{:>2000000000}'.format(1) }}", "memory"),
    "doubling": ("{% set ns = namespace(s='x') %}{% for i in range(80) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
                 "{{ ns.s|length }}", "memory"),
    "replace-blowup": ("{% set s = 'x' * 1000000 %}{{ s|replace('x', s) }}", "memory"),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_a_guest_template_that_never_ends_or_grows_without_bound_is_refused(case, tmp_path, env, opts):
    template, says = BOMBS[case]
    cdir = guest(tmp_path, template)
    before = tree_state(tmp_path / "lxc")
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", "--dry-run", *opts, env=env)
    refused(r, f"rootfs:{KEPT}", says)
    assert tree_state(tmp_path / "lxc") == before


def test_recipe_templates_render_in_the_same_sandbox():
    """The build renders a recipe's templates through the same render(): the same refusals, the same limits."""
    marker = Path("/tmp") / f"imgbuild-pwned-{os.getpid()}"
    ctx = templating.context("vm0", None, {"eth0": "10.0.3.2"}, {}, {"server_id": 1})
    assert templating.render(GOOD, ctx, "ok.j2") == "# vm0 at 10.0.3.2, server 1\n"
    for case, source in payloads(marker).items():
        with pytest.raises(InputError) as e:
            templating.render(source, ctx, "node.cnf.j2")
        assert e.value.message.startswith("template node.cnf.j2"), (case, e.value.message)
        assert e.value.exit_code == 2
    for case, (source, says) in BOMBS.items():
        with pytest.raises(InputError) as e:
            templating.render(source, ctx, "node.cnf.j2")
        assert says in e.value.message, (case, e.value.message)
    assert not marker.exists()


def test_template_errors_name_the_line():
    ctx = templating.context("vm0", None, {}, {}, {})
    for source, line in (("a\nb\n{{ 1/0 }}\n", 3), ("x\n{{ nope }}\n", 2), ("\n\n\n{{ cycler.__init__ }}", 4),
                         ("{% for x in range(3) %}\n{{ x.__class__ }}\n{% endfor %}", 2), ("\n{{ x ", 2)):
        with pytest.raises(InputError) as e:
            templating.render(source, ctx, "t.j2")
        assert e.value.message.startswith(f"template t.j2 line {line}: "), (source, e.value.message)


# ================================================================== where a guest's template may write


def test_a_guest_template_is_written_inside_the_guest_even_through_a_symlink_out(tmp_path, env, opts):
    outside = tmp_path / "host-dir"
    outside.mkdir()
    index = (f"- {{path: /etc/evil/app.conf, template: {KEPT}, mode: '0644', uid: 0, gid: 0}}\n"
             f"- {{path: /../../../{outside.relative_to('/')}/dotdot.conf, template: {KEPT}, mode: '0644', uid: 0, "
             "gid: 0}\n")
    cdir = guest(tmp_path, index=index)
    root = cdir / "rootfs"
    os.symlink(str(outside), root / "etc/evil")                       # absolute: points out of the guest
    (root / str(outside).lstrip("/")).mkdir(parents=True)             # where it points inside the guest
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert os.listdir(outside) == [], "a guest's template was written outside the guest"
    inside = root / str(outside).lstrip("/")
    assert (inside / "app.conf").read_text() == "# web1 at 10.0.3.2, server 1\n"
    assert (inside / "dotdot.conf").read_text() == "# web1 at 10.0.3.2, server 1\n"
    assert os.readlink(root / "etc/evil") == str(outside)


# ================================================================== the guest's templates.yml and vars.yml


ENTRY = f"{{path: /etc/app.conf, template: {KEPT}, mode: '0644', uid: 0, gid: 0}}"
BAD_INDEX = {
    "mode-zz": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: zz, uid: 0, gid: 0}}\n", "[0].mode: "),
    "mode-unquoted": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: 0644, uid: 0, gid: 0}}\n", "[0].mode: "),
    "unknown-key": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: '0644', uid: 0, gid: 0, run: x}}\n",
                    "[0].run: unknown key"),
    "missing-key": (f"- {{path: /etc/app.conf, template: {KEPT}, uid: 0, gid: 0}}\n", "[0].mode: missing"),
    "list-for-mapping": ("- [/etc/app.conf, x]\n", "[0]: expected a mapping"),
    "mapping-for-list": (f"templates: [{ENTRY}]\n", "expected a list"),
    "scalar": ("just text\n", "expected a list"),
    "relative-path": (f"- {{path: etc/app.conf, template: {KEPT}, mode: '0644', uid: 0, gid: 0}}\n",
                      "[0].path: "),
    "quote-in-path": (f"- {{path: '/etc/a\"pp', template: {KEPT}, mode: '0644', uid: 0, gid: 0}}\n",
                      "[0].path: "),
    "template-elsewhere": ("- {path: /etc/app.conf, template: /etc/shadow, mode: '0644', uid: 0, gid: 0}\n",
                           "[0].template: "),
    "template-dotdot": (f"- {{path: /etc/app.conf, template: '{kept.STORE}/../../../etc/shadow', mode: '0644', "
                        "uid: 0, gid: 0}\n", "[0].template: "),
    "negative-uid": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: '0644', uid: -1, gid: 0}}\n", "[0].uid: "),
    "huge-gid": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: '0644', uid: 0, gid: {2**40}}}\n", "[0].gid: "),
    "string-uid": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: '0644', uid: root, gid: 0}}\n", "[0].uid: "),
    "duplicate-key": (f"- {{path: /etc/app.conf, template: {KEPT}, mode: '0644', mode: '0600', uid: 0, gid: 0}}\n",
                      "line 1, column "),
    "yaml-syntax": (f"- {{path: /etc/app.conf, template: {KEPT}\n", "line "),
    "python-tag": ("- !!python/object/apply:os.system ['touch /tmp/x']\n", "line 1"),
    "binary": ("\x00\x01binary", "binary"),
    "self-alias": ("&a [*a]\n", "alias"),
}


@pytest.mark.parametrize("case", sorted(BAD_INDEX))
def test_a_bad_templates_yml_is_refused_naming_the_file_in_the_guest(case, tmp_path, env, opts):
    text, says = BAD_INDEX[case]
    cdir = guest(tmp_path, index=text)
    before = tree_state(tmp_path / "lxc")
    for dry in (["--dry-run"], []):
        r = run("migrate", "reidentify", cdir, "--hostname", "web1", *dry, *opts, env=env)
        refused(r, f"rootfs:{kept.INDEX}: ", says)
    r = run("imgbuild", "clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.9", *opts, env=env)
    refused(r, f"rootfs:{kept.INDEX}: ")
    assert tree_state(tmp_path / "lxc") == before
    assert not (tmp_path / "inventory.yml").exists()


BAD_VARS = {
    "a-list": ("- server_id\n- 1\n", "expected a mapping"),
    "a-string": ("server_id=1\n", "expected a mapping"),
    "key-is-a-list": ("? [a, b]\n: 1\n", "line 1"),
    "duplicate-key": ("server_id: 1\nother: 2\nserver_id: 2\n", "line 3, column 1: YAML: duplicate key 'server_id'"),
    "nested-duplicate": ("server_id: 1\npeers: {a: 1, a: 2}\n", "line 2"),
    "self-alias": ("a: &x [*x]\nserver_id: 1\n", "alias"),
    "not-utf8": ("server_id: \udce9\n", "UTF-8"),
    "huge": ("server_id: 1\nx: " + "a" * (5 << 20) + "\n", "more than the"),
}


@pytest.mark.parametrize("case", sorted(BAD_VARS))
def test_a_bad_vars_yml_is_refused_naming_the_file_in_the_guest(case, tmp_path, env, opts):
    text, says = BAD_VARS[case]
    cdir = guest(tmp_path)
    (cdir / "rootfs" / kept.VARS.lstrip("/")).write_bytes(text.encode("utf-8", "surrogateescape"))
    before = tree_state(tmp_path / "lxc")
    for args in (["--dry-run"], [], ["--set", "server_id=3"]):
        r = run("migrate", "reidentify", cdir, "--hostname", "web1", *args, *opts, env=env)
        refused(r, f"rootfs:{kept.VARS}: ", says)
    r = run("imgbuild", "clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.9", "--dry-run", *opts, env=env)
    refused(r, f"rootfs:{kept.VARS}: ")
    assert tree_state(tmp_path / "lxc") == before


def test_a_kept_template_that_is_missing_or_not_text_is_refused(tmp_path, env, opts):
    cdir = guest(tmp_path)
    kept = cdir / "rootfs" / KEPT.lstrip("/")
    before_missing = None
    for content, says in ((b"\xff\xfe{{ x }}", "not UTF-8"), (None, "is missing")):
        if content is None:
            kept.unlink()
        else:
            kept.write_bytes(content)
        before_missing = tree_state(tmp_path / "lxc")
        r = run("migrate", "reidentify", cdir, "--hostname", "web1", *opts, env=env)
        refused(r, says)
        assert tree_state(tmp_path / "lxc") == before_missing


def test_a_template_that_renders_onto_a_directory_is_refused(tmp_path, env, opts):
    index = f"- {{path: /etc/network, template: {KEPT}, mode: '0644', uid: 0, gid: 0}}\n"
    cdir = guest(tmp_path, index=index)
    before = tree_state(tmp_path / "lxc")
    r = run("migrate", "reidentify", cdir, "--hostname", "web1", *opts, env=env)
    refused(r, "/etc/network", "directory")
    assert tree_state(tmp_path / "lxc") == before


# ================================================================== --set values


@pytest.mark.parametrize("value, says", [
    ("a=[", "--set a: line 1"),
    ("a={x: 1, x: 2}", "duplicate key 'x'"),
    ("a=&x [*x]", "alias"),
    ("a=!!python/object/apply:os.system [true]", "--set a"),
    ("=1", "expected VAR=VALUE"),
    ("a b=1", "expected VAR=VALUE"),
    ("novalue", "expected VAR=VALUE"),
])
def test_bad_set_values_are_refused(value, says, tmp_path, env, opts):
    cdir = guest(tmp_path)
    before = tree_state(tmp_path / "lxc")
    r = run("imgbuild", "clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.9", "--set", value, *opts, env=env)
    refused(r, says)
    assert sorted(os.listdir(tmp_path / "lxc")) == ["vm0"]
    r = run("migrate", "reidentify", cdir, "--set", value, "--dry-run", *opts, env=env)
    refused(r, says)
    assert tree_state(tmp_path / "lxc") == before

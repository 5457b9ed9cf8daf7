"""builder.build.recipe.load: good recipes, bad recipes (every problem with its exact key path), extends, --set,
secrets.

Recipes are written into tmp_path from the tables below, so each case reads as the YAML a user would write.
"""
from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from builder.build import recipe
from builder.core.errors import InputError, RecipeError
from builder.core.proc import Secret
from tests.conftest import DEFAULT_RECIPE

BASE = "name: t\ndistro: debian\nrelease: bookworm\n"
HASH = "$6$saltsalt$Qm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXhxdXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"


def write(directory: Path, text: str, name: str = "r.yml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text) if text[:1].isspace() else text)
    return path


def problems(path: Path, overrides: tuple[str, ...] = ()) -> list:
    with pytest.raises(RecipeError) as info:
        recipe.load(path, overrides)
    assert info.value.exit_code == 2
    return info.value.problems


def paths(probs: list) -> list[str]:
    return [p.path for p in probs]


# ---------------------------------------------------------------------------------------------- bad recipes
# (id, YAML appended to BASE, the one expected key path, a fragment of its message)

BAD = [
    # unknown keys, with and without a close match
    ("unknown-key", "hostnme: vm1\n", "hostnme", "unknown key (did you mean hostname?)"),
    ("unknown-key-no-match", "colour: blue\n", "colour", "valid keys: name, distro, release"),
    ("unknown-nested-key", "bootstrap: {mirorr: auto}\n", "bootstrap.mirorr", "did you mean mirror?"),
    ("unknown-hook-phase", "hooks: {post-file: []}\n", "hooks.post-file", "did you mean post-files?"),
    ("unknown-interface-key", "network: {eth0: {dhcp: true, gw: 10.0.3.1}}\n", "network.eth0.gw", "unknown key"),
    # wrong types
    ("wrong-type-list", "dns: 10.0.3.1\n", "dns", "expected a list, got a string"),
    ("wrong-type-mapping", "bootstrap: [mmdebstrap]\n", "bootstrap", "expected a mapping, got a list"),
    ("wrong-type-bool", "network: {eth0: {dhcp: 'yes please'}}\n", "network.eth0.dhcp",
     "expected true or false, got a string"),
    ("wrong-type-int", "epoch: soon\n", "epoch", "expected an integer"),
    ("wrong-type-interface", "network: {eth0: dhcp}\n", "network.eth0", "expected a mapping, got a string"),
    ("wrong-type-packages", "bootstrap: {packages: vim}\n", "bootstrap.packages", "expected a list, got a string"),
    # addresses
    ("address-no-prefix", "network: {eth0: {address: 10.0.3.2}}\n", "network.eth0.address",
     "needs a prefix length, e.g. 10.0.3.2/24"),
    ("address-bad", "network: {eth0: {address: 10.0.3.300/24}}\n", "network.eth0.address",
     "is not an IP address with prefix"),
    ("dns-bad-item", "dns: [10.0.3.1, ten]\n", "dns[1]", "'ten' is not an IP address"),
    ("gateway-outside-subnet", "network: {eth0: {address: 10.0.3.2/24, gateway: 10.0.4.1}}\n", "network.eth0.gateway",
     "gateway 10.0.4.1 is not in 10.0.3.0/24"),
    ("gateway-other-family", "network: {eth0: {address: 'fd00::2/64', gateway: 10.0.3.1}}\n", "network.eth0.gateway",
     "gateway 10.0.3.1 is not in fd00::/64"),
    ("address-and-dhcp", "network: {eth0: {address: 10.0.3.2/24, dhcp: true}}\n", "network.eth0",
     "either address or dhcp"),
    ("neither-address-nor-dhcp", "network: {eth0: {}}\n", "network.eth0", "give address"),
    ("interface-name-too-long", "network: {eth0-with-a-long-name: {dhcp: true}}\n",
     "network.eth0-with-a-long-name", "is not a network interface name"),
    # MACs
    ("mac-bad", "network: {eth0: {dhcp: true, mac: 'zz:16:3e:00:03:02'}}\n", "network.eth0.mac",
     "is not a MAC address"),
    ("mac-short", "network: {eth0: {dhcp: true, mac: '00:16:3e:00:03'}}\n", "network.eth0.mac",
     "is not a MAC address"),
    ("mac-multicast", "network: {eth0: {dhcp: true, mac: '01:00:5e:00:00:01'}}\n", "network.eth0.mac",
     "multicast"),
    ("mac-twice", "network:\n  eth0: {dhcp: true, mac: '00:16:3E:00:00:01'}\n"
                  "  eth1: {dhcp: true, mac: '00:16:3e:00:00:01'}\n", "network.eth1.mac", "also the MAC of eth0"),
    # modes: YAML reads an unquoted 0644 as the integer 420 (and 0755 as 493): each must be refused with a hint
    ("mode-not-octal", "files: [{path: /etc/x, content: x, mode: rw-r--r--}]\n", "files[0].mode",
     'write it quoted, e.g. "0644"'),
    ("mode-unquoted-0755", "files: [{path: /etc/x, content: x, mode: 0755}]\n", "files[0].mode", "quoted"),
    # BUG (builder/core/checks.py _mode + schema.Loader str coercion): 0644 -> 420 -> "420" -> mode 0o420, accepted
    ("mode-unquoted-0644", "files: [{path: /etc/x, content: x, mode: 0644}]\n", "files[0].mode", "quoted"),
    ("device-mode-unquoted-01777", "devices: [{path: /dev/shm, type: dir, mode: 01777}]\n", "devices[0].mode",
     "quoted"),
    # bootstrap
    ("method-unknown", "bootstrap: {method: debootstrapp}\n", "bootstrap.method",
     "'debootstrapp' is not one of: auto, mmdebstrap, debootstrap, yum, dnf, rpm-native (did you mean debootstrap?)"),
    ("variant-not-of-method", "bootstrap: {method: debootstrap, variant: custom}\n", "bootstrap.variant",
     "'custom' is not a variant of debootstrap"),
    ("variant-unknown-auto", "bootstrap: {variant: tiny}\n", "bootstrap.variant", "'tiny' is not a variant"),
    ("package-name-bad", "bootstrap: {packages: [vim, less, 'Not_A_Package!']}\n", "bootstrap.packages[2]",
     "is not a package name"),
    # hooks
    ("hook-script-missing", "hooks: {post-files: [{script: nothere.sh}]}\n", "hooks.post-files[0].script",
     "nothere.sh: no such file"),
    ("hook-script-missing-later", "hooks: {pre-pack: [{run: 'true'}, {script: gone.sh}]}\n",
     "hooks.pre-pack[1].script", "gone.sh: no such file"),
    ("hook-two-kinds", "hooks: {post-files: [{run: 'true', script: x.sh}]}\n", "hooks.post-files[0]",
     "give exactly one of run, script, host (got run and script)"),
    ("hook-no-kind", "hooks: {post-bootstrap: [{args: [a]}]}\n", "hooks.post-bootstrap[0]", "(got none)"),
    # files
    ("file-source-missing", "files: [{path: /etc/x, source: nothere.txt}]\n", "files[0].source",
     "nothere.txt: no such file"),
    ("file-content-and-source", "files: [{path: /etc/x, content: x, source: x.txt}]\n", "files[0]",
     "give exactly one of content, source (got content and source)"),
    ("file-no-content", "files: [{path: /etc/x}]\n", "files[0]", "(got none)"),
    ("file-path-relative", "files: [{path: etc/x, content: x}]\n", "files[0].path", "must be an absolute path"),
    ("file-path-root", "files: [{path: /, content: x}]\n", "files[0].path", "root directory itself"),
    ("file-path-missing", "files: [{content: x}]\n", "files[0].path", "missing required key"),
    ("file-owner-bad", "files: [{path: /etc/x, content: x, owner: 'bad owner'}]\n", "files[0].owner",
     "is not a user or group name or number"),
    # root password
    ("password-two-keys", f"root_password: {{lock: true, hash: '{HASH}'}}\n", "root_password",
     "give exactly one of lock, hash, from_file (got lock and hash)"),
    ("password-no-key", "root_password: {}\n", "root_password", "(got none)"),
    ("password-lock-false", "root_password: {lock: false}\n", "root_password", "lock: false means nothing"),
    ("password-not-a-hash", "root_password: {hash: hunter2}\n", "root_password", "is not a crypt(3) hash"),
    ("password-file-missing", "root_password: {from_file: pw.txt}\n", "root_password.from_file",
     "pw.txt: no such file"),
    # names
    ("hostname-bad", "hostname: web_1\n", "hostname", "'web_1' is not a valid host name"),
    ("domain-bad", "domain: -example.com\n", "domain", "is not a valid host name"),
    ("search-bad", "search: [example.com, 'a..b']\n", "search[1]", "is not a valid host name"),
    # targets
    ("target-unknown", "targets: {lxcc: {}}\n", "targets.lxcc", "unknown key (did you mean lxc?)"),
    ("compression-bad", "targets: {tarball: {compression: bz2}}\n", "targets.tarball.compression",
     "'bz2' is not one of: zst, zstd, xz, gz, none"),
    ("lxc-version-bad", "targets: {lxc: {version: new}}\n", "targets.lxc.version", "is not one of: modern, legacy"),
    ("lxc-bridge-bad", "targets: {lxc: {bridge: 'br 0'}}\n", "targets.lxc.bridge",
     "is not a network interface name"),
    # the rest
    ("arch-bad", "arch: x86_64\n", "arch", "'x86_64' is not a debian architecture"),
    ("init-unknown", "init: systemd\n", "init", "'systemd' is not one of: systemd-container"),
    ("devices-preset-unknown", "devices: contaner\n", "devices", "(did you mean container?)"),
    ("device-link-no-target", "devices: [{path: /dev/fd, type: link}]\n", "devices[0]", "needs target"),
    ("device-type-unknown", "devices: [{path: /dev/x, type: char}]\n", "devices[0].type", "is not one of: c, b"),
    ("epoch-negative", "epoch: -1\n", "epoch", "not a plausible Unix time"),
    ("extends-missing", "extends: nothere.yml\n", "extends", "nothere.yml: no such recipe"),
    ("extends-not-a-path", "extends: [a.yml]\n", "extends", "expected a path to another recipe"),
]


@pytest.mark.parametrize("body, path, fragment", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_recipe(tmp_path, body, path, fragment):
    rfile = write(tmp_path, BASE + body)
    probs = problems(rfile)
    assert paths(probs) == [path], probs
    assert fragment in probs[0].message
    assert probs[0].file == str(rfile)
    assert f"{rfile}: {path}: " in str(probs[0])


BAD_WHOLE = [
    ("missing-release", "name: t\ndistro: debian\n", ["release"], "missing required key"),
    ("empty-file", "", ["name", "distro", "release"], "missing required key"),
    ("distro-unknown", "name: t\ndistro: ubuntu\nrelease: noble\n", ["distro"], "'ubuntu' is not one of: debian"),
    ("distro-misspelled", "name: t\ndistro: debain\nrelease: x\n", ["distro"], "(did you mean debian?)"),
    ("name-bad", "name: -x\ndistro: debian\nrelease: bookworm\n", ["name"], "'-x' is not a valid name"),
    ("not-a-mapping", "- name: t\n- distro: debian\n", [""], "a recipe must be a YAML mapping"),
]


@pytest.mark.parametrize("text, expected, fragment", [c[1:] for c in BAD_WHOLE], ids=[c[0] for c in BAD_WHOLE])
def test_bad_whole_recipe(tmp_path, text, expected, fragment):
    probs = problems(write(tmp_path, text))
    assert paths(probs) == expected
    assert all(fragment in p.message for p in probs)


def test_unquoted_mode_error_tells_to_quote(tmp_path):
    """The classic: `mode: 0644` unquoted is the integer 420 in YAML. It must never become mode 0o420."""
    rfile = write(tmp_path, BASE + "files: [{path: /etc/motd, content: hi, mode: 0644}]\n")
    try:
        loaded = recipe.load(rfile)
    except RecipeError as e:
        assert paths(e.problems) == ["files[0].mode"]
        assert '"0644"' in e.problems[0].message and "quote" in e.problems[0].message
    else:
        pytest.fail(f"unquoted 0644 was accepted as mode {loaded.recipe.files[0].mode:#o}")


def test_yaml_duplicate_key_is_an_error_with_line(tmp_path):
    probs = problems(write(tmp_path, BASE + "name: u\n"))
    assert len(probs) == 1
    assert probs[0].path.startswith("line 4,")
    assert "duplicate key 'name'" in probs[0].message


def test_yaml_duplicate_nested_key_is_an_error_with_line(tmp_path):
    probs = problems(write(tmp_path, BASE + "network:\n  eth0: {dhcp: true}\n  eth0: {dhcp: true}\n"))
    assert len(probs) == 1
    assert probs[0].path.startswith("line 6,")
    assert "duplicate key 'eth0'" in probs[0].message


@pytest.mark.parametrize("text, line", [
    ("name: t\ndistro: debian\n  release: bookworm\n", 3),
    ("name: t\ndistro: debian\nrelease: bookworm\nbootstrap: {packages: [vim, less}\n", 4),
    ("name: t\ndistro: debian\nrelease: bookworm\nfiles:\n  - path: /etc/x\n    content: \"unterminated\n", 7),
], ids=["bad-indent", "unclosed-list", "unterminated-string"])
def test_yaml_syntax_error_names_line(tmp_path, text, line):
    rfile = write(tmp_path, text)
    probs = problems(rfile)
    assert len(probs) == 1
    assert probs[0].file == str(rfile)
    assert probs[0].path.startswith(f"line {line},")
    assert probs[0].message.startswith("YAML syntax:")


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError) as info:
        recipe.load(tmp_path / "nothere.yml")
    assert not isinstance(info.value, RecipeError)
    assert info.value.exit_code == 2
    assert "nothere.yml: no such recipe" in str(info.value)
    assert info.value.hint


# ---------------------------------------------------------------------------------------------- every problem


def test_every_problem_is_reported(tmp_path):
    rfile = write(tmp_path, BASE + textwrap.dedent("""\
        hostnme: vm1
        dns: 10.0.3.1
        network:
          eth0: {dhcp: true, mac: "01:16:3e:00:00:01"}
        """))
    with pytest.raises(RecipeError) as info:
        recipe.load(rfile)
    assert sorted(paths(info.value.problems)) == ["dns", "hostnme", "network.eth0.mac"]
    text = str(info.value)
    assert text.startswith("3 problems:")
    for p in ("hostnme", "dns", "network.eth0.mac"):
        assert f"{rfile}: {p}: " in text


def test_every_problem_is_reported_across_kinds(tmp_path):
    """Type problems and problems found by the later checks (files that do not exist) come in one report.

    Currently FAILS: recipe.load runs _semantics only when the schema pass found nothing, so the user fixes the
    typo and only then learns about the missing script and source file.
    """
    rfile = write(tmp_path, BASE + textwrap.dedent("""\
        hostnme: vm1
        files: [{path: /etc/x, source: nothere.txt}]
        hooks: {post-files: [{script: nothere.sh}]}
        """))
    assert sorted(paths(problems(rfile))) == ["files[0].source", "hooks.post-files[0].script", "hostnme"]


# ---------------------------------------------------------------------------------------------- good recipes


def test_default_recipe_loads():
    loaded = recipe.load(DEFAULT_RECIPE)
    r = loaded.recipe
    assert loaded.path == DEFAULT_RECIPE
    assert len(loaded.sha256) == 64
    assert (r.name, r.distro, r.release, r.arch, r.hostname) == ("debian12", "debian", "bookworm", "amd64", "vm0")
    assert r.bootstrap.packages == ("systemd-sysv", "ifupdown", "iproute2", "openssh-server")
    eth0 = r.network["eth0"]
    assert eth0.address == ipaddress.ip_interface("10.0.3.2/24")
    assert eth0.gateway == ipaddress.ip_address("10.0.3.1")
    assert eth0.mac == "00:16:3e:00:03:02"
    assert r.files[0].path == "/etc/motd" and r.files[0].mode == 0o644
    assert r.hooks.post_files[0].run.startswith("echo hello")
    assert r.targets.tarball.compression == "zstd" and r.targets.lxc.bridge == "lxcbr0"
    assert r.root_password.lock is True
    assert r.init == "systemd-container"


def test_minimal_recipe_defaults(tmp_path):
    r = recipe.load(write(tmp_path, BASE)).recipe
    assert r.hostname == "t"                      # hostname defaults to name
    assert r.arch == "amd64"
    assert r.bootstrap.method == "auto" and r.bootstrap.mirror == "auto" and r.bootstrap.variant is None
    assert r.bootstrap.components == ("main",)
    assert r.root_password.lock is True           # locked by default
    assert r.devices == "container"
    assert r.init == "none"                       # the debian family's default
    assert r.targets.tarball is not None and r.targets.tarball.compression == "zst" and r.targets.lxc is None
    assert r.files == () and r.dns == () and dict(r.network) == {}


GOOD = [
    ("hostname-null-is-name", "hostname: null\n", lambda r: r.hostname == "t"),
    ("hostname-fqdn", "hostname: web1.example.com\n", lambda r: r.hostname == "web1.example.com"),
    ("mode-quoted", "files: [{path: /etc/x, content: x, mode: '0600'}]\n", lambda r: r.files[0].mode == 0o600),
    ("mode-three-digits", "files: [{path: /etc/x, content: x, mode: '755'}]\n", lambda r: r.files[0].mode == 0o755),
    ("mode-sticky", "devices: [{path: /dev/shm, type: dir, mode: '1777'}]\n",
     lambda r: r.devices[0].mode == 0o1777),
    ("file-path-normalised", "files: [{path: /etc/../etc//x, content: x}]\n", lambda r: r.files[0].path == "/etc/x"),
    ("mac-lowercased", "network: {eth0: {dhcp: true, mac: '00:16:3E:AB:CD:EF'}}\n",
     lambda r: r.network["eth0"].mac == "00:16:3e:ab:cd:ef"),
    ("dhcp", "network: {eth0: {dhcp: true}}\n",
     lambda r: r.network["eth0"].dhcp is True and r.network["eth0"].address is None),
    ("ipv6", "network: {eth0: {address: 'fd00::2/64', gateway: 'fd00::1'}}\n",
     lambda r: r.network["eth0"].gateway == ipaddress.ip_address("fd00::1")),
    ("package-versions", "bootstrap: {packages: ['vim=2:9.0.1378-2', 'libc6:amd64', 'foo/bookworm-backports']}\n",
     lambda r: len(r.bootstrap.packages) == 3),
    ("method-and-variant", "bootstrap: {method: debootstrap, variant: buildd}\n",
     lambda r: (r.bootstrap.method, r.bootstrap.variant) == ("debootstrap", "buildd")),
    ("password-hash", f"root_password: {{hash: '{HASH}'}}\n",
     lambda r: r.root_password.hash.reveal() == HASH and r.root_password.lock is None),
    ("no-targets", "targets: {}\n", lambda r: r.targets.tarball is None and r.targets.lxc is None),
    ("lxc-only", "targets: {lxc: {}}\n", lambda r: r.targets.tarball is None and r.targets.lxc.bridge == "lxcbr0"),
    ("devices-none", "devices: none\n", lambda r: r.devices == "none"),
    ("init-sysvinit", "init: sysvinit-container\n", lambda r: r.init == "sysvinit-container"),
    ("epoch", "epoch: 1700000000\n", lambda r: r.epoch == 1700000000),
    ("hook-kinds", "hooks: {post-bootstrap: [{run: 'true'}, {host: 'echo $IMGBUILD_ROOT', env: {A: b}}]}\n",
     lambda r: r.hooks.post_bootstrap[1].env["A"] == "b"),
]


@pytest.mark.parametrize("body, check", [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_recipe(tmp_path, body, check):
    r = recipe.load(write(tmp_path, BASE + body)).recipe
    assert check(r), r


def test_name_that_is_no_hostname_needs_hostname(tmp_path):
    probs = problems(write(tmp_path, "name: web_1\ndistro: debian\nrelease: bookworm\n"))
    assert len(probs) == 1
    assert "'web_1' is not a valid host name" in probs[0].message and "hostname must be given" in probs[0].message
    assert probs[0].path == "hostname"
    r = recipe.load(write(tmp_path, "name: web_1\ndistro: debian\nrelease: bookworm\nhostname: web1\n")).recipe
    assert (r.name, r.hostname) == ("web_1", "web1")


def test_relative_paths_resolve_against_the_recipe(tmp_path, monkeypatch):
    d = tmp_path / "recipes"
    (d / "files").mkdir(parents=True)
    (d / "files" / "motd").write_text("hi\n")
    (d / "setup.sh").write_text("#!/bin/sh\n")
    (d / "pw").write_text("secret\n")
    write(d, BASE + textwrap.dedent("""\
        files: [{path: /etc/motd, source: files/motd}]
        hooks: {post-files: [{script: setup.sh}]}
        root_password: {from_file: pw}
        """))
    monkeypatch.chdir(tmp_path)  # not the recipe's directory
    r = recipe.load(Path("recipes/r.yml")).recipe
    assert r.files[0].source == str(d / "files" / "motd")
    assert r.hooks.post_files[0].script == str(d / "setup.sh")
    assert r.root_password.from_file == str(d / "pw")


# ---------------------------------------------------------------------------------------------- extends


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path, BASE + textwrap.dedent("""\
        arch: arm64
        bootstrap: {variant: minbase, packages: [a, b], components: [main, contrib]}
        network:
          eth0: {address: 10.0.3.2/24, gateway: 10.0.3.1}
        dns: [10.0.3.1, 10.0.3.254]
        hooks:
          post-files: [{run: base}]
        targets: {tarball: {compression: xz}}
        """), "base.yml")
    child = write(tmp_path, """\
        extends: base.yml
        name: child
        bootstrap: {packages: [c]}
        network:
          eth0: {mac: "00:16:3e:00:00:01"}
        dns: [192.0.2.53]
        hooks:
          pre-pack: [{run: child}]
        targets: {lxc: {}}
        """, "child.yml")
    r = recipe.load(child).recipe
    assert r.name == "child" and r.hostname == "child"             # scalar replaced (and hostname follows)
    assert r.arch == "arm64" and r.release == "bookworm"            # inherited
    assert r.bootstrap.packages == ("c",)                           # list replaced, not appended
    assert r.bootstrap.components == ("main", "contrib")            # mapping merged key by key
    assert r.network["eth0"].address == ipaddress.ip_interface("10.0.3.2/24")
    assert r.network["eth0"].mac == "00:16:3e:00:00:01"
    assert r.dns == (ipaddress.ip_address("192.0.2.53"),)
    assert [h.run for h in r.hooks.post_files] == ["base"] and [h.run for h in r.hooks.pre_pack] == ["child"]
    assert r.targets.tarball.compression == "xz" and r.targets.lxc is not None
    assert r.extends == str((tmp_path / "base.yml").resolve())


def test_extends_resolves_paths_relative_to_the_file_that_names_them(tmp_path):
    (tmp_path / "common" / "lib").mkdir(parents=True)
    (tmp_path / "common" / "motd").write_text("base\n")
    (tmp_path / "common" / "base-hook.sh").write_text("true\n")
    (tmp_path / "sites" / "web").mkdir(parents=True)
    (tmp_path / "sites" / "web" / "own-hook.sh").write_text("true\n")
    write(tmp_path / "common" / "lib", BASE + "files: [{path: /etc/motd, source: ../motd}]\n", "root.yml")
    write(tmp_path / "common", """\
        extends: lib/root.yml
        hooks: {post-files: [{script: base-hook.sh}]}
        """, "base.yml")
    child = write(tmp_path / "sites" / "web", """\
        extends: ../../common/base.yml
        hooks: {pre-pack: [{script: own-hook.sh}]}
        """, "web.yml")
    r = recipe.load(child).recipe
    assert Path(r.files[0].source).resolve() == tmp_path / "common" / "motd"
    assert Path(r.hooks.post_files[0].script) == tmp_path / "common" / "base-hook.sh"
    assert Path(r.hooks.pre_pack[0].script) == tmp_path / "sites" / "web" / "own-hook.sh"


def test_extends_child_list_replaces_and_resolves_against_child(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    write(tmp_path / "base", BASE + "files: [{path: /a, source: a.txt}]\n", "base.yml")
    child = write(tmp_path, "extends: base/base.yml\nfiles: [{path: /b, source: b.txt}]\n", "child.yml")
    r = recipe.load(child).recipe
    assert [(f.path, f.source) for f in r.files] == [("/b", str(tmp_path / "b.txt"))]


@pytest.mark.parametrize("chain", [["a"], ["a", "b"], ["a", "b", "c"]], ids=["self", "two", "three"])
def test_extends_cycle_is_detected(tmp_path, chain):
    for i, name in enumerate(chain):
        nxt = chain[(i + 1) % len(chain)]
        write(tmp_path, f"extends: {nxt}.yml\n" + (BASE if i == 0 else ""), f"{name}.yml")
    probs = problems(tmp_path / "a.yml")
    assert len(probs) == 1
    assert probs[0].path == "extends"
    assert "cycle" in probs[0].message
    for name in chain:
        assert f"{name}.yml" in probs[0].message


def test_extends_missing_parent_names_where_it_looked(tmp_path):
    (tmp_path / "sub").mkdir()
    probs = problems(write(tmp_path / "sub", BASE + "extends: ../nothere.yml\n"))
    assert paths(probs) == ["extends"]
    assert str(tmp_path / "sub" / ".." / "nothere.yml") in probs[0].message


def test_extends_problem_in_base_names_the_base_file(tmp_path):
    """A typo in the base recipe must be reported against base.yml, where the user can find it.

    Currently FAILS: recipe.load creates schema.Loader(str(path)) for the child, so every problem of the merged
    data carries the child's file name.
    """
    base = write(tmp_path, BASE + "hostnme: vm1\n", "base.yml")
    child = write(tmp_path, "extends: base.yml\nname: child\n", "child.yml")
    probs = problems(child)
    assert paths(probs) == ["hostnme"]
    assert str(base) in str(probs[0])


def test_extends_syntax_error_in_base_names_the_base_file(tmp_path):
    base = write(tmp_path, "name: [t\n", "base.yml")
    probs = problems(write(tmp_path, "extends: base.yml\n", "child.yml"))
    assert probs[0].file == str(base)
    assert probs[0].path.startswith("line ")


# ---------------------------------------------------------------------------------------------- --set


SET_GOOD = [
    ({"a": 1}, "a=2", {"a": 2}),
    ({}, "a.b.c=x", {"a": {"b": {"c": "x"}}}),
    ({"a": {"keep": 1}}, "a.b=2", {"a": {"keep": 1, "b": 2}}),
    ({"l": [1, 2]}, "l[1]=3", {"l": [1, 3]}),
    ({"l": [{"m": "0644", "p": "/x"}]}, "l[0].m='0600'", {"l": [{"m": "0600", "p": "/x"}]}),
    ({"hooks": {"post-files": [{"run": "a"}]}}, "hooks.post-files[0].run=b", {"hooks": {"post-files": [{"run": "b"}]}}),
    ({}, "dns=[192.0.2.53, 192.0.2.54]", {"dns": ["192.0.2.53", "192.0.2.54"]}),
    ({}, "m={a: 1}", {"m": {"a": 1}}),
    ({}, "flag=true", {"flag": True}),
    ({}, "n=12", {"n": 12}),
    ({}, "s=null", {"s": None}),
    ({"s": "x"}, "s=", {"s": ""}),
    ({}, "s=a=b", {"s": "a=b"}),
    ({}, "s=a: b: c", {"s": "a: b: c"}),     # not YAML: taken as the plain string
    ({}, "s=\"[a\"", {"s": "[a"}),           # a bracket, quoted: a string
]


@pytest.mark.parametrize("data, assignment, expected", SET_GOOD, ids=[c[1] for c in SET_GOOD])
def test_apply_set(data, assignment, expected):
    recipe.apply_set(data, assignment)
    assert data == expected


SET_BAD = [
    ({}, "s=[a", "the value is not a valid YAML list"),     # meant as a list: refused, not taken as text
    ({}, "hostname", "expected KEY=VALUE"),
    ({}, "=x", "not a key path"),
    ({}, "a..b=1", "not a key path"),
    ({}, "[0]=1", "not a key path"),
    ({}, "files[x]=1", "not a key path"),
    ({"l": [1]}, "l[5]=1", "no item [5]"),
    ({}, "files[0].mode=0600", "no item [0]"),
    ({"name": "t"}, "name.x=1", "not a mapping"),
]


@pytest.mark.parametrize("data, assignment, fragment", SET_BAD, ids=[c[1] for c in SET_BAD])
def test_apply_set_bad(data, assignment, fragment):
    with pytest.raises(InputError) as info:
        recipe.apply_set(data, assignment)
    assert not isinstance(info.value, RecipeError)
    assert info.value.exit_code == 2
    assert fragment in str(info.value)
    assert str(info.value).startswith("--set ")


def test_set_without_equals_has_a_hint():
    with pytest.raises(InputError) as info:
        recipe.apply_set({}, "hostname")
    assert "--set hostname=vm1" in info.value.hint


def test_load_with_overrides():
    plain = recipe.load(DEFAULT_RECIPE)
    loaded = recipe.load(DEFAULT_RECIPE, ("hostname=web1", "network.eth0.address=10.0.3.9/24",
                                          "bootstrap.packages=[systemd-sysv, vim]", "files[0].mode='0600'",
                                          "targets.tarball.compression=xz"))
    r = loaded.recipe
    assert r.hostname == "web1" and r.name == "debian12"
    eth0 = r.network["eth0"]
    assert eth0.address == ipaddress.ip_interface("10.0.3.9/24")
    assert eth0.gateway == ipaddress.ip_address("10.0.3.1") and eth0.mac == "00:16:3e:00:03:02"  # merged, kept
    assert r.bootstrap.packages == ("systemd-sysv", "vim")
    assert r.files[0].mode == 0o600 and r.files[0].path == "/etc/motd"
    assert r.targets.tarball.compression == "xz" and r.targets.lxc.bridge == "lxcbr0"
    assert loaded.sha256 != plain.sha256
    assert recipe.load(DEFAULT_RECIPE).sha256 == plain.sha256


@pytest.mark.parametrize("assignment, path, fragment", [
    ("network.eth0.mac=01:16:3e:00:03:02", "network.eth0.mac", "multicast"),
    ("hostnam=web1", "hostnam", "did you mean hostname?"),
    ("bootstrap.packages[1]=Bad_Name", "bootstrap.packages[1]", "is not a package name"),
    ("targets.tarball.compression=bz2", "targets.tarball.compression", "is not one of"),
    ("dns=192.0.2.53", "dns", "expected a list"),
])
def test_overrides_are_checked_like_the_file(assignment, path, fragment):
    probs = problems(DEFAULT_RECIPE, (assignment,))
    assert paths(probs) == [path]
    assert fragment in probs[0].message
    assert probs[0].file == f"--set {assignment}"     # the option is named, not the file it did not come from


# ---------------------------------------------------------------------------------------------- secrets


def test_password_hash_never_printed(tmp_path):
    loaded = recipe.load(write(tmp_path, BASE + f"root_password: {{hash: '{HASH}'}}\n"))
    r = loaded.recipe
    assert isinstance(r.root_password.hash, Secret)
    assert r.root_password.hash.reveal() == HASH
    for text in (repr(loaded), str(loaded), repr(r), str(r), repr(r.root_password), str(r.root_password),
                 f"{r}", f"{r.root_password.hash}"):
        assert HASH not in text
        assert "saltsalt" not in text
    assert "***" in repr(r)


def test_password_hash_not_in_errors(tmp_path):
    rfile = write(tmp_path, BASE + f"hostnme: x\nroot_password: {{hash: '{HASH}'}}\n")
    with pytest.raises(RecipeError) as info:
        recipe.load(rfile)
    assert paths(info.value.problems) == ["hostnme"]
    assert "saltsalt" not in str(info.value) and "saltsalt" not in repr(info.value.problems)


def test_bad_password_hash_not_echoed(tmp_path):
    probs = problems(write(tmp_path, BASE + "root_password: {hash: 'correct horse battery staple'}\n"))
    assert paths(probs) == ["root_password"]
    assert "horse" not in str(probs[0])


# ------------------------------------------------------------------------------------- hints that say what to do


@pytest.mark.parametrize("assignment, path", [
    ("hostnme=x", "hostnme"),                                   # a key the recipe does not have
    ("bootstrap.variant=bogus", "bootstrap.variant"),           # a key the file's bootstrap: has
    ("bootstrap={method: nosuch}", "bootstrap.method"),         # under a whole mapping the option replaced
])
def test_a_set_mistake_is_blamed_on_the_option_not_the_file(tmp_path, assignment, path):
    rfile = write(tmp_path, BASE + "bootstrap: {variant: minbase}\n")
    probs = problems(rfile, (assignment,))
    assert [(p.file, p.path) for p in probs] == [(f"--set {assignment}", path)]


@pytest.mark.parametrize("assignment, kind", [("bootstrap.packages=[a, b", "list"), ("vars={a: 1", "mapping")])
def test_a_set_value_that_is_broken_yaml_names_the_option(tmp_path, assignment, kind):
    with pytest.raises(InputError) as e:
        recipe.load(write(tmp_path, BASE), (assignment,))
    assert e.value.message.startswith(f"--set {assignment}: the value is not a valid YAML {kind}")
    assert "--set '" in e.value.hint


@pytest.mark.parametrize("written, value, quoted", [("644", "644", '"0644"'), ("0644", "420", '"0644"'),
                                                    ("755", "755", '"0755"'), ("01777", "1023", '"01777"')])
def test_an_unquoted_mode_is_named_as_written(tmp_path, written, value, quoted):
    probs = problems(write(tmp_path, BASE + f"files: [{{path: /etc/x, content: x, mode: {written}}}]\n"))
    assert paths(probs) == ["files[0].mode"]
    assert probs[0].message == (f"mode {written} is a number to YAML (the integer {value}), not a mode; "
                                f"write it quoted: {quoted}")

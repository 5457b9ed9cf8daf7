"""Secret and node names never lead out of their directory: a `secrets:` key or a node name that is not a Name
is refused when the recipe loads (`imgbuild validate` exits 2 naming the key), and again where the secret's
path is built; a symlink in the secrets directory is neither read nor written through."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.build import cluster
from builder.core.errors import InputError
from tests.conftest import REPO, imgbuild

BAD = ["../../imgbuild-pwned", "/tmp/imgbuild-pwned-abs", "..", ".", ".hidden", "a/b", "a;$(id)", "$(id)", "a b",
       "pw\n", "x" * 65, ""]


def recipe(tmp_path: Path, secrets: str = "", nodes: str = "  - {name: a, address: 10.0.3.11/24}\n") -> Path:
    p = tmp_path / "c.yml"
    p.write_text(f"extends: {REPO}/recipes/base/cluster-node.yml\nname: c\n"
                 f"bootstrap: {{mirror: 'http://127.0.0.1:9/debian'}}\nnodes:\n{nodes}" +
                 (f"secrets:\n{secrets}" if secrets else ""))
    return p


def tree(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*")) if top.exists() else []


@pytest.mark.parametrize("name", BAD)
def test_validate_refuses_a_secret_name_that_is_not_a_name(tmp_path, name):
    key = '"' + name.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') + '"'
    p = recipe(tmp_path, f"  {key}: {{path: /etc/pw, generate: 20}}\n")
    env = {**os.environ, cluster.SECRETS_ENV: str(tmp_path / "secrets" / "keep")}
    before = tree(tmp_path)
    for args in (["validate", "--offline", p], [p, "-o", tmp_path / "out"]):
        r = imgbuild(*args, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "error:" in r.stderr and "Traceback" not in r.stderr
        assert "secrets." in r.stderr and "is not a valid name" in r.stderr, r.stderr
        assert tree(tmp_path) == before
    assert not Path("/tmp/imgbuild-pwned-abs").exists()


@pytest.mark.parametrize("name", ["../x", "a;b", "x" * 30 + "." + "y" * 40, "a_b", "-a"])
def test_validate_refuses_a_node_name_that_is_not_a_name(tmp_path, name):
    p = recipe(tmp_path, nodes=f'  - {{name: "{name}", address: 10.0.3.11/24}}\n')
    r = imgbuild("validate", "--offline", p)
    assert r.returncode == 2 and "nodes[0].name" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("name", BAD)
def test_secret_value_refuses_a_bad_name_where_the_path_is_built(tmp_path, name):
    base = tmp_path / "secrets" / "keep"
    with pytest.raises(InputError) as e:
        cluster.secret_value("c", name, cluster.SecretSpec(path="/x", generate=20), base=base)
    assert "is not a valid name" in e.value.message
    with pytest.raises(InputError):
        cluster.secret_value(name or "..", "pw", cluster.SecretSpec(path="/x", generate=20), base=base)
    assert tree(tmp_path) == [] and not Path("/tmp/imgbuild-pwned-abs").exists()


def test_a_symlink_in_the_secrets_directory_is_neither_read_nor_written(tmp_path):
    base = tmp_path / "secrets"
    (base / "c").mkdir(parents=True)
    host_file = tmp_path / "host-file"
    host_file.write_text("a host file's first line\n")
    (base / "c" / "pw").symlink_to(host_file)
    with pytest.raises(InputError) as e:
        cluster.secret_value("c", "pw", cluster.SecretSpec(path="/x", generate=20), base=base)
    assert "symbolic link" in e.value.message
    assert host_file.read_text() == "a host file's first line\n" and (base / "c" / "pw").is_symlink()
    (tmp_path / "other").mkdir()
    (base / "d").symlink_to(tmp_path / "other")          # the cluster's own directory a link
    with pytest.raises(InputError):
        cluster.secret_value("d", "pw", cluster.SecretSpec(path="/x", generate=20), base=base)
    assert os.listdir(tmp_path / "other") == []


def test_secrets_whose_names_differ_by_a_suffix_are_both_kept(tmp_path):
    """The value is written through a temp file of its own: `pw` never lands in (and then takes away) the file
    of a secret called `pw.tmp`."""
    spec = cluster.SecretSpec(path="/x", generate=20)
    a = cluster.secret_value("c", "pw.tmp", spec, base=tmp_path)
    b = cluster.secret_value("c", "pw", spec, base=tmp_path)
    c = cluster.secret_value("c", "pw.x", spec, base=tmp_path)
    assert len({a.reveal(), b.reveal(), c.reveal()}) == 3
    assert cluster.secret_value("c", "pw.tmp", spec, base=tmp_path).reveal() == a.reveal()
    assert sorted(os.listdir(tmp_path / "c")) == ["pw", "pw.tmp", "pw.x"]
    assert all((tmp_path / "c" / n).stat().st_mode & 0o777 == 0o600 for n in os.listdir(tmp_path / "c"))

"""Cluster recipes without building: node checks, MACs, variables, secrets kept once per cluster, hosts block."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.build import cluster, recipe
from builder.core.errors import InputError, RecipeError
from tests.conftest import REPO

RECIPES = ["galera.yml", "mariadb-replication.yml", "rabbitmq.yml", "memcached.yml", "lvs.yml", "galera-centos6.yml"]


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_cluster_recipes_load(name):
    r = recipe.load(REPO / "recipes" / name).recipe
    assert r.name == name.removesuffix(".yml")


def test_node_macs_are_stable_unique_and_in_xens_range():
    r = recipe.load(REPO / "recipes/galera.yml").recipe
    macs = [cluster.node_mac(r.name, n) for n in r.nodes]
    assert macs == [cluster.node_mac(r.name, n) for n in recipe.load(REPO / "recipes/galera.yml").recipe.nodes]
    assert len(set(macs)) == 3 and all(m.startswith("00:16:3e:") and int(m.split(":")[3], 16) < 0x80 for m in macs)


def test_cluster_vars_give_each_node_its_view():
    r = recipe.load(REPO / "recipes/lvs.yml").recipe
    v = cluster.cluster_vars(r, 1)
    assert v["node"]["name"] == "real1" and v["node_index"] == 1 and v["lvs_role"] == "real"
    assert [n["ip"] for n in v["nodes"]] == ["10.0.3.40", "10.0.3.41", "10.0.3.42"]
    assert v["first_node"]["name"] == "director" and v["lvs_vip"] == "10.0.3.100" and v["cluster"] == "lvs"


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "c.yml"
    p.write_text(f"extends: {REPO}/recipes/base/cluster-node.yml\nname: c\n{body}")
    return p


def test_duplicate_and_clashing_nodes_are_reported_with_their_keys(tmp_path):
    p = _write(tmp_path, "nodes:\n  - {name: a, address: 10.0.3.11/24}\n  - {name: b, address: 10.0.3.11/24}\n"
                         "  - {name: node0, address: 10.0.3.10/24}\n  - {name: A, address: 10.0.3.14/24}\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    text = str(e.value)
    assert "nodes[1].address: 10.0.3.11 is also a's" in text
    assert "nodes[2].address" in text and "the build's own address" in text
    assert "nodes[2].name: node0 is the build's own host name" in text
    assert "nodes[3].name: a is also a's" in text


def test_templates_must_find_every_variable_on_every_node(tmp_path):
    (tmp_path / "t.j2").write_text("{{ role }} {{ nodes | length }} {{ optional | default('x') }}\n")
    p = _write(tmp_path, "templates: [{path: /etc/x, source: t.j2}]\nnodes:\n"
                         "  - {name: a, address: 10.0.3.11/24, vars: {role: one}}\n"
                         "  - {name: b, address: 10.0.3.12/24}\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    assert "uses role, which vars does not define (node b)" in str(e.value)


def test_secret_specs_are_checked(tmp_path):
    p = _write(tmp_path, "secrets:\n  pw: {path: /etc/pw, generate: 4}\n  open: {path: /etc/o, generate: 20, "
                         "mode: '0644'}\n  both: {path: /etc/b, generate: 20, from_file: x}\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(p)
    text = str(e.value)
    assert "secrets.pw" in text and "8 to 256" in text
    assert "secrets.open" in text and "must not be readable by group or others" in text
    assert "secrets.both" in text
    with pytest.raises(RecipeError) as e:
        recipe.load(_write(tmp_path, "secrets:\n  gone: {path: /etc/g, from_file: missing.txt}\n"))
    assert "secrets.gone.from_file" in str(e.value) and "no such file" in str(e.value)


def test_a_generated_secret_is_made_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.setenv(cluster.SECRETS_ENV, str(tmp_path / "s"))
    spec = cluster.SecretSpec(path="/etc/x", generate=24)
    a = cluster.secret_value("c1", "pw", spec)
    b = cluster.secret_value("c1", "pw", spec)
    other = cluster.secret_value("c2", "pw", spec)
    assert a == b and a != other and len(a.reveal()) == 24 and str(a) == "***"
    kept = tmp_path / "s" / "c1" / "pw"
    assert kept.read_text().strip() == a.reveal()
    assert kept.stat().st_mode & 0o777 == 0o600 and (tmp_path / "s" / "c1").stat().st_mode & 0o777 == 0o700
    f = tmp_path / "given"
    f.write_text("from-a-file-value\nignored\n")
    assert cluster.secret_value("c1", "x", cluster.SecretSpec(path="/x",
                                                              from_file=str(f))).reveal() == "from-a-file-value"
    f.write_text("")
    with pytest.raises(InputError) as e:
        cluster.secret_value("c1", "x", cluster.SecretSpec(path="/x", from_file=str(f)))
    assert "is empty" in e.value.message


def test_hosts_block_is_replaced_not_appended_twice():
    r = recipe.load(REPO / "recipes/rabbitmq.yml").recipe
    block = cluster.hosts_block(r)
    assert block.splitlines()[1:3] == ["10.0.3.31\trabbit1", "10.0.3.32\trabbit2"]
    once = cluster.with_hosts_block("127.0.0.1 localhost\n", block)
    assert cluster.with_hosts_block(once, block) == once and once.startswith("127.0.0.1 localhost\n")


def test_install_lxc_refuses_name_for_a_cluster_and_unknown_nodes(tmp_path):
    from tests.conftest import imgbuild

    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "c", "artifacts": []}')
    (out / "nodes.json").write_text('{"base": {"ip": "10.0.3.10", "mac": null}, "nodes": [{"name": "a", '
                                    '"address": "10.0.3.11/24", "mac": "00:16:3e:00:00:01", "vars": {}}]}')
    r = imgbuild("install-lxc", out, "--name", "x", "--lxcpath", tmp_path / "lxc")
    assert r.returncode == 2 and "--node NAME" in r.stderr
    r = imgbuild("install-lxc", out, "--node", "zz", "--lxcpath", tmp_path / "lxc")
    assert r.returncode == 2 and "zz: not a node" in r.stderr and "nodes: a" in r.stderr
    assert not (tmp_path / "lxc").exists() or not os.listdir(tmp_path / "lxc")


def test_the_el6_galera_variant_renders_the_seeds_settings_per_node():
    """recipes/galera-centos6.yml cannot be built here (no CentOS or Percona mirror): its templates are rendered
    for every node as the build and install-lxc would, and its EL6 hook is checked by sh."""
    import subprocess

    from builder.core import templating as templates

    r = recipe.load(REPO / "recipes/galera-centos6.yml").recipe
    assert r.bootstrap.extra_repos["percona"].gpgkey.startswith("https://")
    source = (REPO / "hooks/galera/my.cnf.el.j2").read_text()
    role = (REPO / "hooks/galera/role.j2").read_text()
    for i, n in enumerate(r.nodes):
        ip = n.address.split("/")[0] if isinstance(n.address, str) else str(n.address.ip)
        ctx = templates.context(n.name, None, {"eth0": ip}, {}, cluster.cluster_vars(r, i))
        cnf = templates.render(source, ctx, "my.cnf")
        assert cnf.splitlines()[3] == "[mysqld]"
        for line in ("wsrep_cluster_address          = gcomm://10.0.3.11,10.0.3.12,10.0.3.13",
                     f"wsrep_node_name                = {n.name}", f"wsrep_node_address             = {ip}",
                     "wsrep_cluster_name             = lxccluster", "wsrep_sst_method               = rsync",
                     "wsrep_slave_threads            = 2", "innodb_locks_unsafe_for_binlog = 1",
                     "innodb_autoinc_lock_mode       = 2", "binlog_format                  = ROW"):
            assert line in cnf.splitlines(), (line, cnf)
        assert templates.render(role, ctx, "role").strip() == ("bootstrap" if i == 0 else "join")
    for script in ("galera/setup-el6.sh", "galera/setup.sh", "mariadb-replication/setup.sh",
                   "rabbitmq-cluster/setup.sh", "memcached/setup.sh", "lvs-director/setup.sh"):
        assert subprocess.run(["sh", "-n", str(REPO / "hooks" / script)]).returncode == 0, script

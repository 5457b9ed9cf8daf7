"""recipes/galera.yml (seed 000): built once, three nodes installed with install-lxc, booted on one bridge; the
cluster reports size 3, rows written on galera1 are read on galera2 and galera3, and rows inserted on galera2 get
auto-increment ids that do not collide with galera1's (the seed's own check)."""
from __future__ import annotations

import time

import pytest

from tests.support.clusters import build, env_with, install, journal, remove, shm_dir, wait_for, wait_running
from tests.support.lxc import lxc_netns

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.lxc, pytest.mark.slow]

NODES = ["galera1", "galera2", "galera3"]


@pytest.fixture
def work(tmp_path):
    d = shm_dir("galera")
    yield d
    remove(d)


def sql(sb, node: str, query: str) -> str:
    r = sb.attach(node, "mariadb", "-N", "-B", "-e", query, timeout=60)
    return r.stdout.strip() if r.returncode == 0 else ""


def test_three_nodes_form_one_cluster(work, tmp_path):
    env = env_with(work / "secrets", tmp_path / "inventory.yml")
    output, _ = build("galera.yml", work / "out", env)
    with lxc_netns(work / "sandbox") as sb:
        t0 = time.monotonic()
        install(output, sb, env, NODES)
        for n in NODES:
            conf = (sb.lxcpath / n / "rootfs/etc/mysql/mariadb.conf.d/60-imgbuild-galera.cnf").read_text()
            assert f"wsrep_node_name          = {n}" in conf
            assert "wsrep_cluster_address    = gcomm://10.0.3.11,10.0.3.12,10.0.3.13" in conf
            role = (sb.lxcpath / n / "rootfs/etc/imgbuild/galera-role").read_text().strip()
            assert role == ("bootstrap" if n == "galera1" else "join")
            hosts = (sb.lxcpath / n / "rootfs/etc/hosts").read_text()
            assert all(f"10.0.3.1{i}\tgalera{i}" in hosts for i in (1, 2, 3)), hosts
        print(f"install 3 nodes: {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        for n in NODES:
            sb.start(n)
        for n in NODES:     # the joiners reach `running` once they have joined (imgbuild-galera.service)
            assert wait_running(sb, n, 240) in ("running", "degraded"), \
                f"{n}:\n{journal(sb, n, 'imgbuild-galera')}\n{journal(sb, n, 'mariadb')}"
        size = wait_for(lambda: sql(sb, "galera1", "SHOW STATUS LIKE 'wsrep_cluster_size'").split()[-1:] == ["3"],
                        180, 2)
        assert size, "cluster size never reached 3:\n" + "\n".join(
            f"--- {n}:\n{journal(sb, n, 'imgbuild-galera')}\n{journal(sb, n, 'mariadb')}" for n in NODES)
        print(f"boot to cluster size 3: {time.monotonic() - t0:.1f} s")
        for n in NODES:
            assert sql(sb, n, "SHOW STATUS LIKE 'wsrep_local_state_comment'").endswith("Synced"), n
        sql(sb, "galera1", "CREATE DATABASE seed; CREATE TABLE seed.t (id INT AUTO_INCREMENT PRIMARY KEY, "
                           "node VARCHAR(20)) ENGINE=InnoDB; INSERT INTO seed.t (node) VALUES ('galera1'), ('galera1')")
        for n in ("galera2", "galera3"):
            rows = wait_for(lambda n=n: sql(sb, n, "SELECT COUNT(*) FROM seed.t") == "2", 30)
            assert rows, f"{n} does not see galera1's rows"
        sql(sb, "galera2", "INSERT INTO seed.t (node) VALUES ('galera2'), ('galera2')")
        ids = sql(sb, "galera3", "SELECT id, node FROM seed.t ORDER BY id")
        pairs = [line.split("\t") for line in ids.splitlines()]
        assert len(pairs) == 4 and len({p[0] for p in pairs}) == 4, ids
        g1 = {int(p[0]) for p in pairs if p[1] == "galera1"}
        g2 = {int(p[0]) for p in pairs if p[1] == "galera2"}
        assert not g1 & g2 and len(g2) == 2, ids

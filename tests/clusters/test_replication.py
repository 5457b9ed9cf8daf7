"""recipes/mariadb-replication.yml (seed 002): a primary and a read-only replica; a row written on the primary
is read on the replica, a write on the replica is refused, and the replication password (generated once per
cluster) is in its secret file only: not in the build's output, the manifest, nodes.json, the guest configs or
vars.yml."""
from __future__ import annotations

import time

import pytest

from tests.support.clusters import (
    assert_no_secret,
    build,
    env_with,
    install,
    journal,
    remove,
    shm_dir,
    wait_for,
    wait_running,
)
from tests.support.lxc import lxc_netns

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.lxc, pytest.mark.slow]


@pytest.fixture
def work(tmp_path):
    d = shm_dir("replication")
    yield d
    remove(d)


def sql(sb, node: str, query: str, user: str | None = None) -> tuple[int, str]:
    args = ["mariadb", "-N", "-B"] + (["-u", user] if user else []) + ["-e", query]
    r = sb.attach(node, *args, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_primary_and_read_only_replica(work, tmp_path):
    env = env_with(work / "secrets", tmp_path / "inventory.yml")
    output, built = build("mariadb-replication.yml", work / "out", env)
    secret = (work / "secrets" / "mariadb-replication" / "replication_password").read_text().strip()
    assert (work / "secrets" / "mariadb-replication" / "replication_password").stat().st_mode & 0o077 == 0
    with lxc_netns(work / "sandbox") as sb:
        installed = install(output, sb, env, ["db1", "db2"])
        for n in ("db1", "db2"):
            f = sb.lxcpath / n / "rootfs/etc/mysql/imgbuild-replication.secret"
            st = f.stat()
            assert f.read_text() == secret and st.st_mode & 0o777 == 0o400
            mysql_uid = int(next(line.split(":")[2] for line in (sb.lxcpath / n / "rootfs/etc/passwd").read_text()
                                 .splitlines() if line.startswith("mysql:")))
            assert st.st_uid == mysql_uid
        cnf = {n: (sb.lxcpath / n / "rootfs/etc/mysql/mariadb.conf.d/90-imgbuild-replication.cnf").read_text()
               for n in ("db1", "db2")}
        assert "server-id        = 1" in cnf["db1"] and "server-id        = 2" in cnf["db2"]
        assert "read_only" not in cnf["db1"] and "read_only        = ON" in cnf["db2"]
        assert_no_secret(secret, built.stdout, built.stderr, installed.stdout, installed.stderr,
                         files=[output / "manifest.json", output / "nodes.json", output / "lxc.conf",
                                sb.lxcpath / "db1/config", sb.lxcpath / "db2/config",
                                sb.lxcpath / "db1/rootfs/etc/imgbuild/vars.yml",
                                sb.lxcpath / "db2/rootfs/etc/imgbuild/vars.yml", tmp_path / "inventory.yml"])
        t0 = time.monotonic()
        for n in ("db1", "db2"):
            sb.start(n)
        for n in ("db1", "db2"):
            assert wait_running(sb, n, 180) in ("running", "degraded"), \
                f"{n}:\n{journal(sb, n, 'imgbuild-replication')}\n{journal(sb, n, 'mariadb')}"
        running = wait_for(lambda: "Slave_SQL_Running: Yes" in sb.attach("db2", "mariadb", "-e",
                                                                          "SHOW SLAVE STATUS\\G").stdout, 60)
        assert running, journal(sb, "db2", "imgbuild-replication")
        print(f"boot to replicating: {time.monotonic() - t0:.1f} s")
        rc, out = sql(sb, "db1", "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT); "
                                 "INSERT INTO app.t VALUES (1, 'written on the primary'); "
                                 "CREATE USER 'app'@'localhost'; GRANT ALL ON app.* TO 'app'@'localhost'")
        assert rc == 0, out
        seen = wait_for(lambda: sql(sb, "db2", "SELECT v FROM app.t WHERE id = 1")[1] == "written on the primary", 30)
        assert seen, "the replica does not have the primary's row"
        rc, out = sql(sb, "db2", "INSERT INTO app.t VALUES (2, 'on the replica')", user="app")
        assert rc != 0 and "read-only" in out, out
        # the password is never on a command line or in a journal
        for n in ("db1", "db2"):
            assert_no_secret(secret, journal(sb, n, "imgbuild-replication", 200),
                             sb.attach(n, "ps", "axww").stdout)

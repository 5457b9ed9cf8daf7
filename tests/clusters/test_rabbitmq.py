"""recipes/rabbitmq.yml (seed 002): two nodes with one erlang cookie (owner rabbitmq, mode 0400); rabbit2
joins rabbit1; `rabbitmqctl cluster_status` on either node lists both as running; the HA policy is set."""
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
NODES = ["rabbit1", "rabbit2"]


@pytest.fixture
def work(tmp_path):
    d = shm_dir("rabbitmq")
    yield d
    remove(d)


def test_two_nodes_cluster(work, tmp_path):
    env = env_with(work / "secrets", tmp_path / "inventory.yml")
    output, built = build("rabbitmq.yml", work / "out", env)
    cookie = (work / "secrets" / "rabbitmq" / "erlang_cookie").read_text().strip()
    with lxc_netns(work / "sandbox") as sb:
        installed = install(output, sb, env, NODES)
        for n in NODES:
            f = sb.lxcpath / n / "rootfs/var/lib/rabbitmq/.erlang.cookie"
            assert f.read_text() == cookie and f.stat().st_mode & 0o777 == 0o400
        assert_no_secret(cookie, built.stdout, built.stderr, installed.stdout, installed.stderr,
                         files=[output / "manifest.json", output / "nodes.json",
                                sb.lxcpath / "rabbit1/rootfs/etc/imgbuild/vars.yml"])
        t0 = time.monotonic()
        for n in NODES:
            sb.start(n)
        for n in NODES:
            assert wait_running(sb, n, 240) in ("running", "degraded"), \
                f"{n}:\n{journal(sb, n, 'imgbuild-rabbitmq-cluster')}\n{journal(sb, n, 'rabbitmq-server')}"

        def both_running(node: str) -> bool:
            out = sb.attach(node, "rabbitmqctl", "cluster_status", "--formatter", "json", timeout=60).stdout
            return '"running_nodes":["rabbit@rabbit1","rabbit@rabbit2"]' in out.replace(" ", "") or \
                '"running_nodes":["rabbit@rabbit2","rabbit@rabbit1"]' in out.replace(" ", "")
        assert wait_for(lambda: both_running("rabbit1"), 120, 2), journal(sb, "rabbit2", "imgbuild-rabbitmq-cluster")
        assert both_running("rabbit2")
        print(f"boot to a 2-node cluster: {time.monotonic() - t0:.1f} s")
        policies = sb.attach("rabbit1", "rabbitmqctl", "list_policies").stdout
        assert "ha-all" in policies and "ha-mode" in policies, policies

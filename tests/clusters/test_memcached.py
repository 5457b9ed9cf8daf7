"""recipes/memcached.yml built and booted: the running daemon's open-files limit is the configured one, and so
are limits.conf and -c (seed 002)."""
from __future__ import annotations

import pytest

from tests.support.clusters import build, env_with, install, remove, shm_dir, wait_for, wait_running
from tests.support.lxc import lxc_netns

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.lxc, pytest.mark.slow]


@pytest.fixture
def work(tmp_path):
    d = shm_dir("memcached")
    yield d
    remove(d)


def test_memcached_runs_with_the_configured_limits(work, tmp_path):
    env = env_with(work / "secrets", tmp_path / "inventory.yml")
    output, _ = build("memcached.yml", work / "out", env)
    with lxc_netns(work / "sandbox") as sb:
        install(output, sb, env, ["memcached"])
        sb.start("memcached")
        state = wait_running(sb, "memcached")
        assert state in ("running", "degraded"), state
        pid = wait_for(lambda: sb.attach("memcached", "pidof", "memcached").stdout.strip(), 30)
        assert pid, "memcached is not running"
        limits = sb.attach("memcached", "cat", f"/proc/{pid}/limits").stdout
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert line.split()[3:5] == ["16384", "16384"], line
        cmdline = sb.attach("memcached", "cat", f"/proc/{pid}/cmdline").stdout.split("\0")
        assert cmdline[cmdline.index("-c") + 1] == "16384" and cmdline[cmdline.index("-m") + 1] == "128"
        limits_conf = sb.attach("memcached", "cat", "/etc/security/limits.d/90-imgbuild-memcached.conf").stdout
        unit = sb.attach("memcached", "systemctl", "show", "-p", "LimitNOFILE", "memcached").stdout
        assert unit.strip() == "LimitNOFILE=16384", unit
        assert "memcache hard nofile 16384" in limits_conf
        # it answers on the address the recipe gave it
        r = sb.attach("memcached", "bash", "-c", "exec 3<>/dev/tcp/10.0.3.20/11211; printf 'version\\r\\n' >&3; "
                                                  "IFS= read -r l <&3; echo $l")
        assert r.stdout.startswith("VERSION"), r.stdout + r.stderr

"""recipes/lvs.yml (seed 003): an LVS director and two real servers from one image. The director boots with the
virtual IP and ip_forward; ldirectord's own config parser accepts the generated ldirectord.cf (and refuses a
broken one, so the check can fail); the health check's page answers on each real server. The generated
ipvsadm rules are loaded with ipvsadm-restore where the kernel has IPVS; this test machine's kernel has none
(no /proc/net/ip_vs, no ip_vs module), so that test skips saying so."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.clusters import build, env_with, install, journal, remove, shm_dir, wait_running
from tests.support.lxc import lxc_netns

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.lxc, pytest.mark.slow]
NODES = ["director", "real1", "real2"]


def ipvs_reason() -> str | None:
    if Path("/proc/net/ip_vs").exists():
        return None
    return (f"this kernel ({os.uname().release}) has no IPVS: no /proc/net/ip_vs and no ip_vs module in "
            f"/lib/modules/{os.uname().release}; ipvsadm-restore cannot load rules here")


@pytest.fixture(scope="module")
def lvs(tmp_path_factory):
    d = shm_dir("lvs")
    env = env_with(d / "secrets", tmp_path_factory.mktemp("lvs") / "inventory.yml")
    try:
        output, _ = build("lvs.yml", d / "out", env)
        with lxc_netns(d / "sandbox") as sb:
            install(output, sb, env, NODES)
            for n in NODES:
                sb.start(n)
            for n in NODES:
                assert wait_running(sb, n, 120) in ("running", "degraded"), f"{n}:\n{journal(sb, n, 'imgbuild-lvs')}"
            yield sb
    finally:
        remove(d)


def http_get(sb, frm: str, ip: str) -> str:
    script = (f'exec 3<>/dev/tcp/{ip}/80 && printf "GET /index.html HTTP/1.0\\r\\n\\r\\n" >&3 && '
              'tail -n 1 <&3')
    r = sb.attach(frm, "timeout", "10", "bash", "-c", script)
    return r.stdout.strip()


def test_director_and_real_servers_boot_with_their_roles(lvs):
    sb = lvs
    addr = sb.attach("director", "ip", "-4", "addr", "show", "dev", "eth0").stdout
    assert "inet 10.0.3.100/24" in addr and "inet 10.0.3.40/24" in addr, addr
    assert sb.attach("director", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    rules = sb.attach("director", "cat", "/etc/ipvsadm.rules").stdout
    assert rules.splitlines() == ["-A -t 10.0.3.100:80 -s rr", "-a -t 10.0.3.100:80 -r 10.0.3.41:80 -m -w 1",
                                  "-a -t 10.0.3.100:80 -r 10.0.3.42:80 -m -w 1"], rules
    for real in ("real1", "real2"):
        assert "10.0.3.100" not in sb.attach(real, "ip", "-4", "addr").stdout
        assert http_get(sb, "director", f"10.0.3.4{real[-1]}") == f"ok {real}"


def test_ldirectord_accepts_the_generated_config(lvs):
    sb = lvs
    r = sb.attach("director", "ldirectord", "/etc/ldirectord.cf", "status")
    assert r.returncode == 3 and "stopped" in r.stdout and "Error" not in r.stdout + r.stderr, r.stdout + r.stderr
    sb.attach("director", "sh", "-c", "sed 's/checktype=negotiate/checktype=bogus/' /etc/ldirectord.cf > /tmp/bad.cf")
    r = sb.attach("director", "ldirectord", "/tmp/bad.cf", "status")
    assert r.returncode not in (0, 3) and "Error" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.skipif(ipvs_reason() is not None, reason=str(ipvs_reason()))
def test_ipvsadm_restore_loads_the_rules(lvs):
    sb = lvs
    r = sb.attach("director", "sh", "-c", "ipvsadm-restore < /etc/ipvsadm.rules && ipvsadm -Ln")
    assert r.returncode == 0, r.stderr
    assert "10.0.3.100:80 rr" in r.stdout and r.stdout.count("Masq") == 2, r.stdout

"""The README's quick start, run line for line as a user would, in a world of its own. tests/test_readme_quickstart.py
runs it as `unshare --mount --propagation private PYTHON -m tests.support.quickstart TMP BASE SCRIPT`:

- the bridge: lxcbr0 is made for the run and deleted after it, WITHOUT an address, so the quick start's bridge
  line finds one (and never runs systemctl) and the containers reach each other and nothing else: their
  gateway 10.0.3.1 does not exist, this host has no route into 10.0.3.0/24. A host that has an lxcbr0 of its own,
  or containers named web1 or web2, skips the test. The build reaches the Debian mirror as every build test does;
  the ssh host `vps1` is tests/support/sshhost.py's (a real sshd in a network namespace of its own).
- mounts, private to this mount namespace and gone with it: TMP/lxc over /var/lib/lxc (the containers live
  there), TMP/ssh over /root/.ssh (its config has `Host vps1`; an empty /root/.ssh is made if there is none).
- the working directory: TMP/checkout, whose recipes/ is the repository's (output/ lands in TMP).
- the environment: this checkout's .venv/bin first on PATH; $IMGBUILD_INVENTORY in TMP.

The script's output goes to TMP/quickstart.log (a file, not a pipe: LXC's daemonized monitors must not hold a
pipe of ours open). Afterwards it prints one JSON line of what the test checks; the containers are stopped and
destroyed, the ssh host ended and the bridge deleted whatever happened.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.lxc import container_pids, remove_cgroups
from tests.support.sshhost import make_key, ssh_host

REPO = Path(__file__).resolve().parents[2]
SCRIPT_TIMEOUT = 480


def run(*cmd: object, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def world(tmp: Path) -> None:
    """The bridge and the private mounts (see the module docstring)."""
    run("ip", "link", "add", "lxcbr0", "type", "bridge")
    run("sysctl", "-qw", "net.ipv6.conf.lxcbr0.disable_ipv6=1", check=False)   # not even link-local from here
    run("ip", "link", "set", "lxcbr0", "up")
    for d in ("lxc", "ssh", "checkout"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "ssh").chmod(0o700)
    Path("/root/.ssh").mkdir(mode=0o700, exist_ok=True)
    run("mount", "--bind", tmp / "lxc", "/var/lib/lxc")
    run("mount", "--bind", tmp / "ssh", "/root/.ssh")
    (tmp / "checkout/recipes").symlink_to(REPO / "recipes")


def busy() -> str | None:
    """Why this host cannot run the quick start without touching what is its own, or None."""
    if os.path.exists("/sys/class/net/lxcbr0"):
        return "this host has an lxcbr0 of its own"
    for name in ("web1", "web2"):
        if container_pids(name) or os.path.lexists(f"/var/lib/lxc/{name}"):
            return f"this host has a container named {name}"
    return None


def stop_containers(lxcpath: Path) -> list[str]:
    """Stop and destroy every container the script made (they are all under our lxcpath)."""
    problems = []
    for d in sorted(lxcpath.iterdir()) if lxcpath.is_dir() else ():
        name = d.name
        run("lxc-stop", "-n", name, "-k", timeout=60, check=False)
        end = time.monotonic() + 15
        while container_pids(name) and time.monotonic() < end:
            time.sleep(0.2)
        if container_pids(name):
            problems.append(f"{name}: processes left after lxc-stop -k: {sorted(container_pids(name))}")
            continue
        remove_cgroups(name)
        r = run("lxc-destroy", "-n", name, timeout=120, check=False)
        if r.returncode != 0 and d.exists():
            problems.append(f"lxc-destroy {name}: {r.stderr.strip()}")
    return problems


def main() -> int:
    tmp, base, script = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    why = busy()
    if why:
        print(json.dumps({"skip": why}))
        return 0
    try:
        world(tmp)
        return quick_start(tmp, base, script)
    finally:
        if os.path.exists("/sys/class/net/lxcbr0"):
            run("ip", "link", "del", "lxcbr0", check=False)


def quick_start(tmp: Path, base: Path, script: Path) -> int:
    ssh_dir = tmp / "ssh"
    key = make_key(ssh_dir / "id_ed25519")
    result: dict = {}
    try:
        with ssh_host(base, None, ssh_dir / "config", alias="vps1", key=key,
                      known_hosts=ssh_dir / "known_hosts") as host:
            env = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}", "HOME": "/root",
                   "IMGBUILD_INVENTORY": str(tmp / "inventory.yml")}
            with open(tmp / "quickstart.log", "w") as log:
                try:
                    r = subprocess.run(["bash", "-ex", str(script)], cwd=tmp / "checkout", env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=SCRIPT_TIMEOUT)
                    result["returncode"] = r.returncode
                except subprocess.TimeoutExpired:
                    result["returncode"] = f"timeout after {SCRIPT_TIMEOUT} s"
            result["web2_hostname"] = run("lxc-attach", "-n", "web2", "--", "hostname", check=False).stdout.strip()
            result["web1_hostname"] = run("lxc-attach", "-n", "web1", "--", "hostname", check=False).stdout.strip()
            pushed = host.root / "srv/trees/web1"
            result["pushed_os_release"] = (pushed / "etc/os-release").is_file()
            result["pushed_hostname"] = os.path.lexists(pushed / "etc/hostname")
            result["pushed_marker"] = (pushed / ".imgbuild-push").is_file()
    finally:
        result["cleanup_problems"] = stop_containers(tmp / "lxc")
        for lock in Path("/run/lxc/lock/var/lib/lxc").glob("*web[12]*"):     # LXC's, for our containers only
            shutil.rmtree(lock, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

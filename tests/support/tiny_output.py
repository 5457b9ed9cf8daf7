"""A tiny imgbuild output made by hand, for install-lxc and clone tests that need no real build: a busybox-static
root tree (enough for lxc-start to run a container whose init is `busybox sleep`), its tarball, an LXC config as
the LXC target writes it, and a manifest.json of the shape a build writes. Everything install-lxc then does to
it (tar, the identity engine, lxc-start) is real."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NAME = "tiny"
IP = "10.0.3.50"
MAC = "00:16:3e:00:05:50"
BUSYBOX = "/bin/busybox"

CONFIG = f"""# written by imgbuild for {NAME} (LXC 2.1 and later)
lxc.uts.name = {NAME}
lxc.arch = x86_64
lxc.rootfs.path = dir:/var/lib/lxc/{NAME}/rootfs
lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed
lxc.autodev = 1
lxc.tty.max = 1
lxc.pty.max = 16
lxc.init.cmd = /bin/busybox sleep 3600

lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.net.0.name = eth0
lxc.net.0.hwaddr = {MAC}
"""


def make(out: Path, name: str = NAME, ip: str = IP, mac: str = MAC) -> Path:
    """OUT/NAME: the tiny output (returned)."""
    d = Path(out) / name
    tree = Path(out) / f".{name}-tree"
    for sub in ("bin", "etc/network", "dev", "proc", "sys", "tmp", "root"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, tree / "bin/busybox")
    (tree / "bin/sh").symlink_to("busybox")
    (tree / "etc/hostname").write_text(f"{name}\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{ip}\t{name}\n")
    (tree / "etc/network/interfaces").write_text(f"auto eth0\niface eth0 inet static\n    address {ip}/24\n"
                                                 f"    gateway 10.0.3.1\n")
    (tree / "etc/machine-id").write_text("")
    d.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(d / f"{name}.tar"), "."], check=True)
    shutil.rmtree(tree)
    (d / "lxc.conf").write_text(CONFIG.replace(f"for {NAME}", f"for {name}").replace(f"= {NAME}", f"= {name}")
                                .replace(f"lxc/{NAME}/", f"lxc/{name}/").replace(MAC, mac))
    manifest = {"name": name, "hostname": name, "source_date_epoch": 0,
                "artifacts": [{"kind": "lxc-config", "path": "lxc.conf"}, {"kind": "tarball", "path": f"{name}.tar"}]}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return d

"""Small guests for the identity tests, and the readers that check them: a Debian-like root with the identity files
imgbuild writes for recipes/debian12.yml (make_root), an LXC container around one (make_container), a byte-level
description of a tree (tree_state), and ext4 images read with debugfs and checked with e2fsck."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

from tests.support.digest import sha256

OLD_MAC, OLD_IP, OLD_HOST = "00:16:3e:00:03:02", "10.0.3.2", "vm0"     # recipes/debian12.yml
EPOCH = 1700000000


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_state(p: Path, times: bool = True) -> tuple:
    """One entry as bytes on disk: type+mode, owner, content hash / link target / device number (+ mtime)."""
    st = os.lstat(p)
    if stat.S_ISREG(st.st_mode):
        what = _digest(p.read_bytes())
    elif stat.S_ISLNK(st.st_mode):
        what = os.readlink(p)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        what = st.st_rdev
    else:
        what = None
    t = (st.st_mtime_ns,) if times and not stat.S_ISLNK(st.st_mode) else ()
    return (st.st_mode, st.st_uid, st.st_gid, what, *t)


def tree_state(top: Path, times: bool = True) -> dict[str, tuple]:
    """Every entry under `top` (itself included; symlinks not followed): see entry_state."""
    top = Path(top)
    out = {".": entry_state(top, times)}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            p = Path(dirpath, name)
            out[str(p.relative_to(top))] = entry_state(p, times)
    return out


def state_diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


file_sha = sha256


def interfaces(ip: str = OLD_IP, mac: str = OLD_MAC) -> str:
    """/etc/network/interfaces as imgbuild's network step writes it for recipes/debian12.yml."""
    return ("# written by imgbuild\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n"
            f"    address {ip}/24\n    gateway 10.0.3.1\n    hwaddress ether {mac}\n")


def hosts(ip: str = OLD_IP, hostname: str = OLD_HOST) -> str:
    return (f"# written by imgbuild\n127.0.0.1\tlocalhost\n{ip}\t{hostname}\n\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")


MACHINE_ID = "0123456789abcdef0123456789abcdef\n"


def make_root(root: Path, hostname: str = OLD_HOST, ip: str = OLD_IP, mac: str = OLD_MAC, *, keys: bool = False,
              leftovers: bool = True) -> Path:
    """A small Debian-like root with the identity files imgbuild writes, and (leftovers) what a guest that has
    run accumulates: a machine-id, D-Bus's copy of it, a DHCP lease. keys: ssh host keys made by ssh-keygen -A.
    Also an unrelated file owned by a user (mode 0600), a symlink and a device node, so tree hashes see them."""
    root = Path(root)
    for d in ("etc/network", "etc/ssh", "var/lib/dhcp", "var/lib/dbus", "home/ann", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text(f"{hostname}\n")
    (root / "etc/hosts").write_text(hosts(ip, hostname))
    (root / "etc/network/interfaces").write_text(interfaces(ip, mac))
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin no\n")
    (root / "etc/motd").write_text("built by imgbuild\n")
    (root / "home/ann/.profile").write_text("umask 077\n")
    os.chown(root / "home/ann/.profile", 1000, 1000)
    os.chmod(root / "home/ann/.profile", 0o600)
    os.symlink("/proc/self/mounts", root / "etc/mtab")
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    mid = root / "etc/machine-id"
    mid.write_text(MACHINE_ID if leftovers else "")
    os.chmod(mid, 0o444)
    if leftovers:
        (root / "var/lib/dbus/machine-id").write_text(MACHINE_ID)
        (root / "var/lib/dhcp/dhclient.eth0.leases").write_text(
            f'lease {{\n  interface "eth0";\n  fixed-address {ip};\n}}\n')
    if keys:
        subprocess.run(["ssh-keygen", "-A", "-f", str(root)], check=True, capture_output=True)
    return root


def lxc_config(cdir: Path, hostname: str, mac: str, ip: str | None = None) -> str:
    """A container config like imgbuild's LXC target writes (modern keys); `ip` adds lxc.net.0.ipv4.address."""
    lines = [f"lxc.uts.name = {hostname}", "lxc.arch = x86_64", f"lxc.rootfs.path = dir:{cdir}/rootfs",
             "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed", "lxc.autodev = 1", "",
             "lxc.net.0.type = veth", "lxc.net.0.link = lxcbr0", "lxc.net.0.flags = up", "lxc.net.0.name = eth0",
             f"lxc.net.0.hwaddr = {mac}"]
    if ip:
        lines.append(f"lxc.net.0.ipv4.address = {ip}/24")
    return "\n".join(lines) + "\n"


def make_container(lxcpath: Path, name: str, hostname: str | None = None, ip: str = OLD_IP, mac: str = OLD_MAC, *,
                   config_ip: bool = False, keys: bool = False, leftovers: bool = True) -> Path:
    """LXCPATH/NAME/{config,rootfs} with a make_root() root."""
    cdir = Path(lxcpath) / name
    make_root(cdir / "rootfs", hostname or name, ip, mac, keys=keys, leftovers=leftovers)
    (cdir / "config").write_text(lxc_config(cdir, hostname or name, mac, ip if config_ip else None))
    return cdir


def debugfs_cat(image: Path, path: str) -> str:
    r = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, text=True, check=True)
    return r.stdout


def debugfs_stat(image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f'stat "{path}"', str(image)], capture_output=True, text=True).stdout


def fsck(image: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)

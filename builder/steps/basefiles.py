"""Base files every guest needs: /etc/hostname, /etc/hosts, /etc/resolv.conf and a container /etc/fstab."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context

HEADER = "# written by imgbuild\n"


def hosts(hostname: str, domain: str | None, addresses: list[str]) -> str:
    fqdn = f"{hostname}.{domain}" if domain else None
    names = f"{fqdn} {hostname}" if fqdn else hostname
    lines = [HEADER.rstrip("\n"), "127.0.0.1\tlocalhost"]
    if addresses:
        lines += [f"{a}\t{names}" for a in addresses]
    else:
        lines.append(f"127.0.1.1\t{names}")
    lines += ["", "::1\tlocalhost ip6-localhost ip6-loopback", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    return "\n".join(lines) + "\n"


def resolv_conf(dns: tuple, search: tuple) -> str:
    out = HEADER
    if search:
        out += "search " + " ".join(search) + "\n"
    out += "".join(f"nameserver {a}\n" for a in dns)
    return out


FSTAB_CONTAINER = HEADER + (
    "# A container: the container manager mounts the root and the API filesystems (proc, sys, dev, devpts),\n"
    "# so there is nothing to mount here unless the init needs it. Add your own entries below.\n")


def run(ctx: "Context", _opts: None = None) -> None:
    r, root = ctx.recipe, ctx.root
    root.write("/etc/hostname", r.hostname + "\n")
    static = [str(i.address.ip) for i in r.network.values() if i.address is not None]
    root.write("/etc/hosts", hosts(r.hostname, r.domain, static))
    if r.dns or r.search:
        root.write("/etc/resolv.conf", resolv_conf(r.dns, r.search))
    elif root.lexists("/etc/resolv.conf"):
        root.remove("/etc/resolv.conf")  # never ship the build host's resolver
    root.write("/etc/fstab", FSTAB_CONTAINER)
    if ctx.family.skel_to_root:
        copy_skel(root)


def copy_skel(root) -> None:
    """`cp -a /etc/skel/. /root/` inside the root, without overwriting what /root already has."""
    skel = root.resolve("/etc/skel")
    if not skel.is_dir():
        return
    home = root.mkdir("/root", 0o700)
    for dirpath, dirnames, filenames in os.walk(skel):
        rel = os.path.relpath(dirpath, skel)
        target = home if rel == "." else home / rel
        target.mkdir(exist_ok=True)
        for name in sorted(filenames):
            src = os.path.join(dirpath, name)
            inside = "/root/" + (name if rel == "." else f"{rel}/{name}")
            if root.lexists(inside):
                continue
            if os.path.islink(src):
                root.symlink(os.readlink(src), inside)
            else:
                st = os.stat(src)
                root.write(inside, Path(src).read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid)

"""Base files every guest needs: /etc/hostname, /etc/hosts, /etc/resolv.conf and a container /etc/fstab."""
from __future__ import annotations

import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.build.context import Context

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
    """`cp -a /etc/skel/. /root/` inside the root, without overwriting what /root already has. Read and written
    through RootFS: links are copied as links, regular files as files; device nodes and fifos are not copied."""
    if not root.is_dir("/etc/skel"):
        return
    root.mkdir("/root", 0o700)
    _copy_dir(root, "/etc/skel", "/root", depth=0)


def _copy_dir(root, src: str, dest: str, depth: int) -> None:
    if depth > 32:      # a skeleton deeper than this is not a home directory template
        return
    for name in root.listdir(src):
        s, d = f"{src}/{name}", f"{dest}/{name}"
        st = root.lstat(s)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            if root.lstat(d) is None:
                root.mkdir(d, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if root.is_dir(d):
                _copy_dir(root, s, d, depth + 1)
        elif root.lexists(d):
            continue
        elif stat.S_ISLNK(st.st_mode):
            target = root.readlink(s)
            if target is not None:
                root.symlink(target, d)
        elif stat.S_ISREG(st.st_mode):
            data = root.read_bytes(s, follow_last=False)
            if data is not None:
                root.write(d, data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

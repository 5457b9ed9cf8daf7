"""What LXC's download template (`lxc-create -t download`) fetches from an image server.

The template reads https://SERVER/meta/1.0/index-system (index-user for unprivileged users): one line per image,
`dist;release;arch;variant;build;path`, the first match wins. Then PATH/rootfs.tar.xz (unpacked with
`tar --numeric-owner -xpJf`: it must be xz) and PATH/meta.tar.xz: `config` (and `config-user`) appended to the
container's config, `templates` (files of the rootfs where LXC_NAME becomes the container's name),
`excludes-user` (what an unprivileged user cannot unpack) and `create-message`.
A template that validates (LXC before 4.0, or `--keyserver`) also fetches FILE.asc beside each of these files, a
GnuPG detached signature; publish writes them when it signs with a GnuPG key.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from builder.build.targets.lxc import LINUX_ARCH
from builder.build.targets.lxd import hosts_naming
from builder.core import proc as runner
from builder.core import tarwriter
from builder.core.outputs import write_atomic
from builder.core.rootfs import RootFS
from builder.images.source import Source

PLACEHOLDER = "LXC_NAME"
INDEXES = ("index-system", "index-user")
SIGNED = ("meta.tar.xz", "rootfs.tar.xz")        # of an image serial: FILE.asc beside each when signed


def detached(names) -> tuple[str, ...]:
    """The files of a directory (its names) that the download template fetches, and so get FILE.asc."""
    names = set(names)
    if set(SIGNED) <= names:
        return SIGNED
    return tuple(n for n in INDEXES if n in names)


def index_line(src: Source, serial: str, path: str) -> str:
    return f"{src.distro};{src.release};{src.arch};{src.name};{serial};{path}\n"


def meta(src: Source, serial: str, dest: Path, where: Path) -> None:
    """dest: meta.tar.xz (config, config-user, templates, excludes-user, create-message)."""
    arch = LINUX_ARCH.get(src.arch, src.arch)
    files = {
        "config": f"lxc.include = LXC_TEMPLATE_CONFIG/common.conf\nlxc.arch = {arch}\n",
        "config-user": (f"lxc.include = LXC_TEMPLATE_CONFIG/common.conf\n"
                        f"lxc.include = LXC_TEMPLATE_CONFIG/userns.conf\nlxc.arch = {arch}\n"),
        "templates": "/etc/hostname\n/etc/hosts\n",
        "excludes-user": "./dev/*\n",
        "create-message": (f"You just created a {src.distro} {src.release} {src.arch} container from the image "
                           f"{src.name} (serial {serial}), built by imgbuild.\n"),
    }
    with tempfile.TemporaryDirectory(prefix=".meta-", dir=where) as t:
        d = Path(t) / "meta"
        d.mkdir(mode=0o755)
        d.chmod(0o755)
        for name, text in files.items():
            write_atomic(d / name, text, 0o644)
        tarwriter.pack(d, dest, src.epoch, "xz")


def rootfs(src: Source, dest: Path, where: Path) -> int:
    """dest: rootfs.tar.xz, the output's tarball with LXC_NAME for the host name in /etc/hostname and /etc/hosts
    (unpacked, edited inside the tree, packed again at the same epoch: reproducible)."""
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=where) as d:
        root = Path(d) / "rootfs"
        root.mkdir()
        runner.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(src.tarball), "-C",
                    str(root)])
        tree = RootFS(root)
        if tree.exists("/etc"):
            tree.write("/etc/hostname", PLACEHOLDER + "\n")
            tree.write("/etc/hosts", hosts_naming(tree.read_text("/etc/hosts") or "127.0.0.1\tlocalhost\n",
                                                  src.hostname, PLACEHOLDER))
        return tarwriter.pack(root, dest, src.epoch, "xz")

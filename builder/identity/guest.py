"""Where a guest lives, and how to copy one.

A TARGET may be: an LXC container (its directory with `config` and `rootfs/`, or `lxc:NAME` in --lxcpath), a
Xen guest (its .cfg; the disk is the image the cfg names), an OpenVZ container (`vz:CTID`: /etc/vz/conf/CTID.conf
and its VE_PRIVATE), an ext2/3/4 image file (edited with debugfs, or loop-mounted with --loop), an imgbuild
output directory (its tarball is unpacked, edited and packed again reproducibly), or a plain root directory.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from builder.build import manifest as build_manifest
from builder.build.manifest import read_manifest
from builder.core import checks, sums, treecopy
from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.mounts import MountStack
from builder.core.outputs import sha256, write_atomic
from builder.core.rootfs import RootFS
from builder.core.untrusted import read_text
from builder.guestconf.lxc import config_dir, relocate
from builder.identity import inuse
from builder.identity.tree import DirTree, ImageTree, Tree, is_ext_image

log = logging.getLogger("imgbuild")

@dataclass
class Guest:
    kind: str                       # lxc, xen, openvz, image, output, rootfs
    name: str
    where: str                      # inventory key, e.g. lxc:/var/lib/lxc/vm1
    path: Path                      # the container directory, cfg file, image file, output dir or root dir
    config: tuple[str, Path] | None = None    # (lxc|xen|openvz, path) of the guest config on the host
    image: Path | None = None       # xen/image: the disk image


def config_text(path: Path) -> str:
    """A guest's config on this host (an LXC config, a Xen .cfg, an OpenVZ .conf) as text: a regular file of
    UTF-8 text, else an InputError naming it (a binary file or a fifo given as a config is bad input)."""
    return read_text(path, what="a guest config",
                     hint="give the guest's own config (an LXC container directory, a Xen .cfg, vz:CTID)")


def _lxc(d: Path) -> Guest:
    d = Path(os.path.abspath(d))
    config_text(d / "config")
    return Guest("lxc", d.name, f"lxc:{d}", d, ("lxc", d / "config"))


def _xen_disk(cfg: Path) -> Path:
    text = config_text(cfg)
    m = re.search(r"""(?:target=|file:|tap:aio:|tap2:aio:|tap:tapdisk:aio:)\s*([^,'"\]\s]+)""", text)
    if not m:
        raise InputError(f"{cfg}: no file-backed disk found in the Xen config",
                         "point at the disk image itself, or give a config whose disk is a file")
    return Path(m.group(1))


def _named(what: str, value: str) -> str:
    try:
        return checks.name(value)
    except ValueError as e:
        raise InputError(f"{what}: {e}", "a guest's name is one path component") from None


def locate(target: str, lxcpath: str = "/var/lib/lxc", vzconf: str = "/etc/vz/conf") -> Guest:
    if target.startswith("lxc:"):
        d = checks.child(lxcpath, target[4:], target)
        if not (d / "config").is_file() or (d / "config").is_symlink():
            raise InputError(f"{target}: no container {target[4:]} in {d.parent} (no {d / 'config'})",
                             "give the name of an existing container, and --lxcpath if it is not in /var/lib/lxc")
        return _lxc(d)
    if target.startswith("vz:"):
        ctid = _named(target, target[3:])
        conf = Path(vzconf) / f"{ctid}.conf"
        if not conf.is_file():
            raise InputError(f"{target}: no {conf}", "give the container ID of an existing OpenVZ container")
        m = re.search(r'^VE_PRIVATE="?([^"\n]+)', config_text(conf), re.M)
        private = Path((m.group(1) if m else "/vz/private/$VEID").replace("$VEID", ctid))
        return Guest("openvz", ctid, f"vz:{conf}", private, ("openvz", conf))
    p = Path(target)
    if p.is_dir() and (p / "config").is_file() and (p / "rootfs").is_dir():
        return _lxc(p.resolve())
    if p.is_dir() and (p / "manifest.json").is_file():
        m = read_manifest(p)
        conf = next((p.resolve() / a["path"] for a in m["artifacts"] if a["kind"] == "lxc-config"), None)
        if conf is not None:
            _regular_artifact(conf, "lxc-config")
        return Guest("output", m["name"], f"output:{p.resolve()}", p.resolve(), ("lxc", conf) if conf else None)
    if p.is_dir() and RootFS(p).is_dir("/etc"):       # the tree's own /etc (a link in it resolved inside it)
        return Guest("rootfs", p.name, f"rootfs:{p.resolve()}", p.resolve())
    if p.is_file() and p.suffix == ".cfg":
        disk = _xen_disk(p)
        return Guest("xen", p.stem, f"xen:{p.resolve()}", p.resolve(), ("xen", p.resolve()), disk)
    if p.is_file() and is_ext_image(p):
        return Guest("image", p.stem, f"image:{p.resolve()}", p.resolve(), None, p.resolve())
    raise InputError(f"{target}: not a guest imgbuild knows",
                     "give an LXC container directory (or lxc:NAME), a Xen .cfg, vz:CTID, an ext2/3/4 image, an "
                     "imgbuild output directory or a root directory")


@contextlib.contextmanager
def open_tree(g: Guest, loop: bool = False, epoch: int | None = None, writeback: bool = True,
              force: bool = False) -> Iterator[Tree]:
    """The guest's files as a Tree, for as long as the `with` lasts (mounts and unpacked copies are undone;
    an unpacked output is packed again only with writeback). An image opened for debugfs refuses its first write
    while anything else holds the image (see refuse_in_use), unless `force`."""
    if g.kind == "lxc":
        yield DirTree(g.path / "rootfs", "rootfs")
    elif g.kind in ("rootfs", "openvz"):
        yield DirTree(g.path, "rootfs")
    elif g.kind in ("image", "xen"):
        if not g.image.is_file():
            raise InputError(f"{g.image}: the guest's disk image is not there")
        if loop:
            with tempfile.TemporaryDirectory(prefix="imgbuild-mnt-") as d, MountStack() as ms:
                ms.mount(str(g.image), Path(d), options="loop" if writeback else "loop,ro,noload")
                yield DirTree(d, "image")
        else:
            yield ImageTree(g.image, "image", epoch, force=force)
    elif g.kind == "output":
        with _unpacked_output(g, writeback) as tree:
            yield tree
    else:
        raise InputError(f"{g.path}: cannot open a {g.kind} guest")


_COMPRESSION = {".zst": "zst", ".xz": "xz", ".gz": "gz", ".tar": "none"}


def _valid_hostname(h: str) -> bool:
    try:
        checks.hostname(h)
        return True
    except ValueError:
        return False


def _regular_artifact(p: Path, kind: str) -> None:
    """An output's artifact is a regular file in the output directory itself: a link there (to a host file, say)
    is never read, hashed or written through."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: the output's {kind} is {'missing' if st is None else 'not a regular file'}",
                         "build the output again")


@contextlib.contextmanager
def _unpacked_output(g: Guest, writeback: bool) -> Iterator[Tree]:
    """An imgbuild output: its tarball unpacked; on a clean exit, packed again (same epoch, reproducible) and
    the manifest's hashes updated."""
    manifest = read_manifest(g.path)
    tar = next((a for a in manifest["artifacts"] if a["kind"] == "tarball"), None)
    if tar is None:
        raise InputError(f"{g.path}: the output has no tarball to re-identify",
                         "re-identify the installed guest instead (e.g. its LXC container)")
    tarball = g.path / tar["path"]
    _regular_artifact(tarball, "tarball")
    epoch = manifest.get("source_date_epoch")
    if tarball.suffix not in _COMPRESSION or not isinstance(epoch, int) or isinstance(epoch, bool):
        raise InputError(f"{g.path / 'manifest.json'}: not what imgbuild writes (tarball {tar['path']!r}, "
                         f"source_date_epoch {epoch!r})", "build the output again")
    # unpacked next to the output when it is packed again (same filesystem, room for it); a dry run writes
    # nothing there: its scratch copy goes to the temporary directory ($TMPDIR)
    with tempfile.TemporaryDirectory(prefix="imgbuild-output-", dir=g.path.parent if writeback else None) as d:
        root = Path(d) / "rootfs"
        root.mkdir()
        runner.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tarball), "-C",
                    str(root)])
        tree = DirTree(root, "rootfs")
        yield tree
        if not writeback:
            return
        from builder.core import tarwriter  # here: only a tarball guest needs it (and its progress bar)
        tarwriter.pack(root, tarball, epoch, _COMPRESSION[tarball.suffix])
        old = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        for a in manifest["artifacts"]:
            p = g.path / a["path"]
            st = os.lstat(p) if os.path.lexists(p) else None
            if st is not None and stat.S_ISREG(st.st_mode):      # never a host file through a link
                a["size"], a["sha256"] = st.st_size, sha256(p)
        # the unpacked tree is the guest's: read inside it (a link there, /etc itself too, never leads out)
        hn = (tree.read("/etc/hostname") or b"").decode("utf-8", "replace").strip()
        if hn and _valid_hostname(hn):
            manifest["hostname"] = hn
        new = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        if new != old:
            write_atomic(g.path / "manifest.json", new)
            _new_sums(g.path, manifest)


def _new_sums(output: Path, manifest: dict) -> None:
    """SHA256SUMS again after the tarball changed. A signature of the old one is removed, not left lying: it
    no longer matches, and imgbuild holds no key (`imgbuild sign` signs again)."""
    if not os.path.lexists(output / sums.SUMS):
        return
    dropped = [n for n in (sums.GPG_SIG, sums.SSH_SIG) if os.path.lexists(output / n)]
    sums.write(output, build_manifest.hashes(manifest, output))
    if dropped:
        log.warning("%s: the tarball changed, so its signature (%s) was removed: sign it again with "
                    "`imgbuild sign %s --key KEY`", output, ", ".join(dropped), output)


# ------------------------------------------------------------------ copies


def _cp(src: Path, dest: Path) -> None:
    """cp -a: owners, modes, devices, hardlinks, xattrs, holes; a directory several files at once
    (builder/core/treecopy.py), anything else with cp itself (reflinks where the filesystem has them)."""
    treecopy.copy_any(src, dest)


def new_name(new: str) -> str:
    """The name a clone NEW gets (its file or directory name, without an extension such as .cfg or .ext4):
    NEW's last component must pass the Name check, so no clone name can hold a path or shell syntax."""
    base = _named(f"clone name {new!r}", Path(new).name)
    return base.split(".")[0]


def lxc_dest(new: str, lxcpath: str) -> Path:
    """Where an LXC clone NEW goes: LXCPATH/NEW (a direct child of the resolved lxcpath), or NEW itself when it
    is a path; never through a symlink at that place."""
    if "/" not in new:
        return checks.child(lxcpath, new, f"clone name {new!r}")
    p = Path(os.path.abspath(new))
    return checks.child(p.parent, p.name, f"clone name {new!r}")


def lxc_copy_config(text: str, dest: Path) -> str:
    """A container config as its copy at dest has it: paths moved to dest, no host-side veth names."""
    text = relocate(text, config_dir(text), str(dest))
    return re.sub(r"^\s*lxc\.net(?:work)?\.(?:\d+\.)?veth\.pair\s*=.*\n?", "", text, flags=re.M)


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A fresh hidden directory beside dest (mkdtemp: nobody else's, never a path an earlier run or another
    user left), removed with whatever is still in it when the block ends; what is to stay is renamed out of it
    to dest first."""
    if not dest.parent.is_dir():
        raise InputError(f"{dest.parent}: no such directory for the clone {dest.name}",
                         "create it first, or give the clone a place in an existing directory")
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _cp_atomic(src: Path, dest: Path) -> None:
    with _staging(dest) as stage:
        _cp(src, stage / dest.name)
        _refuse_existing(dest)
        os.rename(stage / dest.name, dest)


def copy(g: Guest, new: str, lxcpath: str = "/var/lib/lxc") -> Guest:
    """A copy of the guest under a new name; the copy still has the old identity (the engine changes it)."""
    new_name(new)
    if g.kind == "lxc":
        dest = lxc_dest(new, lxcpath)
        _refuse_existing(dest)
        with _staging(dest) as stage:
            part = stage / dest.name
            _cp(g.path, part)
            cfg = part / "config"
            write_atomic(cfg, lxc_copy_config(config_text(cfg), dest), stat.S_IMODE(cfg.stat().st_mode))
            _refuse_existing(dest)
            os.rename(part, dest)
        return _lxc(dest)
    if g.kind == "xen":
        if "/" in new and not new.endswith(".cfg"):
            raise InputError(f"clone name {new!r}: a Xen clone is a NAME (its config goes beside the original's) "
                             "or the path of its new .cfg", f"e.g. {g.path.stem}2 or /etc/xen/{g.path.stem}2.cfg")
        cfg = Path(new) if new.endswith(".cfg") else g.path.with_name(f"{new}.cfg")
        disk = g.image.with_name(f"{cfg.stem}{g.image.suffix}")
        _refuse_existing(cfg)
        _refuse_existing(disk)
        _cp_atomic(g.image, disk)
        text = config_text(g.path).replace(str(g.image), str(disk))
        text = re.sub(r'^(\s*uuid\s*=\s*["\'])[^"\']*(["\'])', rf"\g<1>{uuid.uuid4()}\g<2>", text, flags=re.M)
        text = re.sub(r'^(\s*name\s*=\s*["\'])[^"\']*(["\'])', rf"\g<1>{cfg.stem}\g<2>", text, flags=re.M)
        try:
            _refuse_existing(cfg)
            write_atomic(cfg, text)
        except BaseException:
            disk.unlink()     # the copy made just now
            raise
        return Guest("xen", cfg.stem, f"xen:{cfg.resolve()}", cfg.resolve(), ("xen", cfg.resolve()), disk)
    if g.kind in ("image", "rootfs", "output"):
        dest = Path(new)
        if g.kind == "image" and dest.suffix == "":
            dest = dest.with_suffix(g.path.suffix)
        _refuse_existing(dest)
        _cp_atomic(g.path, dest)
        return locate(str(dest))
    raise InputError(f"{g.where}: cloning a {g.kind} guest is not supported",
                     "copy it with vzmigrate/cp, then `migrate reidentify` the copy")


def _refuse_existing(p: Path) -> None:
    if os.path.lexists(p):
        raise InputError(f"{p} already exists", "choose another name for the clone")


# ------------------------------------------------------------------ in use


def holders(g: Guest, lxcpath: str = "/var/lib/lxc") -> tuple[Path, list]:
    """What uses the guest's files now (see builder.identity.inuse): (the image or tree looked at, its holders).
    An imgbuild output (a tarball) has none."""
    lxcpaths = [lxcpath]
    if g.kind in ("image", "xen"):
        return g.image, inuse.image_holders(g.image, lxcpaths)
    if g.kind == "lxc":
        return g.path / "rootfs", inuse.tree_holders(g.path / "rootfs", lxcpaths, (str(g.path.parent), g.path.name))
    if g.kind == "openvz":
        return g.path, inuse.tree_holders(g.path, lxcpaths) + _openvz_mounted(g)
    if g.kind == "rootfs":
        return g.path, inuse.tree_holders(g.path, lxcpaths)
    return g.path, []


def _openvz_mounted(g: Guest) -> list:
    """An OpenVZ container runs (or is mounted by `vzctl mount`) from its VE_ROOT, a mount of its VE_PRIVATE: its
    processes' root is that mount, not VE_PRIVATE, so a mounted VE_ROOT is what says it is in use."""
    text = config_text(g.config[1]) if g.config else ""
    m = re.search(r'^VE_ROOT="?([^"\n]+)', text, re.M)
    root = (m.group(1) if m else "/vz/root/$VEID").replace("$VEID", g.name).replace("${VEID}", g.name)
    if not os.path.isabs(root) or not inuse.is_mount_point(root):
        return []
    return [inuse.Holder(f"OpenVZ container {g.name} is mounted at {root} (running, or `vzctl mount`ed)",
                         f"vzctl stop {g.name}; vzctl umount {g.name}", key=f"vz:{g.name}")]


def refuse_in_use(g: Guest, lxcpath: str = "/var/lib/lxc", force: bool = False, writing: bool = True) -> None:
    """InputError (exit 2) naming the guest's image or tree and what holds it, unless `force` (then a warning).
    writing=False (the source of a clone): only holders that may write to it count."""
    subject, found = holders(g, lxcpath)
    inuse.refuse(subject, found, force, writing)

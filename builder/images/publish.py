"""`imgbuild publish OUTPUT... --to DIR`: built outputs laid out as a static image server tree.

    DIR/images/DISTRO/RELEASE/ARCH/VARIANT/SERIAL/   rootfs.tar.xz, meta.tar.xz (LXC's download template),
                                                      lxd.tar.xz + rootfs.squashfs (LXD and Incus, when the output
                                                      has the lxd target's split layout), manifest.json,
                                                      sbom.spdx.json, SHA256SUMS (+ its signatures;
                                                      signed with GnuPG: rootfs.tar.xz.asc, meta.tar.xz.asc)
    DIR/meta/1.0/index-system, index-user            the download template's index (the newest serial of each;
                                                      signed with GnuPG: index-system.asc, index-user.asc)
    DIR/streams/v1/index.json, images.json           simplestreams (every kept serial)

The variant is the output's name (the recipe's), the serial the build date (SOURCE_DATE_EPOCH, YYYYMMDD_HHMM;
`_2`, `_3` ... for another build of the same date). Publishing an output again that is already there changes
nothing; a new build adds a serial and only the newest `keep` serials of each image stay. A serial directory is
made beside its place and renamed in when complete; the indexes are written last, each atomically, so a server
never serves an index naming files that are not there. Only directories imgbuild made (their files all ones it
writes, a SHA256SUMS among them) are ever removed. One publisher at a time per tree (DIR/.imgbuild-publish.lock).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from builder.core import locks, sums
from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.outputs import CHECKSUM_FILES, write_atomic
from builder.images import lxcdownload, source, streams

log = logging.getLogger("imgbuild")
SERIAL_FILES = ("rootfs.tar.xz", "meta.tar.xz", "lxd.tar.xz", "rootfs.squashfs", "manifest.json", "sbom.spdx.json")
OURS = frozenset(SERIAL_FILES) | frozenset(CHECKSUM_FILES) | {n + sums.FILE_SIG for n in lxcdownload.SIGNED}
INDEXES = lxcdownload.INDEXES


def _dir(parent: Path, name: str) -> Path:
    """parent/name, made (0755) if missing; a link or a file there is refused, never followed or replaced."""
    p = parent / name
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        p.mkdir(mode=0o755)
        return p
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: a {'symbolic link' if stat.S_ISLNK(st.st_mode) else 'file'}, where the image tree "
                         "has a directory", "move it away, or publish to another directory")
    return p


def serial_of(epoch: int) -> str:
    return time.strftime("%Y%m%d_%H%M", time.gmtime(epoch))


def _ours(d: Path) -> bool:
    """A serial directory imgbuild made: a real directory holding only files publish writes, SHA256SUMS among them."""
    try:
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            return False
        names = set(os.listdir(d))
        return sums.SUMS in names and names <= OURS and all(stat.S_ISREG(os.lstat(d / n).st_mode) for n in names)
    except OSError:
        return False


def _same_build(d: Path, src: source.Source) -> bool:
    try:
        return _ours(d) and (d / "manifest.json").read_bytes() == src.manifest.read_bytes()
    except OSError:
        return False


def _xz(src: Path, dest: Path, where: Path) -> None:
    """dest: src's tar (xz, zst or gz compressed) compressed with xz (the lxd target's metadata: a few KB)."""
    if src.name.endswith(".xz"):
        shutil.copyfile(src, dest)
        return
    if src.name.endswith(".gz"):
        with gzip.open(src, "rb") as f:
            data = f.read()
    else:
        with tempfile.TemporaryDirectory(prefix=".meta-", dir=where) as t:
            runner.run(["zstd", "-dqf", str(src), "-o", f"{t}/meta.tar"])
            data = Path(t, "meta.tar").read_bytes()
    write_atomic(dest, lzma.compress(data, preset=6), 0o644)


def _place(src: source.Source, product: Path, signing: sums.Signing) -> tuple[str, bool]:
    """The serial directory of src under product: (serial, whether it was made now)."""
    base = serial_of(src.epoch)
    taken = sorted(e for e in os.listdir(product) if e == base or e.startswith(base + "_"))
    for e in taken:
        if _same_build(product / e, src):
            if signing:       # signed now as asked, its files checked first
                sums.resign(product / e, signing, lxcdownload.SIGNED)
            return e, False
    serial = base if not taken else next(f"{base}_{n}" for n in range(2, 10_000) if f"{base}_{n}" not in taken)
    stage = product / f".{serial}.part-{os.getpid()}"
    stage.mkdir(mode=0o755)
    try:
        log.info("%s: rootfs.tar.xz (LXC_NAME for the host name), meta.tar.xz", src.path)
        lxcdownload.rootfs(src, stage / "rootfs.tar.xz", stage)
        lxcdownload.meta(src, serial, stage / "meta.tar.xz", stage)
        shutil.copyfile(src.manifest, stage / "manifest.json")
        if src.sbom is not None:
            shutil.copyfile(src.sbom, stage / "sbom.spdx.json")
        if src.lxd_meta is not None and src.squashfs is not None:
            _xz(src.lxd_meta, stage / "lxd.tar.xz", stage)
            shutil.copyfile(src.squashfs, stage / "rootfs.squashfs")
        for n in os.listdir(stage):
            os.chmod(stage / n, 0o644)
        sums.write(stage, {n: sums.digest(stage, n) for n in sorted(os.listdir(stage))}, signing, lxcdownload.SIGNED)
        os.rename(stage, product / serial)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return serial, True


def _prune(product: Path, keep: int) -> list[str]:
    serials = sorted(e for e in os.listdir(product) if not e.startswith(".") and _ours(product / e))
    old = serials[:-keep] if len(serials) > keep else []
    for e in old:
        shutil.rmtree(product / e)
    return old


def _subdirs(d: Path) -> list[str]:
    return sorted(e for e in os.listdir(d) if not e.startswith(".") and stat.S_ISDIR(os.lstat(d / e).st_mode))


def _combined(d: Path) -> str:
    h = hashlib.sha256()
    for name in ("lxd.tar.xz", "rootfs.squashfs"):
        with open(d / name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def scan(top: Path) -> tuple[list[str], list[streams.Product]]:
    """The download template's index lines and the simplestreams products of every image under top/images."""
    lines, products = [], []
    images = top / "images"
    if not images.is_dir():
        return lines, products
    for distro in _subdirs(images):
        for release in _subdirs(images / distro):
            for arch in _subdirs(images / distro / release):
                for variant in _subdirs(images / distro / release / arch):
                    product = images / distro / release / arch / variant
                    serials = [e for e in _subdirs(product) if _ours(product / e)]
                    if not serials:
                        continue
                    rel = f"images/{distro}/{release}/{arch}/{variant}"
                    lines.append(f"{distro};{release};{arch};{variant};{serials[-1]};/{rel}/{serials[-1]}/\n")
                    p = streams.Product(distro, release, arch, variant)
                    for s in serials:
                        d = product / s
                        if (d / "lxd.tar.xz").is_file() and (d / "rootfs.squashfs").is_file():
                            listed = sums.parse(d, sums.Report(d))
                            files = {n: (listed.get(n, ""), os.lstat(d / n).st_size) for n in
                                     ("lxd.tar.xz", "rootfs.squashfs")}
                            p.versions.append(streams.Version(s, f"{rel}/{s}", files, _combined(d)))
                    products.append(p)
    return lines, products


def write_indexes(top: Path, signing: sums.Signing) -> None:
    lines, products = scan(top)
    meta = _dir(_dir(top, "meta"), "1.0")
    for name in INDEXES:
        write_atomic(meta / name, "".join(lines), 0o644)
    sums.write(meta, {n: sums.digest(meta, n) for n in INDEXES}, signing, INDEXES)
    v1 = _dir(_dir(top, "streams"), "v1")
    write_atomic(v1 / "images.json", json.dumps(streams.images(products), indent=1, sort_keys=True) + "\n", 0o644)
    write_atomic(v1 / "index.json", json.dumps(streams.index(products), indent=1, sort_keys=True) + "\n", 0o644)
    sums.write(v1, {n: sums.digest(v1, n) for n in ("images.json", "index.json")}, signing)


def publish(outputs: list[Path], top: Path, keep: int = 3, signing: sums.Signing = sums.UNSIGNED) -> list[str]:
    """Publish every output into top; returns one line per output (what happened) and per pruned serial."""
    if keep < 1:
        raise InputError(f"--keep {keep}: keep at least the newest serial", "give --keep 1 or more")
    srcs = [source.read(o) for o in outputs]          # every output checked before anything is written
    top = Path(top)
    top.mkdir(parents=True, exist_ok=True)
    lock = locks.Lock(top / ".imgbuild-publish.lock", what=f"publishing into {top}", remove=True)
    if not lock.acquire(wait=False):
        raise locks.Busy(f"another imgbuild ({locks.describe(lock.holders(), lock.path)}) is publishing into {top}",
                         "wait for it to finish, then publish again")
    said = []
    try:
        for src in srcs:
            product = top
            for part in ("images", src.distro, src.release, src.arch, src.name):
                product = _dir(product, part)
            serial, made = _place(src, product, signing)
            rel = product.relative_to(top) / serial
            said.append(f"{src.path}: {'published as' if made else 'already there:'} {rel}")
            said += [f"{product.relative_to(top) / old}: removed (--keep {keep})" for old in _prune(product, keep)]
        write_indexes(top, signing)
    finally:
        lock.release()
    return said

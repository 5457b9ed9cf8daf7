"""The simplestreams index `lxc remote add NAME https://HOST --protocol simplestreams` (and `incus remote add`) read:
streams/v1/index.json naming streams/v1/images.json, which lists each product (distro:release:arch:variant), its
aliases and its versions (serials; the first 8 characters are the build date LXD reads). A version holds the
metadata tarball twice (ftype lxd.tar.xz for LXD, incus.tar.xz for Incus) with `combined_squashfs_sha256`, the
sha256 of the metadata tarball followed by the squashfs: the image's fingerprint, which LXD checks after the
download; and the squashfs rootfs (ftype squashfs)."""
from __future__ import annotations

from dataclasses import dataclass, field

IMAGES = "streams/v1/images.json"


@dataclass
class Version:
    serial: str
    path: str                              # the serial's directory, relative to the tree's top
    files: dict[str, tuple[str, int]]      # name -> (sha256, size)
    combined: str                          # sha256 of lxd.tar.xz followed by rootfs.squashfs


@dataclass
class Product:
    distro: str
    release: str
    arch: str
    variant: str
    versions: list[Version] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.distro}:{self.release}:{self.arch}:{self.variant}"


def _item(ftype: str, path: str, file: tuple[str, int], **extra: str) -> dict:
    return {"ftype": ftype, "path": path, "sha256": file[0], "size": file[1], **extra}


def images(products: list[Product]) -> dict:
    out = {}
    for p in products:
        versions = {}
        for v in p.versions:
            meta, root = v.files["lxd.tar.xz"], v.files["rootfs.squashfs"]
            versions[v.serial] = {"items": {
                "lxd.tar.xz": _item("lxd.tar.xz", f"{v.path}/lxd.tar.xz", meta, combined_squashfs_sha256=v.combined),
                "incus.tar.xz": _item("incus.tar.xz", f"{v.path}/lxd.tar.xz", meta,
                                      combined_squashfs_sha256=v.combined),
                "root.squashfs": _item("squashfs", f"{v.path}/rootfs.squashfs", root),
            }}
        if versions:
            out[p.id] = {"aliases": f"{p.distro}/{p.release}/{p.variant},{p.variant}", "arch": p.arch,
                         "os": p.distro, "release": p.release, "release_title": p.release, "variant": p.variant,
                         "versions": versions}
    return {"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": out}


def index(products: list[Product]) -> dict:
    ids = sorted(p.id for p in products if p.versions)
    return {"format": "index:1.0", "index": {"images": {"datatype": "image-downloads", "path": IMAGES,
                                                        "format": "products:1.0", "products": ids}}}

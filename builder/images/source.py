"""A built output (OUTPUT/NAME) as something to publish: every file checked against its SHA256SUMS first, the
manifest read as untrusted, the names that become paths of the image tree checked."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.build.manifest import read_manifest
from builder.core import sums
from builder.core.errors import InputError

_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")     # a distro, release, arch or name as a path part


@dataclass(frozen=True)
class Source:
    path: Path
    name: str                  # the recipe's name: the image's variant
    distro: str
    release: str
    arch: str
    hostname: str
    epoch: int
    tarball: Path
    lxd_meta: Path | None      # the lxd target's split layout, when the output has it
    squashfs: Path | None
    manifest: Path
    sbom: Path | None


def read(output: Path) -> Source:
    output = Path(output)
    report = sums.verify(output)
    if report.problems:
        raise InputError(f"{output}: not published: {report.problems[0]}",
                         f"build it again (`imgbuild verify {output}` names every problem)")
    m = read_manifest(output)
    f = output / "manifest.json"
    for key in ("name", "distro", "release", "arch", "hostname"):
        if not isinstance(m.get(key), str) or not _WORD.match(m[key]):
            raise InputError(f"{f}: {key}: {m.get(key)!r:.40} is not a plain name", "build the output again")
    epoch = m.get("source_date_epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= 0:
        raise InputError(f"{f}: source_date_epoch: {epoch!r:.40} is not a time", "build the output again")
    arts = {a["kind"]: output / a["path"] for a in m["artifacts"] if a["path"] in report.checked}
    if "tarball" not in arts:
        raise InputError(f"{output}: not published: it has no tarball (the download template's rootfs)",
                         "build it with the tarball target (targets: {tarball: {}})")
    return Source(output, m["name"], m["distro"], m["release"], m["arch"], m["hostname"], epoch, arts["tarball"],
                  arts.get("lxd-metadata"), arts.get("squashfs"), f, arts.get("sbom"))

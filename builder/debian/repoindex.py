"""A local apt repository's index: dists/SUITE/Release and main/binary-ARCH/Packages for given stanzas.

Both the package-set resolution (apt-get -s over the closure of a request) and the local repository of
prepared packages write one; the stanzas keep the mirror's fields, the Release the mirror's Origin, Label,
Suite and Codename (apt patterns select by them).
"""
from __future__ import annotations

import hashlib
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.debian.apt import Index

_STRIP = (b"Filename:", b"Size:", b"MD5sum:", b"SHA1:", b"SHA256:", b"SHA512:")


def write_index(repo: Path, index: "Index", texts: list[bytes], files: dict[bytes, tuple[str, str, int]] | None = None
                ) -> None:
    """A repository's dists/SUITE/{Release, main/binary-ARCH/Packages} for the stanzas given; files maps a
    package name to (Filename, sha256, size) to put in its stanza."""
    rel = repo / "dists" / index.suite
    pdir = rel / "main" / f"binary-{index.arch}"
    pdir.mkdir(parents=True, exist_ok=True)
    out = []
    for text in texts:
        lines = text.split(b"\n")
        if files is not None:
            lines = [ln for ln in lines if not ln.startswith(_STRIP)]
            name = lines[0].split(b":", 1)[1].strip()
            fn, sha, size = files[name]
            lines += [f"Filename: {fn}".encode(), f"Size: {size}".encode(), f"SHA256: {sha}".encode()]
        out.append(b"\n".join(lines) + b"\n")
    packages = b"\n".join(out)
    (pdir / "Packages").write_bytes(packages)
    head = "".join(f"{k}: {v}\n" for k, v in index.release)
    # the mirror's own (verified) Date: apt warns about a Release without one, and it keeps the index reproducible
    date = formatdate(index.date, usegmt=True).replace("GMT", "UTC")
    (rel / "Release").write_text(
        f"{head}Date: {date}\nArchitectures: {index.arch}\nComponents: main\nSHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} main/binary-{index.arch}/Packages\n")

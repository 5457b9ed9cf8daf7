"""What is installed in a root: package names and versions, read from the root's own package database."""
from __future__ import annotations

from debian import deb822

from .rootfs import RootFS


def dpkg(root: RootFS) -> dict[str, str]:
    text = root.read_text("/var/lib/dpkg/status") or ""
    out = {}
    for para in deb822.Deb822.iter_paragraphs(text.splitlines()):
        if para.get("Status", "").endswith(" installed"):
            name = para["Package"]
            if name in out:  # the same package for a second architecture
                name = f"{name}:{para.get('Architecture', '')}"
            out[name] = para.get("Version", "")
    return dict(sorted(out.items()))


READERS = {"dpkg": dpkg}


def installed(root: RootFS, db: str) -> dict[str, str]:
    return READERS[db](root)

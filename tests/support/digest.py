"""A file's sha256, read in chunks (trees and images in the tests can be large)."""
from __future__ import annotations

import hashlib
import os


def sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

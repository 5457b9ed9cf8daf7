"""Package downloads: in parallel, into a cache verified by the repodata checksums, one progress bar.

Each file is written under a temp name, hashed as it streams, and renamed into the cache only when its checksum
matches what the repository's metadata says: a bad download is refused and never lands in the cache; a cached
file is used only under its checksum's name, so a corrupted entry cannot be mistaken for a good one.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from builder.core import net
from builder.core.errors import MirrorError
from builder.rpm.repodata import HASHES

if TYPE_CHECKING:
    import requests

    from builder.rpm.repodata import Package

log = logging.getLogger("imgbuild")
WORKERS = 6


def cached_name(pkg: "Package") -> str:
    return f"{HASHES.get(pkg.checksum_type, pkg.checksum_type)}-{pkg.checksum}.rpm"


def _download(pkg: "Package", dest: Path, session: "requests.Session", bar: tqdm) -> Path:
    final = dest / cached_name(pkg)
    algo = HASHES.get(pkg.checksum_type)
    if algo is None:
        raise MirrorError(f"{pkg.nevra}: unknown checksum type {pkg.checksum_type!r} in the repodata")
    if final.exists():
        if net.file_digest(final, algo) == pkg.checksum:
            bar.update(pkg.size)
            return final
        log.warning("cache: %s is damaged (checksum differs); downloading it again", final.name)
        final.unlink()
    try:
        net.download(pkg.url, final, algo, pkg.checksum, pkg.size or None, session=session, on_chunk=bar.update,
                     hint="check the mirror URL and the network", status_hint="check the mirror URL and repo paths")
    except net.Mismatch as e:
        raise MirrorError(f"{pkg.url}: checksum mismatch ({pkg.checksum_type} {e.actual}, the repodata "
                          f"says {pkg.checksum}); the file was refused",
                          "the mirror may be syncing or tampered with; retry later or use another mirror") from None
    return final


def download(packages: list["Package"], cache: Path) -> dict[str, Path]:
    """Every package in the cache (downloading what is missing); nevra -> path."""
    cache.mkdir(parents=True, exist_ok=True)
    total = sum(p.size for p in packages)
    missing = [p for p in packages if not (cache / cached_name(p)).exists()]
    if missing:
        log.info("downloading %d packages (%.1f MB), %d already cached", len(missing),
                 sum(p.size for p in missing) / 1e6, len(packages) - len(missing))
    out: dict[str, Path] = {}
    with net.open_session(WORKERS) as session, tqdm(total=total, unit="B", unit_scale=True, desc="packages",
                                                    leave=False, disable=None) as bar:
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = {pool.submit(_download, p, cache, session, bar): p for p in packages}
            try:
                for fut in as_completed(futures):
                    out[futures[fut].nevra] = fut.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return out

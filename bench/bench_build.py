#!/usr/bin/env python3
"""Benchmark: imgbuild against its peers, all measured in one run on this machine.

  cold build of a recipe   imgbuild RECIPE   vs  mmdebstrap (directory, and .tar.zst) and debootstrap
                           with the same release, variant, package set and mirror
  tarball writing          imgbuild's tar writer + zstd -T0  vs  tar --sort=name --numeric-owner ... | zstd -T0
                           on the same tree
  peak memory              imgbuild's own process (ru_maxrss, recorded in the manifest)

Rounds alternate the tools, each result is the median of the rounds. Writes a Markdown report (default
docs/benchmarks.md). Run as root:  .venv/bin/python bench/bench_build.py [--rounds 3] [--recipe recipes/debian12.yml]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder import apt, recipe  # noqa: E402
from builder.targets.tarball import TarballOptions, pack  # noqa: E402

IMGBUILD = Path(sys.executable).parent / "imgbuild"


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def version(prog: str) -> str:
    out = subprocess.run([prog, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return out[0] if out else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(REPO / "recipes/debian12.yml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--report", default=str(REPO / "docs/benchmarks.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the builds need it)")

    r = recipe.load(args.recipe).recipe
    mirror = apt.host_mirror(r.release) if r.bootstrap.mirror == "auto" else r.bootstrap.mirror
    include = ",".join(r.bootstrap.packages)
    common = [f"--variant={r.bootstrap.variant}", f"--arch={r.arch}", f"--include={include}"]
    work = Path(tempfile.mkdtemp(prefix="imgbuild-bench-", dir="/var/tmp"))
    env = dict(os.environ, IMGBUILD_CACHE=str(work / "cache"))  # cold: no index cache either
    results: dict[str, list[float]] = {k: [] for k in ("imgbuild", "mmdebstrap-dir", "mmdebstrap-tar",
                                                        "debootstrap", "tar-imgbuild", "tar-gnu")}
    rss: list[int] = []
    entries = 0
    try:
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}", file=sys.stderr)
            shutil.rmtree(work / "cache", ignore_errors=True)
            out = work / f"out{n}"
            results["imgbuild"].append(timed([str(IMGBUILD), args.recipe, "-o", str(out), "--keep-tree", "-q"],
                                             env))
            manifest = json.loads((out / r.name / "manifest.json").read_text())
            rss.append(manifest["resources"]["peak_rss_kb"])
            results["mmdebstrap-dir"].append(timed(["mmdebstrap", *common, r.release, str(work / f"mm{n}"),
                                                    mirror]))
            results["mmdebstrap-tar"].append(timed(["mmdebstrap", *common, r.release,
                                                    str(work / f"mm{n}.tar.zst"), mirror]))
            results["debootstrap"].append(timed(["debootstrap", *common, r.release, str(work / f"db{n}"),
                                                 mirror]))
            tree = out / f"{r.name}.rootfs"
            t = time.monotonic()
            entries = pack(tree, work / f"ours{n}.tar.zst", manifest["source_date_epoch"],
                           TarballOptions(compression="zst"))
            results["tar-imgbuild"].append(time.monotonic() - t)
            results["tar-gnu"].append(timed(["sh", "-c", (
                f"tar -C {tree} --sort=name --numeric-owner --xattrs --xattrs-include='*' --format=posix "
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "
                f"--mtime=@{manifest['source_date_epoch']} --clamp-mtime -cf - . | zstd -T0 -q > {work}/gnu{n}.tar.zst")]))
            for p in (work / f"mm{n}", work / f"db{n}", out):
                shutil.rmtree(p, ignore_errors=True)
        sizes = {"imgbuild": (work / f"ours{args.rounds - 1}.tar.zst").stat().st_size,
                 "gnu": (work / f"gnu{args.rounds - 1}.tar.zst").stat().st_size}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    rows = [
        ("cold build: imgbuild / mmdebstrap (directory)", med["imgbuild"] / med["mmdebstrap-dir"], "1.15"),
        ("cold build: imgbuild / mmdebstrap (.tar.zst, the same kind of output)",
         med["imgbuild"] / med["mmdebstrap-tar"], "1.15"),
        ("cold build: imgbuild / debootstrap", med["imgbuild"] / med["debootstrap"], "-"),
        ("tarball: imgbuild writer + zstd -T0 / GNU tar --sort=name | zstd -T0", med["tar-imgbuild"] / med["tar-gnu"],
         "1.3"),
    ]
    cmd = f".venv/bin/python bench/bench_build.py --rounds {args.rounds} --recipe {os.path.relpath(args.recipe, REPO)}"
    lines = [
        "# Benchmarks", "",
        f"Measured {datetime.date.today().isoformat()} with `{cmd}` (as root), all numbers from that one run; "
        f"each time is the median of {args.rounds} rounds in which the tools take turns.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {version('mmdebstrap')}; {version('debootstrap')}; "
        f"{version('tar')}; zstd {version('zstd').split()[-1] if version('zstd') else '?'}.",
        f"Recipe: `{os.path.relpath(args.recipe, REPO)}` ({r.distro} {r.release} {r.arch}, variant "
        f"{r.bootstrap.variant}, packages {', '.join(r.bootstrap.packages) or 'none'}); the peers get the same "
        "release, variant, packages and mirror (the host's own, read from its apt sources).", "",
        "| measure | ratio | target |", "|---|---|---|",
        *[f"| {name} | **{ratio:.2f}** | {'at most ' + target if target != '-' else ''} |" for name, ratio, target in rows],
        f"| imgbuild peak RSS (its own process, ru_maxrss) | **{statistics.median(rss) / 1024:.0f} MB** | under 150 MB |",
        "", "Times in seconds (median; all rounds in brackets):", "",
        "| run | median | rounds |", "|---|---|---|",
        *[f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in results.items()],
        "",
        f"Tarball of the built tree: {entries} entries; imgbuild {sizes['imgbuild'] / 1e6:.1f} MB, GNU tar "
        f"{sizes['gnu'] / 1e6:.1f} MB (both zstd level 3).", "",
        "What the imgbuild build time includes beyond the bootstrap: the mirror index check of every requested "
        "package (gpgv-verified InRelease, Packages index), device nodes, base files, network, password, init "
        "shim, files, the hook, cleanup, the tarball, the LXC config, sha256 of every artifact and the manifest.",
        "",
    ]
    Path(args.report).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: imgbuild against its peers, all measured in one run on this machine.

  cold build of a recipe   imgbuild RECIPE   vs  mmdebstrap (directory, and .tar.zst) and debootstrap
                           with the same release, variant, package set and mirror (every cache empty)
  warm build               imgbuild --no-cache with the package cache full, the bootstrap cache unused
  rebuilds                 from the bootstrap cache: after changing a file, and with no change
  clone                    imgbuild clone of an LXC container of the built tree  vs  cp -a of its rootfs
  tarball writing          imgbuild's tar writer (zstd frames on all cores)  vs  tar --sort=name ... | zstd -T0
                           on the same tree
  peak memory              imgbuild's own process (ru_maxrss, recorded in the manifest)

Every row runs on the disk that holds output/ and on a tmpfs. Rounds alternate the tools, each result is the
median of the rounds. Writes a Markdown report (default
docs/benchmarks.md). Run as root:  .venv/bin/python bench/bench_build.py [--rounds 3] [--recipe recipes/debian12.yml]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import write_section  # noqa: E402 - after sys.path gets the checkout
from builder.build import recipe  # noqa: E402 - after sys.path gets the checkout
from builder.core.tarwriter import pack  # noqa: E402 - after sys.path gets the checkout
from builder.debian import apt  # noqa: E402 - after sys.path gets the checkout

IMGBUILD = Path(sys.executable).parent / "imgbuild"


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def version(prog: str) -> str:
    out = subprocess.run([prog, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    if not out:
        return "?"
    m = re.search(r"v?(\d+\.\d+[\w.+~-]*)", out[0])
    return f"{prog} {m.group(1)}" if m else out[0]


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
    # every row twice: on the disk that holds the default output directory (where users build), and on a tmpfs
    # (the tools' own work, without the disk's cost of creating files)
    disk = REPO / "output"
    disk.mkdir(exist_ok=True)
    places = {}
    for where in ("disk", "tmpfs"):
        work = Path(tempfile.mkdtemp(prefix=".imgbuild-bench-", dir=disk if where == "disk" else "/var/tmp"))
        try:
            if where == "tmpfs":
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12g,mode=0700", "imgbuild-bench", str(work)],
                               check=True)
            fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(work)], capture_output=True,
                                    text=True).stdout.split()[0]
            print(f"== on {where} ({fstype}, {work})", file=sys.stderr)
            places[where] = (fstype, *measure(work, args, r, mirror, common))
        finally:
            if where == "tmpfs":
                subprocess.run(["umount", str(work)], check=False)
            shutil.rmtree(work, ignore_errors=True)
    report(args, r, places)


def measure(work: Path, args, r, mirror: str, common: list[str]) -> tuple[dict, list[int], int, dict]:
    """Every timed run of one place: results (name -> seconds per round), peak RSS, tarball entries and sizes."""
    env = dict(os.environ, IMGBUILD_CACHE=str(work / "cache"))  # cold: no index cache either
    (work / "tmp").mkdir()
    peer_env = dict(os.environ, TMPDIR=str(work / "tmp"))  # mmdebstrap's tar mode builds in $TMPDIR
    builds = {
        "imgbuild": lambda n: [str(IMGBUILD), args.recipe, "-o", str(work / f"out{n}"), "-q"],
        # the same build with mmdebstrap downloading from the mirror itself (no prepared packages)
        "imgbuild-unprepared": lambda n: [str(IMGBUILD), args.recipe, "-o", str(work / f"up{n}"), "-q"],
        "mmdebstrap-dir": lambda n: ["mmdebstrap", *common, r.release, str(work / f"mm{n}"), mirror],
        "mmdebstrap-tar": lambda n: ["mmdebstrap", *common, r.release, str(work / f"mm{n}.tar.zst"), mirror],
        "debootstrap": lambda n: ["debootstrap", *common, r.release, str(work / f"db{n}"), mirror],
    }
    results: dict[str, list[float]] = {k: [] for k in (*builds, "imgbuild-warm", "imgbuild-rebuild-file",
                                                       "imgbuild-rebuild-none", "clone-imgbuild", "clone-cp",
                                                       "tar-imgbuild", "tar-gnu")}
    rss: list[int] = []
    order = list(builds)
    for n in range(args.rounds):
        print(f"round {n + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr)
        for tool in order:
            subprocess.run([str(IMGBUILD), "cache", "prune", "--all", "-q"], env=env, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(work / "cache", ignore_errors=True)
            tool_env = {"imgbuild": env, "imgbuild-unprepared": {**env, "IMGBUILD_PREPARED": "0"}}
            results[tool].append(timed(builds[tool](n), tool_env.get(tool, peer_env)))
        manifest = json.loads((work / f"out{n}" / r.name / "manifest.json").read_text())
        rss.append(manifest["resources"]["peak_rss_kb"])
        up = json.loads((work / f"up{n}" / r.name / "manifest.json").read_text())
        if up["artifacts"] != manifest["artifacts"]:
            sys.exit("bench: the builds with and without prepared packages gave different outputs")
        for p in (work / f"mm{n}", work / f"mm{n}.tar.zst", work / f"db{n}", work / f"out{n}", work / f"up{n}"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        order = order[1:] + order[:1]   # every tool takes every position once in a while
    shutil.rmtree(work / "cache", ignore_errors=True)
    # one (untimed) build keeps its tree (and fills both caches): the tarball race and the clone race use it
    subprocess.run([str(IMGBUILD), args.recipe, "-o", str(work / "tree"), "--keep-tree", "-q"], check=True, env=env)
    # warm: the package cache (filled by that build) used, the bootstrap cache not
    for _ in range(args.rounds):
        results["imgbuild-warm"].append(
            timed([str(IMGBUILD), args.recipe, "-o", str(work / "warm"), "-q", "--no-cache"], env))
    # rebuilds from the bootstrap cache: a changed file, and no change at all
    for n in range(args.rounds):
        changed = ["--set", f'files=[{{path: /etc/motd, content: "rebuild {n}\\n"}}]']
        results["imgbuild-rebuild-file"].append(
            timed([str(IMGBUILD), args.recipe, "-o", str(work / "rb"), "-q", *changed], env))
        # the same command again: nothing changed
        results["imgbuild-rebuild-none"].append(
            timed([str(IMGBUILD), args.recipe, "-o", str(work / "rb"), "-q", *changed], env))
    manifest = json.loads((work / "tree" / r.name / "manifest.json").read_text())
    tree = work / "tree" / f"{r.name}.rootfs"
    clone_race(work, tree, args.rounds, results)
    epoch = manifest["source_date_epoch"]
    for _ in range(max(args.rounds, 5)):
        t = time.monotonic()
        entries = pack(tree, work / "ours.tar.zst", epoch, "zst")
        results["tar-imgbuild"].append(time.monotonic() - t)
        results["tar-gnu"].append(timed(["sh", "-c", (
            f"tar -C {tree} --sort=name --numeric-owner --xattrs --xattrs-include='*' --format=posix "
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "
            f"--mtime=@{epoch} --clamp-mtime -cf - . | zstd -T0 -q > {work}/gnu.tar.zst")]))
    sizes = {"imgbuild": (work / "ours.tar.zst").stat().st_size, "gnu": (work / "gnu.tar.zst").stat().st_size}
    subprocess.run([str(IMGBUILD), "cache", "prune", "--all", "-q"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return results, rss, entries, sizes


def clone_race(work: Path, tree: Path, rounds: int, results: dict) -> None:
    """`imgbuild clone` of an LXC container made of the kept tree against `cp -a` of its rootfs, both
    followed by sync (the copy on the disk, not in the page cache)."""
    lxc = work / "lxc"
    (lxc / "src").mkdir(parents=True)
    os.rename(tree, lxc / "src" / "rootfs")
    (lxc / "src" / "config").write_text(f"lxc.uts.name = src\nlxc.rootfs.path = dir:{lxc}/src/rootfs\n")
    subprocess.run(["sync"], check=True)
    for n in range(rounds):
        runs = {"clone-cp": ["sh", "-c", 'cp -a "$1" "$2" && sync', "sh", str(lxc / "src" / "rootfs"),
                             str(work / f"cp{n}")],
                # (--force: the copy keeps the recipe's address, which the original has too)
                "clone-imgbuild": ["sh", "-c", '"$1" clone "$2" "$3" --lxcpath "$4" --inventory "$5" --force -q && '
                                   'sync', "sh", str(IMGBUILD), str(lxc / "src"), f"c{n}", str(lxc),
                                   str(work / "inventory.db")]}
        for name in sorted(runs, reverse=n % 2 == 1):     # each goes first every other round
            results[name].append(timed(runs[name]))
            subprocess.run(["sync"], check=True)
        shutil.rmtree(work / f"cp{n}")
        shutil.rmtree(lxc / f"c{n}")
        subprocess.run(["sync"], check=True)     # the removals written out too: the next round starts quiet
    os.rename(lxc / "src" / "rootfs", tree)


def report(args, r, places: dict) -> None:
    med = {w: {k: statistics.median(v) for k, v in p[1].items()} for w, p in places.items()}

    def ratio(a: str, b: str) -> tuple[float, float]:
        return med["disk"][a] / med["disk"][b], med["tmpfs"][a] / med["tmpfs"][b]
    rows = [
        ("cold build: imgbuild / mmdebstrap (directory)", ratio("imgbuild", "mmdebstrap-dir"), "0.9"),
        ("cold build: imgbuild / mmdebstrap (.tar.zst, the same kind of output)",
         ratio("imgbuild", "mmdebstrap-tar"), "1.0"),
        ("warm build (packages cached, bootstrap cache not used) / mmdebstrap (directory) cold",
         ratio("imgbuild-warm", "mmdebstrap-dir"), "0.5"),
        ("cold build: imgbuild / debootstrap", ratio("imgbuild", "debootstrap"), "-"),
        ("cold build: imgbuild / imgbuild with mmdebstrap downloading itself (IMGBUILD_PREPARED=0)",
         ratio("imgbuild", "imgbuild-unprepared"), "-"),
        ("rebuild after changing a file (bootstrap cached) / imgbuild cold",
         ratio("imgbuild-rebuild-file", "imgbuild"), "0.1"),
        ("`imgbuild clone` of the built container / `cp -a` of its rootfs (both with sync)",
         ratio("clone-imgbuild", "clone-cp"), "1.0"),
        ("tarball: imgbuild writer (zstd frames, no reuse) / GNU tar --sort=name into zstd -T0",
         ratio("tar-imgbuild", "tar-gnu"), "1.1"),
    ]
    cmd = f".venv/bin/python bench/bench_build.py --rounds {args.rounds} --recipe {os.path.relpath(args.recipe, REPO)}"
    fs = {w: p[0] for w, p in places.items()}
    rss = [x for p in places.values() for x in p[2]]
    entries, sizes = places["disk"][3], places["disk"][4]
    lines = [
        "## Building: imgbuild against mmdebstrap and debootstrap", "",
        f"Measured {datetime.date.today().isoformat()} with `{cmd}` (as root), all numbers from that one run; "
        f"each time is the median of {args.rounds} rounds in which the tools take turns "
        "(the order rotates every round). Every row runs twice: on the disk that holds the default output "
        f"directory `output/` ({fs['disk']}), where users build, and on a tmpfs, which hides the cost of "
        "creating files.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {version('mmdebstrap')}; {version('debootstrap')}; "
        f"{version('tar')}; {version('zstd')}.",
        f"Recipe: `{os.path.relpath(args.recipe, REPO)}` ({r.distro} {r.release} {r.arch}, variant "
        f"{r.bootstrap.variant}, packages {', '.join(r.bootstrap.packages) or 'none'}); the peers get the same "
        "release, variant, packages and mirror (the host's own, read from its apt sources).", "",
        f"| measure | on disk ({fs['disk']}) | on tmpfs | target |", "|---|---|---|---|",
        *[f"| {name} | **{d:.2f}** | {t:.2f} | {'at most ' + target if target != '-' else ''} |"
          for name, (d, t), target in rows],
        f"| no-change rebuild (up to date: checked, not built again) | **{med['disk']['imgbuild-rebuild-none']:.2f} s**"
        f" | {med['tmpfs']['imgbuild-rebuild-none']:.2f} s | under 1 s |",
        f"| imgbuild peak RSS (its own process, ru_maxrss) | **{statistics.median(rss) / 1024:.0f} MB** | | "
        "under 150 MB |",
        "", "Times in seconds (median; all rounds in brackets):", "",
        "| run | disk | tmpfs |", "|---|---|---|",
        *[f"| {k} | {med['disk'][k]:.2f} ({', '.join(f'{x:.2f}' for x in places['disk'][1][k])}) | "
          f"{med['tmpfs'][k]:.2f} ({', '.join(f'{x:.2f}' for x in places['tmpfs'][1][k])}) |"
          for k in places["disk"][1]],
        "",
        "The tarball race runs on one kept tree of the recipe, imgbuild's writer in-process (the same code the "
        "build runs: independent zstd frames compressed on all cores, nothing reused) against GNU tar with the "
        "flags reproducible-builds.org recommends into zstd -T0.",
        "",
        f"Tarball of the built tree: {entries} entries; imgbuild {sizes['imgbuild'] / 1e6:.1f} MB, GNU tar "
        f"{sizes['gnu'] / 1e6:.1f} MB (both zstd level 3).", "",
        "imgbuild's cold build resolves the package set mmdebstrap will install (apt-get -s on the verified "
        "index), downloads it in parallel into the package cache (each .deb checked against the index's sha256), "
        "prepares each (data.tar uncompressed, its own sha256; the second stage's packages while mmdebstrap "
        "installs the first), has mmdebstrap install from a local repository of them, then moves the "
        "bootstrapped tree into the bootstrap cache (a rename), seals it (a listing of every file with its "
        "sha256) and goes on above it on an overlay. The warm build bootstraps again from the package cache "
        "(each prepared file checked against its sha256 first). The file rebuild checks the bootstrap cache "
        "entry against its listing (metadata only), mounts an overlay above it and redoes every step, hook and "
        "target: no tree is made again. The no-change rebuild finds OUTPUT/NAME up to date (the same build key: "
        "recipe, files, bootstrap inputs, mirror index identity, imgbuild's code; every artifact's sha256 "
        "checked) and stops. Every imgbuild build of a round gives the same tarball (checked). The clone race "
        "copies an LXC container made of the built tree: imgbuild clone (the copy, then a new identity and the "
        "inventory) against a bare cp -a, taking turns to go first, each followed by sync, and the copies' removal "
        "synced before the next round. The file rebuild's tarball reuses the zstd frames the build before it kept "
        "in the cache entry: only the chunks holding files the build wrote again are compressed again.",
        "",
        "What the imgbuild build time includes beyond the bootstrap: the mirror index check of every requested "
        "package (gpgv-verified InRelease, Packages index), device nodes, base files, network, password, init "
        "shim, files, the hook, cleanup, the tarball, the LXC config, the SPDX SBOM, sha256 of every artifact, "
        "the manifest and SHA256SUMS.",
        "",
    ]
    write_section(Path(args.report), "bench_build", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

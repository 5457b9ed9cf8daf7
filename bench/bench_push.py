#!/usr/bin/env python3
"""Benchmark: `migrate push` against plain rsync with the same flags, in one run on this machine.

  full push       a ~200 MB Debian tree (mmdebstrap minbase + openssh-server, rsync ...) into an empty directory
                  on a "remote" host: a network namespace running a real sshd (tests/support/sshhost.py), over a veth
  no-change push  the same push again, nothing to send

Peer: `rsync -aHAXS --numeric-ids -e 'ssh -F CONFIG' SRC/ HOST:DEST/` (the flags migrate push runs rsync with).
The trees (the source and the host's root) are in --where: by default a directory beside output/, on the disk
users work on; `--where /dev/shm` for a tmpfs. Rounds alternate the tools (the order rotates); each result is the
median. Writes its section of docs/benchmarks.md (one section per kind of filesystem).
Run as root:  .venv/bin/python bench/bench_push.py [--rounds 5] [--where DIR]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import measure_in, timed, write_section  # noqa: E402 - after sys.path gets the checkout
from tests.support.sshhost import base_tree, free_index, remove_work_dir, ssh_host  # noqa: E402 - after sys.path gets the checkout

MIGRATE = Path(sys.executable).parent / "migrate"
DEST = "/srv/bench"



def tree_size(p: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _dirs, files in os.walk(p):
        for f in files:
            n += 1
            try:
                size += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return n, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--where", type=Path, default=REPO / "output",
                    help="directory on the filesystem to measure on (the trees go in a temporary one inside)")
    ap.add_argument("--report", default=str(REPO / "docs/benchmarks.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (network namespaces)")
    fstype = measure_in(args.where)            # the trees there
    results: dict[str, list[float]] = {"full: migrate push": [], "full: rsync": [],
                                       "no-change: migrate push": [], "no-change: rsync": []}
    try:
        src = base_tree()
        files, size = tree_size(src)
        with ssh_host(src, free_index(), alias="bench") as host:
            ours = [str(MIGRATE), "push", host.alias, "--ssh-config", str(host.ssh_config), "--dest", DEST,
                    "--source", str(src), "-q"]
            peer = ["rsync", "-aHAXS", "--numeric-ids", "-e", f"ssh -F {host.ssh_config}", f"{src}/",
                    f"{host.alias}:{DEST}/"]
            tools = [("migrate push", ours), ("rsync", peer)]
            for rnd in range(args.rounds):
                order = tools[rnd % 2:] + tools[:rnd % 2]
                for name, argv in order:
                    shutil.rmtree(host.root / DEST.lstrip("/"), ignore_errors=True)
                    host.ssh(f"mkdir -p {DEST}")
                    subprocess.run(["sync"], check=True)
                    results[f"full: {name}"].append(timed(argv))
                    results[f"no-change: {name}"].append(timed(argv))
                    print(f"round {rnd + 1}: {name}: full {results[f'full: {name}'][-1]:.2f} s, "
                          f"no-change {results[f'no-change: {name}'][-1]:.2f} s", file=sys.stderr)
            shutil.rmtree(host.root / DEST.lstrip("/"), ignore_errors=True)
    finally:
        remove_work_dir()
    med = {k: statistics.median(v) for k, v in results.items()}
    rsync_version = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    cmd = f".venv/bin/python bench/bench_push.py --rounds {args.rounds}" + (
        f" --where {args.where}" if args.where != REPO / "output" else "")
    lines = [
        f"## Pushing OS trees: migrate push against rsync, on {fstype}", "",
        f"Measured {datetime.date.today().isoformat()} with `{cmd}` (as root), all numbers from that one run; each "
        f"time is the median of {args.rounds} rounds, the tools taking turns.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; {rsync_version}; "
        f"{ssh_version}. The tree: a Debian bookworm minbase + openssh-server, rsync, iproute2, procps, e2fsprogs "
        f"({files} files, {size / 1e6:.0f} MB), pushed to a real sshd in a network namespace over a veth pair, "
        f"the trees on {fstype} ({args.where}).", "",
        "| measure | result | target |", "|---|---|---|",
        "| full push: migrate push / rsync -aHAXS --numeric-ids | "
        f"**{med['full: migrate push'] / med['full: rsync']:.2f}**"
        " | at most 1.05 |",
        f"| no-change push: migrate push | **{med['no-change: migrate push']:.2f} s** | under 1 s |",
        f"| no-change push: migrate push / rsync | {med['no-change: migrate push'] / med['no-change: rsync']:.2f} | |",
        "", "Times in seconds (median; all rounds in brackets):", "",
        "| run | median | rounds |", "|---|---|---|",
        *[f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in results.items()],
        "",
        "What migrate push does beyond rsync: one ssh round trip to probe the destination (rsync present, the "
        "real path, mounts under it, which protected files it has), the filter rules (protected per-host files, "
        "live filesystems, default excludes), a partial directory for resumable transfers, and counting rsync's "
        "itemized changes for the summary.",
        "",
    ]
    write_section(Path(args.report), "bench_push" if fstype == "tmpfs" else f"bench_push_{fstype}", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: what the guest inventory costs a clone and a reidentify dry run, with 1k, 10k and 100k guests in it.

  reidentify -n  `migrate reidentify lxc:vm0 --ip OLD=NEW --mac auto --dry-run`: one small container (a make_root
                 tree, tests/support/guests.py) checked against the inventory, a MAC allocated, nothing written
  clone          `imgbuild clone lxc:vm0 vm1 --ip OLD=NEW`: the whole command (checks, a copy of the small tree,
                 the new identity written, the clone recorded in the inventory); the clone and its record are
                 removed again after each round. The container is small on purpose: what grows with the fleet is
                 the inventory's part, not the copy (cloning a built container against `cp -a` is another bench)

Each is the full command as a user runs it (a new process: Python start and imports included), with the guest
configs searched in empty directories (--lxcpath holds vm0 alone), so the numbers are the inventory's. The
inventory is synthetic: N guests with a host name, an IP and a MAC each, written straight into the SQLite store
(through builder.identity.inventory_db). "before": the same commands run by the code before the SQLite store (git
commit BEFORE, extracted to a temporary directory) on the same guests as its YAML file. Each result is the median
of the rounds. Writes its section of docs/benchmarks.md.
Run as root:  .venv/bin/python bench/bench_inventory.py [--rounds 5] [--sizes 1000,10000,100000]
                                                         [--before-sizes 1000,10000]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import timed, write_section  # noqa: E402 - after sys.path gets the checkout
from builder.core.untrusted import MAX_FILE  # noqa: E402
from builder.identity import inventory as inv  # noqa: E402
from tests.support.guests import OLD_IP, make_container  # noqa: E402

BIN = Path(sys.executable).parent
BEFORE = "06a9781"      # the last commit with the YAML inventory
NEW_IP = "10.0.3.250"


def synthetic(n: int) -> list[inv.GuestRecord]:
    """N guests, each with its own host name, IPv4 address (10.64.0.0/10) and MAC (00:16:3e:40-7f:xx:xx)."""
    return [inv.GuestRecord(f"g{i:06d}", f"g{i:06d}.example.org", (f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",),
                            (f"00:16:3e:{0x40 + (i >> 16):02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",),
                            f"lxc:/srv/fleet/g{i:06d}", "2026-12-01") for i in range(n)]


def commands(work: Path, store: Path, old: Path | None) -> dict[str, list[str]]:
    common = ["--ip", f"{OLD_IP}={NEW_IP}", "--inventory", str(store), "--lxcpath", str(work / "lxc"),
              "--xen-dir", str(work / "xen"), "--vz-dir", str(work / "vz")]

    def tool(name: str) -> list[str]:
        if old is None:
            return [str(BIN / name)]
        return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(old)!r}); sys.argv[0] = {name!r}; "
                f"from builder.cli.{name} import main; sys.exit(main())"]

    return {"reidentify -n": [*tool("migrate"), "reidentify", "lxc:vm0", "--mac", "auto", "--dry-run", *common],
            "clone": [*tool("imgbuild"), "clone", "lxc:vm0", "vm1", *common]}



def undo_clone(work: Path, store: Path, old: bool) -> None:
    shutil.rmtree(work / "lxc" / "vm1")
    if old:
        i = inv.Inventory(store, [g for g in inv.read_yaml(store) if g.name != "vm1"])
        store.write_text(inv.dumps(i.guests))
    else:
        with inv.locked(store) as i:
            assert i.remove("vm1")


def measure(work: Path, store: Path, old: Path | None, rounds: int) -> dict[str, float]:
    cmds = commands(work, store, old)
    out = {}
    for what, argv in cmds.items():
        times = []
        for _ in range(rounds):
            times.append(timed(argv))
            if what == "clone":
                undo_clone(work, store, old is not None)
        out[what] = statistics.median(times)
    return out


def extract_before(dest: Path) -> Path:
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "builder"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    # the alias check of that commit refused any YAML document of more than 50,000 values (an inventory of more
    # than ~4,000 guests), aliases or not: run it with today's check, which bounds only what aliases add
    shutil.copy(REPO / "builder/core/untrusted.py", dest / "builder/core/untrusted.py")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--before-sizes", default="1000,10000", help="sizes the old YAML code is run at too")
    ap.add_argument("--report", default=str(REPO / "docs/benchmarks.md"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    before_sizes = {int(s) for s in args.before_sizes.split(",") if s}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-inventory.", dir="/dev/shm") as tmp:
        work = Path(tmp)
        old = extract_before(work / "before")
        for d in ("xen", "vz"):
            (work / d).mkdir()
        make_container(work / "lxc", "vm0")
        for n in [0, *sizes]:
            guests = synthetic(n)
            store = work / f"inv-{n}.db"
            t = time.monotonic()
            with inv.locked(store) as i:
                i.store.add(guests)
            fill = time.monotonic() - t
            size = store.stat().st_size
            new = measure(work, store, None, args.rounds)
            was = None
            if n in before_sizes:
                yml = work / f"inv-{n}.yml"
                yml.write_text(inv.dumps(guests))
                too_big = yml.stat().st_size > MAX_FILE     # the old reader refuses it: nothing to time
                was = None if too_big else measure(work, yml, old, max(1, args.rounds if n < 50_000 else 1))
                shutil.copy(yml, work / f"migrated-{n}.yml")
                t = time.monotonic()
                with inv.locked(work / f"migrated-{n}.yml"):
                    pass
                migrate_s = time.monotonic() - t
            else:
                migrate_s = None
            with sqlite3.connect(store) as c:
                assert c.execute("SELECT count(*) FROM guests").fetchone()[0] == n
            rows.append((n, new, was, fill, size, migrate_s, n in before_sizes))
            print(f"{n:>7} guests: " + ", ".join(f"{k} {v:.2f} s" + (f" (before {was[k]:.2f} s)" if was else "")
                                                  for k, v in new.items()), flush=True)
    write_section(Path(args.report), "bench_inventory", report(rows, args.rounds))


def report(rows: list, rounds: int) -> list[str]:
    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    lines = [
        "## Guest inventory (bench/bench_inventory.py)",
        "",
        f"{datetime.date.today().isoformat()}, {platform.node()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; median of {rounds} rounds (the old code "
        "past 50k guests: one round); each a whole command in a new process, on tmpfs. Synthetic guests (a host name, "
        "an IP, a MAC each); a small container (vm0) as the guest. \"before\": the YAML inventory (commit "
        f"{BEFORE}, with today's YAML alias check: that commit's refused any inventory of more than ~4,000 guests) "
        "on the same guests; its reader refuses a file over 8 MB, so it cannot read 100k guests at all.",
        "",
        "| guests | reidentify --dry-run | before | clone | before | store fill | store size | YAML -> SQLite |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, new, was, fill, size, migrate_s, tried in rows:
        old = {k: s(was[k]) for k in new} if was else {k: "refused (> 8 MB)" if tried else "-" for k in new}
        lines.append(f"| {n:,} | {s(new['reidentify -n'])} | {old['reidentify -n']} | {s(new['clone'])} "
                     f"| {old['clone']} | {s(fill)} | {size / 1e6:.1f} MB | {s(migrate_s)} |")
    lines += [
        "",
        "The 0-guest row is the fixed cost of the commands (Python start, imports, the small tree's files). With the",
        "store, a check reads the rows that share the guest's MAC, IP or host name (indexes), and a MAC draw asks",
        "the MAC index; only `inventory list|export|prune` read every guest. \"YAML -> SQLite\": the one-time",
        "migration of a YAML inventory of that size on first use. \"store fill\": writing N synthetic guests in",
        "one transaction.",
    ]
    return lines


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: one OS tree pushed to three hosts: `migrate push --hosts a,b,c -j 3` against three `migrate push`
one after another, and against Ansible's `ansible.posix.synchronize` doing the same push, in one run.

  full push       a ~200 MB Debian tree (mmdebstrap minbase + openssh-server, rsync ...) into an empty directory
                  on each of three "remote" hosts: network namespaces running a real sshd each
                  (tests/support/sshhost.py), over veth pairs
  no-change push  the same push again, nothing to send

Peers: the same three pushes run one after another (what a shell loop does), and an ansible-playbook with
`ansible.posix.synchronize` (archive, hard links, ACLs, xattrs, sparse, numeric ids: the flags migrate push gives
rsync; Ansible's default 5 forks). synchronize needs Debian's `ansible` package (its bundled collections):
`apt-get install ansible`. Rounds alternate the tools (the order rotates); each result is the median.
The hosts' roots (where the trees land) are in --where: by default a directory beside output/, on the disk users
work on; `--where /dev/shm` for a tmpfs. Writes its section of docs/benchmarks.md.
Run as root:  .venv/bin/python bench/bench_fleet.py [--rounds 3] [--where DIR]
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
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import measure_in, timed, write_section  # noqa: E402 - after sys.path gets the checkout
from tests.support import sshhost  # noqa: E402 - after sys.path gets the checkout

MIGRATE = Path(sys.executable).parent / "migrate"
DEST = "/srv/bench"
ALIASES = ("a", "b", "c")
PLAYBOOK = """- hosts: fleet
  gather_facts: false
  tasks:
    - name: the tree
      ansible.posix.synchronize:
        src: "{{ src }}/"
        dest: "{{ dest }}/"
        archive: true
        use_ssh_args: true
        rsync_opts: ["-HAXS", "--numeric-ids"]
"""



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--where", type=Path, default=REPO / "output",
                    help="directory on the filesystem to measure on (the hosts' roots go in a temporary one inside)")
    ap.add_argument("--report", default=str(REPO / "docs/benchmarks.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (network namespaces)")
    if not shutil.which("ansible-playbook") or not Path("/usr/lib/python3/dist-packages/ansible_collections/"
                                                         "ansible/posix").is_dir():
        sys.exit("bench: needs ansible-playbook and the ansible.posix collection: apt-get install ansible")
    fstype = measure_in(args.where)            # the hosts' roots there
    names = ("3 hosts -j 3", "3 hosts one after another", "ansible synchronize")
    results: dict[str, list[float]] = {f"{k}: {n}": [] for k in ("full", "no-change") for n in names}
    try:
        src = sshhost.base_tree()
        files = sum(len(f) for _d, _s, f in os.walk(src))
        size = int(subprocess.run(["du", "-sb", str(src)], capture_output=True, text=True).stdout.split()[0])
        d = sshhost.work_dir() / "ssh"
        d.mkdir()
        config, known, key = d / "ssh_config", d / "known_hosts", sshhost.make_key(d / "id_ed25519")
        with ExitStack() as stack:
            hosts = [stack.enter_context(sshhost.ssh_host(src, None, config, alias=a, key=key, known_hosts=known))
                     for a in ALIASES]
            common = ["--ssh-config", str(config), "--dest", DEST, "--source", str(src), "-q"]
            inventory, playbook = d / "hosts.ini", d / "push.yml"
            inventory.write_text("[fleet]\n" + "\n".join(ALIASES) + "\n")
            playbook.write_text(PLAYBOOK)
            env = {**os.environ, "ANSIBLE_SSH_ARGS": f"-F {config}", "ANSIBLE_HOST_KEY_CHECKING": "False",
                   "ANSIBLE_LOCAL_TEMP": str(d / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}
            tools = {
                names[0]: lambda: timed([str(MIGRATE), "push", "--hosts", ",".join(ALIASES), "-j", "3", *common,
                                         "--logs", str(d / "logs")]),
                names[1]: lambda: sum(timed([str(MIGRATE), "push", a, *common]) for a in ALIASES),
                names[2]: lambda: timed(["ansible-playbook", "-i", str(inventory), str(playbook), "-e",
                                         f"src={src} dest={DEST}"], env),
            }
            order = list(tools)
            for rnd in range(args.rounds):
                for name in order[rnd % 3:] + order[:rnd % 3]:
                    for h in hosts:
                        shutil.rmtree(h.root / DEST.lstrip("/"), ignore_errors=True)
                        (h.root / DEST.lstrip("/")).mkdir(parents=True)
                    subprocess.run(["sync"], check=True)
                    results[f"full: {name}"].append(tools[name]())
                    results[f"no-change: {name}"].append(tools[name]())
                    print(f"round {rnd + 1}: {name}: full {results[f'full: {name}'][-1]:.2f} s, "
                          f"no-change {results[f'no-change: {name}'][-1]:.2f} s", file=sys.stderr)
            for h in hosts:
                shutil.rmtree(h.root / DEST.lstrip("/"), ignore_errors=True)
    finally:
        sshhost.remove_work_dir()
    med = {k: statistics.median(v) for k, v in results.items()}
    ansible_v = subprocess.run(["ansible-playbook", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    cmd = f".venv/bin/python bench/bench_fleet.py --rounds {args.rounds}" + (
        f" --where {args.where}" if args.where != REPO / "output" else "")

    def ratio(kind: str, peer: str) -> str:
        return f"{med[f'{kind}: {names[0]}'] / med[f'{kind}: {peer}']:.2f}"

    lines = [
        "## One tree to three hosts: migrate push --hosts against sequential pushes and Ansible's synchronize", "",
        f"Measured {datetime.date.today().isoformat()} with `{cmd}` (as root), all numbers from that one run; each "
        f"time is the median of {args.rounds} rounds, the tools taking turns.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; {ansible_v}. The tree: "
        f"a Debian bookworm minbase + openssh-server, rsync ({files} files, {size / 1e6:.0f} MB), pushed to three "
        f"real sshd hosts in network namespaces over veth pairs; the hosts' trees on {fstype} ({args.where}).", "",
        "| measure | result | target |", "|---|---|---|",
        f"| full push to 3 hosts: -j 3 / one after another | **{ratio('full', names[1])}** | below 1 |",
        f"| full push to 3 hosts: -j 3 / ansible synchronize | **{ratio('full', names[2])}** | at most 1 |",
        f"| no-change push to 3 hosts: -j 3 / ansible synchronize | {ratio('no-change', names[2])} | at most 1 |",
        "", "Times in seconds (median; all rounds in brackets):", "",
        "| run | median | rounds |", "|---|---|---|",
        *[f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in results.items()],
        "",
        "Each `migrate push --hosts` host is its own process, so its per-host checks (the destination probe, the "
        "refusals, the protected-file list) run in parallel too; synchronize does the rsync only (no probe, no "
        "protected files, no refusal of a system directory), with Ansible's per-task overhead on top.",
        "",
    ]
    write_section(Path(args.report), "bench_fleet", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

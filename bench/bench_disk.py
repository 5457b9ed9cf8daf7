#!/usr/bin/env python3
"""Benchmark: a bootable VM disk from recipes/debian12-vm.yml, against the same recipe's tarball build and against
mmdebstrap plus the hand-made script a sysadmin writes for the same disk, all measured in one run on this machine.

  imgbuild disk       imgbuild recipes/debian12-vm.yml: tarball, qcow2 and raw disk (GPT, BIOS and UEFI), libvirt
                      and xl configs; no loop device, no mount
  imgbuild tarball    the same recipe with only the tarball target
  mmdebstrap+script   mmdebstrap with the same release, variant, packages (and grub2-common, which has
                      grub-install) and mirror into a directory, then HAND_SCRIPT: a sparse file, sfdisk, a loop
                      device (partx for its partitions), mkfs.fat and mkfs.ext4, a mount, cp -a of the tree, fstab,
                      grub-install (BIOS) and grub-mkconfig in a chroot, grub-mkimage and mtools for UEFI (this
                      kernel has no vfat to mount the ESP), umount, losetup -d, qemu-img convert to qcow2

Every run is cold (an empty imgbuild cache; mmdebstrap downloads itself). Rounds alternate the tools; each result is
the median of the rounds. Runs on the disk that holds output/ (where users build), not a tmpfs. Writes its section
of docs/benchmarks.md. Run as root:  .venv/bin/python bench/bench_disk.py [--rounds 2]
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

from bench.report import write_section  # noqa: E402 - after sys.path gets the checkout
from builder.build import recipe  # noqa: E402 - after sys.path gets the checkout
from builder.debian import apt  # noqa: E402 - after sys.path gets the checkout

IMGBUILD = Path(sys.executable).parent / "imgbuild"
RECIPE = REPO / "recipes" / "debian12-vm.yml"
TARBALL_ONLY = [a for t in ("disk", "libvirt", "xenvm") for a in ("--set", f"targets.{t}=null")]

# What the same disk takes by hand (the usual guide: loop device, mounts, grub-install in a chroot).
HAND_SCRIPT = r"""
set -eu
tree=${1:?tree} out=${2:?output dir}
[ -d "$tree/etc" ] && [ -d "$out" ] || exit 2
raw=$out/disk.raw mnt=$out/mnt
mkdir -p "$mnt"
truncate -s 1100M "$raw"
sfdisk -q "$raw" <<EOF
label: gpt
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649
size=63M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
EOF
loop=$(losetup --show -f -P "$raw")
cleanup() { umount -R "$mnt" 2>/dev/null || true; partx -d "$loop" 2>/dev/null || true; losetup -d "$loop"; }
trap cleanup EXIT
[ -b "${loop}p3" ] || partx -a "$loop"          # no udev in a container: partx makes the partitions' nodes
mkfs.fat -n ESP "${loop}p2" >/dev/null
mkfs.ext4 -q -L root "${loop}p3"
mount "${loop}p3" "$mnt"
cp -a "$tree/." "$mnt/"
uuid=$(blkid -s UUID -o value "${loop}p3")
echo "UUID=$uuid / ext4 defaults,errors=remount-ro 0 1" > "$mnt/etc/fstab"
echo vm20 > "$mnt/etc/hostname"
printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n' > "$mnt/etc/network/interfaces"
printf '  address 10.0.3.20/24\n  gateway 10.0.3.1\n' >> "$mnt/etc/network/interfaces"
printf 'GRUB_TIMEOUT=1\nGRUB_TERMINAL="serial console"\n' > "$mnt/etc/default/grub"
printf 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 net.ifnames=0"\n' >> "$mnt/etc/default/grub"
for d in dev proc sys; do mount --rbind --make-rslave "/$d" "$mnt/$d"; done
chroot "$mnt" grub-install --target=i386-pc "$loop" 2>/dev/null
chroot "$mnt" grub-mkconfig -o /boot/grub/grub.cfg 2>/dev/null
# UEFI: where the kernel has no vfat the ESP cannot be mounted, so its loader goes in with mtools
printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' "$uuid" > "$mnt/tmp/early.cfg"
chroot "$mnt" grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -c /tmp/early.cfg -p /boot/grub \
  part_gpt ext2 search search_fs_uuid normal configfile linux serial terminal gzio echo test boot efi_gop all_video
mmd -i "${loop}p2" ::/EFI ::/EFI/BOOT
mcopy -i "${loop}p2" "$mnt/tmp/BOOTX64.EFI" ::/EFI/BOOT/
rm -f "$mnt/tmp/BOOTX64.EFI" "$mnt/tmp/early.cfg"
sync
umount -R "$mnt"
partx -d "$loop" 2>/dev/null || true
losetup -d "$loop"
trap - EXIT
qemu-img convert -f raw -O qcow2 "$raw" "$out/disk.qcow2"
"""


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.monotonic()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--report", default=str(REPO / "docs/benchmarks.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the builds need it)")
    r = recipe.load(RECIPE).recipe
    mirror = apt.host_mirror(r.release) if r.bootstrap.mirror == "auto" else r.bootstrap.mirror
    include = ",".join([*r.bootstrap.packages, "grub2-common"])
    (REPO / "output").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-disk-", dir=REPO / "output"))    # the disk users build on
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(work)], capture_output=True, text=True).stdout
    env = dict(os.environ, IMGBUILD_CACHE=str(work / "cache"))
    peer_env = dict(os.environ, TMPDIR=str(work))

    def by_hand(n: int) -> float:
        t = time.monotonic()
        subprocess.run(["mmdebstrap", f"--variant={r.bootstrap.variant}", f"--arch={r.arch}", f"--include={include}",
                        r.release, str(work / f"mm{n}"), mirror], check=True, env=peer_env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (work / f"hand{n}").mkdir()
        subprocess.run(["sh", "-c", HAND_SCRIPT, "sh", str(work / f"mm{n}"), str(work / f"hand{n}")], check=True,
                       stdout=subprocess.DEVNULL)
        return time.monotonic() - t

    runs = {
        "imgbuild disk": lambda n: timed([str(IMGBUILD), str(RECIPE), "-o", str(work / f"d{n}"), "-q"], env),
        "imgbuild tarball": lambda n: timed([str(IMGBUILD), str(RECIPE), "-o", str(work / f"t{n}"), "-q",
                                             *TARBALL_ONLY], env),
        "mmdebstrap+script": by_hand,
    }
    results: dict[str, list[float]] = {k: [] for k in runs}
    disk_phase: list[float] = []
    try:
        order = list(runs)
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}: {', '.join(order)}", file=sys.stderr)
            for name in order:
                shutil.rmtree(work / "cache", ignore_errors=True)
                results[name].append(runs[name](n))
            m = json.loads((work / f"d{n}" / r.name / "manifest.json").read_text())
            disk_phase.append(m["timings"]["target disk"])
            for p in work.iterdir():
                if p.name != "cache":
                    shutil.rmtree(p, ignore_errors=True)
            order = order[1:] + order[:1]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    cmd = f".venv/bin/python bench/bench_disk.py --rounds {args.rounds}"
    lines = [
        "## A bootable VM disk: imgbuild against its own tarball build and mmdebstrap + a hand-made script", "",
        f"Measured {datetime.date.today().isoformat()} with `{cmd}` (as root), all numbers from that one run; each "
        f"time is the median of {args.rounds} cold rounds in which the runs take turns.", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}. Everything on the disk "
        f"that holds output/ ({fs.strip() or '?'}), not a tmpfs.",
        "Recipe: `recipes/debian12-vm.yml` (Debian 12 with linux-image-amd64, grub-pc-bin, grub-efi-amd64-bin; "
        "a 1.1 GB GPT disk, BIOS and UEFI, qcow2 and raw). The hand-made way gets the same release, variant, "
        "packages (and grub2-common for grub-install) and mirror, and makes the same disk (the script is "
        "HAND_SCRIPT in the bench script).", "",
        "| measure | ratio |", "|---|---|",
        f"| disk build / the same recipe's tarball build | **{med['imgbuild disk'] / med['imgbuild tarball']:.2f}** |",
        f"| disk build: imgbuild / mmdebstrap + hand-made script | "
        f"**{med['imgbuild disk'] / med['mmdebstrap+script']:.2f}** |",
        f"| imgbuild's disk target alone (manifest timing) | **{statistics.median(disk_phase):.1f} s** |",
        "", "Times in seconds (median; all rounds in brackets):", "",
        "| run | median | rounds |", "|---|---|---|",
        *[f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in results.items()],
        "",
        "The disk build includes the tarball, and writes both qcow2 and raw; the hand-made script writes both "
        "too. imgbuild makes the root filesystem with mke2fs -d from the tree (no mount, no copy through a loop "
        "device), GRUB's core images with the guest's grub-mkimage, and puts the pieces into the disk file "
        "sparsely; the script copies the tree through a mounted loop device, runs grub-install and grub-mkconfig, and "
        "puts a grub-mkimage EFI loader on the ESP with mtools.",
        "",
    ]
    write_section(Path(args.report), "bench_disk", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

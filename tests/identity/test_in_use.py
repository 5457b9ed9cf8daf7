"""A guest in use is not edited (and not copied while something writes to it): `migrate reidentify` and `imgbuild
clone` on an ext4 image that is loop-mounted, loop-attached (also through another name of the same file), open or
mapped in another process, or whose journal needs recovery; on an LXC container that runs (seen by LXC, and seen
through /proc from another network namespace), on an OpenVZ container whose VE_ROOT is mounted, and on a tree a
chroot runs from. Each is refused with exit 2 naming the image or tree and its holder, and nothing changes (the
image's sha256, the tree, the inventory); --force goes on with a warning. A clone only reads its source: a holder
that only reads does not stop it.

Everything is real (loop devices, mounts, lxc-start, chroot) except Xen: no hypervisor runs here
(/work/shared/REAL-TESTS.md), so the running domains come from a stand-in `xl` on PATH that prints what
`xl list -l` prints on a Xen host. The real `xl` here fails without a hypervisor, which every other test runs
through: it must count as "no domains". Every loop device, mount, process and container a test makes is removed in
a `finally`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.identity import inventory
from builder.identity.tree import ImageTree
from tests.conftest import BIN, REPO, imgbuild
from tests.support.guests import OLD_HOST, OLD_MAC, debugfs_cat, file_sha, make_container, make_root, tree_state
from tests.support.lxc import lxc_netns

pytestmark = pytest.mark.root


def migrate(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "migrate"), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inv" / "inventory.yml"))


@pytest.fixture
def env(tmp_path) -> dict:
    return {**os.environ, inventory.ENV_VAR: str(tmp_path / "inv" / "inventory.yml")}


@pytest.fixture
def opts(tmp_path) -> list[str]:
    return ["--lxcpath", str(tmp_path / "lxc"), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]


def no_inventory_written(tmp_path: Path) -> bool:
    """Neither the inventory nor its lock file nor their directory was made."""
    return not (tmp_path / "inv").exists()


def refused(r: subprocess.CompletedProcess, subject: Path, holder: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert f"error: {subject} is in use" in r.stderr, r.stderr
    assert re.search(holder, r.stderr), f"{holder!r} not in:\n{r.stderr}"


# ================================================================== an ext4 image and what can hold it


def ext4(tmp_path: Path, name: str = "vm0.ext4") -> Path:
    """A small ext4 image of a make_root() tree; inode tables and journal written up front, so a read-write
    mount does not go on initializing them in the background (the image's bytes hold still while mounted)."""
    root = make_root(tmp_path / f"{name}.root")
    image = tmp_path / name
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d",
                    str(root), str(image), "32M"], check=True)
    return image


def _run(*cmd) -> str:
    return subprocess.run(list(map(str, cmd)), check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def attached(image: Path, ro: bool = False, via: Path | None = None):
    """`image` on a loop device of its own (attached through the name `via`, e.g. a hard link to it)."""
    dev = _run("losetup", "-f", "--show", *(["-r"] if ro else []), via or image)
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@contextlib.contextmanager
def mounted(image: Path, ro: bool = False):
    mnt = image.with_name(image.name + ".mnt")
    mnt.mkdir()
    with attached(image, ro) as dev:
        _run("mount", "-o", "ro" if ro else "rw", dev, mnt)
        try:
            _run("sync")
            yield dev, mnt
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
            mnt.rmdir()


@contextlib.contextmanager
def held_by(image: Path, how: str):
    """A process that keeps `image` open: `read` (its stdin), `write` (stdout, read-write), `map` (a shared
    writable mapping, the file itself closed again)."""
    if how == "map":
        code = ("import mmap, sys, time\nf = open(sys.argv[1], 'r+b')\nm = mmap.mmap(f.fileno(), 4096)\n"
                "f.close()\nprint('ready', flush=True)\ntime.sleep(600)\n")
        p = subprocess.Popen([sys.executable, "-c", code, str(image)], stdout=subprocess.PIPE, text=True)
    else:
        with open(image, "rb" if how == "read" else "r+b") as f:
            p = subprocess.Popen(["sleep", "600"], **({"stdin": f} if how == "read" else {"stdout": f}))
    try:
        if how == "map":
            assert p.stdout.readline().strip() == "ready"
        yield p.pid
    finally:
        p.kill()
        p.wait()


@contextlib.contextmanager
def journal_dirty(image: Path):
    _run("debugfs", "-w", "-R", "feature needs_recovery", image)
    yield None


# variant: how the image is held -> (context manager, what the message must say about the holder (regex),
#                                    whether the holder may write)
def _holders(image: Path, tmp_path: Path):
    link = tmp_path / "another-name-of-it.ext4"
    return {
        "mounted": (lambda: mounted(image), r"mounted at {mnt} through {dev} \(read-write\)", True),
        "mounted-read-only": (lambda: mounted(image, ro=True), r"mounted at {mnt} through {dev} \(read-only\)",
                              False),
        "attached": (lambda: attached(image), r"attached to {dev} \(read-write; not mounted", True),
        "attached-read-only": (lambda: attached(image, ro=True), r"attached to {dev} \(read-only; not mounted",
                               False),
        # the loop device was given another path to the same file: found by device and inode, not by name
        "attached-through-a-hard-link": (lambda: (os.link(image, link), attached(image, via=link))[1],
                                         r"attached to {dev} \(read-write", True),
        "open-for-reading": (lambda: held_by(image, "read"), r"open in process {pid} \(sleep\)\n", False),
        "open-for-writing": (lambda: held_by(image, "write"), r"open in process {pid} \(sleep\) for writing", True),
        "mapped": (lambda: held_by(image, "map"), r"open in process {pid} \(python[\d.]*\) for writing", True),
        "journal-needs-recovery": (lambda: journal_dirty(image), r"its ext journal needs recovery", True),
    }


HOLDERS = ["mounted", "mounted-read-only", "attached", "attached-read-only", "attached-through-a-hard-link",
           "open-for-reading", "open-for-writing", "mapped", "journal-needs-recovery"]


def expected(pattern: str, got) -> str:
    if isinstance(got, tuple):
        dev, mnt = got
        return pattern.format(dev=re.escape(dev), mnt=re.escape(str(mnt)))
    if isinstance(got, int):
        return pattern.format(pid=got)
    return pattern.format(dev=re.escape(str(got)))


@pytest.mark.parametrize("variant", HOLDERS)
def test_reidentify_refuses_an_image_in_use_naming_it_and_its_holder(variant, tmp_path, env, opts):
    image = ext4(tmp_path)
    hold, pattern, _writes = _holders(image, tmp_path)[variant]
    with hold() as got:
        sha = file_sha(image)
        for extra in ([], ["--dry-run"], ["--loop"]):
            r = migrate("reidentify", image, "--hostname", "web1", "--mac", "auto", *extra, *opts, env=env)
            refused(r, image, expected(pattern, got))
            assert "nothing was changed" in r.stderr and "--force" in r.stderr, r.stderr
            assert file_sha(image) == sha, f"{variant} {extra}: the image changed"
        assert no_inventory_written(tmp_path)
    assert debugfs_cat(image, "/etc/hostname") == f"{OLD_HOST}\n"


@pytest.mark.parametrize("variant", ["attached", "open-for-writing", "journal-needs-recovery"])
def test_force_edits_an_image_in_use_with_a_warning_naming_the_holder(variant, tmp_path, env, opts):
    image = ext4(tmp_path)
    hold, pattern, _writes = _holders(image, tmp_path)[variant]
    with hold() as got:
        r = migrate("reidentify", image, "--hostname", "web1", "--force", *opts, env=env)
        assert r.returncode == 0, r.stderr
        assert f"warning: --force: {image} is in use; editing it anyway" in r.stderr
        assert re.search(expected(pattern, got), r.stderr), r.stderr
    assert debugfs_cat(image, "/etc/hostname") == "web1\n"


def test_a_xen_guest_whose_disk_is_in_use_is_refused_naming_the_disk(tmp_path, env, opts):
    image = ext4(tmp_path)
    cfg = tmp_path / "vm0.cfg"
    cfg.write_text(f"name = 'vm0'\nmemory = 256\ndisk = ['file:{image},xvda1,w']\n"
                   f"vif = ['mac={OLD_MAC},bridge=xenbr0']\n")
    before = cfg.read_bytes()
    with attached(image) as dev:
        sha = file_sha(image)
        r = migrate("reidentify", cfg, "--hostname", "web1", *opts, env=env)
        refused(r, image, rf"attached to {re.escape(dev)}")
        r = imgbuild("clone", cfg, "vm1", "--ip", "10.0.3.2=10.0.3.9", *opts, env=env)
        refused(r, image, rf"attached to {re.escape(dev)}")
        assert "nothing was copied" in r.stderr
        assert file_sha(image) == sha and cfg.read_bytes() == before
    assert not (tmp_path / "vm1.cfg").exists() and not (tmp_path / "vm1.ext4").exists()


# ================================================================== clone: the source is only read


@pytest.mark.parametrize("variant", [v for v in HOLDERS if v != "attached-through-a-hard-link"])
def test_clone_copies_a_source_only_read_and_refuses_one_that_may_be_written(variant, tmp_path, env, opts):
    image = ext4(tmp_path)
    hold, pattern, writes = _holders(image, tmp_path)[variant]
    dest = tmp_path / "copies" / "vm1.ext4"
    dest.parent.mkdir()
    with hold() as got:
        sha = file_sha(image)
        r = imgbuild("clone", image, dest, "--ip", "10.0.3.2=10.0.3.9", *opts, env=env)
        if writes:
            refused(r, image, expected(pattern, got))
            assert "may be changing" in r.stderr and "nothing was copied" in r.stderr
            assert os.listdir(dest.parent) == [], "a copy was made"
            assert no_inventory_written(tmp_path)
        else:
            assert r.returncode == 0, r.stderr
            assert debugfs_cat(dest, "/etc/hostname") == "vm1\n"
        assert file_sha(image) == sha, "the source changed"


def test_clone_force_copies_a_source_being_written_with_a_warning(tmp_path, env, opts):
    image = ext4(tmp_path)
    with held_by(image, "write") as pid:
        r = imgbuild("clone", image, tmp_path / "vm1.ext4", "--ip", "10.0.3.2=10.0.3.9", "--force", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert f"warning: --force: {image} is in use; copying it anyway" in r.stderr
    assert f"open in process {pid} (sleep) for writing" in r.stderr
    assert debugfs_cat(tmp_path / "vm1.ext4", "/etc/hostname") == "vm1\n"


# ================================================================== below the CLI: every debugfs -w


def test_imagetree_refuses_its_first_write_while_another_process_has_the_image(tmp_path):
    """Whoever edits an image through ImageTree (reidentify, the staged copy of `migrate xen`) gets the check
    before debugfs -w runs, not only the CLI."""
    image = ext4(tmp_path)
    with held_by(image, "read") as pid:
        sha = file_sha(image)
        with pytest.raises(InputError) as e:
            ImageTree(image).write("/etc/hostname", b"web1\n")
        assert f"{image} is in use" in e.value.message and f"open in process {pid} (sleep)" in e.value.message
        with pytest.raises(InputError):
            ImageTree(image).remove("/etc/motd")
        assert file_sha(image) == sha
        ImageTree(image, force=True).write("/etc/hostname", b"web1\n")
    assert debugfs_cat(image, "/etc/hostname") == "web1\n"
    ImageTree(image).write("/etc/hostname", b"web2\n")          # nothing holds it now
    assert debugfs_cat(image, "/etc/hostname") == "web2\n"


# ================================================================== Xen domains (a stand-in xl: no hypervisor here)


def fake_xl(tmp_path: Path, domains: list[tuple[str, list[str]]]) -> dict:
    """A directory holding an `xl` whose `list -l` prints these running domains as Xen 4's xl does (Domain-0
    first); the returned env puts it first on PATH. MOCK: only because no Xen hypervisor runs here."""
    data = [{"domid": 0, "config": {"c_info": {"name": "Domain-0"}}}]
    data += [{"domid": i + 1, "config": {"c_info": {"type": "pv", "name": name},
                                         "disks": [{"pdev_path": d, "vdev": f"xvda{j + 1}", "format": "raw"}
                                                   for j, d in enumerate(disks)]}}
             for i, (name, disks) in enumerate(domains)]
    bindir = tmp_path / "fake-xl-bin"
    bindir.mkdir()
    (bindir / "list.json").write_text(json.dumps(data, indent=4))
    xl = bindir / "xl"
    xl.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1 $2" = "list -l" ] && exec cat {bindir / 'list.json'}
        echo "fake xl: $*" >&2; exit 1
        """))
    xl.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_an_image_a_running_xen_domain_uses_is_refused(tmp_path, env, opts):
    image = ext4(tmp_path)
    alias = tmp_path / "xen-sees-it-here.ext4"
    alias.symlink_to(image)                          # the domain names the disk by another path: same file
    env = {**env, **fake_xl(tmp_path, [("other", ["/srv/other.img"]), ("www", [str(alias)])])}
    sha = file_sha(image)
    r = migrate("reidentify", image, "--hostname", "web1", *opts, env=env)
    refused(r, image, r"Xen domain www is running from it")
    assert "xl shutdown -w www" in r.stderr and "other" not in r.stderr
    assert file_sha(image) == sha and no_inventory_written(tmp_path)


def test_a_domain_of_the_same_name_running_from_another_disk_holds_nothing(tmp_path, env, opts):
    """What `migrate xen` edits is a staged copy of a guest that is running (the original, from its own disk):
    the domain's name alone does not make the copy's image in use."""
    image = ext4(tmp_path)
    cfg = tmp_path / "www.cfg"
    cfg.write_text(f"name = 'www'\nmemory = 256\ndisk = ['file:{image},xvda1,w']\n")
    original = ext4(tmp_path, "www-original.ext4")
    env = {**env, **fake_xl(tmp_path, [("www", [str(original)])])}
    r = migrate("reidentify", cfg, "--hostname", "web1", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert debugfs_cat(image, "/etc/hostname") == "web1\n"
    r = migrate("reidentify", original, "--hostname", "web1", *opts, env=env)
    refused(r, original, r"Xen domain www is running from it")


# ================================================================== directory guests: a running container, a chroot


def busybox_root(root: Path) -> None:
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for name in ("sh", "sleep"):
        os.symlink("busybox", root / "bin" / name)
    for d in ("proc", "sys", "tmp"):
        (root / d).mkdir(exist_ok=True)


@pytest.mark.lxc
def test_a_running_container_is_neither_reidentified_nor_cloned(tmp_path, env):
    """Seen by LXC (commands run in the network namespace the container was started from, where lxc-info
    reaches it) and through /proc (from the host's namespace, where LXC's abstract socket does not answer)."""
    with lxc_netns(tmp_path / "sb") as sb:
        name = f"iu{os.getpid()}"
        cdir = make_container(sb.lxcpath, name, OLD_HOST, keys=False)
        busybox_root(cdir / "rootfs")
        cfg = (cdir / "config").read_text().replace("lxc.net.0.link = lxcbr0", f"lxc.net.0.link = {sb.bridge}")
        (cdir / "config").write_text(cfg + "lxc.init.cmd = /bin/sleep 600\n")
        sb.start(name)
        assert sb.state(name) == "RUNNING"
        opts = ["--lxcpath", str(sb.lxcpath), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]
        before = tree_state(sb.lxcpath)
        rootfs = cdir / "rootfs"
        by_lxc = rf"LXC container {name} \({re.escape(str(cdir))}\) is running"
        by_proc = rf"LXC container {name} is running from it \(process \d+"
        for ns, holder in (([], by_proc), (sb.ns(), by_lxc)):
            for target in (cdir, f"lxc:{name}"):
                r = subprocess.run([*ns, str(BIN / "migrate"), "reidentify", target, "--hostname", "web1", *opts],
                                   capture_output=True, text=True, env=env, cwd=REPO)
                refused(r, rootfs, holder)
                r = subprocess.run([*ns, str(BIN / "imgbuild"), "clone", target, "vmB", "--ip", "10.0.3.2=10.0.3.9",
                                    *opts], capture_output=True, text=True, env=env, cwd=REPO)
                refused(r, rootfs, holder)
                assert "nothing was copied" in r.stderr
            # its rootfs given as a plain directory
            r = subprocess.run([*ns, str(BIN / "migrate"), "reidentify", rootfs, "--hostname", "web1", *opts],
                               capture_output=True, text=True, env=env, cwd=REPO)
            refused(r, rootfs, by_proc if not ns else rf"LXC container {name} .*running")
        assert tree_state(sb.lxcpath) == before, "a refused command changed something"
        assert no_inventory_written(tmp_path)
        r = subprocess.run([*sb.ns(), str(BIN / "migrate"), "reidentify", cdir, "--hostname", "web1", "--force",
                            *opts], capture_output=True, text=True, env=env, cwd=REPO)
        assert r.returncode == 0, r.stderr
        assert "warning: --force" in r.stderr and name in r.stderr
        assert (rootfs / "etc/hostname").read_text() == "web1\n"


def test_a_tree_a_chroot_runs_from_is_not_reidentified(tmp_path, env, opts):
    root = make_root(tmp_path / "root")
    busybox_root(root)
    before = tree_state(root)
    p = subprocess.Popen(["chroot", str(root), "/bin/sleep", "600"])
    try:
        for cmd in (["migrate", "reidentify", root, "--hostname", "web1"],
                    ["imgbuild", "clone", root, tmp_path / "copy", "--ip", "10.0.3.2=10.0.3.9"]):
            r = subprocess.run([str(BIN / cmd[0]), *map(str, cmd[1:]), *opts], capture_output=True, text=True,
                               env=env, cwd=REPO)
            refused(r, root, rf"process {p.pid} \(sleep\) runs with it as its root directory")
        assert not (tmp_path / "copy").exists()
        assert tree_state(root) == before and no_inventory_written(tmp_path)
    finally:
        p.kill()
        p.wait()
    r = migrate("reidentify", root, "--hostname", "web1", *opts, env=env)
    assert r.returncode == 0, r.stderr


def test_an_openvz_container_whose_root_is_mounted_is_not_reidentified(tmp_path, env, opts):
    """vzctl mounts VE_PRIVATE on VE_ROOT while the container runs (simfs: a bind mount, as here)."""
    private, ve_root = tmp_path / "private" / "101", tmp_path / "root" / "101"
    make_root(private)
    ve_root.mkdir(parents=True)
    (tmp_path / "vz").mkdir()
    (tmp_path / "vz" / "101.conf").write_text(f'VE_ROOT="{tmp_path}/root/$VEID"\n'
                                             f'VE_PRIVATE="{tmp_path}/private/$VEID"\n'
                                             'HOSTNAME="vm0"\nIP_ADDRESS="10.0.3.2"\n')
    before = tree_state(private)
    _run("mount", "--bind", private, ve_root)
    try:
        r = migrate("reidentify", "vz:101", "--hostname", "web1", *opts, env=env)
        refused(r, private, rf"OpenVZ container 101 is mounted at {re.escape(str(ve_root))}")
        assert tree_state(private) == before and no_inventory_written(tmp_path)
    finally:
        subprocess.run(["umount", str(ve_root)], capture_output=True)
    r = migrate("reidentify", "vz:101", "--hostname", "web1", *opts, env=env)
    assert r.returncode == 0, r.stderr

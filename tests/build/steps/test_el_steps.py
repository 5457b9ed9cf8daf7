"""recipes/centos6.yml's steps on a tree shaped like a CentOS 6 root: basefiles, network (`rhel` writer) and the
upstart-lxc init shim, compared byte for byte with tests/data/centos6/*; its LXC configs (modern, legacy) and the
legacy fstab as the lxc target writes them; the shipped CentOS recipes validate offline."""
from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

import pytest

from builder.build import bootstrap, recipe
from builder.build.context import Context
from builder.build.families import FAMILIES, family_of
from builder.build.steps import basefiles, init, network
from builder.build.targets import lxc
from builder.core.errors import InputError
from builder.core.rootfs import RootFS
from tests.conftest import REPO, imgbuild
from tests.support import TEST_DATA

GOLDEN = TEST_DATA / "centos6"
RECIPES = REPO / "recipes"

# What a CentOS 6 root holds that the steps read or edit (texts as EL6's packages ship them, trimmed).
PAM_LOGIN = """\
#%PAM-1.0
auth [user_unknown=ignore success=ok ignore=ignore default=bad] pam_securetty.so
auth       include      system-auth
account    required     pam_nologin.so
account    include      system-auth
password   include      system-auth
# pam_selinux.so close should be the first session rule
session    required     pam_selinux.so close
session    required     pam_loginuid.so
session    optional     pam_console.so
# pam_selinux.so open should only be followed by sessions to be executed in the user context
session    required     pam_selinux.so open
session    required     pam_namespace.so
session    optional     pam_keyinit.so force revoke
session    include      system-auth
-session   optional     pam_ck_connector.so
"""
PAM_SSHD = """\
#%PAM-1.0
auth	   required	pam_sepermit.so
auth       include      password-auth
account    required     pam_nologin.so
account    include      password-auth
password   include      password-auth
# pam_selinux.so close should be the first session rule
session    required     pam_selinux.so close
session    required     pam_loginuid.so
# pam_selinux.so open should only be followed by sessions to be executed in the user context
session    required     pam_selinux.so open env_params
session    optional     pam_keyinit.so force revoke
session    include      password-auth
"""
SELINUX_CONFIG = """\

# This file controls the state of SELinux on the system.
# SELINUX= can take one of these three values:
#     enforcing - SELinux security policy is enforced.
#     permissive - SELinux prints warnings instead of enforcing.
#     disabled - No SELinux policy is loaded.
SELINUX=enforcing
# SELINUXTYPE= can take one of these two values:
#     targeted - Targeted processes are protected,
#     mls - Multi Level Security protection.
SELINUXTYPE=targeted
"""
SYSCONFIG_INIT = """\
# color => new RH6.0 bootup
# verbose => old-style bootup
# anything else => new style bootup without ANSI colors or positioning
BOOTUP=color
# column to start "[  OK  ]" label in
RES_COL=60
# terminal sequence to move to that column. You could change this
# to something like "tput hpa ${RES_COL}" if your terminal supports it
MOVE_TO_COL="echo -en \\\\033[${RES_COL}G"
# Set to anything other than 'no' to allow hotkey interactive startup...
PROMPT=yes
# Set to 'yes' to allow probing for devices with swap signatures
AUTOSWAP=no
# What ttys should gettys be started on?
ACTIVE_CONSOLES=/dev/tty[1-6]
# Set to '/sbin/sulogin' to prompt for password on single-user mode
# Set to '/sbin/sushell' otherwise
SINGLE=/sbin/sushell
"""
RC_SYSINIT = """\
#!/bin/bash
#
# /etc/rc.d/rc.sysinit - run once at boot time
#
# Taken in part from Miquel van Smoorenburg's bcheckrc.
#

HOSTNAME=$(/bin/hostname)

set -m

if [ -f /etc/sysconfig/network ]; then
    . /etc/sysconfig/network
fi

# Start up swapping.
update_boot_stage RCswap
action $"Enabling /etc/fstab swaps: " swapon -a -e

if [ "$HOSTTYPE" != "s390" -a "$HOSTTYPE" != "s390x" ]; then
  last=0
fi

/sbin/start_udev

# Load other user-defined modules
for file in /etc/sysconfig/modules/*.modules ; do
  [ -x $file ] && $file
done
"""
SKEL = {".bashrc": "# .bashrc\n\n# Source global definitions\nif [ -f /etc/bashrc ]; then\n\t. /etc/bashrc\nfi\n",
        ".bash_profile": "# .bash_profile\n\nif [ -f ~/.bashrc ]; then\n\t. ~/.bashrc\nfi\n\nPATH=$PATH:$HOME/bin\n"
                         "export PATH\n",
        ".bash_logout": "# ~/.bash_logout\n"}

# golden file -> path in the root
ROOT_FILES = {"ifcfg-eth0": "/etc/sysconfig/network-scripts/ifcfg-eth0", "network": "/etc/sysconfig/network",
              "lxc-sysinit.conf": "/etc/init/lxc-sysinit.conf",
              "power-status-changed.conf": "/etc/init/power-status-changed.conf", "fstab": "/etc/fstab"}
LXC_FILES = ("lxc.conf", "lxc.legacy.conf", "lxc.fstab")


def centos6_tree(root: Path) -> None:
    def put(path: str, text: str, mode: int = 0o644) -> None:
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    put("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    put("/etc/group", "root:x:0:\ntty:x:5:\n")
    put("/etc/shadow", "root:*:19000:0:99999:7:::\n", 0)
    put("/sbin/initctl", "\x7fELF upstart's initctl\n", 0o755)
    put("/etc/pam.d/login", PAM_LOGIN)
    put("/etc/pam.d/sshd", PAM_SSHD)
    put("/etc/selinux/config", SELINUX_CONFIG)
    put("/etc/sysconfig/init", SYSCONFIG_INIT)
    put("/etc/rc.d/rc.sysinit", RC_SYSINIT, 0o755)
    put("/etc/fstab", "")                      # the setup package's, empty
    put("/etc/resolv.conf", "nameserver 192.0.2.1\n")   # the build host's, must not ship
    for name, text in SKEL.items():
        put(f"/etc/skel/{name}", text)


@pytest.fixture
def centos6(tmp_path) -> Context:
    """recipes/centos6.yml's steps run on a CentOS 6 shaped tree."""
    loaded = recipe.load(RECIPES / "centos6.yml")
    r = loaded.recipe
    root = tmp_path / "root"
    centos6_tree(root)
    (tmp_path / "stage").mkdir()
    ctx = Context(recipe=r, source=loaded.path, root=RootFS(root), work=tmp_path, stage=tmp_path / "stage",
                  epoch=1_700_000_000, family=family_of(r.distro))
    basefiles.run(ctx)
    network.run(ctx)
    init.run(ctx, r.init)
    return ctx


def _lxc_opts(r):
    """The recipe's LXC options with both cgroup versions' device rules: `cgroup: auto` renders what the build
    host uses, which a golden file cannot follow (test_lxc_auto_cgroup_is_the_host_part_of_the_golden checks it)."""
    return dataclasses.replace(r.targets.lxc, cgroup="both")


def _produced(ctx: Context) -> dict[str, bytes]:
    made = lxc.produce(ctx, _lxc_opts(ctx.recipe))
    assert {k: p.name for k, p in made.items()} == {"lxc-config": "lxc.conf", "lxc-legacy-config": "lxc.legacy.conf",
                                                    "lxc-fstab": "lxc.fstab"}
    return {p.name: p.read_bytes() for p in made.values()}


@pytest.mark.root
@pytest.mark.parametrize("golden", list(ROOT_FILES))
def test_root_files_match_golden(centos6, golden):
    got = centos6.root.read_bytes(ROOT_FILES[golden])
    assert got is not None, f"{ROOT_FILES[golden]} was not written"
    assert got == (GOLDEN / golden).read_bytes(), f"{ROOT_FILES[golden]} differs from {GOLDEN / golden}"
    st = centos6.root.resolve(ROOT_FILES[golden]).stat()
    assert stat.S_IMODE(st.st_mode) == 0o644 and (st.st_uid, st.st_gid) == (0, 0)


@pytest.mark.root
@pytest.mark.parametrize("golden", LXC_FILES)
def test_lxc_files_match_golden(centos6, golden):
    assert _produced(centos6)[golden] == (GOLDEN / golden).read_bytes(), f"{golden} differs from {GOLDEN / golden}"


def test_lxc_render_matches_what_produce_writes():
    r = recipe.load(RECIPES / "centos6.yml").recipe
    opts = _lxc_opts(r)
    assert lxc.render(r, opts, version="modern") == (GOLDEN / "lxc.conf").read_text()
    assert lxc.render(r, opts, version="legacy") == (GOLDEN / "lxc.legacy.conf").read_text()
    # legacy configs always carry cgroup v1 rules, whatever the option says
    assert lxc.render(r, r.targets.lxc, version="legacy") == (GOLDEN / "lxc.legacy.conf").read_text()


def _drop_block(text: str, version: str) -> str:
    """The config without its `# devices (cgroup vN)` block (blocks are separated by blank lines)."""
    blocks = text.rstrip("\n").split("\n\n")
    kept = [b for b in blocks if not b.startswith(f"# devices (cgroup {version})")]
    assert len(kept) == len(blocks) - 1
    return "\n\n".join(kept) + "\n"


def test_lxc_auto_cgroup_is_the_host_part_of_the_golden():
    r = recipe.load(RECIPES / "centos6.yml").recipe
    assert r.targets.lxc.cgroup == "auto"
    host = lxc.host_cgroup()
    other = "v2" if host == "v1" else "v1"
    assert lxc.render(r, r.targets.lxc, version="modern") == _drop_block((GOLDEN / "lxc.conf").read_text(), other)


def _keys(text: str) -> list[str]:
    return [line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")]


def test_lxc_configs_use_only_their_versions_keys():
    modern, legacy = _keys((GOLDEN / "lxc.conf").read_text()), _keys((GOLDEN / "lxc.legacy.conf").read_text())
    # keys LXC 2.1 renamed: the old ones are refused by LXC 3.0+, the new ones unknown to LXC 0.7-2.0
    renamed = {"lxc.utsname": "lxc.uts.name", "lxc.rootfs": "lxc.rootfs.path", "lxc.tty": "lxc.tty.max",
               "lxc.pts": "lxc.pty.max", "lxc.mount": "lxc.mount.fstab"}
    assert not set(modern) & set(renamed) and not any(k.startswith("lxc.network.") for k in modern)
    assert not set(legacy) & set(renamed.values())
    assert not any(k.startswith(("lxc.net.", "lxc.cgroup2.", "lxc.mount.auto", "lxc.autodev")) for k in legacy)
    assert {"lxc.uts.name", "lxc.rootfs.path", "lxc.tty.max", "lxc.pty.max", "lxc.net.0.type",
            "lxc.net.0.hwaddr"} <= set(modern)
    assert {"lxc.utsname", "lxc.rootfs", "lxc.mount", "lxc.tty", "lxc.pts", "lxc.network.type",
            "lxc.network.hwaddr"} <= set(legacy)
    # the legacy fstab mounts /proc and /sys at the container's rootfs (LXC 0.7 has no lxc.mount.auto)
    fstab = (GOLDEN / "lxc.fstab").read_text().splitlines()
    assert [line.split()[:3] for line in fstab] == [["proc", "/var/lib/lxc/centos6/rootfs/proc", "proc"],
                                                    ["sysfs", "/var/lib/lxc/centos6/rootfs/sys", "sysfs"]]
    assert "lxc.mount = /var/lib/lxc/centos6/fstab" in (GOLDEN / "lxc.legacy.conf").read_text()


@pytest.mark.root
def test_ifcfg_and_network_are_what_initscripts_read(centos6):
    """The ifcfg file is shell assignments without quoting problems; the values are the recipe's."""
    text = centos6.root.read_text("/etc/sysconfig/network-scripts/ifcfg-eth0")
    kv = dict(line.split("=", 1) for line in text.splitlines())
    assert all(re.fullmatch(r"[A-Z0-9_]+", k) and re.fullmatch(r"[A-Za-z0-9.:/_-]*", v) for k, v in kv.items())
    assert kv == {"DEVICE": "eth0", "TYPE": "Ethernet", "ONBOOT": "yes", "NM_CONTROLLED": "no",
                  "HWADDR": "00:16:3E:00:03:02", "BOOTPROTO": "none", "IPADDR": "10.0.3.2",
                  "NETMASK": "255.255.255.0", "PREFIX": "24", "GATEWAY": "10.0.3.1"}
    net = dict(line.split("=", 1) for line in centos6.root.read_text("/etc/sysconfig/network").splitlines())
    assert net == {"NETWORKING": "yes", "HOSTNAME": "vm0"}


def _shm_entries(fstab: str) -> list[list[str]]:
    """Active (not commented) fstab entries whose mount point is /dev/shm."""
    rows = [line.split() for line in fstab.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [r for r in rows if len(r) >= 4 and r[1] == "/dev/shm"]


@pytest.mark.root
def test_container_fixes(centos6):
    root = centos6.root
    # LXC mounts no /dev/shm (legacy: the rootfs's /dev; modern: autodev makes only /dev/pts), and start_udev,
    # which would, is switched off: the guest's own fstab must mount it
    shm = _shm_entries(root.read_text("/etc/fstab"))
    assert len(shm) == 1 and shm[0][2] == "tmpfs", root.read_text("/etc/fstab")
    selinux = root.read_text("/etc/selinux/config")
    assert re.findall(r"(?m)^SELINUX=.*$", selinux) == ["SELINUX=disabled"]
    assert selinux == SELINUX_CONFIG.replace("SELINUX=enforcing", "SELINUX=disabled")   # nothing else touched
    for pam, original in (("/etc/pam.d/login", PAM_LOGIN), ("/etc/pam.d/sshd", PAM_SSHD)):
        text = root.read_text(pam)
        assert not re.search(r"(?m)^\s*session\s+required\s+pam_loginuid\.so", text), pam
        assert "#session    required     pam_loginuid.so" in text, pam
        assert [x for x in text.splitlines() if "pam_loginuid" not in x] == \
               [x for x in original.splitlines() if "pam_loginuid" not in x], pam
    sysinit = root.read_text("/etc/rc.d/rc.sysinit")
    assert not re.search(r"(?m)^\s*/sbin/start_udev", sysinit)
    assert len(sysinit.splitlines()) == len(RC_SYSINIT.splitlines())
    assert stat.S_IMODE(root.resolve("/etc/rc.d/rc.sysinit").stat().st_mode) == 0o755   # still executable
    r = os.system(f"bash -n {root.resolve('/etc/rc.d/rc.sysinit')}")                   # still valid shell
    assert r == 0
    cfg = root.read_text("/etc/sysconfig/init")
    assert re.findall(r"(?m)^ACTIVE_CONSOLES=.*$", cfg) == ["ACTIVE_CONSOLES="]
    assert cfg == SYSCONFIG_INIT.replace("ACTIVE_CONSOLES=/dev/tty[1-6]", "ACTIVE_CONSOLES=")
    assert stat.S_IMODE(root.resolve("/etc/selinux/config").stat().st_mode) == 0o644


@pytest.mark.root
def test_basefiles_on_centos(centos6):
    root = centos6.root
    assert root.read_text("/etc/hostname") == "vm0\n"
    assert "10.0.3.2\tvm0" in root.read_text("/etc/hosts")
    assert root.read_text("/etc/resolv.conf") == "# written by imgbuild\nnameserver 10.0.3.1\n"
    for name, text in SKEL.items():                       # /etc/skel copied into /root, as the EL installer does
        assert root.read_text(f"/root/{name}") == text, name
        st = root.resolve(f"/root/{name}").stat()
        assert stat.S_IMODE(st.st_mode) == 0o644 and (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(root.resolve("/root").stat().st_mode) == 0o700


@pytest.mark.root
def test_copy_skel_keeps_what_root_has(tmp_path):
    root = RootFS(tmp_path)
    root.write("/etc/skel/.bashrc", "skel\n")
    root.write("/etc/skel/.config/app.conf", "x=1\n", 0o600)
    root.symlink(".bashrc", "/etc/skel/.kshrc")
    root.mkdir("/root", 0o550)
    root.write("/root/.bashrc", "mine\n")
    basefiles.copy_skel(root)
    assert root.read_text("/root/.bashrc") == "mine\n"
    assert root.read_text("/root/.config/app.conf") == "x=1\n"
    assert stat.S_IMODE(root.resolve("/root/.config/app.conf").stat().st_mode) == 0o600
    assert os.readlink(root.resolve("/root/.kshrc", follow_last=False)) == ".bashrc"
    assert stat.S_IMODE(root.resolve("/root").stat().st_mode) == 0o550


@pytest.mark.root
def test_shim_runs_twice_without_doubling(centos6):
    before = {p: centos6.root.read_bytes(p) for p in ("/etc/fstab", "/etc/pam.d/login", "/etc/rc.d/rc.sysinit",
                                                      "/etc/selinux/config", "/etc/sysconfig/init")}
    init.run(centos6, centos6.recipe.init)
    after = {p: centos6.root.read_bytes(p) for p in before}
    assert after == before


@pytest.mark.root
def test_upstart_lxc_needs_upstart(tmp_path):
    loaded = recipe.load(RECIPES / "centos6.yml")
    root = tmp_path / "root"
    centos6_tree(root)
    (root / "sbin/initctl").unlink()
    ctx = Context(recipe=loaded.recipe, source=loaded.path, root=RootFS(root), work=tmp_path,
                  stage=tmp_path / "stage", epoch=0, family=family_of("centos"))
    with pytest.raises(InputError, match="initctl"):
        init.run(ctx, "upstart-lxc")
    assert not (root / "etc/init/lxc-sysinit.conf").exists()


def test_upstart_jobs_are_well_formed():
    """Upstart stanzas: `start on EVENT`, `env`, one `exec`, or `pre-start script` ... `end script`."""
    sysinit = (GOLDEN / "lxc-sysinit.conf").read_text()
    stanzas = [line for line in sysinit.splitlines() if line and not line.startswith((" ", "\t", "#"))]
    assert stanzas == ["start on startup", "env container", "pre-start script", "end script"]
    body = sysinit.split("pre-start script\n", 1)[1].split("end script", 1)[0]
    assert "initctl start tty TTY=console" in body and "telinit 3" in body
    power = (GOLDEN / "power-status-changed.conf").read_text()
    stanzas = [line for line in power.splitlines() if line and not line.startswith("#")]
    assert stanzas == ["start on power-status-changed", 'exec /sbin/shutdown -h now "SIGPWR received"']


# ------------------------------------------------------------------ the shipped CentOS recipes

EXPECTED = {"centos5": ("5", "sysvinit-container", "legacy", "https://vault.centos.org/5.11"),
            "centos6": ("6", "upstart-lxc", "both", "https://vault.centos.org/6.10"),
            "centos7": ("7", "systemd-container", "both", "https://vault.centos.org/7.9.2009")}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_recipe_validates_offline(name):
    path = RECIPES / f"{name}.yml"
    r = imgbuild("validate", "--offline", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{path}: ok"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_recipe_choices(name):
    release, shim, lxc_version, mirror = EXPECTED[name]
    r = recipe.load(RECIPES / f"{name}.yml").recipe
    assert (r.name, r.distro, r.release, r.arch) == (name, "centos", release, "x86_64")
    assert r.init == shim
    assert r.targets.lxc is not None and r.targets.lxc.version == lxc_version
    assert r.targets.tarball is not None
    assert r.bootstrap.mirror == mirror and r.bootstrap.release_package == "centos-release"
    assert set(r.bootstrap.packages) >= {"dhclient", "openssh-server"}
    assert r.network["eth0"].mac is not None and str(r.network["eth0"].address) == "10.0.3.2/24"
    assert shim in init.SHIMS and "rhel" in init.SHIMS[shim].families


def test_centos5_is_left_to_rpm_native():
    """EL5's repodata and packages predate what the host's dnf reads: `method: auto` picks rpm-native."""
    r = recipe.load(RECIPES / "centos5.yml").recipe
    assert r.bootstrap.method == "auto"
    assert bootstrap.choose(r, FAMILIES["rhel"]).name == "rpm-native"

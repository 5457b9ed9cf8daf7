"""The firstboot step: what it writes (a systemd unit, or an rc.local block without systemd), recipe checks, the
rc.local runner run for real twice in a chroot (busybox), and one real LXC container booted twice: the
commands run exactly once."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from builder.build.steps import firstboot
from tests.build.test_recipe import BASE, paths, problems, write
from tests.support.contexts import small_context
from tests.support.lxc import boot, container_cgroups, install_on_bridge, lxc_netns

COUNT = "/root/firstboot-count"
CMDS = [{"run": f"echo run >> {COUNT}"}]


def _systemd_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "lib/systemd").mkdir(parents=True)
    (root / "lib/systemd/systemd").write_text("")
    return root


# ------------------------------------------------------------------ what the step writes


def test_systemd_guest_gets_an_enabled_oneshot_unit(tmp_path):
    _systemd_tree(tmp_path)
    script = tmp_path / "setup.sh"
    script.write_text("echo from script \"$1\"\n")
    ctx = small_context(tmp_path, init="systemd-container",
                        firstboot=[{"run": "echo a >> /root/x"}, {"script": str(script), "args": ["it's; rm -rf /"]}])
    firstboot.run(ctx, ctx.recipe.firstboot)
    root = ctx.root.path
    unit = (root / "etc/systemd/system/imgbuild-firstboot.service").read_text()
    assert "Type=oneshot" in unit and f"ConditionPathExists={firstboot.RUNNER}" in unit
    assert "WantedBy=multi-user.target" in unit
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/imgbuild-firstboot.service") == \
        firstboot.UNIT
    d = root / firstboot.DIR.lstrip("/")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == ["00", "01", "run"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in d.iterdir())
    assert (d / "00").read_text() == "#!/bin/sh\necho a >> /root/x\n"
    assert (d / "01").read_text() == script.read_text()
    run = (d / "run").read_text()
    # the script has no #!: run with /bin/sh; its argument quoted as one word
    assert f"/bin/sh {firstboot.DONE}/01 '" in run and "'it'\"'\"'s; rm -rf /'" in run
    assert f"rm -f {firstboot.WANTS} {firstboot.UNIT}" in run and "rc.local" not in run
    # moved aside before the first entry runs
    assert run.index(f"mv {firstboot.DIR} {firstboot.DONE}") < run.index("--- 00")
    assert not (root / "etc/rc.local").exists()


@pytest.mark.parametrize("existing, expect", [
    (None, "#!/bin/sh\n{block}exit 0\n"),
    ("#!/bin/sh\ntouch /var/lock/subsys/local\n", "#!/bin/sh\ntouch /var/lock/subsys/local\n{block}"),
    ("#!/bin/sh -e\nfoo\nexit 0\n", "#!/bin/sh -e\nfoo\n{block}exit 0\n"),
])
def test_el_guest_without_systemd_gets_an_rc_local_block(tmp_path, existing, expect):
    root = tmp_path / "root"
    (root / "etc/rc.d").mkdir(parents=True)
    if existing is not None:
        (root / "etc/rc.d/rc.local").write_text(existing)
    ctx = small_context(tmp_path, distro="centos", release="6.10", init="upstart-lxc",
                        bootstrap={"mirror": "https://vault.centos.org/6.10"}, firstboot=CMDS)
    firstboot.run(ctx, ctx.recipe.firstboot)
    block = f"{firstboot.BEGIN}\n[ -x {firstboot.RUNNER} ] && {firstboot.RUNNER} || true\n{firstboot.END}\n"
    rc = root / "etc/rc.d/rc.local"
    assert rc.read_text() == expect.format(block=block)
    assert stat.S_IMODE(rc.stat().st_mode) == 0o755
    assert not (root / "etc/systemd/system/imgbuild-firstboot.service").exists()
    run = (root / firstboot.RUNNER.lstrip("/")).read_text()
    assert f"sed -i '/^{firstboot.BEGIN}$/,/^{firstboot.END}$/d' /etc/rc.d/rc.local" in run
    firstboot.run(ctx, ctx.recipe.firstboot)     # again: one block
    assert rc.read_text().count(firstboot.BEGIN) == 1


def test_no_entries_writes_nothing(tmp_path):
    ctx = small_context(tmp_path)
    firstboot.run(ctx, ())
    assert not (ctx.root.path / "var/lib/imgbuild").exists()


def test_a_link_out_of_the_root_is_not_followed(tmp_path):
    _systemd_tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "var").mkdir()
    (root / "var/lib").symlink_to(outside)      # absolute: resolved inside the root, never to the host's
    ctx = small_context(tmp_path, init="systemd-container", firstboot=CMDS)
    firstboot.run(ctx, ctx.recipe.firstboot)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ recipe checks


@pytest.mark.parametrize("text, key", [
    ("firstboot:\n  - {run: a, script: b}\n", "firstboot[0]"),
    ("firstboot:\n  - {run: a, args: [x]}\n", "firstboot[0]"),
    ("firstboot:\n  - {script: missing.sh}\n", "firstboot[0].script"),
    ("firstboot:\n  - {command: a}\n", "firstboot[0].command"),
    ("firstboot: echo hi\n", "firstboot"),
])
def test_bad_firstboot_is_named(tmp_path, text, key):
    assert key in paths(problems(write(tmp_path, BASE + text)))


def test_script_path_is_relative_to_the_recipe(tmp_path):
    from builder.build import recipe
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/s.sh").write_text("true\n")
    loaded = recipe.load(write(tmp_path / "sub", BASE + "firstboot:\n  - {script: s.sh, args: [a]}\n"))
    assert loaded.recipe.firstboot[0].script == str(tmp_path / "sub/s.sh")


# ------------------------------------------------------------------ the rc.local runner, for real


@pytest.mark.root
def test_rc_local_runner_runs_once_across_two_boots(tmp_path):
    """A busybox tree without systemd: rc.local run twice (two boots) in a chroot; the counter says once, the
    block and the runner are gone, the log is 0600."""
    bb = shutil.which("busybox")
    if bb is None or os.geteuid() != 0:
        pytest.skip("needs root and busybox-static")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "root").mkdir()
    (root / "var/log").mkdir(parents=True)
    (root / "dev").mkdir()
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    shutil.copy(bb, root / "bin/busybox")
    for tool in ("sh", "mv", "rm", "sed", "date", "echo", "cat"):
        (root / "bin" / tool).symlink_to("busybox")
    ctx = small_context(tmp_path, init="sysvinit-container", firstboot=CMDS + [{"run": "exit 3"}])
    firstboot.run(ctx, ctx.recipe.firstboot)
    env = {"PATH": "/bin"}
    for _boot in (1, 2):
        r = subprocess.run([shutil.which("chroot"), root, "/bin/sh", "/etc/rc.local"], env=env, capture_output=True,
                           text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (root / COUNT.lstrip("/")).read_text() == "run\n"
    assert firstboot.BEGIN not in (root / "etc/rc.local").read_text()
    assert not (root / "var/lib/imgbuild/firstboot").exists() and not (root / "var/lib/imgbuild/firstboot.running"
                                                                       ).exists()
    log = root / "var/log/imgbuild-firstboot.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "01: exit status 3" in log.read_text() and "done (status 1)" in log.read_text()


# ------------------------------------------------------------------ a real container, two boots


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_firstboot_runs_exactly_once_across_two_lxc_boots(debian12_build: Path, tmp_path):
    """The default recipe's output installed as an LXC container, the firstboot step applied to its tree (as a
    build with `firstboot:` does), booted twice under real lxc-start: the counter has one line, the unit and its
    files are gone, systemd is running with no failed unit both times."""
    name = "fboot"
    assert not container_cgroups(name), f"cgroups of a container {name} exist before the test"
    with lxc_netns(tmp_path / "sandbox", bridge_cidr="10.0.3.1/24") as sb:
        sb.adopt(name)
        rootfs = install_on_bridge(sb, debian12_build, name)
        ctx = small_context(tmp_path / "ctx", init="systemd-container",
                            firstboot=[{"run": f"echo \"boot $(cat /proc/sys/kernel/random/boot_id)\" >> {COUNT}"}])
        from builder.core.rootfs import RootFS
        ctx.root = RootFS(rootfs)
        firstboot.run(ctx, ctx.recipe.firstboot)
        boot(sb, name)
        first = sb.attach(name, "cat", COUNT)
        assert first.returncode == 0 and len(first.stdout.splitlines()) == 1, first.stdout + first.stderr
        r = sb.run_ns("lxc-stop", "-P", sb.lxcpath, "-n", name, "-t", "30", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        boot(sb, name)
        second = sb.attach(name, "cat", COUNT)
        assert second.stdout == first.stdout, (first.stdout, second.stdout)   # nothing ran at the second boot
        assert sb.attach(name, "systemctl", "is-enabled", "imgbuild-firstboot.service").stdout.strip() != "enabled"
        assert not (rootfs / "etc/systemd/system/imgbuild-firstboot.service").exists()
        assert not (rootfs / "var/lib/imgbuild/firstboot").exists()
        log = (rootfs / "var/log/imgbuild-firstboot.log").read_text()
        assert log.count("done (status 0)") == 1, log


def test_a_changed_script_is_an_input_of_the_up_to_date_check(tmp_path):
    from builder.build import recipe, uptodate
    (tmp_path / "s.sh").write_text("true\n")
    r = recipe.load(write(tmp_path, BASE + "firstboot:\n  - {script: s.sh}\n  - {run: 'true'}\n")).recipe
    assert uptodate.local_files(r) == [str(tmp_path / "s.sh")]

from __future__ import annotations

import os

from builder.build.steps import cleanup


def test_cleanup(ctx_for):
    ctx = ctx_for()
    r = ctx.root.path
    for d in ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial", "var/log/apt", "etc/ssh", "tmp",
              "usr/sbin", "usr/bin", "lib/systemd", "var/lib/dbus"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "var/cache/apt/archives/bash_5.2_amd64.deb").write_text("deb")
    (r / "var/lib/apt/lists/x_Packages").write_text("p")
    (r / "var/lib/apt/lists/lock").write_text("")
    (r / "var/log/apt/history.log").write_text("h")
    (r / "var/log/dpkg.log").write_text("d")
    (r / "var/log/wtmp").write_text("w")
    (r / "var/lib/dbus/machine-id").write_text("abc\n")
    (r / "etc/machine-id").write_text("0123456789abcdef\n")
    (r / "etc/ssh/ssh_host_ed25519_key").write_text("PRIVATE")
    (r / "etc/ssh/ssh_host_ed25519_key.pub").write_text("pub")
    (r / "etc/ssh/sshd_config").write_text("cfg")
    (r / "tmp/junk").write_text("j")
    (r / "usr/sbin/sshd").write_text("")
    (r / "usr/bin/ssh-keygen").write_text("")
    (r / "lib/systemd/systemd").write_text("")
    cleanup.run(ctx)
    assert os.listdir(r / "var/cache/apt/archives") == ["partial"]
    assert sorted(os.listdir(r / "var/lib/apt/lists")) == ["lock", "partial"]
    assert os.listdir(r / "var/log/apt") == [] and not (r / "var/log/dpkg.log").exists()
    assert (r / "var/log/wtmp").read_text() == ""
    assert (r / "etc/machine-id").read_text() == "" and not (r / "var/lib/dbus/machine-id").exists()
    assert sorted(os.listdir(r / "etc/ssh")) == ["sshd_config"]
    assert os.listdir(r / "tmp") == []
    unit = r / "etc/systemd/system/imgbuild-ssh-keygen.service"
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit.read_text()
    assert os.path.islink(r / "etc/systemd/system/multi-user.target.wants/imgbuild-ssh-keygen.service")
    assert not (r / "etc/init.d/imgbuild-ssh-keygen").exists()


def test_sysvinit_gets_an_init_script(ctx_for):
    ctx = ctx_for()
    r = ctx.root.path
    for d in ("usr/sbin", "usr/bin", "etc/init.d", "etc/ssh"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "usr/sbin/sshd").write_text("")
    (r / "usr/bin/ssh-keygen").write_text("")
    (r / "etc/init.d/rc").write_text("")
    cleanup.run(ctx)
    assert "ssh-keygen -A" in (r / "etc/init.d/imgbuild-ssh-keygen").read_text()
    assert os.readlink(r / "etc/rc2.d/S01imgbuild-ssh-keygen") == "../init.d/imgbuild-ssh-keygen"

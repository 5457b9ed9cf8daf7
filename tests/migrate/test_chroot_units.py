"""chroot deploy: the parts that need no remote host (rc.local blocks, listener parsing, the scripts)."""
from __future__ import annotations

import subprocess

from builder import chroot_deploy as cd

RC_DEBIAN = """#!/bin/sh -e
#
# rc.local
#
# This script is executed at the end of each multiuser runlevel.
/usr/local/bin/firewall start

exit 0
"""


def test_rc_enable_inserts_before_exit_and_disable_restores_every_byte():
    on = cd.rc_enable(RC_DEBIAN, "/srv/os/usr/local/sbin/imgbuild-chroot")
    lines = on.splitlines()
    assert lines[-1] == "exit 0"
    assert "/srv/os/usr/local/sbin/imgbuild-chroot start" in lines
    assert lines.index("/usr/local/bin/firewall start") < lines.index("/srv/os/usr/local/sbin/imgbuild-chroot start")
    assert cd.rc_enable(on, "/srv/os/usr/local/sbin/imgbuild-chroot") == on        # idempotent
    assert cd.rc_disable(on) == RC_DEBIAN


def test_rc_enable_without_exit_appends_and_a_missing_file_is_created():
    el = "#!/bin/sh\ntouch /var/lock/subsys/local\n"
    on = cd.rc_enable(el, "/x/imgbuild-chroot")
    assert on.splitlines()[1] == "touch /var/lock/subsys/local" and on.splitlines()[-1].startswith("# END")
    assert cd.rc_disable(on) == el
    new = cd.rc_enable(None, "/x/imgbuild-chroot")
    assert new.startswith("#!/bin/sh") and new.rstrip().endswith("exit 0")
    assert subprocess.run(["sh", "-n"], input=new, text=True).returncode == 0


def test_listeners_from_ss_netstat_and_proc():
    ls = cd._listeners([
        ("ss", 'LISTEN 0      128          0.0.0.0:2222      0.0.0.0:*    users:(("sshd",pid=1,fd=3))'),
        ("ss", 'LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=77,fd=4))'),
        ("netstat", "tcp        0      0 0.0.0.0:3843            0.0.0.0:*               LISTEN      812/sshd"),
        ("netstat", "Proto Recv-Q Send-Q Local Address           Foreign Address         State       PID/Program"),
        ("proc", "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234"),
        ("proc", "   1: 0100007F:0277 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 1235"),
    ])
    assert [(x.port, x.pid) for x in ls] == [(2222, 1), (22, 77), (3843, 812), (22, None)]
    assert ls[0].process == "sshd (pid 1)" and ls[3].process == "unknown process"


def test_conflicts_ignore_the_chroots_own_processes():
    st = cd.HostState(ssh_port=22, chroot_pids={77},
                      listeners=[cd.Listener(22, "[::]", "sshd (pid 77)", 77),
                                 cd.Listener(2222, "0.0.0.0", "sshd (pid 1)", 1)])
    assert cd.conflicts(st, [22]) == []                      # already running: its own sshd
    st.chroot_pids = set()
    assert [c.port for c in cd.conflicts(st, [22, 2222])] == [22, 2222]


def test_scripts_are_valid_sh_with_the_root_filled_in():
    text = cd.boot_script("/srv/os", ["ssh", "cron"])
    assert "ROOT='/srv/os'" in text and "SERVICES='ssh cron'" in text and "@" not in text.split("\n", 3)[2]
    for script in (text, cd.escape_script()):
        assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_unit_names_and_text():
    assert cd.unit_name("/usr/local/gcd") == "imgbuild-chroot-usr-local-gcd.service"
    t = cd.unit_text("/srv/os")
    assert "ExecStart=/srv/os/usr/local/sbin/imgbuild-chroot start" in t and "WantedBy=multi-user.target" in t

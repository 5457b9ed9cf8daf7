"""chroot deploy: the parts that need no remote host (rc.local blocks, listener parsing, the scripts)."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.migrate import chroot as cd

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
    assert "ROOT=/srv/os\n" in text and "SERVICES='ssh cron'" in text and "@" not in text
    for script in (text, cd.escape_script()):
        assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_unit_names_and_text():
    assert cd.unit_name("/usr/local/gcd") == "imgbuild-chroot-usr-local-gcd.service"
    t = cd.unit_text("/srv/os")
    assert 'ExecStart="/srv/os/usr/local/sbin/imgbuild-chroot" start' in t and "WantedBy=multi-user.target" in t


# ------------------------------------------------------------------ values in scripts, answers of the host

HOSTILE = ["/srv/a b", "/srv/x$(touch {m})", "/srv/x`touch {m}`", "/srv/x';touch {m};'", '/srv/x";touch {m};"',
           "/srv/x\ntouch {m}\n", "/srv/*", "/srv/x|touch {m}"]


@pytest.mark.parametrize("value", HOSTILE)
def test_boot_script_values_arrive_literally(tmp_path, value):
    """Whatever the root and services are, the boot script's variables hold exactly them, and nothing runs."""
    marker = tmp_path / "PWN"
    value = value.format(m=marker)
    script = cd.boot_script(value, ["ssh", value])
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    head = script.split("\nPATH=", 1)[0]             # the assignments, without running the rest
    r = subprocess.run(["sh", "-c", head + '\nprintf "%s\\0%s\\0%s" "$ROOT" "$BINDS" "$SERVICES"'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.split("\0") == [value, " ".join(cd.BINDS), f"ssh {value}"]
    assert not marker.exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_rc_local_block_runs_the_boot_script_by_its_literal_path(tmp_path, value):
    marker = tmp_path / "PWN"
    boot = value.format(m=marker) + cd.BOOT
    text = cd.rc_enable("#!/bin/sh -e\n\nexit 0\n", boot)
    r = subprocess.run(["sh", "-x", "-c", text.replace(" start\n", ' start; echo "ran"\n')], capture_output=True,
                       text=True, cwd=tmp_path)
    assert not marker.exists()
    assert cd.rc_disable(text) == "#!/bin/sh -e\n\nexit 0\n"
    assert r.returncode != 0 or "ran" in r.stdout          # the file named `boot` was looked for, nothing else


def test_unit_names_escape_what_systemd_reads_specially():
    assert cd.unit_name("/srv/a@b") == "imgbuild-chroot-srv-a\\x40b.service"      # @ would make it an instance
    assert cd.unit_name("/srv/a,b=c+d") == "imgbuild-chroot-srv-a\\x2cb\\x3dc\\x2bd.service"
    assert cd.unit_name("/") == "imgbuild-chroot-root.service"
    text = cd.unit_text("/srv/50%off")
    assert 'ExecStart="/srv/50%%off/usr/local/sbin/imgbuild-chroot" start' in text
    with pytest.raises(InputError):
        cd.unit_text("/srv/x\nExecStartPre=/bin/evil")


@pytest.mark.parametrize("svc", ["ssh;id", "a b", "$(x)", "ssh\n", "", "x" * 65, "`x`"])
def test_service_and_hostname_values_are_checked_before_connecting(svc):
    with pytest.raises(InputError):
        cd.check_install(cd.InstallRequest("/srv/os", services=(svc,)))
    with pytest.raises(InputError):
        cd.check_install(cd.InstallRequest("/srv/os", hostname=svc or "-x"))
    cd.check_install(cd.InstallRequest("/srv/os", services=("ssh", "cron"), hostname="chiyoda.example.jp"))


def _tree_script(root, rel: str, text: str):
    return subprocess.run(["sh", "-c", cd._tree_file_script(str(root), rel, 0o755)], input=text, capture_output=True,
                          text=True)


def test_writes_into_the_tree_never_follow_its_symlinks(tmp_path):
    tree, host = tmp_path / "tree", tmp_path / "host"
    (host / "sbin").mkdir(parents=True)
    (tree / "usr").mkdir(parents=True)
    r = _tree_script(tree, cd.BOOT, "#!/bin/sh\n")
    assert r.returncode == 0, r.stderr
    assert (tree / "usr/local/sbin/imgbuild-chroot").read_text() == "#!/bin/sh\n"
    assert (tree / "usr/local/sbin/imgbuild-chroot").stat().st_mode & 0o777 == 0o755
    for link in ("usr/local/sbin", "usr/local", "usr"):             # each level an absolute link out of the tree
        fresh = tmp_path / f"t-{link.replace('/', '-')}"
        parent = fresh / link
        parent.parent.mkdir(parents=True, exist_ok=True)
        parent.symlink_to(host / "sbin")
        r = _tree_script(fresh, cd.BOOT, "#!/bin/sh\necho pwned\n")
        assert r.returncode == 3 and "is a symlink" in r.stderr, r.stderr
        assert list((host / "sbin").iterdir()) == []
    # the file itself a link: replaced by rename, the link's target untouched
    (host / "victim").write_text("host file\n")
    (tree / "usr/local/sbin/imgbuild-chroot").unlink()
    (tree / "usr/local/sbin/imgbuild-chroot").symlink_to(host / "victim")
    assert _tree_script(tree, cd.BOOT, "new\n").returncode == 0
    assert (host / "victim").read_text() == "host file\n"
    assert (tree / "usr/local/sbin/imgbuild-chroot").read_text() == "new\n"


STATE_LINES = st.one_of(
    st.text(max_size=80),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["tree", "real", "installed", "systemd", "rclocal", "keygen",
                                                          "service", "sshport", "cpid", "ss", "netstat", "proc"]),
              st.one_of(st.text(max_size=80), st.from_regex(r"[0-9]{1,12}", fullmatch=True),
                        st.just('LISTEN 0 128 0.0.0.0:99999 0.0.0.0:* users:(("x",pid=1,fd=3))'),
                        st.just("tcp 0 0 0.0.0.0:²² 0.0.0.0:* LISTEN 1/x"),
                        st.just("0: 00000000:FFFFF 00000000:0000 0A"))))


@settings(max_examples=200, deadline=None)
@given(st.lists(STATE_LINES, max_size=30))
def test_any_host_answer_parses_into_plain_values(lines):
    s = cd.parse_state("\n".join(lines))
    assert 0 < s.ssh_port < 65536 and all(0 < ln.port < 65536 for ln in s.listeners)
    assert all(cd._SERVICE_RE.fullmatch(x) for x in s.services)
    assert all("\x1b" not in ln.process and "\n" not in ln.process for ln in s.listeners)


def test_a_host_answering_with_too_much_is_cut_off():
    s = cd.parse_state("\n".join(f"cpid={i}" for i in range(cd.MAX_LINES * 2)))
    assert len(s.chroot_pids) == cd.MAX_LINES

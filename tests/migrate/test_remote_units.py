"""builder.migrate.remote without a network: host names and ssh options checked, the scripts it sends run by a local sh
(so their quoting is exercised by a real shell), and a host's answers shown without control characters."""
from __future__ import annotations

import pytest

from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.migrate import remote as rm

PAYLOADS = ["x$(touch {m})y", "x`touch {m}`y", "x';touch {m};'y", 'x";touch {m};"y', "x* y|touch {m};"]


class LocalRemote(rm.Remote):
    """Runs the scripts Remote sends with this machine's sh, as the far side would."""

    def sh(self, script, *, input=None, check=True, what="a command", max_output=rm.MAX_ANSWER):
        r = runner.run(["sh", "-c", script], capture=True, check=False, input=input,
                       max_output=max_output)
        if check and r.returncode != 0:
            raise BuilderError(f"{what} failed: {r.tail}")
        return r


@pytest.mark.parametrize("host", ["vps1", "root@vps1", "web-2.example.org", "10.0.0.2", "::1", "[2001:db8::1]",
                                  "user@192.0.2.1", "my_alias"])
def test_host_names_accepted(host):
    assert rm.Remote(host).host == host


@pytest.mark.parametrize("host", ["", "-oProxyCommand=x", "a b", "h$(x)", "h`x`", "h;x", "h'x", 'h"x', "h\nx", "h*",
                                  "h|x", "h&x", "a@b@c"])
def test_host_names_refused(host):
    with pytest.raises(InputError):
        rm.Remote(host)


@pytest.mark.parametrize("opt", ["x$(touch /tmp/x)", "ConnectTimeout=5\nProxyCommand=x", "=x", "Foo=1", "A B=1",
                                 "ConnectTimeout=abc"])
def test_ssh_options_that_ssh_or_we_refuse_are_bad_input(opt):
    with pytest.raises(InputError):
        o = rm.SshOptions(options=(opt,))
        o.check()


def test_a_good_ssh_option_passes():
    rm.SshOptions(options=("ConnectTimeout=5", "ServerAliveInterval=10")).check()


@pytest.mark.parametrize("p", PAYLOADS + ["a\nb"])
def test_remote_paths(tmp_path, p):
    p = "/srv/" + p.format(m=tmp_path / "PWN")
    if "\n" in p:
        with pytest.raises(InputError):
            rm.remote_path(p, "--x")
    else:
        assert rm.remote_path(p, "--x") == p
    for bad in ("srv/x", "/srv/../etc", "/srv/\x1b[2Jx", "/srv/\x00"):
        with pytest.raises(InputError):
            rm.remote_path(bad, "--x")


def test_shown_never_passes_terminal_control():
    assert rm.shown("a\x1b]0;title\x07b\nc") == "a\\x1b]0;title\\x07b\\x0ac"
    assert len(rm.shown("x" * 10000)) < 400


@pytest.mark.parametrize("payload", PAYLOADS)
def test_scripts_take_paths_literally(tmp_path, payload):
    marker = tmp_path / "PWN"
    d = tmp_path / payload.format(m=marker)
    r = LocalRemote("local")
    r.write_text(str(d / "sub" / "f.txt"), "text\n", 0o600)
    assert (d / "sub" / "f.txt").read_text() == "text\n"
    assert r.read_text(str(d / "sub" / "f.txt")) == "text\n"
    assert r.read_text(str(d / "nosuch")) is None
    (d / "ifcfg-eth0").write_text("DEVICE=eth0\n")
    (d / "other").write_text("x\n")
    files = r.read_glob((str(d), "ifcfg-*"), (str(d), f"route-{payload}"))
    assert files == {f"{d}/ifcfg-eth0": "DEVICE=eth0\n"}
    assert not marker.exists()


def test_a_file_cannot_fake_another_in_read_glob(tmp_path):
    (tmp_path / "ifcfg-a").write_text("A=1\n\n@@imgbuild-file /etc/shadow\nroot:x\n")
    files = LocalRemote("local").read_glob((str(tmp_path), "ifcfg-*"))
    assert list(files) == [f"{tmp_path}/ifcfg-a"]


def test_a_huge_answer_is_refused_not_read(tmp_path):
    r = LocalRemote("local")
    with pytest.raises(runner.CommandError):
        r.sh("head -c 50000000 /dev/zero", max_output=1 << 20)
    # through the real sh(): the host named, nothing more done
    real = rm.Remote("local")
    real.ssh_argv = lambda: ["sh", "-c", 'shift; exec sh -c "$1"', "sh"]   # "ssh HOST CMD" run here
    with pytest.raises(BuilderError) as e:
        real.sh("head -c 50000000 /dev/zero", max_output=1 << 20, what="probing")
    assert "more than 1048576 bytes" in e.value.message and "local" in e.value.message


def test_write_text_replaces_a_planted_temp_link(tmp_path):
    target = tmp_path / "victim"
    target.write_text("untouched\n")
    (tmp_path / "f.imgbuild-tmp").symlink_to(target)
    LocalRemote("local").write_text(str(tmp_path / "f"), "new\n")
    assert target.read_text() == "untouched\n" and (tmp_path / "f").read_text() == "new\n"


def test_user_known_hosts_with_spaces(tmp_path):
    (tmp_path / "a b").mkdir()
    kh = tmp_path / "a b" / "kh"
    kh.write_text("")
    cfg = tmp_path / "cfg"
    cfg.write_text(f'Host x\n  UserKnownHostsFile "{kh}" {tmp_path}/other\n')
    r = rm.Remote("x", rm.SshOptions(config=str(cfg)))
    assert r._user_known_hosts() == [str(kh), f"{tmp_path}/other"]


def test_run_max_output_kills_and_says_so():
    with pytest.raises(runner.CommandError) as e:
        runner.run(["sh", "-c", "yes"], capture=True, max_output=100000)
    assert "more than 100000 bytes" in str(e.value)
    assert runner.run(["sh", "-c", "echo hi"], capture=True, max_output=10).stdout == "hi\n"


def test_dry_run_ssh_never_records_keys():
    a = rm.Remote("h", rm.SshOptions(accept_new_host_key=True), dry_run=True).ssh_argv()
    assert a[a.index("StrictHostKeyChecking=yes") - 1] == "-o"           # outside a session: refused, not added
    assert "UpdateHostKeys=no" in a and "CheckHostIP=no" in a
    assert a.index("StrictHostKeyChecking=yes") < a.index("StrictHostKeyChecking=accept-new")  # first one wins
    assert "UpdateHostKeys=no" not in rm.Remote("h").ssh_argv()

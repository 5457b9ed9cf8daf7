"""migrate push: the parts that need no remote host (rsync's itemized output, refusals, filter order)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.migrate import push

ITEMIZED = """\
*deleting  |0|x/o
*deleting  |0|x/
<f+++++++++|2|b
hf+++++++++|2|a
cL+++++++++|1|l
cD+++++++++|0|null
cd+++++++++|4096|d/
<f.st......|1234|etc/passwd
.f...p.....|10|etc/shadow
.d..t......|4096|etc/

Number of files: 6 (reg: 2, dir: 2, link: 1, dev: 1)
Number of regular files transferred: 2
Total transferred file size: 1,236 bytes
Total bytes sent: 1,962
"""


def test_parse_counts_every_kind_of_change():
    c = push.parse(ITEMIZED.splitlines())
    assert c.sent == [("b", 2), ("etc/passwd", 1234)]
    assert c.bytes == 1236
    assert c.created == 4          # hardlink, symlink, device, directory
    assert c.attrs == 2            # mode of shadow, time of etc/
    assert c.deleted == ["x/o", "x/"]
    assert c.stats["Total transferred file size"] == 1236
    assert c.stats["Number of regular files transferred"] == 2
    assert c.stats["Total bytes sent"] == 1962
    assert c.total == 2 + 4 + 2 + 2


def test_summary_says_would_in_a_dry_run():
    c = push.parse(ITEMIZED.splitlines())
    dry = push.summary(c, True)[0]
    assert dry.startswith("would send 2 files (1.2 KB)") and "would delete 2" in dry
    assert push.summary(c, False)[0].startswith("sent 2 files")


def test_the_destination_directory_itself_is_not_counted():
    """A dry run into a new directory itemizes "./" as created, the real run (which made it for the marker) as
    changed: neither counts it, so the two report the same numbers."""
    dry = push.parse(["cd+++++++++|4096|./", "cd+++++++++|4096|etc/", "<f+++++++++|3|etc/a"])
    real = push.parse([".d..t......|4096|./", "cd+++++++++|4096|etc/", "<f+++++++++|3|etc/a"])
    assert (dry.created, dry.attrs, len(dry.sent)) == (real.created, real.attrs, len(real.sent)) == (1, 0, 1)


def test_per_host_files_the_receiver_lacks_are_named_grouped(tmp_path):
    for f in ("etc/hostname", "etc/fstab", "etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_rsa_key.pub",
              "etc/motd"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x\n")
    (tmp_path / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")   # dangling: still there
    found = push.source_protected(tmp_path, list(push.DEFAULT_PROTECT))
    assert found == ["/etc/fstab", "/etc/hostname", "/etc/resolv.conf", "/etc/ssh/ssh_host_rsa_key",
                     "/etc/ssh/ssh_host_rsa_key.pub"]
    shown = push.grouped([f for f in found if f != "/etc/fstab"], list(push.DEFAULT_PROTECT))
    assert shown == ["/etc/hostname", "/etc/resolv.conf", "/etc/ssh/ssh_host_* (2)"]
    c = push.parse([])
    c.not_sent = shown
    line = push.summary(c, True)[1]
    assert line.startswith("not sent (per-host files the destination has none of): /etc/hostname, ")
    assert "chroot-install" in line and "--unprotect PATH" in line


SYSTEM = ["/", "/usr", "/etc/", "/var", "//", "/home", "/srv", "/opt", "/mnt", "/tmp", "/usr/local",
          # inside the system's own trees: every level down, not only the top
          "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/var/lib", "/var/lib/dpkg", "/etc/ssh", "/boot/efi", "/root/.ssh",
          "/lib/modules", "/lib/modules/6.1.0", "/usr/share/doc", "/usr/local/bin", "/usr/local/lib/python3",
          "/var/spool/cron/crontabs", "/var/log/apt", "/var/cache/apt", "/var/mail/root", "/sbin/x", "/dev/shm/x",
          "/run/lock/x", "/proc/1", "/sys/kernel", "/bin/x", "/lib64/x", "/usr/newos", "/var/tmp/os"]
OWN = ["/srv/newos", "/usr/local/newos", "/usr/local/gcd/tree", "/home/alice/os", "/opt/newos", "/var/xen/os",
       "/mnt/disk/os", "/tmp/os", "/data/os", "/var/vz/private/101"]


@pytest.mark.parametrize("dest", SYSTEM)
def test_system_directories_and_everything_inside_them_are_refused(dest):
    with pytest.raises(InputError) as e:
        push.check_dest(dest, force=False)
    assert "refusing to push into the remote system's own" in e.value.message and "--force" in e.value.hint


@pytest.mark.parametrize("dest", OWN)
def test_directories_of_their_own_are_accepted(dest):
    assert push.check_dest(dest, force=False) == dest


@pytest.mark.parametrize("real", SYSTEM[:1] + [p.rstrip("/") for p in SYSTEM[1:] if p.strip("/")])
def test_a_destination_resolving_into_the_system_is_refused(real):
    with pytest.raises(InputError) as e:
        push.check_resolved("vps1", "/srv/link", real, force=False)
    assert f"resolves to {real}" in e.value.message and "vps1:/srv/link" in e.value.message
    assert push.check_resolved("vps1", "/srv/link", real, force=True) == real


@pytest.mark.parametrize("real", ["srv/x", "/srv/a b", "/srv/a\nb", "/srv/$(touch x)", "/srv/../etc", "", "/srv/x'"])
def test_an_odd_resolved_path_is_refused_or_ignored(real):
    if not real:
        assert push.check_resolved("h", "/srv/os", real, force=False) == "/srv/os"
        return
    with pytest.raises(InputError):
        push.check_resolved("h", "/srv/os", real, force=True)


def test_force_allows_a_system_directory():
    assert push.check_dest("/", force=True) == "/"


@pytest.mark.parametrize("dest", ["srv/os", "/srv/my os", "/srv/a;rm -rf /", "/srv/../etc", "/srv/$(x)",
                                  "/srv/os\n", "/srv/`x`", "/srv/o'x", '/srv/o"x', "/srv/*"])
def test_odd_destinations_are_refused(dest):
    with pytest.raises(InputError) as e:
        push.check_dest(dest, force=True)
    assert push.shown(dest) in e.value.message


def test_plain_destination_is_normalized():
    assert push.check_dest("/srv/newos/", force=False) == "/srv/newos"


def test_filter_order_puts_safety_first(tmp_path):
    req = push.PushRequest(dest="/srv/os", source=tmp_path, excludes=("*.log",), profile="os",
                           unprotect=("/etc/hosts",), protect=("/etc/myapp.conf",))
    pr = push.Probe(rsync="/usr/bin/rsync", mounts=["/proc", "/lib/modules"])
    rules = push.filters(req, pr, push._protect_list(req))
    assert rules[:2] == ["- /proc", "- /lib/modules"]            # the receiver's mounts: never entered
    assert "- /etc/hostname" in rules and "- /etc/myapp.conf" in rules
    assert "- /etc/hosts" not in rules                           # unprotected on request
    assert rules.index("- *.log") < rules.index("- /proc/*")      # the user's excludes before the defaults
    assert rules.index("- /proc/*") < rules.index("- /var/log/**")  # the profile comes last


def test_source_mounts_finds_live_filesystems_of_the_root():
    found = push.source_mounts(Path("/"))
    assert "/proc" in found and "/sys" in found       # this machine's own
    assert "/" not in found


def test_profiles_are_rsync_filter_rules(tmp_path):
    path, rules = push.profile_rules("core")
    assert path.name == "core.rules" and rules[-1] == "- *" and "+ /usr/***" in rules
    bad = tmp_path / "bad.rules"
    bad.write_text("+ /usr/***\nusr\n")
    with pytest.raises(InputError) as e:
        push.profile_rules(str(bad))
    assert "'usr'" in e.value.message
    with pytest.raises(InputError) as e:
        push.profile_rules("nosuch")
    assert "core" in e.value.hint and "os" in e.value.hint


def test_probe_script_is_valid_sh():
    script = push._probe_script("/srv/os", list(push.DEFAULT_PROTECT))
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def run_probe(dest: str, protect=()) -> push.Probe:
    r = subprocess.run(["sh"], input=push._probe_script(dest, list(protect)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return push.parse_probe(r.stdout)


def test_probe_of_the_root_finds_its_mounts():
    """`--dest /` (with --force): every other mount of the host is below it and must be left alone."""
    pr = run_probe("/")
    assert "/proc" in pr.mounts and "/sys" in pr.mounts and "/" not in pr.mounts
    assert pr.real == "/" and pr.exists and pr.is_dir and not pr.empty


@pytest.mark.root
def test_probe_finds_mounts_below_and_through_a_symlink(tmp_path):
    dest = tmp_path / "dest"
    (dest / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(dest)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dest / "a" / "b")], check=True)
    try:
        assert run_probe(str(dest)).mounts == ["/a/b"]
        pr = run_probe(str(tmp_path / "link"))
        assert pr.mounts == ["/a/b"] and pr.real == str(dest)
        assert run_probe(str(dest / "a" / "b")).mounts == []          # the destination itself is no mount below it
    finally:
        subprocess.run(["umount", str(dest / "a" / "b")], check=True)


def test_probe_says_empty_and_marker(tmp_path):
    d = tmp_path / "d"
    assert not run_probe(str(d)).exists                    # new: --delete is fine
    d.mkdir()
    pr = run_probe(str(d))
    assert pr.empty and not pr.marker
    (d / "file").write_text("x")
    pr = run_probe(str(d))
    assert not pr.empty and not pr.marker
    (d / push.MARKER).symlink_to(tmp_path / "elsewhere")      # a link is not imgbuild's marker
    assert not run_probe(str(d)).marker
    (d / push.MARKER).unlink()
    (d / push.MARKER).write_text(push.MARKER_TEXT)
    assert run_probe(str(d)).marker


class FakeRemote:
    host = "vps1"


def _req(tmp_path, **kw):
    return push.PushRequest(dest="/srv/os", source=tmp_path, **kw)


@pytest.mark.parametrize("state, delete, force, refused", [
    (dict(exists=False), True, False, False),                               # a new directory
    (dict(exists=True, is_dir=True, empty=True), True, False, False),       # an empty one
    (dict(exists=True, is_dir=True, marker=True), True, False, False),      # an earlier push's
    (dict(exists=True, is_dir=True), True, False, True),                    # someone's files: refused
    (dict(exists=True, is_dir=True), True, True, False),                    # ... unless --force
    (dict(exists=True, is_dir=True), False, False, False),                  # no --delete: nothing is deleted
])
def test_delete_needs_an_empty_destination_or_the_marker(tmp_path, state, delete, force, refused):
    pr = push.Probe(rsync="/usr/bin/rsync", real="/srv/os", **state)
    req = _req(tmp_path, delete=delete, force=force)
    if refused:
        with pytest.raises(InputError) as e:
            push.check_probe(FakeRemote(), req, pr)
        assert push.MARKER in e.value.message and "--force" in e.value.hint
    else:
        push.check_probe(FakeRemote(), req, pr)


def test_marker_is_never_sent_nor_deleted(tmp_path):
    rules = push.filters(_req(tmp_path), push.Probe(), [])
    assert f"- /{push.MARKER}" in rules


def test_a_mount_point_name_is_matched_literally_by_rsync():
    assert push._literal("/lib/modules") == "/lib/modules"
    assert push._literal("/a*b/[x]") == "/a\\*b/\\[x]"


@pytest.mark.parametrize("value, ok", [("rsync", "rsync"), ("sudo -n rsync", "sudo -n rsync"),
                                       ("/opt/bin/rsync", "/opt/bin/rsync"), ("x$(touch /tmp/PWN)", None),
                                       ("rsync;id", None), ("`id`", None), ("a'b", None), ("rsync\nid", None),
                                       ("rsync | tee", None), ("", None), ("'", None)])
def test_rsync_path_takes_plain_words_only(value, ok):
    if ok:
        assert push.rsync_path(value) == ok
    else:
        with pytest.raises(InputError):
            push.rsync_path(value)


def test_local_input_is_checked_before_connecting(tmp_path):
    """check_request needs no host: every bad local value is an InputError (the CLI calls it before ssh)."""
    bad = [dict(source=tmp_path / "nosuch"), dict(profile="nosuch"), dict(files_from=tmp_path / "nosuch"),
           dict(protect=("etc/x",)), dict(excludes=("a\nb",)), dict(rsync_path="x;y"),
           dict(files_from=tmp_path, profile="core")]
    for kw in bad:
        kw.setdefault("source", tmp_path)
        with pytest.raises(InputError):
            push.check_request(push.PushRequest(dest="/srv/os", **kw))
    push.check_request(push.PushRequest(dest="/srv/os", source=tmp_path, profile="core"))


def test_a_profile_that_is_not_text_is_bad_input(tmp_path):
    f = tmp_path / "bin.rules"
    f.write_bytes(b"+ /usr\xff\xfe\n")
    with pytest.raises(InputError) as e:
        push.profile_rules(str(f))
    assert str(f) in e.value.message


ANSWER_LINES = st.one_of(
    st.text(max_size=80),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["rsync", "exists", "isdir", "empty", "marker", "real",
                                                          "mount", "have", "x"]), st.text(max_size=60)))


@settings(max_examples=150, deadline=None)
@given(st.lists(ANSWER_LINES, max_size=30))
def test_any_probe_answer_parses_into_plain_values(lines):
    """A hostile host answers what it likes: the parser never fails, and what it keeps is plain."""
    pr = push.parse_probe("\n".join(lines))
    assert all(m.startswith("/") and not push._CONTROL.search(m) and ".." not in m.split("/") for m in pr.mounts)
    assert pr.real == "" or pr.real.startswith("/")
    assert pr.rsync == "" or pr.rsync.startswith("/")
    rules = push.filters(push.PushRequest(dest="/srv/os", source=Path("/nonexistent")), pr, [])
    assert all("\n" not in r for r in rules)


def test_a_huge_or_odd_probe_answer_is_bounded():
    out = "\n".join(["mount=/x%d" % i for i in range(push.MAX_PROBE_LINES + 5000)] + ["mount=/a\\012b", "real=/"])
    pr = push.parse_probe(out)
    assert len(pr.mounts) == push.MAX_PROBE_LINES and pr.odd_mounts == [] and pr.real == ""
    pr = push.parse_probe("mount=/a\\012b\nreal=/srv/os")
    assert pr.odd_mounts == ["/a\nb"] and pr.mounts == []
    with pytest.raises(InputError) as e:
        push.check_probe(FakeRemote(), _req(Path("/")), push.Probe(rsync="/r", real="/srv/os", odd_mounts=["/a\nb"]))
    assert "\\x0a" in e.value.message


def test_progress_lines_drive_the_bar_and_other_lines_are_kept():
    p = push._Progress(show=False)
    for line in ["<f+++++++++|12|etc/a", "     32,768   0%    0.00kB/s    0:00:00 (xfr#1, to-chk=9/10)",
                 "    104,857,600  57%   98.12MB/s    0:00:01 (xfr#800, ir-chk=1000/9000)", "Total bytes sent: 5"]:
        p(line)
    assert p.lines == ["<f+++++++++|12|etc/a", "Total bytes sent: 5"]
    shown = push._Progress(show=True)
    shown("    104,857,600  57%   98.12MB/s    0:00:01 (xfr#800, ir-chk=1000/9000)")
    assert shown.bar.n == 57 and "100.0 MB" in str(shown.bar.postfix) and "98.12MB/s" in str(shown.bar.postfix)
    shown.close()


def test_the_dry_run_lists_every_path_under_what_happens_to_it():
    c = push.parse(ITEMIZED.splitlines() + [".f....og...|10|etc/gshadow", "cLc.t......|0|etc/rl"])
    text = "\n".join(push.listing(c))
    assert "create (5):\n  /a\n  /b\n  /d/\n  /l\n  /null" in text      # b is new: the receiver has none
    assert "change content (1):\n  /etc/passwd" in text
    assert "change mode (1):\n  /etc/shadow" in text
    assert "change owner, group (1):\n  /etc/gshadow" in text
    assert "change link target, time (1):\n  /etc/rl" in text
    assert text.endswith("delete (2):\n  /x/\n  /x/o")


def test_a_long_group_is_shortened_with_counts_per_directory():
    lines = [f"<f+++++++++|1|usr/share/doc/p{i}/f" for i in range(30)] + [f"<f+++++++++|1|etc/f{i}" for i in range(3)]
    out = push.listing(push.parse(lines), limit=5)
    assert out[0] == "create (33):" and len(out) == 7
    assert out[1:4] == ["  /etc/f0", "  /etc/f1", "  /etc/f2"]       # sorted: the first paths are shown
    assert out[-1] == "  ... and 28 under /usr/share", out

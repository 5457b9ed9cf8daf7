"""migrate push: the parts that need no remote host (rsync's itemized output, refusals, filter order)."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder import push
from builder.errors import InputError

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


@pytest.mark.parametrize("dest", ["/", "/usr", "/etc/", "/var", "//", "/home"])
def test_system_directories_are_refused(dest):
    with pytest.raises(InputError) as e:
        push.check_dest(dest, force=False)
    assert "refusing" in e.value.message and "--force" in e.value.hint


def test_force_allows_a_system_directory():
    assert push.check_dest("/", force=True) == "/"


@pytest.mark.parametrize("dest", ["srv/os", "/srv/my os", "/srv/a;rm -rf /", "/srv/../etc", "/srv/$(x)"])
def test_odd_destinations_are_refused(dest):
    with pytest.raises(InputError) as e:
        push.check_dest(dest, force=False)
    assert dest in e.value.message


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
    import subprocess

    script = push._probe_script("/srv/os", list(push.DEFAULT_PROTECT))
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


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

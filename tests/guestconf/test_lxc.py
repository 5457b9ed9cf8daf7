"""LXC config conversion (builder/guestconf/lxc.py, `migrate convert-lxc`): golden files both ways, agreement with LXC's
own `lxc-update-config`, LXC 5's parser on what we write, the warnings, the CLI, and real boots of converted
legacy configs under lxc-start.

Golden cases live in tests/data/lxc-convert/<case>/: in.conf, expected.conf (the conversion) and warnings.txt
(`LINE: KEY: MESSAGE`, one per warning). A case named legacy-* is converted --to modern, modern-* --to legacy.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from builder.build import recipe
from builder.build.targets import lxc
from builder.core.errors import InputError
from builder.guestconf import lxc as lxcconf
from tests.conftest import BIN, DEFAULT_RECIPE, REPO, imgbuild
from tests.support import TEST_DATA
from tests.support.lxc import ADDRESS, HOSTNAME, MAC, lock_dir, lxc_netns, remove_lock_dir, run
from tests.support.lxc import boot as lxc_boot

DATA = TEST_DATA / "lxc-convert"
CASES = sorted(p.name for p in DATA.iterdir())
LEGACY_CASES = [c for c in CASES if c.startswith("legacy-")]
MODERN_CASES = [c for c in CASES if c.startswith("modern-")]
SEED = Path("/work/shared/seeds/000_7d5a17c1e9aa5223.txt")
PREFIX = lxcconf.COMMENT_PREFIX


def target(case: str) -> str:
    return "modern" if case.startswith("legacy-") else "legacy"


def key_values(text: str) -> list[tuple[str, str]]:
    """The (key, value) of every key line, in order, as LXC's parser reads them (comments and blanks skipped)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#") and "=" in s:
            k, v = s.split("=", 1)
            out.append((k.strip(), v.strip()))
    return out


def migrate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "migrate"), *map(str, args)], capture_output=True, text=True, timeout=60,
                          input=stdin, cwd=REPO)


def test_every_case_has_its_files():
    assert len(LEGACY_CASES) >= 6 and len(MODERN_CASES) >= 3, CASES
    for case in CASES:
        assert case.startswith(("legacy-", "modern-")), case
        for f in ("in.conf", "expected.conf", "warnings.txt"):
            assert (DATA / case / f).is_file(), f"{case}/{f} is missing"


# ---------------------------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    got, warnings = lxcconf.convert((DATA / case / "in.conf").read_text(), target(case))
    assert got == (DATA / case / "expected.conf").read_text(), f"conversion differs from {case}/expected.conf"
    assert [str(w) for w in warnings] == (DATA / case / "warnings.txt").read_text().splitlines()


@pytest.mark.parametrize("case", CASES)
def test_nothing_is_dropped(case):
    """Line for line: the output has the input's lines; every input key line is either a key line of the output
    or kept commented out behind the imgbuild prefix, with exactly one warning naming it; comments and blank
    lines stay where they were."""
    src = (DATA / case / "in.conf").read_text().splitlines()
    got, warnings = lxcconf.convert("\n".join(src) + "\n", target(case))
    out = got.splitlines()
    assert len(out) == len(src)
    by_line = Counter(w.line for w in warnings)
    in_kv, out_kv = key_values("\n".join(src)), key_values(got)
    assert len(out_kv) + sum(1 for line in out if line.lstrip().startswith(PREFIX[target(case)])) == len(in_kv)
    for no, (before, after) in enumerate(zip(src, out), 1):
        s = before.strip()
        if not s or s.startswith("#"):
            assert after == before, f"line {no}: a comment or blank line changed"
            continue
        if after.lstrip().startswith(PREFIX[target(case)]):
            assert after.lstrip() == PREFIX[target(case)] + before.lstrip()
            key = s.split("=", 1)[0].strip()
            assert [(w.line, w.key) for w in warnings if w.line == no] == [(no, key)], f"line {no}"
        else:
            assert by_line[no] <= 1


@pytest.mark.parametrize("case", CASES)
def test_idempotent(case):
    """Converting the output again to the same form changes nothing (commented-out lines are comments now)."""
    once, _ = lxcconf.convert((DATA / case / "in.conf").read_text(), target(case))
    twice, warnings = lxcconf.convert(once, target(case))
    assert twice == once
    assert all("not an LXC key" in w.message or w.key == "lxc.include" for w in warnings), warnings


@pytest.mark.parametrize("case", CASES)
def test_round_trip(case):
    """To the other form and back gives the input's keys again, except the lines either form cannot hold (kept
    commented out, with a warning), rootfs backend prefixes (dir: only exists in the modern form), indexed legacy
    network keys (they come back in block form) and lxc.net indices with gaps (legacy networks have none)."""
    src = (DATA / case / "in.conf").read_text()
    there, first = lxcconf.convert(src, target(case))
    back, second = lxcconf.convert(there, "legacy" if target(case) == "modern" else "modern")
    lost = {w.line for w in first + second if w.message.endswith("kept as a comment")}
    numbered = [no for no, line in enumerate(src.splitlines(), 1) if line.strip() and not line.strip().startswith("#")]
    want = [kv for no, kv in zip(numbered, key_values(src)) if no not in lost]
    got = key_values(back)

    def norm(kvs):
        out = []
        for k, v in kvs:
            if k in ("lxc.rootfs", "lxc.rootfs.path"):
                v = re.sub(r"^(dir|lvm):", "", v)
            out.append((re.sub(r"^lxc\.(network|net)\.\d+\.", r"lxc.\1.", k), v))
        return Counter(out)

    if case.startswith("legacy-") or any("numbered in order" in w.message for w in first):
        assert norm(got) == norm(want)
    else:
        assert got == want   # modern -> legacy -> modern without renumbering: the same lines in the same order


def test_seed_case_is_the_seeds_config_verbatim():
    """legacy-seed-0.7/in.conf is the LXC 0.7 config of seed 000 (the `cat > /var/lib/lxc/vm0/config` heredoc),
    only its Markdown indentation removed."""
    if not SEED.is_file():
        pytest.skip(f"{SEED} is not on this machine")
    lines = SEED.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if "cat >/var/lib/lxc/vm0/config << END" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "END")
    body = [line.removeprefix("    ") for line in lines[start + 1:end]]
    assert (DATA / "legacy-seed-0.7" / "in.conf").read_text() == "\n".join(body) + "\n"


# ---------------------------------------------------------------------------------------------- the mapping


LEGACY_TO_MODERN = [  # (legacy line, modern line): every key lxc-update-config renames, and what it misses
    ("lxc.utsname = a", "lxc.uts.name = a"),
    ("lxc.tty = 4", "lxc.tty.max = 4"),
    ("lxc.pts = 1024", "lxc.pty.max = 1024"),
    ("lxc.devttydir = lxc", "lxc.tty.dir = lxc"),
    ("lxc.rootfs = /srv/c/rootfs", "lxc.rootfs.path = dir:/srv/c/rootfs"),
    ("lxc.rootfs = overlayfs:/lower:/upper", "lxc.rootfs.path = overlayfs:/lower:/upper"),
    ("lxc.rootfs = /dev/vg0/c", "lxc.rootfs.path = /dev/vg0/c"),
    ("lxc.mount = /srv/c/fstab", "lxc.mount.fstab = /srv/c/fstab"),
    ("lxc.id_map = u 0 100000 65536", "lxc.idmap = u 0 100000 65536"),
    ("lxc.logfile = /var/log/c.log", "lxc.log.file = /var/log/c.log"),
    ("lxc.loglevel = 1", "lxc.log.level = 1"),
    ("lxc.syslog = daemon", "lxc.log.syslog = daemon"),
    ("lxc.console = none", "lxc.console.path = none"),
    ("lxc.haltsignal = SIGPWR", "lxc.signal.halt = SIGPWR"),
    ("lxc.rebootsignal = SIGINT", "lxc.signal.reboot = SIGINT"),
    ("lxc.stopsignal = SIGKILL", "lxc.signal.stop = SIGKILL"),
    ("lxc.init_cmd = /sbin/init", "lxc.init.cmd = /sbin/init"),
    ("lxc.init_uid = 0", "lxc.init.uid = 0"),
    ("lxc.init_gid = 0", "lxc.init.gid = 0"),
    ("lxc.limit.nofile = 1024", "lxc.prlimit.nofile = 1024"),
    ("lxc.limit = ", "lxc.prlimit = "),
    ("lxc.seccomp = /x.seccomp", "lxc.seccomp.profile = /x.seccomp"),
    ("lxc.aa_profile = unconfined", "lxc.apparmor.profile = unconfined"),
    ("lxc.aa_allow_incomplete = 1", "lxc.apparmor.allow_incomplete = 1"),
    ("lxc.se_context = x_t", "lxc.selinux.context = x_t"),
    ("lxc.network = ", "lxc.net = "),
    ("lxc.hook.pre-start = /x", "lxc.hook.pre-start = /x"),
    ("lxc.cgroup.devices.allow = c 1:3 rwm", "lxc.cgroup.devices.allow = c 1:3 rwm"),
    ("lxc.autodev = 1", "lxc.autodev = 1"),
    ("lxc.mount.entry = a b none bind 0 0", "lxc.mount.entry = a b none bind 0 0"),
]


@pytest.mark.parametrize("legacy,modern", LEGACY_TO_MODERN)
def test_key_both_ways(legacy, modern):
    got, warnings = lxcconf.convert(legacy + "\n", "modern")
    assert (got, warnings) == (modern + "\n", [])
    if legacy.startswith(("lxc.syslog", "lxc.limit")):
        back, warnings = lxcconf.convert(modern + "\n", "legacy")   # LXC 2.1's own short-lived names
        assert back.startswith(PREFIX["legacy"]) and len(warnings) == 1
    else:
        assert lxcconf.convert(modern + "\n", "legacy") == (legacy + "\n", [])


def test_networks_are_numbered_per_type_line():
    legacy = ("lxc.network.type = veth\nlxc.network.link = br0\nlxc.network.ipv4 = 10.0.0.2/24 10.0.0.255\n"
              "lxc.network.ipv4.gateway = 10.0.0.1\n#lxc.network.type = veth\nlxc.network.type = macvlan\n"
              "lxc.network.ipv6 = fd00::2/64\nlxc.network.ipv6.gateway = fd00::1\nlxc.network.mtu = 1400\n"
              "lxc.network.veth.pair = v1\nlxc.network.hwaddr = 00:16:3e:00:00:01\nlxc.network.script.up = /x\n")
    got, warnings = lxcconf.convert(legacy, "modern")
    assert warnings == []
    assert got.splitlines() == [
        "lxc.net.0.type = veth", "lxc.net.0.link = br0", "lxc.net.0.ipv4.address = 10.0.0.2/24 10.0.0.255",
        "lxc.net.0.ipv4.gateway = 10.0.0.1", "#lxc.network.type = veth", "lxc.net.1.type = macvlan",
        "lxc.net.1.ipv6.address = fd00::2/64", "lxc.net.1.ipv6.gateway = fd00::1", "lxc.net.1.mtu = 1400",
        "lxc.net.1.veth.pair = v1", "lxc.net.1.hwaddr = 00:16:3e:00:00:01", "lxc.net.1.script.up = /x"]
    assert lxcconf.convert(got, "legacy") == (legacy, [])


def test_legacy_blocks_follow_net_index_order():
    modern = ("lxc.net.1.type = veth\nlxc.net.1.link = br1\n\nlxc.net.0.link = br0\nlxc.net.0.type = phys\n"
              "lxc.net.0.name = eth9\n")
    got, warnings = lxcconf.convert(modern, "legacy")
    assert warnings == []
    assert got == ("lxc.network.type = phys\nlxc.network.link = br0\n\nlxc.network.name = eth9\n"
                   "lxc.network.type = veth\nlxc.network.link = br1\n")


def test_network_reset_line():
    """`lxc.net =` / `lxc.network =` drop the networks defined so far; blocks are never moved across it."""
    modern = ("lxc.net.0.type = veth\nlxc.net.0.link = a\nlxc.net =\nlxc.net.0.link = b\nlxc.net.0.type = phys\n")
    got, warnings = lxcconf.convert(modern, "legacy")
    assert (got, warnings) == ("lxc.network.type = veth\nlxc.network.link = a\nlxc.network =\n"
                               "lxc.network.type = phys\nlxc.network.link = b\n", [])
    # legacy -> modern keeps counting after the reset, as lxc-update-config does (index 1 is as good as 0)
    assert lxcconf.convert(got, "modern") == ("lxc.net.0.type = veth\nlxc.net.0.link = a\nlxc.net =\n"
                                              "lxc.net.1.type = phys\nlxc.net.1.link = b\n", [])


def test_rootfs_backend_is_read_wherever_it_is():
    got, warnings = lxcconf.convert("lxc.rootfs = /dev/vg0/c\nlxc.rootfs.backend = lvm\nlxc.utsname = c\n", "modern")
    assert got == ("lxc.rootfs.path = lvm:/dev/vg0/c\n" + PREFIX["modern"] + "lxc.rootfs.backend = lvm\n"
                   "lxc.uts.name = c\n")
    assert [(w.line, w.key) for w in warnings] == [(2, "lxc.rootfs.backend")]
    assert "lvm:" in warnings[0].message


def test_formatting_is_kept():
    text = "  lxc.utsname\t=  web1  \r\nlxc.tty=1\r\n# lxc.utsname = x\r\n"
    got, _ = lxcconf.convert(text, "modern")
    assert got == "  lxc.uts.name\t=  web1  \r\nlxc.tty.max=1\r\n# lxc.utsname = x\r\n"
    assert lxcconf.convert("lxc.utsname = a", "modern")[0] == "lxc.uts.name = a"   # no final newline added


# ---------------------------------------------------------------------------------------------- warnings

UNMAPPABLE = {
    "modern": ["lxc.pivotdir = lxc_putold", "lxc.kmsg = 0", "lxc.rootfs.backend = dir"],
    "legacy": ["lxc.cgroup2.devices.allow = c 1:3 rwm", "lxc.cgroup2.memory.high = 1G", "lxc.prlimit.nofile = 10",
               "lxc.prlimit = ", "lxc.log.syslog = daemon", "lxc.no_new_privs = 1", "lxc.sysctl.net.x = 1",
               "lxc.proc.oom_score_adj = 1", "lxc.apparmor.allow_nesting = 1", "lxc.apparmor.raw = x",
               "lxc.seccomp.allow_nesting = 1", "lxc.seccomp.notify.proxy = unix:/s", "lxc.hook.version = 1",
               "lxc.hook.start-host = /x", "lxc.rootfs.managed = 0", "lxc.init.cwd = /", "lxc.init.groups = 1",
               "lxc.keyring.session = 0", "lxc.selinux.context.keyring = x", "lxc.execute.cmd = /x",
               "lxc.autodev.tmpfs.size = 1", "lxc.console.buffer.size = 1", "lxc.console.size = 1",
               "lxc.console.rotate = 1", "lxc.monitor.signal.pdeath = SIGKILL", "lxc.sched.core = 0",
               "lxc.cgroup.dir = x", "lxc.cgroup.dir.monitor = x", "lxc.cgroup.relative = 1",
               "lxc.namespace.clone = net", "lxc.namespace.keep = user", "lxc.namespace.share.net = a",
               "lxc.time.offset.boot = 1s", "lxc.time.offset.monotonic = 1s", "lxc.syslog = daemon",
               "lxc.limit.nofile = 1"],
}
MAPPABLE = {"modern": ["lxc.utsname = a", "lxc.network.type = veth", "lxc.network.link = br0",
                       "lxc.cgroup.devices.deny = a"],
            "legacy": ["lxc.uts.name = a", "lxc.net.0.type = veth", "lxc.net.0.link = br0",
                       "lxc.cgroup.devices.deny = a"]}


@pytest.mark.parametrize("to", ["modern", "legacy"])
def test_every_unmappable_key_warns_once_on_its_line(to):
    body = list(MAPPABLE[to])
    lines = {}
    for i, entry in enumerate(UNMAPPABLE[to]):
        body += ["# filler", ""] if i % 2 else ["lxc.arch = x86_64"]
        body.append(entry)
        lines[len(body)] = entry
    got, warnings = lxcconf.convert("\n".join(body) + "\n", to)
    assert sorted((w.line, w.key) for w in warnings) == sorted(
        (no, e.split("=")[0].strip()) for no, e in lines.items())
    out = got.splitlines()
    for no, entry in lines.items():
        assert out[no - 1] == PREFIX[to] + entry
    assert all(w.message.endswith("kept as a comment") and len(w.message) > 40 for w in warnings)


def test_modern_network_keys_without_legacy_form():
    modern = ("lxc.net.0.type = veth\nlxc.net.0.veth.mode = router\nlxc.net.0.l2proxy = 1\n"
              "lxc.net.0.veth.ipv4.route = 10.9.0.0/16\nlxc.net.2.type = ipvlan\nlxc.net.2.ipvlan.mode = l3\n"
              "lxc.net.2.ipvlan.isolation = bridge\nlxc.net.5.link = br0\nlxc.net.5.name = eth5\n"
              "lxc.net.7.type = veth\nlxc.net.7.type = macvlan\n")
    got, warnings = lxcconf.convert(modern, "legacy")
    assert [(w.line, w.key) for w in warnings] == [
        (2, "lxc.net.0.veth.mode"), (3, "lxc.net.0.l2proxy"), (4, "lxc.net.0.veth.ipv4.route"),
        (5, "lxc.net.2.type"), (6, "lxc.net.2.ipvlan.mode"), (7, "lxc.net.2.ipvlan.isolation"),
        (8, "lxc.net.5.link"), (9, "lxc.net.5.name"), (10, "lxc.net.7.type"), (11, "lxc.net.7.type")]
    # the first warning on line 10 says lxc.net.7 becomes the second legacy network; line 11 is a second type line
    assert "becomes network 1" in warnings[8].message and "second type line" in warnings[9].message
    assert [line for line in got.splitlines() if not line.startswith("#")] == [
        "lxc.network.type = veth", "lxc.network.type = veth"]


def test_unknown_keys_are_kept_with_a_warning():
    for to in ("modern", "legacy"):
        got, warnings = lxcconf.convert("lxc.utsname = a\nlxc.bogus = 1\nfoo = bar\nlxc.network.bogus = 2\n", to)
        assert "lxc.bogus = 1\nfoo = bar\n" in got
        assert [(w.line, w.key) for w in warnings if "not an LXC key" in w.message][:2] == [
            (2, "lxc.bogus"), (3, "foo")]


# Found by the property tests (tests/guestconf/test_lxc_props.py): a second conversion to the same form changed, or
# refused, what the first one wrote.


@pytest.mark.parametrize("text,to", [
    ("lxc.network.flags = up\n", "modern"),                      # every key line is commented out ...
    ("lxc.pivotdir = lxc_putold\nlxc.kmsg = 0\n", "modern"),
    ("lxc.net.0.flags = up\nlxc.prlimit.nofile = 1024\n", "legacy"),
])
def test_a_file_of_only_lines_we_commented_out_converts_again(text, to):
    """... and the next run read the result as "not an LXC config: it has no lxc.* keys" (exit 2)."""
    once, warnings = lxcconf.convert(text, to)
    assert warnings and all(line.startswith(PREFIX[to]) for line in once.splitlines())
    assert lxcconf.convert(once, to) == (once, [])


@pytest.mark.parametrize("text", [
    "lxc.net.0.type = veth\nlxc.net.0.n=ame = eth0\nlxc.net.0.link = br0\n",       # in a network with a type
    "lxc.net.3.bogus = 1\nlxc.uts.name = a\n",                                   # in a network without one
    "lxc.net.0.type = veth\nlxc.net.1.foo.bar = x\n",
])
def test_unknown_network_keys_stay_as_they_are_on_every_run(text):
    """An unknown lxc.net.N.* key was kept in a network that has a type line, but commented out on the next run
    (once its network's other lines had become lxc.network.*, it stood in a network without a type)."""
    once, first = lxcconf.convert(text, "legacy")
    unknown = [w.line for w in first if "not an LXC key" in w.message]
    assert unknown
    for no in unknown:
        assert once.splitlines()[no - 1] == text.splitlines()[no - 1]
    twice, second = lxcconf.convert(once, "legacy")
    assert twice == once and [w.line for w in second] == unknown


def test_network_line_before_any_type():
    got, warnings = lxcconf.convert("lxc.network.link = br0\nlxc.network.type = veth\n", "modern")
    assert got == PREFIX["modern"] + "lxc.network.link = br0\nlxc.net.0.type = veth\n"
    assert [(w.line, w.key) for w in warnings] == [(1, "lxc.network.link")]


@pytest.mark.parametrize("text", ["", "\n\n# only comments\n", "name: debian12\ndistro: debian\n",
                                  "name = 'vm0'\nmemory = 512\n", "lxc.utsname = a\nthis is no config line\n",
                                  "= value\nlxc.tty = 1\n"])
def test_not_an_lxc_config(text):
    with pytest.raises(InputError, match="not an LXC config"):
        lxcconf.convert(text, "modern")


def test_unknown_target():
    with pytest.raises(InputError):
        lxcconf.convert("lxc.tty = 1\n", "lxc5")


# ---------------------------------------------------------------------------------------------- the renderer


@pytest.mark.parametrize("recipe_file", [DEFAULT_RECIPE, REPO / "tests/data/lxc/modern/recipe.yml"],
                         ids=["debian12", "two-nics"])
@pytest.mark.parametrize("cgroup", ["v1", "v2", "both"])
def test_renderer_modern_to_legacy(recipe_file, cgroup):
    """legacy(render modern) == render legacy, except: the legacy renderer mounts /proc and /sys with an fstab
    (lxc.mount) where the modern one has lxc.mount.auto and lxc.autodev (keys LXC 1.x/2.0 know too, so they
    stay), and cgroup v2 device rules, which legacy LXC cannot hold (commented out, one warning each)."""
    r = recipe.load(recipe_file).recipe
    opts = dataclasses.replace(r.targets.lxc, cgroup=cgroup)
    modern, legacy = lxc.render(r, opts, version="modern"), lxc.render(r, opts, version="legacy")
    got, warnings = lxcconf.convert(modern, "legacy")
    v2 = [kv for kv in key_values(modern) if kv[0].startswith("lxc.cgroup2.")]
    assert [(w.key, w.line) for w in warnings] == [
        (k, no) for no, line in enumerate(modern.splitlines(), 1) for k in [line.split(" =")[0]]
        if k.startswith("lxc.cgroup2.")]
    assert len(warnings) == len(v2)
    ours = [kv for kv in key_values(got) if kv[0] not in ("lxc.mount.auto", "lxc.autodev")]
    theirs = [kv for kv in key_values(legacy) if kv[0] != "lxc.mount"]
    if cgroup == "v2":   # the only device rules were v2 ones: nothing of them is left in legacy form
        theirs = [kv for kv in theirs if not kv[0].startswith("lxc.cgroup.devices.")]
    assert ours == theirs
    assert {kv for kv in key_values(got)} - set(key_values(legacy)) == {
        ("lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed"), ("lxc.autodev", "1")}


@pytest.mark.parametrize("recipe_file", [DEFAULT_RECIPE, REPO / "tests/data/lxc/modern/recipe.yml"],
                         ids=["debian12", "two-nics"])
def test_renderer_legacy_to_modern(recipe_file):
    """modern(render legacy) == render modern with cgroup v1 rules, except lxc.mount.fstab (the legacy form's
    fstab) standing where the modern form has lxc.mount.auto and lxc.autodev."""
    r = recipe.load(recipe_file).recipe
    opts = dataclasses.replace(r.targets.lxc, cgroup="v1")
    got, warnings = lxcconf.convert(lxc.render(r, opts, version="legacy"), "modern")
    assert warnings == []
    modern = lxc.render(r, opts, version="modern")
    assert [kv for kv in key_values(got) if kv[0] != "lxc.mount.fstab"] == [
        kv for kv in key_values(modern) if kv[0] not in ("lxc.mount.auto", "lxc.autodev")]
    assert ("lxc.mount.fstab", f"{opts.lxcpath}/{r.name}/fstab") in key_values(got)


# ---------------------------------------------------------------------------------------------- lxc-update-config


@dataclasses.dataclass(frozen=True)
class Deliberate:
    """A (key, value) line only we write ("ours") or only lxc-update-config writes ("theirs"), and why."""

    side: str
    key: str
    value: str
    reason: str


NO_NETWORK = ("a network line before the first lxc.network.type belongs to no network; the script writes index -1, "
              "which LXC rejects; we keep the line commented out, with a warning")
COMMENTED_TYPE = ("the script counts the commented-out `#lxc.network.type` line as a network, so the second NIC "
                  "becomes lxc.net.2 (a gap), and the indexed lxc.network.1.* lines land on a network that has no "
                  "type; a comment is not a network")
INDEXED_ADDRESS = ("indexed legacy keys: the script forgets `.address`, and LXC 3+ rejects lxc.net.N.ipv4/ipv6")
DIFFERENCES: dict[str, list[Deliberate]] = {
    "legacy-backend-lvm": [
        Deliberate("ours", "lxc.prlimit.nofile", "65536", "the script renames only a bare `lxc.limit`; LXC 3+ "
                   "rejects lxc.limit.NAME"),
        Deliberate("ours", "lxc.prlimit.nproc", "unlimited", "same: lxc.limit.NAME -> lxc.prlimit.NAME"),
        Deliberate("theirs", "lxc.limit.nofile", "65536", "same"),
        Deliberate("theirs", "lxc.limit.nproc", "unlimited", "same"),
        Deliberate("ours", "lxc.rootfs.path", "lvm:/dev/vg0/web1", "the script reads lxc.rootfs.backend only when "
                   "it is the file's last line, so it writes dir: for an LVM volume"),
        Deliberate("theirs", "lxc.rootfs.path", "dir:/dev/vg0/web1", "same"),
    ],
    "legacy-quirks": [
        Deliberate("theirs", "lxc.net.-1.link", "lxcbr0", NO_NETWORK),
        Deliberate("ours", "lxc.net.1.type", "veth", COMMENTED_TYPE),
        Deliberate("ours", "lxc.net.1.flags", "up", COMMENTED_TYPE),
        Deliberate("ours", "lxc.net.1.link", "br1", COMMENTED_TYPE),
        Deliberate("theirs", "lxc.net.2.type", "veth", COMMENTED_TYPE),
        Deliberate("theirs", "lxc.net.2.flags", "up", COMMENTED_TYPE),
        Deliberate("theirs", "lxc.net.2.link", "br1", COMMENTED_TYPE),
        Deliberate("ours", "lxc.net.1.ipv4.address", "192.168.5.20/24", INDEXED_ADDRESS),
        Deliberate("ours", "lxc.net.1.ipv6.address", "fd00:5::20/64", INDEXED_ADDRESS),
        Deliberate("theirs", "lxc.net.1.ipv4", "192.168.5.20/24", INDEXED_ADDRESS),
        Deliberate("theirs", "lxc.net.1.ipv6", "fd00:5::20/64", INDEXED_ADDRESS),
        Deliberate("ours", "lxc.rootfs.path", "dir:/var/lib/lxc/quirk1/rootfs", "the script's pattern allows at "
                   "most one blank before `=`, so `lxc.rootfs   = ...` stays a legacy key that LXC 3+ rejects"),
        Deliberate("theirs", "lxc.rootfs", "/var/lib/lxc/quirk1/rootfs", "same"),
    ],
}


def lxc_update_config(src: Path, tmp_path: Path) -> str:
    """What LXC's own lxc-update-config makes of a copy of `src` (it edits in place and keeps a .backup)."""
    tool = shutil.which("lxc-update-config")
    if not tool:
        pytest.skip("lxc-update-config is not installed (apt-get install lxc)")
    work = tmp_path / "update-config"
    work.mkdir()
    shutil.copy(src, work / "config")
    r = subprocess.run([tool, "-c", "config"], cwd=work, capture_output=True, text=True, timeout=60)  # temp in cwd
    assert r.returncode == 0, r.stderr
    assert (work / "config.backup").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in work.iterdir()) == ["config", "config.backup"]
    return (work / "config").read_text()


@pytest.mark.lxc
@pytest.mark.parametrize("case", LEGACY_CASES)
def test_agrees_with_lxc_update_config(case, tmp_path):
    """Same (key, value) lines as lxc-update-config (as multisets: the order is the same anyway), except the
    documented deliberate differences in DIFFERENCES, each with its reason."""
    ours = Counter(key_values(lxcconf.convert((DATA / case / "in.conf").read_text(), "modern")[0]))
    theirs = Counter(key_values(lxc_update_config(DATA / case / "in.conf", tmp_path)))
    documented = DIFFERENCES.get(case, [])
    assert all(d.side in ("ours", "theirs") and len(d.reason) > 3 for d in documented)
    assert sorted((ours - theirs).elements()) == sorted((d.key, d.value) for d in documented if d.side == "ours")
    assert sorted((theirs - ours).elements()) == sorted((d.key, d.value) for d in documented if d.side == "theirs")


def test_every_documented_difference_is_for_a_legacy_case():
    assert set(DIFFERENCES) <= set(LEGACY_CASES)


# ---------------------------------------------------------------------------------------------- LXC 5's parser


def lxc_loads(config: str, tmp_path: Path, name: str) -> tuple[bool, str]:
    """Whether LXC's own parser (lxc-info loading the container) accepts `config`; with its error log."""
    lxcpath = tmp_path / "lxcpath"
    (lxcpath / name).mkdir(parents=True)
    (lxcpath / name / "config").write_text(config)
    log = tmp_path / f"{name}.log"
    try:
        r = run(["lxc-info", "-P", str(lxcpath), "-n", name, "-c", "lxc.arch", "-l", "ERROR", "-o", str(log)])
    finally:
        remove_lock_dir(lxcpath)
    return r.returncode == 0, log.read_text() if log.exists() else r.stderr


def loadable(config: str, tmp_path: Path) -> str:
    """`config` with what would touch the host at load time moved into tmp_path: LXC opens lxc.log.file while
    parsing, and lxc.include needs the file (the distro configs named in the cases are not installed here)."""
    config = re.sub(r"^(\s*lxc\.(?:log\.file|console\.logfile)\s*=\s*).*$", rf"\g<1>{tmp_path}/x.log", config,
                    flags=re.M)
    return re.sub(r"^(\s*lxc\.include\s*=\s*).*$", r"\g<1>/usr/share/lxc/config/common.conf", config, flags=re.M)


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.parametrize("case", LEGACY_CASES)
def test_lxc5_loads_our_modern_output(case, tmp_path):
    got, _ = lxcconf.convert((DATA / case / "in.conf").read_text(), "modern")
    ok, log = lxc_loads(loadable(got, tmp_path), tmp_path, "ours")
    assert ok, f"LXC rejects our conversion of {case}:\n{log}"
    assert not lock_dir(tmp_path / "lxcpath").exists()


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.parametrize("case", ["legacy-backend-lvm", "legacy-quirks"])
def test_lxc5_rejects_what_lxc_update_config_writes(case, tmp_path):
    """Why the deliberate differences matter: the script's output of these cases does not even load."""
    theirs = lxc_update_config(DATA / case / "in.conf", tmp_path)
    ok, log = lxc_loads(loadable(theirs, tmp_path), tmp_path, "theirs")
    assert not ok and "Failed to parse config file" in log, log


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.parametrize("case", MODERN_CASES)
def test_modern_inputs_are_real_lxc5_configs(case, tmp_path):
    """The modern test inputs are configs LXC 5 takes (apart from the line a case marks as unknown on purpose)."""
    src = (DATA / case / "in.conf").read_text()
    _, warnings = lxcconf.convert(src, "legacy")
    unknown = {w.line for w in warnings if "not an LXC key" in w.message}
    kept = "\n".join(line for no, line in enumerate(src.splitlines(), 1) if no not in unknown) + "\n"
    ok, log = lxc_loads(loadable(kept, tmp_path), tmp_path, "modern")
    assert ok, log


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_converts_to_stdout_with_warnings_on_stderr():
    case = DATA / "legacy-quirks"
    r = migrate("convert-lxc", case / "in.conf", "--to", "modern")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (case / "expected.conf").read_text()
    assert r.stderr.splitlines() == [f"warning: {case / 'in.conf'}:{line}"
                                     for line in (case / "warnings.txt").read_text().splitlines()]
    assert all(re.fullmatch(r"warning: \S+:\d+: lxc\.[a-z0-9_.-]+: .+", line) for line in r.stderr.splitlines())


def test_cli_writes_out_atomically(tmp_path):
    case = DATA / "modern-gaps-unmappable"
    out = tmp_path / "legacy.conf"
    r = migrate("convert-lxc", case / "in.conf", "--to", "legacy", "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert out.read_text() == (case / "expected.conf").read_text()
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == len((case / "warnings.txt").read_text().splitlines())
    assert r.stderr.splitlines()[len(warnings):] == [f"wrote {out}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.conf"]   # no temp file left
    assert out.stat().st_mode & 0o777 == (case / "in.conf").stat().st_mode & 0o777


def test_cli_in_place_keeps_a_backup(tmp_path):
    case = DATA / "legacy-seed-0.7"
    conf = tmp_path / "config"
    shutil.copy(case / "in.conf", conf)
    conf.chmod(0o640)
    r = subprocess.run(  # FILE relative, OUT absolute: still the same file
        [str(BIN / "migrate"), "convert-lxc", "config", "--to", "modern", "-o", str(conf)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("", f"wrote {conf}.backup ({conf} as it was)\nwrote {conf}\n")
    assert conf.read_text() == (case / "expected.conf").read_text()
    assert (tmp_path / "config.backup").read_bytes() == (case / "in.conf").read_bytes()
    assert conf.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "config.backup").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "config.backup"]


# `convert-lxc F --to X -o F` twice: the second run converted nothing, yet it replaced F.backup (the only copy of
# the original) with the first run's output, and neither run said what it wrote. As a class: no run of the
# converter ever replaces a file it did not mean to change, a backup is never overwritten, a config already in the
# target form is left alone (and said so), and every file written is named on stderr.


@pytest.mark.parametrize("case", ["legacy-seed-0.7", "legacy-quirks", "modern-renames", "modern-lxc5-download"])
def test_cli_in_place_twice_keeps_the_original(case, tmp_path):
    conf = tmp_path / "config"
    shutil.copy(DATA / case / "in.conf", conf)
    first = migrate("convert-lxc", conf, "--to", target(case), "-o", conf)
    assert first.returncode == 0, first.stderr
    assert f"wrote {conf}.backup ({conf} as it was)\nwrote {conf}\n" in first.stderr
    converted = conf.read_bytes()
    second = migrate("convert-lxc", conf, "--to", target(case), "-o", conf)
    assert second.returncode == 0, second.stderr
    assert second.stderr.splitlines()[-1] == f"{conf}: already {target(case)}, nothing written"
    assert "wrote" not in second.stderr
    assert (tmp_path / "config.backup").read_bytes() == (DATA / case / "in.conf").read_bytes()
    assert conf.read_bytes() == converted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "config.backup"]


def test_cli_never_overwrites_a_backup(tmp_path):
    """A config.backup already there (an earlier conversion's, or the admin's own) stays; the next free
    config.backup.N takes the input; each run names what it wrote."""
    conf = tmp_path / "config"
    backups = {"config.backup": b"# the LXC 1.0 original\nlxc.utsname = vm0\n", "config.backup.1": b"# kept too\n"}
    for name, data in backups.items():
        (tmp_path / name).write_bytes(data)
    for n, case in enumerate(["legacy-seed-0.7", "legacy-quirks"], start=2):
        shutil.copy(DATA / case / "in.conf", conf)
        r = migrate("convert-lxc", conf, "--to", "modern", "-o", conf)
        assert r.returncode == 0, r.stderr
        assert f"wrote {conf}.backup.{n} ({conf} as it was)\nwrote {conf}\n" in r.stderr
        assert (tmp_path / f"config.backup.{n}").read_bytes() == (DATA / case / "in.conf").read_bytes()
        assert conf.read_text() == (DATA / case / "expected.conf").read_text()
    for name, data in backups.items():
        assert (tmp_path / name).read_bytes() == data


def test_cli_output_over_another_file_keeps_it(tmp_path):
    """-o onto an existing different file (an installed container's config): the file there is kept as a backup;
    the same output again writes nothing."""
    out = tmp_path / "config"
    out.write_text("lxc.uts.name = installed\n")
    out.chmod(0o600)
    src = DATA / "legacy-static-net" / "in.conf"
    r = migrate("convert-lxc", src, "--to", "modern", "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-2:] == [f"wrote {out}.backup ({out} as it was)", f"wrote {out}"]
    assert (tmp_path / "config.backup").read_text() == "lxc.uts.name = installed\n"
    assert out.read_text() == (DATA / "legacy-static-net" / "expected.conf").read_text()
    assert out.stat().st_mode & 0o777 == 0o600 and (tmp_path / "config.backup").stat().st_mode & 0o777 == 0o600
    again = migrate("convert-lxc", src, "--to", "modern", "-o", out)
    assert again.returncode == 0 and again.stderr.splitlines()[-1] == \
        f"{out}: already holds the modern config, nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "config.backup"]


@pytest.mark.parametrize("what", ["device", "fifo", "directory"])
def test_cli_refuses_an_output_that_is_no_regular_file(what, tmp_path):
    """-o /dev/null renamed a regular file over the device node (as root). The test makes its own node (a copy
    of /dev/null's major:minor in tmp_path), so a regression cannot touch the host's /dev."""
    out = tmp_path / what
    if what == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(out, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    if what == "fifo":
        os.mkfifo(out)
    if what == "directory":
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    r = migrate("convert-lxc", DATA / "legacy-seed-0.7" / "in.conf", "--to", "modern", "-o", out)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {out}: not a regular file"), r.stderr
    assert "Traceback" not in r.stderr and "wrote" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert out.is_char_device() if what == "device" else out.is_fifo() if what == "fifo" else out.is_dir()


def test_cli_reads_stdin():
    case = DATA / "modern-renames"
    r = migrate("convert-lxc", "-", "--to", "legacy", stdin=(case / "in.conf").read_text())
    assert (r.returncode, r.stdout, r.stderr) == (0, (case / "expected.conf").read_text(), "")


@pytest.mark.parametrize("what", ["missing", "directory", "binary", "recipe", "empty", "xen"])
def test_cli_bad_input_exits_2(what, tmp_path):
    path = {"missing": tmp_path / "nope.conf", "directory": tmp_path, "binary": Path("/bin/sh"),
            "recipe": DEFAULT_RECIPE, "empty": tmp_path / "empty.conf", "xen": tmp_path / "vm0.cfg"}[what]
    if what == "empty":
        path.write_text("")
    if what == "xen":
        path.write_text('name = "vm0"\nmemory = 512\nvif = [ "bridge=xenbr0" ]\n')
    out = tmp_path / "out.conf"
    r = migrate("convert-lxc", path, "--to", "modern", "-o", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.match(rf"error: {re.escape(str(path))}(:\d+)?: ", r.stderr) and "\nhint: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    if what not in ("missing", "directory"):
        assert "not an LXC config" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("what", ["nul", "huge", "zero-device", "latin1"])
def test_cli_hostile_input_exits_2_naming_it(what, tmp_path):
    """Input no LXC config is: exit 2 naming the file (and the line where there is one), nothing written."""
    path = {"zero-device": Path("/dev/zero")}.get(what, tmp_path / "config")
    if what == "nul":
        path.write_bytes(b"lxc.utsname = a\nlxc.tty = 1\x00\n")
    if what == "huge":
        path.write_bytes(b"lxc.utsname = a\n" + b"# padding padding padding\n" * 200_000)
    if what == "latin1":
        path.write_bytes(b"lxc.utsname = a\n# caf\xe9\n")
    out = tmp_path / "out.conf"
    r = migrate("convert-lxc", path, "--to", "modern", "-o", out)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: {path}") and "\nhint: " in r.stderr, r.stderr
    if what in ("nul", "latin1"):
        assert r.stderr.startswith(f"error: {path}:2: ") or "line 2 " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_cli_unwritable_output_exits_2(tmp_path):
    r = migrate("convert-lxc", DATA / "legacy-seed-0.7" / "in.conf", "--to", "modern", "-o",
                tmp_path / "no" / "such" / "dir" / "config")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "cannot write" in r.stderr, r.stderr


def test_cli_usage():
    h = migrate("convert-lxc", "--help")
    assert h.returncode == 0, h.stderr
    assert "Usage: migrate convert-lxc [OPTIONS] FILE" in h.stdout
    assert "--to [modern|legacy]" in h.stdout and "Examples:" in h.stdout and "FILE.backup" in h.stdout
    assert "migrate convert-lxc /var/lib/lxc/vm0/config --to modern -o /var/lib/lxc/vm0/config" in h.stdout
    assert "convert-lxc" in migrate("--help").stdout
    no_to = migrate("convert-lxc", DATA / "legacy-seed-0.7" / "in.conf")
    assert no_to.returncode == 2 and "--to" in no_to.stderr
    bad_to = migrate("convert-lxc", DATA / "legacy-seed-0.7" / "in.conf", "--to", "lxc5")
    assert bad_to.returncode == 2 and "lxc5" in bad_to.stderr


# ---------------------------------------------------------------------------------------------- real LXC boots


@pytest.fixture
def sandbox(tmp_path):
    """tests/support/lxc.py's network namespace with a bridge (every container stopped and destroyed, the namespace
    deleted, teardown fails on leftovers); afterwards also LXC's lock files of the sandbox's lxcpath."""
    with lxc_netns(tmp_path / "lxc-sandbox", bridge_cidr="10.0.3.1/24") as sb:
        yield sb
    remove_lock_dir(sb.lxcpath)
    assert not lock_dir(sb.lxcpath).exists()


def install(debian12_build: Path, sb, tag: str) -> Path:
    name = f"imgbuild-conv-{tag}-{os.getpid()}-{secrets.token_hex(2)}"
    sb.adopt(name)  # removed at the end, even if it never starts
    r = imgbuild("install-lxc", debian12_build, "--name", name, "--lxcpath", sb.lxcpath)
    assert r.returncode == 0, r.stdout + r.stderr
    return sb.lxcpath / name


def convert_into_place(legacy: Path, cdir: Path, bridge: str) -> str:
    """`migrate convert-lxc LEGACY --to modern -o CDIR/config`, then the one link line pointed at the test's bridge
    (the host has no lxcbr0 and the test must not touch the host's network)."""
    r = migrate("convert-lxc", legacy, "--to", "modern", "-o", cdir / "config")
    assert (r.returncode, r.stdout) == (0, ""), r.stderr
    assert r.stderr == f"wrote {cdir}/config.backup ({cdir}/config as it was)\nwrote {cdir}/config\n"
    config = (cdir / "config").read_text()
    assert not [k for k, _ in key_values(config) if k in lxcconf.RENAMED or k.startswith("lxc.network.")], config
    assert re.findall(r"^lxc\.net\.0\.link\s*=\s*(.*)$", config, re.M) == ["lxcbr0"], config
    config = re.sub(r"^(lxc\.net\.0\.link\s*=\s*).*$", rf"\g<1>{bridge}", config, flags=re.M)
    (cdir / "config").write_text(config)
    return config


def boot(sb, name: str) -> None:
    lxc_boot(sb, name)
    assert sb.attach(name, "hostname").stdout.strip() == name     # install-lxc --name gave it that host name
    addr = sb.attach(name, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    assert re.search(rf"\binet {re.escape(ADDRESS)}/24\b", addr.stdout), addr.stdout + addr.stderr
    for mountpoint, fstype in (("/proc", "proc"), ("/sys", "sysfs")):   # from the legacy fstab
        m = sb.attach(name, "findmnt", "-n", "-o", "FSTYPE", mountpoint)
        assert m.stdout.strip() == fstype, m.stdout + m.stderr


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_converted_legacy_render_boots(debian12_build: Path, sandbox, tmp_path):
    """The default recipe's output installed with install-lxc; its LEGACY config (render(version="legacy") for the
    container's path, with the legacy fstab the build would ship) converted by `migrate convert-lxc --to modern`
    in place of the installed config: systemd reaches `running` under LXC 5's lxc-start."""
    cdir = install(debian12_build, sandbox, "render")
    r = recipe.load(DEFAULT_RECIPE).recipe
    legacy = lxc.render(r, r.targets.lxc, name=cdir.name, lxcpath=str(sandbox.lxcpath), version="legacy")
    assert {"lxc.utsname", "lxc.rootfs", "lxc.mount", "lxc.tty", "lxc.pts", "lxc.network.type"} <= {
        k for k, _ in key_values(legacy)}
    (tmp_path / "legacy.conf").write_text(legacy)
    (cdir / "fstab").write_text(lxc.LEGACY_FSTAB.format(cdir=cdir))
    config = convert_into_place(tmp_path / "legacy.conf", cdir, sandbox.bridge)
    kv = key_values(config)
    assert ("lxc.rootfs.path", f"dir:{cdir}/rootfs") in kv and ("lxc.mount.fstab", f"{cdir}/fstab") in kv
    assert ("lxc.uts.name", HOSTNAME) in kv and ("lxc.net.0.hwaddr", MAC) in kv

    boot(sandbox, cdir.name)
    mac = sandbox.attach(cdir.name, "cat", "/sys/class/net/eth0/address")
    assert mac.stdout.strip() == MAC, mac.stdout + mac.stderr


SEED_FSTAB = ("proc            /var/lib/lxc/vm0/rootfs/proc         proc    nodev,noexec,nosuid 0 0\n"
              "sysfs           /var/lib/lxc/vm0/rootfs/sys          sysfs defaults  0 0\n")   # seed 000, verbatim


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_converted_seed_config_boots(debian12_build: Path, sandbox, tmp_path):
    """The seed's LXC 0.7 config (legacy-seed-0.7/in.conf) and fstab, with /var/lib/lxc/vm0 moved to the
    container's directory and nothing else changed, converted with `migrate convert-lxc --to modern`, boots the
    default recipe's systemd guest to `running`.

    It can: the 0.7 config gives LXC 5 all a systemd guest needs. The fstab mounts /proc and /sys (rw sysfs in a
    privileged container, so systemd mounts its own cgroup hierarchies: there is no lxc.mount.auto), LXC 5 fills
    /dev itself (lxc.autodev defaults to on), the allow-list has every device systemd opens (null, zero, full,
    random, urandom, tty, console, ptmx, pts), and the two capabilities it drops (sys_module, mac_admin) are
    ones systemd in a container does without. The guest sets its own address (10.0.3.2 from the recipe) since
    the config has no lxc.network.ipv4; the MAC is random (no hwaddr); veth.pair names the host side veth-vm0.
    """
    cdir = install(debian12_build, sandbox, "seed")
    seed = (DATA / "legacy-seed-0.7" / "in.conf").read_text()
    (tmp_path / "config.0.7").write_text(seed.replace("/var/lib/lxc/vm0", str(cdir)))
    (cdir / "fstab").write_text(SEED_FSTAB.replace("/var/lib/lxc/vm0", str(cdir)))
    config = convert_into_place(tmp_path / "config.0.7", cdir, sandbox.bridge)
    kv = key_values(config)
    assert ("lxc.rootfs.path", f"dir:{cdir}/rootfs") in kv and ("lxc.net.0.veth.pair", "veth-vm0") in kv

    boot(sandbox, cdir.name)
    pair = sandbox.run_ns("ip", "-o", "link", "show", "veth-vm0")
    assert f"master {sandbox.bridge}" in pair.stdout, pair.stdout + pair.stderr

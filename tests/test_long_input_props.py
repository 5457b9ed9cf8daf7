"""Parsers of outside input take time in proportion to their input: a hostile guest file or config must not make
imgbuild hang. Several regular expressions of the LXC converter, the identity rewriters and configparser's option
pattern (under .repo reading) backtracked quadratically on long runs of blanks, quotes or CRs: a 40 KB line took
6 s, a 1 MB one would take an hour. Each shape of such a line, at about 200 KB (an hour or more for the old code,
well under a second now), goes through every parser in one child process.

The child's timeout is a hang guard, not a speed check: it is hundreds of times what the run needs.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

N = 100_000
SCRIPT = textwrap.dedent(f"""
    from builder.guestconf import lxc as lxcconf, xen as xenconf
    from builder.migrate import xenbridge
    from builder.core.errors import InputError
    from builder.identity import formats as f
    from builder.rpm import repofiles

    N = {N}
    R = f.Rename.of(hostname="vm1", old_hostnames=("vm0",), ips={{"10.0.3.2": "10.0.3.3/16"}},
                    gateways={{"10.0.3.1": "10.0.3.254"}}, macs={{"00:16:3e:00:03:02": "00:16:3e:00:03:03"}})
    lines = {{
        "blanks": "a" + " " * N + "b",
        "blanks-before-eq": "a" + " " * N + "= b",
        "blanks-in-value": "lxc.net.0.ipv4.address = 10.0.3.2" + " \\t" * N + "x",
        "quoted": 'IPADDR="' + " " * N + "x",
        "quotes": "A=\\"" + '" x' * N,
        "hash-quotes": "A='" + "' #" * N + "x",
        "crs": "A=" + "\\r" * N + "x",
        "yaml-blanks": "  macaddress: a" + " \\t" * N + "x:",
        "yaml-key": "  k" + " " * N + "x",
        "ini-value": "[ipv4]\\naddress1 =" + " " * N + "x",
        "ini-key": "[Match]\\nMACAddress" + " " * N + "x",
        "ifupdown": "iface eth0 inet static\\n address" + " " * N + "x",
        "py-escapes": "name = '" + "\\\\\\\\'" * N,
        "hosts-names": "10.0.3.2 " + "vm0 " * N,
        "ipaddr-inserts": "".join(f"IPADDR{{i}}=10.0.3.2\\n" for i in range(N // 10)),
        "repo-no-delimiter": "[base]\\nname" + " " * N + "x\\n",
    }}
    for name, text in lines.items():
        for to in lxcconf.FORMS:
            try:
                lxcconf.convert(text, to)
            except InputError:
                pass
        for fn in f.REWRITERS.values():
            fn(text, R)
        f.read_lxc(text), f.read_openvz(text)
        for reader in (f.read_xen, xenconf.read_xm, xenbridge.bridges_used):
            try:
                reader(text)
            except (InputError, ValueError):
                pass
        try:
            xenbridge.plan_bridge(text)
        except ValueError:
            pass
        xenbridge.bridges_defined({{"ifcfg-eth0": text}})
        try:
            repofiles.rewrite(text, "x.repo", "http://m.example/6", repofiles.variables("6", "x86_64"))
        except InputError:
            pass
    print("ok")
""")


def test_every_parser_is_linear_on_hostile_lines():
    try:
        r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise AssertionError("a parser took more than 10 minutes on 200 KB lines: it backtracks quadratically") \
            from None
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr[-3000:]

"""Property tests for .repo files (builder/rpm/repofiles.py): they come from a release package off a mirror
(outside input), so on any text rewrite() returns the new file and its repos, or raises InputError naming the
file; never another exception. What it returns is what yum and dnf can take: every repo id is one dnf accepts,
an enabled repo's baseurl is a path below the mirror (no whitespace, no `..`), the new text is read back by
configparser with the same sections and gpgcheck/gpgkey settings, and every repo the file enables is in it.

Inputs: random text and bytes, the real CentOS 5/6/7 repo files of tests/rpm/test_repofiles.py mutated, and
generated files of [sections] with baseurl/mirrorlist/metalink/gpgkey/enabled lines holding hostile values,
commented-out baseurls, continuation lines and garbage.
"""
from __future__ import annotations

import configparser

from hypothesis import given
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.rpm import repofiles
from tests.rpm import test_repofiles as golden
from tests.support.strategies import config_text, lines_of, one_line

MIRROR = "https://vault.example.org/centos/6.10"
VARS = repofiles.variables("6", "x86_64")
SEEDS = [v for k, v in vars(golden).items() if k.isupper() and isinstance(v, str) and "[" in v]

SECTION = st.one_of(st.sampled_from(["[base]", "[updates]", "[c6-media]", "[C6.0-base]", "[DEFAULT]", "[main]",
                                     "[a b]", "[../x]", "[]", "[base", "[x]y]", " [extras] "]),
                    one_line(12).map(lambda s: f"[{s}]"))
URLS = ["http://mirror.example/centos/$releasever/os/$basearch/", "$releasever/os/", "${releasever}/os/$arch",
        "http://x/$releasever/../../etc/", "http://x/$releasever/os/?a=b", "http://x/$releasever/ http://y/",
        "file:///media/CentOS/", "http://x/$releasever/$contentdir/$infra/$unknown/", ""]
VALUE = st.one_of(st.sampled_from(URLS + ["1", "0", "yes", "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-6",
                                          "file:///a, file:///b", "%(foo)s", "$releasever"]), one_line(30))
OPTION = st.tuples(st.sampled_from(["name", "baseurl", "mirrorlist", "metalink", "gpgcheck", "gpgkey", "enabled",
                                    "#baseurl", "# baseurl", "BaseURL", "", "exclude"]),
                   st.sampled_from(["=", " = ", ":", " : "]), VALUE).map("".join)
LINE = st.one_of(SECTION, OPTION, OPTION, OPTION, st.sampled_from(["", "# comment", "; comment", "\tcontinued",
                                                                  "        file:///more"]), one_line(40))
TEXTS = config_text(SEEDS, lines_of(LINE, max_lines=20))


@given(TEXTS, st.sampled_from([(), ("base",), ("base", "updates"), ("nosuch",)]))
def test_rewrite_returns_repos_yum_can_use_or_input_error(text, want):
    try:
        new, repos = repofiles.rewrite(text, "CentOS-Base.repo", MIRROR, VARS, want)
    except InputError as e:
        assert e.message.startswith("CentOS-Base.repo")
        return
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(new)
    assert [r.id for r in repos] == cp.sections()
    for r in repos:
        assert repofiles.REPO_ID.fullmatch(r.id)
        assert r.enabled == (cp[r.id]["enabled"] == "1")
        if r.enabled:
            assert r.baseurl.startswith(MIRROR + "/") or r.baseurl == MIRROR
            assert r.baseurl == cp[r.id]["baseurl"]
            assert not any(c.isspace() for c in r.baseurl) and "/../" not in r.baseurl + "/"
            assert "mirrorlist" not in cp[r.id] and "metalink" not in cp[r.id]
        if want:
            assert r.enabled == (r.id in want and bool(r.baseurl))

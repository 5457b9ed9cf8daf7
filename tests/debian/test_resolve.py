"""Which packages mmdebstrap will install (builder/debian/resolve.py): the host's real apt-get answers mmdebstrap's
two requests on a small synthetic suite, so every choice below is apt's own."""
from __future__ import annotations

import hashlib

import pytest

from builder.debian import apt
from builder.debian import resolve as debresolve

SUITE = """\
Package: base-a
Version: 1
Architecture: amd64
Essential: yes
Priority: required
Depends: libx | liby
Filename: pool/base-a_1_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: libx
Version: 1
Architecture: amd64
Priority: optional
Filename: pool/libx_1_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: liby
Version: 1
Architecture: amd64
Priority: optional
Filename: pool/liby_1_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: req1
Version: 2
Architecture: all
Priority: required
Depends: virt
Filename: pool/req1_2_all.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: prov1
Version: 1
Architecture: amd64
Priority: optional
Provides: virt
Filename: pool/prov1_1_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: tool
Version: 3
Architecture: amd64
Priority: optional
Pre-Depends: libz (>= 1.0) | libw
Filename: pool/tool_3_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: libz
Version: 1.2
Architecture: amd64
Priority: optional
Filename: pool/libz_1.2_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: libw
Version: 1
Architecture: amd64
Priority: optional
Filename: pool/libw_1_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: junk
Version: 1
Architecture: amd64
Priority: optional
Depends: libw
Filename: pool/junk_1_amd64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: other-arch
Version: 1
Architecture: arm64
Priority: required
Filename: pool/other-arch_1_arm64.deb
Size: 100
SHA256: 0000000000000000000000000000000000000000000000000000000000000000
"""


@pytest.fixture
def index(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    data = SUITE.encode()
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "cache/indexes").mkdir(parents=True)
    (tmp_path / "cache/indexes" / f"{sha}.Packages").write_bytes(data)     # as apt.fetch_index keeps it
    (tmp_path / "cache/indexes" / f"{sha}.Packages.sha256").write_text(sha + "\n")
    return apt.Index("http://127.0.0.1:9/debian", "bookworm", "amd64", 0, (sha,), frozenset(),
                     ("http://127.0.0.1:9/debian/dists/bookworm/main/binary-amd64/Packages",),
                     (("Origin", "Debian"), ("Suite", "stable"), ("Codename", "bookworm")))


def test_universe_seeds_and_closure():
    u = debresolve.Universe(b"\n" + SUITE.encode(), "amd64")
    first, second = debresolve.seeds(u, "minbase", ["tool=3"])
    assert first == ["base-a"] and second == ["tool", "req1"]     # other-arch is not for amd64
    assert u.get("other-arch") is None and u.get("nope") is None
    # every alternative and every provider: apt's choice is always inside
    assert sorted(debresolve.closure(u, first + second)) == ["base-a", "libw", "libx", "liby", "libz", "prov1",
                                                             "req1", "tool"]
    assert debresolve.seeds(u, "essential", [])[1] == []
    assert debresolve.seeds(u, "buildd", [])[1][-1] == "build-essential"


def test_resolve_asks_apt_both_stages_and_caches_the_answer(index, tmp_path):
    res = debresolve.resolve(index, "minbase", ["tool"])
    got = res.stanzas
    # first alternatives (libx, libz), the provider of virt; not liby, libw or junk
    assert [s.name for s in got] == ["base-a", "libx", "libz", "prov1", "req1", "tool"]
    assert res.first == {"base-a", "libx"}
    assert {s.name: s.version for s in got}["libz"] == "1.2"
    (cached,) = (tmp_path / "cache/indexes").glob("resolved-*.Packages")
    again = debresolve.resolve(index, "minbase", ["tool"])
    assert [s.name for s in again.stanzas] == [s.name for s in got] and again.first == res.first
    # the essential variant stops after the first stage and the includes
    assert [s.name for s in debresolve.resolve(index, "essential", []).stanzas] == ["base-a", "libx"]


@pytest.mark.parametrize("variant, include", [("extract", []), ("custom", ["tool"]), ("minbase", ["./x.deb"]),
                                              ("minbase", ["?priority(optional)"])])
def test_what_is_not_modelled_goes_the_ordinary_way(index, variant, include):
    with pytest.raises(debresolve.Unresolved):
        debresolve.resolve(index, variant, include)


def test_an_unknown_package_is_unresolved(index):
    with pytest.raises(debresolve.Unresolved, match="apt could not resolve"):
        debresolve.resolve(index, "minbase", ["no-such-package"])


def test_a_damaged_kept_index_is_not_used(index, tmp_path):
    (tmp_path / "cache/indexes" / f"{index.ids[0]}.Packages").write_bytes(SUITE.encode().replace(b"libx", b"libq"))
    with pytest.raises(apt.MirrorError, match="cannot reach http://127.0.0.1:9"):   # downloaded again
        apt.packages_text(index)

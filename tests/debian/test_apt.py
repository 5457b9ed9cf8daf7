"""The host's apt sources (both formats) and the mirror's index."""
from __future__ import annotations

import pytest

from builder.core.errors import InputError
from builder.debian import apt


def _apt(tmp_path, sources_list="", files=None):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    (d / "sources.list").write_text(sources_list)
    for name, text in (files or {}).items():
        (d / "sources.list.d" / name).write_text(text)
    return d


DEB822 = """Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_deb822_picks_the_archive_not_security(tmp_path):
    d = _apt(tmp_path, files={"debian.sources": DEB822})
    assert apt.host_mirror("bookworm", d) == "http://mirror.example/debian"
    # another release from the same archive: the plain-suite source is still the archive
    assert apt.host_mirror("trixie", d) == "http://mirror.example/debian"


def test_one_line_format_with_options_and_comments(tmp_path):
    d = _apt(tmp_path, "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian bookworm main\n"
                       "deb http://security.example/debian-security bookworm-security main\n")
    assert apt.host_mirror("bookworm", d) == "http://ftp.example/debian"


def test_disabled_sources_and_other_extensions_are_ignored(tmp_path):
    d = _apt(tmp_path, files={"a.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\n"
                                           "Suites: bookworm\nComponents: main\n",
                              "b.list.disabled": "deb http://disabled.example/debian bookworm main\n",
                              "c.list": "deb http://on.example/debian bookworm main\n"})
    assert apt.host_mirror("bookworm", d) == "http://on.example/debian"


def test_no_source_is_a_clear_error(tmp_path):
    d = _apt(tmp_path, "deb-src http://src.example/debian bookworm main\n")
    with pytest.raises(InputError, match="mirror: auto"):
        apt.host_mirror("bookworm", d)


def test_index_missing_suggests_close_names():
    idx = apt.Index("m", "bookworm", "amd64", 0, ("x",), frozenset({"systemd-sysv", "openssh-server", "vim"}))
    missing = idx.missing(["systemd-sysvv", "vim", "openssh-server=1:9.2", "nothing-like-it"])
    assert missing == {"systemd-sysvv": ["systemd-sysv"], "nothing-like-it": []}


def test_names_include_provides():
    data = (b"Package: postfix\nProvides: mail-transport-agent, default-mta (= 1)\n\n"
            b"Package: vim\nVersion: 2\n")
    assert apt._scan(data).names == {"postfix", "mail-transport-agent", "default-mta", "vim"}


@pytest.mark.network
def test_real_index(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    mirror = apt.host_mirror("bookworm")
    idx = apt.fetch_index(mirror, "bookworm", "amd64")
    assert {"systemd-sysv", "openssh-server", "ifupdown", "iproute2"} <= idx.names
    assert idx.date > 1_680_000_000 and len(idx.ids[0]) == 64
    assert list((tmp_path / "indexes").glob("*.names")) and list((tmp_path / "indexes").glob("*.debs"))
    assert len(apt.deb_checksums(idx)) > 50000
    again = apt.fetch_index(mirror, "bookworm", "amd64")
    assert again.names == idx.names


@pytest.mark.network
def test_unknown_release_is_input_error():
    with pytest.raises(InputError, match="not on the mirror"):
        apt.fetch_index(apt.host_mirror("bookworm"), "no-such-release", "amd64")


def test_streamed_names_equal_whole_names():
    import io
    data = b"".join(b"Package: p%d\nVersion: 1\nProvides: v%d (= 1), w\n\n" % (i, i) for i in range(5000))
    whole = apt._scan(data).names
    assert apt._stream_scan(io.BytesIO(data), chunk=777).names == whole and len(whole) == 10001

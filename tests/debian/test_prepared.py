"""Prepared .debs (builder/debian/prepared.py): the same package, data.tar uncompressed; dpkg reads it alike."""
from __future__ import annotations

import gzip
import lzma
import subprocess

import pytest

from builder.debian import prepared as debprep


def _deb(tmp_path, compression="xz"):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text("Package: demo\nVersion: 1.0\nArchitecture: all\n"
                                         "Maintainer: t <t@example.org>\nDescription: demo\n")
    (root / "usr/share/demo").mkdir(parents=True)
    (root / "usr/share/demo/odd").write_bytes(b"x" * 4097)          # an odd-sized member follows
    (root / "usr/share/demo/link").symlink_to("odd")
    deb = tmp_path / f"demo-{compression}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "-b", str(root), str(deb)], check=True,
                   capture_output=True)
    return deb


def _member(data: bytes, prefix: str) -> tuple[str, bytes]:
    return next((n, b) for _, n, b in debprep.members(data) if n.startswith(prefix))


@pytest.mark.parametrize("compression, ext, decompress", [("xz", "xz", lzma.decompress),
                                                         ("gzip", "gz", gzip.decompress)])
def test_prepared_deb_holds_the_same_tar_uncompressed(tmp_path, compression, ext, decompress):
    deb = _deb(tmp_path, compression)
    orig = deb.read_bytes()
    out = tmp_path / "prepared.deb"
    sha, size = debprep.prepare_file(deb, out)
    new = out.read_bytes()
    assert size == len(new) and len(sha) == 64
    name, body = _member(orig, "data.tar")
    assert name == f"data.tar.{ext}"
    assert _member(new, "data.tar") == ("data.tar", decompress(body))
    assert _member(new, "control.tar") == _member(orig, "control.tar")
    assert [n for _, n, _ in debprep.members(new)][0] == "debian-binary"
    # dpkg-deb reads it: the same files and the same control
    ls = [subprocess.run(["dpkg-deb", "-c", str(p)], capture_output=True, text=True, check=True).stdout
          for p in (deb, out)]
    assert ls[0] == ls[1] and "./usr/share/demo/odd" in ls[0]
    info = [subprocess.run(["dpkg-deb", "-f", str(p)], capture_output=True, text=True, check=True).stdout
            for p in (deb, out)]
    assert info[0] == info[1]
    # installing both into scratch roots gives the same files
    for p, d in ((deb, "a"), (out, "b")):
        subprocess.run(["dpkg-deb", "-x", str(p), str(tmp_path / d)], check=True)
    assert (tmp_path / "a/usr/share/demo/odd").read_bytes() == (tmp_path / "b/usr/share/demo/odd").read_bytes()


def test_already_uncompressed_is_returned_as_is(tmp_path):
    deb = _deb(tmp_path, "none")
    assert debprep.prepare(deb.read_bytes()) == deb.read_bytes()


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 not ar", b"!<arch>\n" + b"x" * 60])
def test_not_a_deb(data):
    with pytest.raises(debprep.NotADeb):
        debprep.prepare(data)


def test_a_cut_short_deb_is_refused(tmp_path):
    data = _deb(tmp_path).read_bytes()
    with pytest.raises(debprep.NotADeb, match="cut short|truncated|data.tar"):
        debprep.prepare(data[:-100])

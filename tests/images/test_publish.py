"""`imgbuild publish`: the image server tree of real outputs; `imgbuild verify` on it; serials and --keep on tiny
outputs; and `lxc-create -t download` (Debian 12's LXC, HTTPS only) against the tree served on 127.0.0.1, the
container then booted under real lxc-start in a network namespace of the test's own."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import pytest

from builder.core import sums
from tests.conftest import imgbuild, sha256
from tests.support import tiny_output
from tests.support.https import https_server
from tests.support.lxc import lxc_netns, wait_running
from tests.support.lxd import lxd_daemon, reason
from tests.support.signing import gpg_signer, ssh_signer

pytestmark = [pytest.mark.root]
DL_CACHE = "/var/cache/lxc/download/debian/bookworm/amd64/debian12"   # what lxc-create -t download keeps


def tiny(out, epoch: int, note: str = ""):
    """A tiny output (busybox) with the fields publish reads and its SHA256SUMS."""
    d = tiny_output.make(out)
    m = json.loads((d / "manifest.json").read_text())
    m.update(distro="debian", release="bookworm", arch="amd64", source_date_epoch=epoch, note=note)
    (d / "manifest.json").write_text(json.dumps(m))
    sums.write(d, {n: sha256(d / n) for n in ("tiny.tar", "lxc.conf", "manifest.json")})
    return d


def serials(top) -> list[str]:
    return sorted(os.listdir(top / "images/debian/bookworm/amd64/tiny"))


def test_serials_same_build_again_and_keep(tmp_path):
    top = tmp_path / "www"
    a = tiny(tmp_path / "a", 1_700_000_000)
    r = imgbuild("publish", a, "--to", top)
    assert r.returncode == 0, r.stderr
    assert "published as images/debian/bookworm/amd64/tiny/20231114_2213" in r.stdout
    r = imgbuild("publish", a, "--to", top)            # the same build: nothing changes
    assert r.returncode == 0 and "already there: images/debian/bookworm/amd64/tiny/20231114_2213" in r.stdout
    assert serials(top) == ["20231114_2213"]
    b = tiny(tmp_path / "b", 1_700_000_000, "another build of the same date")
    c = tiny(tmp_path / "c", 1_800_000_000)
    assert imgbuild("publish", b, "--to", top).returncode == 0
    r = imgbuild("publish", c, "--to", top, "--keep", "2")
    assert r.returncode == 0, r.stderr
    assert serials(top) == ["20231114_2213_2", "20270115_0800"]
    assert "20231114_2213: removed (--keep 2)" in r.stdout
    index = (top / "meta/1.0/index-system").read_text()
    assert index == "debian;bookworm;amd64;tiny;20270115_0800;/images/debian/bookworm/amd64/tiny/20270115_0800/\n"
    assert (top / "meta/1.0/index-user").read_text() == index
    # no lxd target: the simplestreams index lists no version of it
    assert json.loads((top / "streams/v1/images.json").read_text())["products"] == {}
    r = imgbuild("verify", top)
    assert r.returncode == 0, r.stdout
    assert r.stdout.count(": ok (") == 4               # two serials, meta/1.0, streams/v1


def test_refusals_change_nothing(tmp_path):
    a = tiny(tmp_path / "a", 1_700_000_000)
    with open(a / "tiny.tar", "r+b") as f:
        f.seek(600)
        f.write(b"X")
    top = tmp_path / "www"
    r = imgbuild("publish", a, "--to", top)
    assert r.returncode == 2 and f"{a}: not published: {a / 'tiny.tar'}: sha256" in r.stderr, r.stderr
    assert not top.exists()
    b = tiny(tmp_path / "b", 1_700_000_000)
    (tmp_path / "elsewhere").mkdir()
    top.mkdir()
    (top / "images").symlink_to(tmp_path / "elsewhere")
    r = imgbuild("publish", b, "--to", top)
    assert r.returncode == 2 and f"{top / 'images'}: a symbolic link" in r.stderr, r.stderr
    assert os.listdir(tmp_path / "elsewhere") == []


def test_gpg_signs_what_the_download_template_checks(tmp_path):
    """With a GnuPG key every directory's SHA256SUMS is signed, and so is each file a validating download
    template fetches (FILE.asc beside it): gpgv accepts each; `imgbuild sign` adds them to an unsigned tree."""
    with gpg_signer(tmp_path) as g:
        top = tmp_path / "www"
        a = tiny(tmp_path / "a", 1_700_000_000)
        r = imgbuild("publish", a, "--to", top, "--sign", g.fingerprint, env=g.env())
        assert r.returncode == 0, r.stderr
        serial = top / "images/debian/bookworm/amd64/tiny/20231114_2213"
        signed = [serial / "rootfs.tar.xz", serial / "meta.tar.xz", top / "meta/1.0/index-system",
                  top / "meta/1.0/index-user"]
        for f in signed + [serial / "SHA256SUMS", top / "meta/1.0/SHA256SUMS", top / "streams/v1/SHA256SUMS"]:
            v = subprocess.run(["gpgv", "--keyring", str(g.keyring), f"{f}.asc", str(f)], capture_output=True,
                               text=True)
            assert v.returncode == 0, (f, v.stderr)
        listed = sums.parse(serial, sums.Report(serial))
        assert {"rootfs.tar.xz.asc", "meta.tar.xz.asc"} <= set(listed)
        r = imgbuild("verify", top, "--keyring", g.keyring)
        assert r.returncode == 0 and r.stdout.count(": ok (") == 3, r.stdout
        # an unsigned tree, signed afterwards by `imgbuild sign`
        other = tmp_path / "www2"
        assert imgbuild("publish", a, "--to", other).returncode == 0
        assert not list(other.rglob("*.asc"))
        r = imgbuild("sign", other, "--key", g.fingerprint, env=g.env())
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in other.rglob("*.asc")) == sorted(
            ["SHA256SUMS.asc"] * 3 + ["index-system.asc", "index-user.asc", "meta.tar.xz.asc", "rootfs.tar.xz.asc"])
        r = imgbuild("verify", other, "--keyring", g.keyring)
        assert r.returncode == 0, r.stdout


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return ssh_signer(tmp_path_factory.mktemp("signer"))


@pytest.fixture(scope="module")
def published(image_build, tmp_path_factory, signer):
    """The image_build output published and signed (an ssh key: SHA256SUMS.sig in every directory)."""
    top = tmp_path_factory.mktemp("www") / "www"
    r = imgbuild("publish", image_build, "--to", top, "--sign-ssh", signer.key)
    assert r.returncode == 0, r.stderr
    return top


@pytest.mark.network
@pytest.mark.slow
def test_the_tree_of_a_real_output(published, image_build):
    top = published
    [serial] = os.listdir(top / "images/debian/bookworm/amd64/debian12")
    d = top / "images/debian/bookworm/amd64/debian12" / serial
    assert sorted(os.listdir(d)) == ["SHA256SUMS", "SHA256SUMS.sig", "lxd.tar.xz", "manifest.json", "meta.tar.xz",
                                     "rootfs.squashfs", "rootfs.tar.xz", "sbom.spdx.json"]
    hostname = subprocess.run(["tar", "-xJOf", str(d / "rootfs.tar.xz"), "./etc/hostname"], capture_output=True)
    assert hostname.stdout == b"LXC_NAME\n"
    meta = subprocess.run(["tar", "-tJf", str(d / "meta.tar.xz")], capture_output=True, text=True).stdout.split()
    assert {"./config", "./config-user", "./templates", "./excludes-user", "./create-message"} <= set(meta)
    products = json.loads((top / "streams/v1/images.json").read_text())["products"]
    p = products["debian:bookworm:amd64:debian12"]
    items = p["versions"][serial]["items"]
    assert items["root.squashfs"]["sha256"] == sha256(d / "rootfs.squashfs")
    combined = subprocess.run(f"cat {d / 'lxd.tar.xz'} {d / 'rootfs.squashfs'} | sha256sum", shell=True,
                              capture_output=True, text=True).stdout.split()[0]
    assert items["lxd.tar.xz"]["combined_squashfs_sha256"] == combined == items["incus.tar.xz"][
        "combined_squashfs_sha256"]
    assert p["aliases"] == "debian/bookworm/debian12,debian12"
    index = json.loads((top / "streams/v1/index.json").read_text())
    assert index["index"]["images"]["products"] == ["debian:bookworm:amd64:debian12"]


@pytest.mark.network
@pytest.mark.slow
def test_verify_names_a_changed_byte_in_the_tree(published, tmp_path, signer):
    copy = tmp_path / "www"
    shutil.copytree(published, copy)
    r = imgbuild("verify", copy, "--allowed-signers", signer.allowed_signers)
    assert r.returncode == 0, r.stdout
    assert r.stdout.count("signed by ssh builds@example.invalid") == 3    # the image, meta/1.0, streams/v1
    [serial] = os.listdir(copy / "images/debian/bookworm/amd64/debian12")
    f = copy / "images/debian/bookworm/amd64/debian12" / serial / "rootfs.tar.xz"
    with open(f, "r+b") as fh:
        fh.seek(4096)
        b = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([b[0] ^ 1]))
    r = imgbuild("verify", copy, "--allowed-signers", signer.allowed_signers)
    assert r.returncode == 1 and f"{f}: sha256" in r.stdout, r.stdout
    assert r.stdout.count("FAILED") == 1, r.stdout


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.lxc
def test_lxc_create_download_from_the_tree_boots(published, tmp_path):
    name = "fromdl"
    try:
        with https_server(published, tmp_path) as srv, lxc_netns(tmp_path / "lxc") as sb:
            conf = tmp_path / "net.conf"
            conf.write_text(f"lxc.net.0.type = veth\nlxc.net.0.link = {sb.bridge}\nlxc.net.0.flags = up\n"
                            "lxc.net.0.hwaddr = 00:16:3e:00:03:02\n")
            sb.adopt(name)
            r = subprocess.run(["lxc-create", "-P", str(sb.lxcpath), "-n", name, "-t", "download", "-f", str(conf),
                                "--", "--server", srv.address, "-d", "debian", "-r", "bookworm", "-a", "amd64",
                                "--variant", "debian12", "--flush-cache"],
                               env={**os.environ, "WGETRC": str(srv.wgetrc)}, capture_output=True, text=True,
                               timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "built by imgbuild" in r.stdout            # the image's create-message
            sb.start(name)
            state, _ = wait_running(sb, name)
            assert state in ("running", "degraded"), f"systemd says {state!r}\n{sb.log_tail()}"
            assert sb.attach(name, "hostname").stdout.strip() == name
            assert f"\t{name}" in sb.attach(name, "cat", "/etc/hosts").stdout
    finally:
        shutil.rmtree(DL_CACHE, ignore_errors=True)
        with contextlib.suppress(OSError):      # and the directories above it it made, when they are empty
            os.removedirs(os.path.dirname(DL_CACHE))


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.lxc
def test_lxd_launches_from_the_trees_simplestreams(published, tmp_path):
    if reason():
        pytest.skip(reason())
    with https_server(published, tmp_path) as srv, lxd_daemon(SSL_CERT_FILE=str(srv.cert)) as d:
        d.lxc("remote", "add", "mine", f"https://{srv.address}", "--protocol", "simplestreams", "--public")
        listed = d.lxc("image", "list", "mine:", "--format", "csv", "-c", "lf").stdout
        assert listed.startswith("debian12 ("), listed          # "debian12 (3 more),FINGERPRINT": its aliases
        d.lxc("launch", "mine:debian12", "from-streams", "-s", "default")
        state = d.running("from-streams")
        assert state in ("running", "degraded"), f"systemd says {state!r}"
        assert d.lxc("exec", "from-streams", "--", "hostname").stdout.strip() == "from-streams"

"""migrate xen: what needs no host. The source's config is another host's data: its name, disk paths and the
stage a previous run left are checked before anything is copied; local input is checked before connecting."""
from __future__ import annotations

import json

import pytest

from builder.core.errors import InputError
from builder.migrate import xen as xenmove


def cfg(disk: str, name: str = "www") -> str:
    return f"name = {name!r}\nmemory = 256\ndisk = [{disk!r}]\nvif = ['mac=00:16:3e:11:22:33']\n"


@pytest.mark.parametrize("name", ["../../etc", "a/b", "x$(touch /tmp/PWN)", ".hidden", "a b", "x\ny", "-x",
                                  "x" * 65])
def test_the_guests_name_from_the_source_must_be_plain(name):
    with pytest.raises(InputError) as e:
        xenmove.guest_name(cfg("file:/var/xen/www.img,xvda1,w", name), "/etc/xen/www.cfg", "src")
    assert "src:/etc/xen/www.cfg" in e.value.message


def test_a_plain_name_or_the_file_name():
    assert xenmove.guest_name(cfg("file:/x.img,xvda,w"), "/etc/xen/www.cfg", "src") == "www"
    assert xenmove.guest_name("memory = 1\n", "/etc/xen/db.cfg", "src") == "db"


@pytest.mark.parametrize("target, why", [
    ("/var/xen/../../etc/shadow", "`..`"),                       # would land outside --disk-map's target
    ("var/xen/www.img", "absolute"),
    ("/var/xen/www\n.img", "control"),
    ("/var/spool/cron/crontabs/root", "/var/spool"),             # unmapped: the same path on the destination
    ("/etc/cron.d/www", "/etc"),
    ("/root/.ssh/authorized_keys", "/root"),
    ("/usr/local/bin/www", "/usr/local/bin"),
    ("/var/xen/w w.img", "plain file name"),
    ("/var/xen/$(touch x).img", "plain file name"),
])
def test_disk_paths_from_the_source_are_checked(tmp_path, target, why):
    with pytest.raises(InputError) as e:
        xenmove.disks_of(cfg(f"file:{target},xvda1,w"), "/etc/xen/www.cfg", [("/var/xen", "/srv/xen")],
                         tmp_path)
    assert why in e.value.message


def test_disks_mapped_by_the_user_or_in_image_directories_are_fine(tmp_path):
    d = xenmove.disks_of(cfg("file:/var/xen/www.img,xvda1,w"), "c", [("/var/xen", "/srv/x$(y)")], tmp_path)
    assert d[0].dst == "/srv/x$(y)/www.img" and d[0].stage == tmp_path / "www.img"
    d = xenmove.disks_of(cfg("file:/var/lib/xen/images/www.img,xvda1,w"), "c", [], tmp_path)
    assert d[0].dst == "/var/lib/xen/images/www.img"
    d = xenmove.disks_of(cfg("file:/var/spool/x/www.img,xvda1,w"), "c", [("/var/spool/x/www.img", "/srv/w.img")],
                         tmp_path)
    assert d[0].dst == "/srv/w.img"


@pytest.mark.parametrize("kw", [
    dict(guest="../etc/passwd"), dict(guest="www;id"), dict(guest="/etc/xen/\nx"), dict(xen_dir="etc/xen"),
    dict(xen_dir="/etc/xen\n"), dict(disk_map=(("/var/xen", "srv"),)), dict(disk_map=(("/a\n", "/b"),)),
    dict(bridge_map=(("*", "br$(x)"),)), dict(bridge_map=(("xenbr0", "br 0"),)), dict(bridge_map=(("a;b", "br0"),)),
    dict(ips=("10.0.0.1=x",)), dict(macs=("zz=auto",)), dict(hostname="a b"),
])
def test_local_input_is_checked_before_connecting(kw):
    with pytest.raises(InputError):
        xenmove.check_request(xenmove.XenMoveRequest(**{"guest": "www", **kw}))
    xenmove.check_request(xenmove.XenMoveRequest("www", disk_map=(("/var/xen", "/srv/x$(y)"),),
                                                 bridge_map=(("*", "xenbr0"),), ips=("10.0.0.1=10.0.0.2",)))


@pytest.mark.parametrize("text", ["[]", "{", '{"macs": ["x"]}', '{"macs": {"00:16:3e:00:00:01": "$(x)"}}',
                                  "\xff", '{"macs": {"a": "b"}}'])
def test_an_identity_file_left_in_the_stage_is_read_strictly(tmp_path, text):
    (tmp_path / xenmove.IDENTITY).write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError) as e:
        xenmove._identity_state(tmp_path)
    assert str(tmp_path / xenmove.IDENTITY) in str(e.value)


def test_identity_state_roundtrip_and_symlink(tmp_path):
    macs = {"00:16:3e:11:22:33": "00:16:3e:44:55:66"}
    (tmp_path / xenmove.IDENTITY).write_text(json.dumps({"macs": macs}))
    assert xenmove._identity_state(tmp_path) == {"macs": macs}
    assert xenmove._identity_state(tmp_path / "none") == {}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / xenmove.IDENTITY).symlink_to(tmp_path / xenmove.IDENTITY)
    with pytest.raises(InputError):
        xenmove._identity_state(tmp_path / "other")


def test_clean_stage_removes_the_copies_and_keeps_the_identity(tmp_path):
    disks = [xenmove.Disk("/var/xen/a.img", "/srv/a.img", tmp_path / "a.img"),
             xenmove.Disk("/var/xen/b.img", "/srv/b.img", tmp_path / "b.img")]
    for d in disks:
        d.stage.write_bytes(b"x" * 8192)
    (tmp_path / "www.cfg").write_text("name = 'www'\n")
    (tmp_path / xenmove.IDENTITY).write_text("{}")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_text("not ours")
    assert xenmove.clean_stage(tmp_path, disks) >= 16384
    assert sorted(p.name for p in tmp_path.iterdir()) == [xenmove.IDENTITY]
    assert outside.read_text() == "not ours"


def test_a_symlinked_stage_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "www").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError):
        xenmove._stage_dir(tmp_path / "www")
    assert xenmove._stage_dir(tmp_path / "db") == tmp_path / "db" and (tmp_path / "db").stat().st_mode & 0o777 == 0o700

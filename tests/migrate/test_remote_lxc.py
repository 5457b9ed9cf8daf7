"""install-lxc --host's checks of another host, on what the host answered (hostile data, no host needed): its
configs parsed by the local duplicate checks' readers, a duplicate name, MAC or IP refused naming the guest and
its config, imgbuild's marker the only proof that a container is imgbuild's, odd files skipped."""
from __future__ import annotations

import json

import pytest

from builder.identity.inventory_scan import MAX_CONFIG_SIZE, from_texts
from builder.migrate.remote_lxc import MARKER, HostState, is_ours, marker_text, refusals

L = "/var/lib/lxc"
NODE = {"name": "n2", "address": "10.0.3.22/24", "mac": "00:16:3e:35:92:fd"}


def lxc(name: str, mac: str = "00:16:3e:00:00:01", ip: str = "") -> tuple[str, str]:
    text = f"lxc.uts.name = {name}\nlxc.net.0.type = veth\nlxc.net.0.hwaddr = {mac}\n"
    if ip:
        text += f"lxc.net.0.ipv4.address = {ip}/24\n"
    return f"{L}/{name}/config", text


def messages(st: HostState, start: bool = False) -> list[str]:
    st.rsync = st.rsync or "/usr/bin/rsync"
    return [e.message for e in refusals("h2", L, [NODE], st, start)]


@pytest.mark.parametrize("files, said", [
    (dict([lxc("other", mac="00:16:3E:35:92:FD")]),
     "h2: MAC 00:16:3e:35:92:fd of node n2 is already used by guest other (/var/lib/lxc/other/config)"),
    (dict([lxc("other", ip="10.0.3.22")]),
     "h2: IP 10.0.3.22 of node n2 is already used by guest other (/var/lib/lxc/other/config)"),
    (dict([lxc("n2x")] + [(f"{L}/n2x/config", "lxc.uts.name = n2\n")]),
     "h2: name n2 of node n2 is already used by guest n2x (/var/lib/lxc/n2x/config)"),
    ({"/etc/xen/www.cfg": 'name = "www"\nvif = ["mac=00:16:3e:35:92:fd,bridge=xenbr0"]\n'},
     "h2: MAC 00:16:3e:35:92:fd of node n2 is already used by guest www (/etc/xen/www.cfg)"),
    ({"/etc/vz/conf/101.conf": 'NAME="vz1"\nIP_ADDRESS="10.0.3.22"\n'},
     "h2: IP 10.0.3.22 of node n2 is already used by guest vz1 (/etc/vz/conf/101.conf)"),
])
def test_a_duplicate_on_that_host_is_refused_naming_the_guest_and_its_config(files, said):
    assert said in messages(HostState(configs=files))


@pytest.mark.parametrize("files", [
    {f"{L}/.n2.partial-x/config": lxc("x", mac=NODE["mac"])[1]},                  # hidden: not a container
    {f"{L}/other/config": lxc("other", mac=NODE["mac"])[1] + "#" * MAX_CONFIG_SIZE},  # too large for a config
    {f"{L}/other/config": "lxc.net.0.hwaddr = 00:16:3e:35:92:fd\0\n"},           # a NUL: not a text config
    {f"{L}/other/rootfs/etc/config": lxc("x", mac=NODE["mac"])[1]},             # not LXCPATH/NAME/config
    {"/etc/xen/www.cfg~": 'name = "www"\nvif = ["mac=00:16:3e:35:92:fd"]\n'},     # a backup
    {"/etc/xen/evil.cfg": '__import__("os").system("touch /tmp/imgbuild-pwned")\n'},   # parsed, never run
    {"/etc/vz/conf/0.conf": 'IP_ADDRESS="10.0.3.22"\n'},                          # the host itself
])
def test_odd_or_foreign_files_are_skipped_not_run(files, tmp_path):
    assert messages(HostState(configs=files)) == []
    assert not (tmp_path / "imgbuild-pwned").exists()


def test_a_container_of_the_nodes_name_is_replaced_only_when_imgbuilds_marker_says_so():
    mine = dict([lxc("n2", mac=NODE["mac"])])
    st = HostState(kinds={"n2": "dir"}, configs=mine, markers={"n2": marker_text("n2", "dpl")})
    assert messages(st) == []                       # our own container: its MAC is no duplicate
    for marker in (None, "", "x" * 5000, json.dumps({"installed_by": "imgbuild", "node": "n1"}),
                   json.dumps(["imgbuild", "n2"]), '{"installed_by": "someone", "node": "n2"}'):
        st = HostState(kinds={"n2": "dir"}, configs=mine, markers={"n2": marker} if marker is not None else {})
        said = messages(st)
        assert any(f"{L}/n2 is a container imgbuild did not install (no {MARKER}" in m for m in said), marker
    assert not is_ours("{bad json", "n2")


@pytest.mark.parametrize("state, said", [
    (HostState(kinds={"n2": "link"}), "h2: /var/lib/lxc/n2 is a symbolic link"),
    (HostState(kinds={"n2": "other"}), "h2: /var/lib/lxc/n2 is not a directory"),
    (HostState(kinds={"n2": "dir"}, markers={"n2": marker_text("n2", "c")}, running={"n2"}),
     "h2: container n2 in /var/lib/lxc is running"),
    (HostState(kinds={"n2": "dir"}, markers={"n2": marker_text("n2", "c")}, rootfs_links={"n2"}),
     "h2: /var/lib/lxc/n2/rootfs is a symbolic link"),
])
def test_what_is_there_is_never_replaced_unless_it_is_imgbuilds_and_stopped(state, said):
    assert any(m.startswith(said) for m in messages(state)), messages(state)


def test_start_needs_lxc_start_and_the_bridge_on_the_host():
    assert any("lxc-start is not installed there" in m for m in messages(HostState(), start=True))
    assert messages(HostState(lxc_start="/usr/bin/lxc-start"), start=True) == []
    said = messages(HostState(lxc_start="/usr/bin/lxc-start", no_links={"lxcbr0"}), start=True)
    assert said == ["h2: no bridge lxcbr0 there, which the nodes' configs join, so --start cannot start them"]
    assert messages(HostState(no_links={"lxcbr0"})) == []        # without --start: a warning after the install


def test_a_host_without_rsync_is_refused_before_anything_is_written():
    st = HostState()
    assert [e.message for e in refusals("h2", L, [NODE], st, False)] == [
        "h2: rsync is not installed there; the nodes' trees are sent with it"]


def test_guest_names_from_the_host_are_shown_without_control_characters():
    st = HostState(configs={"/etc/xen/x.cfg": 'name = "evil\\x1b[2J"\nvif = ["mac=00:16:3e:35:92:fd"]\n'})
    said = messages(st)
    assert said and all("\x1b" not in m for m in said), said


def test_from_texts_reads_each_kind_as_discover_does():
    got = from_texts(dict([lxc("a", ip="10.0.3.5")]) | {"/etc/xen/b.cfg": 'name="b"\nvif=["mac=00:16:3e:00:00:02"]\n'})
    assert [(g.name, g.where) for g in got] == [("a", f"lxc:{L}/a"), ("b", "xen:/etc/xen/b.cfg")]
    assert got[0].ips == ("10.0.3.5",) and got[1].macs == ("00:16:3e:00:00:02",)

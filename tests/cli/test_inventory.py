"""`imgbuild inventory list|show|forget|prune` as a user runs it: stale entries (their guest is gone) are marked and
removed only when asked; a guest that is still there, an unknown name, or a prune nobody confirmed changes
nothing (the inventory's export compared). The site's inventory is a YAML file as earlier imgbuilds wrote it: the
commands that only read it leave it as it is; the first that changes it moves it into inventory.db beside it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.identity import inventory
from builder.identity.inventory import GuestRecord
from tests.conftest import imgbuild


def state(inv_file: Path) -> str:
    """The inventory's guests as export writes them (the YAML file, or the store it was moved into)."""
    return inventory.dumps(inventory.load(inv_file).guests)


@pytest.fixture
def site(tmp_path) -> tuple[Path, Path, dict]:
    """An inventory with a live LXC guest (web), one whose container was destroyed (ux2) and one on another host
    (remote, never called stale)."""
    lxc = tmp_path / "lxc"
    (lxc / "web").mkdir(parents=True)
    inv_file = tmp_path / "inventory.yml"
    inv_file.write_text(inventory.dumps([
        GuestRecord("web", "web.example.org", ("10.0.3.5",), ("00:16:3e:00:00:05",), f"lxc:{lxc}/web", "2026-11-01"),
        GuestRecord("ux2", "ux2", ("10.0.3.12",), ("00:16:3e:00:0c:12",), f"lxc:{lxc}/ux2", "2026-11-02"),
        GuestRecord("remote", "db1", ("10.0.9.1",), (), "ssh:db1:/var/lib/lxc/db1", "2026-11-03")]))
    return inv_file, lxc, {**os.environ, inventory.ENV_VAR: str(inv_file)}


def test_list_marks_the_stale_entry_and_says_how_to_remove_it(site):
    inv_file, lxc, env = site
    r = imgbuild("inventory", "list", env=env)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[-1] for line in r.stdout.splitlines()[1:]}
    assert rows == {"remote": "ok", "ux2": "stale", "web": "ok"}
    assert f"3 guests in {inv_file}; 1 stale (`imgbuild inventory prune` removes them)" in r.stderr
    data = json.loads(imgbuild("inventory", "list", "--json", env=env).stdout)
    assert [(g["name"], g["state"]) for g in data] == [("remote", "ok"), ("ux2", "stale"), ("web", "ok")]
    assert data[1]["gone"] == f"{lxc}/ux2" and data[1]["ips"] == ["10.0.3.12"]
    assert sorted(p.name for p in inv_file.parent.iterdir()) == ["inventory.yml", "lxc"]   # read, not migrated


def test_show_names_one_guest_and_an_unknown_name_gets_the_close_ones(site):
    inv_file, lxc, env = site
    r = imgbuild("inventory", "show", "ux2", env=env)
    assert r.returncode == 0, r.stderr
    assert "ips:       10.0.3.12" in r.stdout and "state:     stale" in r.stdout and f"gone:      {lxc}/ux2" in r.stdout
    r = imgbuild("inventory", "show", "ux", env=env)
    assert r.returncode == 2 and f"{inv_file}: no guest named 'ux'" in r.stderr and "did you mean ux2?" in r.stderr
    assert "Traceback" not in r.stderr


def test_forget_removes_a_gone_guest_and_refuses_one_that_is_there(site):
    inv_file, lxc, env = site
    before = state(inv_file)
    for args in (["web"], ["ux2", "web"], ["ux2", "nosuch"]):      # all or nothing
        r = imgbuild("inventory", "forget", *args, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert state(inv_file) == before
    assert f"web (lxc:{lxc}/web) still exists" in imgbuild("inventory", "forget", "web", env=env).stderr
    r = imgbuild("inventory", "forget", "ux2", "--dry-run", env=env)
    assert r.returncode == 0 and f"would forget ux2 (lxc:{lxc}/ux2)" in r.stdout and state(inv_file) == before
    r = imgbuild("inventory", "forget", "ux2", env=env)
    assert r.returncode == 0, r.stderr
    assert [g.name for g in inventory.load(inv_file).guests] == ["remote", "web"]
    assert not inv_file.exists() and (inv_file.parent / "inventory.yml.migrated").exists()   # moved on first change
    assert (inv_file.parent / "inventory.db").exists()
    r = imgbuild("inventory", "forget", "web", "--force", env=env)       # a wrong entry, on purpose
    assert r.returncode == 0 and [g.name for g in inventory.load(inv_file).guests] == ["remote"]


def test_prune_lists_asks_and_removes_only_entries_whose_guest_is_gone(site):
    inv_file, lxc, env = site
    before = state(inv_file)
    r = imgbuild("inventory", "prune", "--dry-run", env=env)
    assert r.returncode == 0 and f"stale: ux2 (lxc:{lxc}/ux2): {lxc}/ux2 no longer exists" in r.stdout
    assert "would forget 1" in r.stdout and state(inv_file) == before
    r = imgbuild("inventory", "prune", env=env)                  # no terminal to ask on: refused
    assert r.returncode == 2 and "run it again with --yes" in r.stderr and state(inv_file) == before
    r = imgbuild("inventory", "prune", "--yes", env=env)
    assert r.returncode == 0 and "forgot 1" in r.stdout, r.stderr
    assert [g.name for g in inventory.load(inv_file).guests] == ["remote", "web"]
    r = imgbuild("inventory", "prune", "--yes", env=env)
    assert r.returncode == 0 and "nothing to prune" in r.stdout

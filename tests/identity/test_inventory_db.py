"""builder.identity.inventory_db (the SQLite store) as the inventory uses it: indexed checks that find what a check
of every guest finds, allocation that avoids every MAC in use, all-or-nothing changes, two processes recording at
once, the YAML inventory of earlier imgbuilds migrated on first use, and the file checked before it is opened
(a symlink, a file others may write, a damaged or foreign database: each refused with a message, no traceback)."""
from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import sqlite3
import time

import pytest

from builder.core.errors import BuilderError, InputError
from builder.identity import inventory as inv
from builder.identity import inventory_transfer as transfer
from builder.identity.inventory import GuestRecord
from builder.identity.inventory_db import Store
from tests.conftest import imgbuild
from tests.identity.test_inventory import FILE_BODY

GUESTS = [
    GuestRecord("www", "www.example.org", ("10.0.3.12", "2001:db8::12"), ("00:16:3e:5d:1a:07",),
                "xen:/etc/xen/www.cfg", "2024-05-01"),
    GuestRecord("vm1", "vm1", ("10.0.3.2",), ("00:16:3e:00:03:02", "10:20:30:40:50:60"), "lxc:/var/lib/lxc/vm1",
                "2024-05-02"),
    GuestRecord("db", None, (), ("00:18:51:a1:b2:c3",), "vz:/etc/vz/conf/102.conf", "2024-05-03"),
    GuestRecord("elsewhere", "mail.example.org"),
    GuestRecord("101", "yes", ("203.0.113.5",), (), "vz:/etc/vz/conf/101.conf", "2024-05-04"),
]


def made(path, guests=GUESTS):
    inv.save(inv.Inventory(path, list(guests)))
    return path


# ------------------------------------------------------------------ queries


def _random_guests(rng: random.Random, n: int) -> list[GuestRecord]:
    names = ["www", "WWW", "db", "mail", "localhost", "vm"]
    domains = ["", ".example.org", ".example.com", ".example.org."]
    out = []
    for i in range(n):
        host = rng.choice([None, rng.choice(names) + rng.choice(domains)])
        ips = tuple(f"10.0.{rng.randrange(3)}.{rng.randrange(8)}" for _ in range(rng.randrange(3)))
        macs = tuple(f"00:16:3e:00:00:{rng.randrange(16):02x}" for _ in range(rng.randrange(3)))
        out.append(GuestRecord(f"g{i}", host, ips + rng.choice([(), ("::1",), ("0.0.0.0",)]), macs,
                               rng.choice([None, f"lxc:/var/lib/lxc/g{i}"])))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_indexed_checks_find_what_a_check_of_every_guest_finds(tmp_path, seed):
    """conflicts() over store.near(candidate) equals conflicts() over all guests: the indexes on MAC, IP and
    host name (short names against FQDNs, case, a final dot, localhost) miss no holder."""
    rng = random.Random(seed)
    guests = _random_guests(rng, 60)
    store = inv.load(made(tmp_path / "i.db", guests)).store
    for cand in _random_guests(random.Random(seed + 100), 40):
        key = lambda c: (c.kind, c.value, c.holder)    # noqa: E731
        assert sorted(inv.conflicts(cand, store.near(cand)), key=key) == sorted(inv.conflicts(cand, guests), key=key)


def test_allocation_avoids_every_mac_in_use(tmp_path):
    """The store is asked for each drawn MAC (no MAC list loaded): a MAC the rng proposes first is skipped when
    the inventory has it; a small space is searched to its one free address."""
    first = inv.allocate_mac([], rng=random.Random(7))
    small = [f"00:16:3e:00:00:{i:02x}" for i in range(256)]
    guests = [GuestRecord("a", macs=(first.upper(),))] + [GuestRecord(f"s{i}", macs=(m,)) for i, m in
                                                          enumerate(small) if i != 200]
    i = inv.load(made(tmp_path / "i.db", guests))
    known = i.known([GuestRecord("other", macs=("00:16:3e:00:00:c8",))])
    got = inv.allocate_mac(i.known().macs(), rng=random.Random(7))
    assert got != first and got not in small
    assert inv.allocate_mac(i.known().macs(), prefix="00:16:3e:00:00") == small[200]
    with pytest.raises(BuilderError, match="no free MAC"):
        inv.allocate_mac(known.macs(), prefix="00:16:3e:00:00")     # the last one is a config's on this host


# ------------------------------------------------------------------ changes


def test_a_failure_mid_change_leaves_the_store_as_it_was(tmp_path):
    p = made(tmp_path / "i.db")
    before = p.read_bytes()
    with pytest.raises(RuntimeError):
        with inv.locked(p) as i:
            i.record(GuestRecord("new", macs=("00:16:3e:11:22:33",)))
            i.remove("www")
            i.store.clear()
            raise RuntimeError("killed half way")
    assert p.read_bytes() == before and inv.load(p).guests == sorted(GUESTS, key=inv.sort_key)
    bad = tmp_path / "bad.yml"               # an import whose second guest takes the first one's MAC
    bad.write_text(inv.dumps([GuestRecord("n1", macs=("00:16:3e:99:00:01",)),
                              GuestRecord("n2", macs=("00:16:3e:5d:1a:07",))]))
    with pytest.raises(InputError, match=r"MAC 00:16:3e:5d:1a:07 of n2 .* is www \(xen:/etc/xen/www.cfg\)'s"):
        transfer.import_file(bad, p)
    assert p.read_bytes() == before


def _killed_half_way(path: str, ready) -> None:
    with inv.locked(path) as i:
        i.store.clear()
        i.store.conn.execute("PRAGMA cache_size = 1")     # pages spill into the file before the commit
        i.store.add([GuestRecord(f"n{k}") for k in range(3000)])
        ready.set()
        time.sleep(60)


def test_a_writer_killed_mid_transaction_leaves_the_store_as_it_was(tmp_path):
    """kill -9 while the file holds half of a change: the next reader and writer see the old guests."""
    p = made(tmp_path / "i.db", [GuestRecord(f"g{k}", macs=(f"00:16:3e:00:{k // 256:02x}:{k % 256:02x}",))
                                 for k in range(3000)])
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_killed_half_way, args=(str(p), ready))
    proc.start()
    assert ready.wait(timeout=60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=60)
    assert inv.load(p).count() == 3000 and inv.load(p).get("n1") is None
    with inv.locked(p) as i:
        assert i.count() == 3000
        i.record(GuestRecord("after"))
    assert inv.load(p).count() == 3001 and not (tmp_path / "i.db-journal").exists()


def _record_many(path: str, tag: str, n: int, barrier) -> None:
    barrier.wait(timeout=60)
    for k in range(n):
        with inv.locked(path, timeout=60) as i:
            mac = inv.allocate_mac(i.known().macs())
            i.record(GuestRecord(f"{tag}-{k}", macs=(mac,), where=f"lxc:/var/lib/lxc/{tag}-{k}"))


def test_two_processes_recording_at_once_both_land(tmp_path):
    """Real processes (fork), started together on a store neither has created yet: every record of each lands,
    no MAC twice (the second writer waits for the first's transaction)."""
    p = tmp_path / "i.db"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    ps = [ctx.Process(target=_record_many, args=(str(p), tag, 25, barrier)) for tag in ("a", "b")]
    for proc in ps:
        proc.start()
    for proc in ps:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    guests = inv.load(p).guests
    assert len(guests) == 50 and len({m for g in guests for m in g.macs}) == 50


# ------------------------------------------------------------------ migration, export, import


OLD_FILE = ("# imgbuild's guest inventory: the host names, IP addresses and MACs of the guests imgbuild made, cloned\n"
            "# or moved, so that no copy takes an identity another guest has. imgbuild rewrites this file; keep\n"
            "# edits to whole entries.\n"
            + FILE_BODY.replace("updated: '2024-05-01'", "updated: 2024-05-01"))
# as the YAML inventory's code wrote it (the last date as a hand edit leaves it)


def test_a_yaml_inventory_is_migrated_on_first_use_with_every_record(tmp_path, caplog):
    yml = tmp_path / "inventory.yml"
    yml.write_text(OLD_FILE)
    assert inv.load(yml).guests == sorted(GUESTS, key=inv.sort_key)      # read as it is ...
    assert sorted(x.name for x in tmp_path.iterdir()) == ["inventory.yml"]   # ... nothing written
    caplog.set_level(logging.INFO, "imgbuild")
    with inv.locked(yml) as i:
        assert i.path == tmp_path / "inventory.db"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["inventory.db", "inventory.yml.migrated"]
    assert inv.load(yml).guests == sorted(GUESTS, key=inv.sort_key)
    assert inv.load(tmp_path / "inventory.db").get("www").updated == "2024-05-01"
    assert f"5 guests moved from {yml} into {tmp_path / 'inventory.db'}" in caplog.text
    assert oct((tmp_path / "inventory.db").stat().st_mode & 0o777) == "0o600"


def test_a_bad_yaml_inventory_is_not_migrated(tmp_path):
    yml = tmp_path / "inventory.yml"
    yml.write_text("guests:\n  - name: a\n  - name: a\n")
    with pytest.raises(InputError, match=rf"{yml}:3: guest 'a' is listed twice"):
        with inv.locked(yml):
            pass
    assert yml.exists() and not (tmp_path / "inventory.yml.migrated").exists()


def test_export_then_import_gives_the_same_inventory(tmp_path):
    p = made(tmp_path / "i.db")
    text, source, n = transfer.export_text(p)
    assert source == p and n == 5 and text == inv.dumps(GUESTS)
    (tmp_path / "export.yml").write_text(text)
    done = transfer.import_file(tmp_path / "export.yml", tmp_path / "other.db")
    assert (done.added, done.replaced, done.total) == (5, 0, 5)
    assert transfer.export_text(tmp_path / "other.db")[0] == text
    done = transfer.import_file(tmp_path / "export.yml", p)             # onto itself: each replaces itself
    assert (done.added, done.replaced, done.total) == (5, 5, 5)
    done = transfer.import_file(tmp_path / "export.yml", p, replace=True)
    assert transfer.export_text(p)[0] == text


def test_import_refuses_duplicates_naming_both_guests(tmp_path):
    p = made(tmp_path / "i.db")
    f = tmp_path / "in.yml"
    f.write_text(inv.dumps([GuestRecord("x", macs=("00:16:3e:00:00:01",), where="lxc:/l/x"),
                            GuestRecord("y", macs=("00:16:3e:00:00:01",), where="lxc:/l/x")]))
    with pytest.raises(InputError) as e:
        transfer.import_file(f, p, replace=True)
    assert "x and y are both at lxc:/l/x" in e.value.message and "MAC 00:16:3e:00:00:01 is both x (lxc:/l/x)'s" \
        in e.value.message
    assert inv.load(p).guests == sorted(GUESTS, key=inv.sort_key)
    f.write_text("guests:\n  - name: x\n  - name: x\n")
    with pytest.raises(InputError, match=r"in.yml:3: guest 'x' is listed twice \(also on line 2\)"):
        transfer.import_file(f, p)


# ------------------------------------------------------------------ the file, checked before use


def test_a_read_inventory_closes_its_store_with_its_block(tmp_path):
    """load() in a `with` block leaves no open database behind (a forked child finalizing a forgotten one once
    closed a pipe it had put at the same file descriptor); reidentify's dry run reads it that way."""
    path = made(tmp_path / "inventory.db")
    fds = set(os.listdir("/proc/self/fd"))
    with inv.load(path) as got:
        assert got.get("www").hostname == "www.example.org"
        assert set(os.listdir("/proc/self/fd")) != fds       # the database is open inside the block
    with pytest.raises(sqlite3.ProgrammingError):
        got.store.conn.execute("SELECT 1")
    assert set(os.listdir("/proc/self/fd")) == fds


def test_a_symlinked_store_is_refused_never_followed(tmp_path):
    made(tmp_path / "real.db")
    (tmp_path / "i.db").symlink_to(tmp_path / "real.db")
    for call in (lambda: inv.load(tmp_path / "i.db"), lambda: inv.locked(tmp_path / "i.db").__enter__()):
        with pytest.raises(BuilderError, match=r"i.db: is a symbolic link \(never followed\)"):
            call()
    r = imgbuild("inventory", "list", "--inventory", tmp_path / "i.db")
    assert r.returncode == 2 and "is a symbolic link" in r.stderr and "hint: remove the link" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_store_others_may_write_is_refused(tmp_path):
    p = made(tmp_path / "i.db")
    p.chmod(0o666)
    with pytest.raises(BuilderError, match=r"is writable by group or others \(mode 0666\)") as e:
        inv.load(p)
    assert f"chmod 600 {p}" in e.value.hint
    p.chmod(0o600)
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o1777)
    with pytest.raises(BuilderError, match="its directory .* is writable by others"):
        inv.locked(tmp_path / "open" / "i.db").__enter__()
    assert not (tmp_path / "open" / "i.db").exists()
    os.link(p, tmp_path / "second.db")
    with pytest.raises(BuilderError, match="has 2 hard links"):
        inv.load(p)


@pytest.mark.parametrize("damage", ["not a database", "truncated", "another program's"])
def test_a_damaged_or_foreign_store_is_an_error_naming_it_and_the_way_back(tmp_path, damage):
    p = made(tmp_path / "i.db", [GuestRecord(f"g{i}", macs=(f"00:16:3e:00:{i // 256:02x}:{i % 256:02x}",))
                                 for i in range(2000)])
    if damage == "not a database":
        p.write_bytes(b"guests:\n- name: a\n" * 100)
    elif damage == "truncated":
        data = p.read_bytes()
        p.write_bytes(data[:len(data) // 2])
    else:
        p.unlink()
        sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit()
        p.chmod(0o600)
    r = imgbuild("inventory", "list", "--inventory", p)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: {p}: " in r.stderr and ("imgbuild inventory import" in r.stderr or "not an imgbuild inventory"
                                            in r.stderr), r.stderr
    with pytest.raises(BuilderError, match=str(p)):
        with inv.locked(p) as i:
            i.record(GuestRecord("x"))


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    p = made(tmp_path / "i.db")
    sqlite3.connect(p).execute("PRAGMA user_version = 9").connection.close()
    with pytest.raises(BuilderError, match="schema 9, made by a newer imgbuild"):
        inv.load(p)


def test_cli_export_and_import(tmp_path):
    p = made(tmp_path / "i.db")
    r = imgbuild("inventory", "export", "--inventory", p, "-o", tmp_path / "out.yml")
    assert r.returncode == 0 and f"5 guests from {p} written to" in r.stderr, r.stderr
    assert (tmp_path / "out.yml").read_text() == imgbuild("inventory", "export", "--inventory", p).stdout
    r = imgbuild("inventory", "import", tmp_path / "out.yml", "--inventory", tmp_path / "new.db")
    assert r.returncode == 0 and "imported 5 guests" in r.stdout, r.stderr
    assert Store.open(tmp_path / "new.db", write=False).count() == 5
    (tmp_path / "bad.yml").write_text("guests:\n  - name: a\n    macs: [zz]\n")
    r = imgbuild("inventory", "import", tmp_path / "bad.yml", "--inventory", tmp_path / "new.db")
    assert r.returncode == 2 and "bad.yml:3: macs[0]: 'zz' is not a MAC address" in r.stderr

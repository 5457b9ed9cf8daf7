"""The inventory's store: one SQLite file (the standard library's sqlite3), queried by index instead of read whole.

- **Schema** (`PRAGMA user_version` 1, `application_id` 'imgi'): `guests` (name unique, host name with its
  compared forms, `place` = the record's `where`, unique when set, updated), `macs` and `ips` (one row per
  value, in the record's order); indexes on MAC, IP, name, where and host name, so "who has this MAC / IP /
  name" reads a few rows whatever the size of the fleet.
- **Journal**: the rollback journal (SQLite's default, DELETE), not WAL. A reader (a dry run, `inventory list`)
  creates no file at all, where WAL would leave `-wal` and `-shm` files beside the inventory (more files an
  earlier run left) and need the shared-memory file writable by every reader; imgbuild writes one small
  transaction per clone, so WAL's concurrent reading during a commit buys nothing measurable. Readers never wait
  for a writer's transaction, only for the milliseconds of its commit.
- **Transactions instead of a lock file**: every change runs in `BEGIN IMMEDIATE` (the write lock taken at once,
  so two writers never both read then both write); a second writer waits `busy_timeout` seconds, then fails with
  a message. A failure inside the block rolls back: the file is as it was.
- **The file is untrusted** (an earlier run left it): it must be a regular file (a symlink is refused, never
  followed), owned by this user (root), not group- or world-writable, with one link, in a directory owned by root or
  this user that no one else may write (so nobody can swap it, or plant the journal SQLite opens beside it);
  created 0600. A file that is not an SQLite database, one SQLite finds damaged, or another program's database
  is an error naming it, with the way back (`imgbuild inventory import` of an export). `trusted_schema` is off.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from builder.core.errors import BuilderError, InputError
from builder.identity.inventory_records import GuestRecord, sort_key

SCHEMA_VERSION = 1
APPLICATION_ID = int.from_bytes(b"imgi", "big")
BUSY_TIMEOUT = 60.0
RESTORE_HINT = ("move it aside and restore the inventory from an export: `imgbuild inventory import EXPORT.yml "
                "--inventory {path}` (or from the .yml.migrated file the migration kept)")
SCHEMA = """
CREATE TABLE guests (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, hostname TEXT, host_key TEXT,
                     host_short TEXT, place TEXT, updated TEXT);
CREATE UNIQUE INDEX guests_place ON guests(place) WHERE place IS NOT NULL;
CREATE INDEX guests_host_key ON guests(host_key);
CREATE INDEX guests_host_short ON guests(host_short);
CREATE TABLE macs (guest INTEGER NOT NULL REFERENCES guests(id) ON DELETE CASCADE, pos INTEGER NOT NULL,
                   mac TEXT NOT NULL, PRIMARY KEY (guest, pos)) WITHOUT ROWID;
CREATE INDEX macs_mac ON macs(mac);
CREATE TABLE ips (guest INTEGER NOT NULL REFERENCES guests(id) ON DELETE CASCADE, pos INTEGER NOT NULL,
                  ip TEXT NOT NULL, PRIMARY KEY (guest, pos)) WITHOUT ROWID;
CREATE INDEX ips_ip ON ips(ip);
"""


class Locked(BuilderError):
    """Another imgbuild holds the inventory's write lock longer than we wait."""


def host_forms(hostname: str | None) -> tuple[str | None, str | None]:
    """The forms host names are compared in (inventory.same_host): lower case without a final dot, and its first
    label."""
    if not hostname:
        return None, None
    key = hostname.strip().rstrip(".").lower()
    return key, key.split(".")[0]


# ------------------------------------------------------------------ the file, checked before it is opened


def _refuse(path: Path, why: str, hint: str) -> InputError:
    return InputError(f"{path}: {why}; the inventory is a file an earlier run left, so it is checked before use",
                        hint)


def check_directory(path: Path) -> None:
    """The inventory's directory: owned by root or this user, writable by no one else."""
    d = path.parent
    try:
        st = os.stat(d)
    except OSError as e:
        raise BuilderError(f"{d}: cannot use the inventory's directory: {e.strerror}",
                           "run as root, or set $IMGBUILD_INVENTORY to a file in a directory of your own") from None
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        raise _refuse(path, f"its directory {d} is writable by others or owned by uid {st.st_uid}",
                      f"keep the inventory in a directory only root writes (chmod go-w {d}), or point "
                      "$IMGBUILD_INVENTORY (or --inventory) at one")


def check_file(path: Path) -> os.stat_result | None:
    """lstat of the inventory file after the checks (None: there is none): a regular file, not a symlink, owned by
    this user, not group- or world-writable, one link; and its directory (check_directory)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BuilderError(f"{path}: cannot read the inventory: {e.strerror}",
                           "run as root, or set $IMGBUILD_INVENTORY to a file you may read") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "is a symbolic link (never followed)",
                      f"remove the link (rm {path}) and point $IMGBUILD_INVENTORY (or --inventory) at the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "is not a regular file", "point $IMGBUILD_INVENTORY (or --inventory) at the inventory")
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"is owned by uid {st.st_uid}, not by uid {os.geteuid()} (this user)",
                      f"check it (`imgbuild inventory export --inventory {path}` as its owner), then chown it")
    if st.st_mode & 0o022:
        raise _refuse(path, f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
                      f"check its entries (`imgbuild inventory export --inventory {path}`), then chmod 600 {path}")
    if st.st_nlink != 1:
        raise _refuse(path, f"has {st.st_nlink} hard links", "copy it to a file of its own (cp, then rm the link)")
    check_directory(path)
    return st


def _create(path: Path) -> None:
    """Make the empty file, 0600, never through a link (O_EXCL|O_NOFOLLOW); one already there is left alone."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        check_directory(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as e:
        raise BuilderError(f"{path}: cannot create the inventory: {e.strerror}",
                           "run as root, or set $IMGBUILD_INVENTORY to a file you may write") from None


# ------------------------------------------------------------------ the store


class Store:
    """An open inventory database (`open` a file, or `memory()`); queries return GuestRecords."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None):
        self.conn = conn
        self.path = path            # None: in memory

    @classmethod
    def open(cls, path: Path, *, write: bool, timeout: float | None = BUSY_TIMEOUT,
             initial: Callable[[], Sequence[GuestRecord]] | None = None) -> Store | None:
        """The store at `path`, its file checked first. `write`: create it if missing and its schema if new (with
        the records `initial()` gives, in the same transaction); otherwise None when there is no file."""
        if write:
            _create(path)
        before = check_file(path)
        if before is None:
            return None
        uri = f"file:{urllib.parse.quote(str(path))}?mode={'rw' if write else 'ro'}"
        ms = 2**31 - 1 if timeout is None else int(timeout * 1000)
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=ms / 1000)
        except sqlite3.Error as e:
            raise BuilderError(f"{path}: cannot open the inventory: {e}", RESTORE_HINT.format(path=path)) from None
        after = os.lstat(path)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            conn.close()
            raise _refuse(path, "was replaced while it was opened", "run the command again")
        store = cls(conn, path)
        with store.guard():
            conn.execute(f"PRAGMA busy_timeout = {ms}")
            for pragma in ("foreign_keys = ON", "trusted_schema = OFF", "cell_size_check = ON"):
                conn.execute(f"PRAGMA {pragma}")
            if write:
                with store.transaction():
                    store._schema(initial)
            elif not store._checked():
                conn.close()
                return cls.memory()
        return store

    @classmethod
    def memory(cls, guests: Iterable[GuestRecord] = ()) -> Store:
        """A store in memory (nothing on disk): a YAML inventory read without migrating it, or no inventory."""
        store = cls(sqlite3.connect(":memory:", isolation_level=None), None)
        store.conn.execute("PRAGMA foreign_keys = ON")
        with store.transaction():
            store._schema(lambda: list(guests))
        return store

    def close(self) -> None:
        self.conn.close()

    @property
    def shown(self) -> str:
        return str(self.path) if self.path else "the inventory"

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """SQLite's errors as BuilderErrors naming the file: busy past the timeout, damaged, not a database."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise Locked(f"{self.shown}: the inventory is locked by another imgbuild and was not released "
                             f"within the {self.conn.execute('PRAGMA busy_timeout').fetchone()[0] / 1000:g} s "
                             "waited", "wait for that one to finish, then retry") from None
            raise BuilderError(f"{self.shown}: cannot use the inventory: {e}",
                               RESTORE_HINT.format(path=self.shown)) from None
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.shown}: not a usable imgbuild inventory (SQLite: {e})",
                               RESTORE_HINT.format(path=self.shown)) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """`BEGIN IMMEDIATE` ... COMMIT, or ROLLBACK when the block raises: all of it or none of it."""
        with self.guard():
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        with self.guard():
            self.conn.execute("COMMIT")

    def _checked(self) -> bool:
        """Whether the file holds an inventory of this schema (False: an empty file no one initialized yet)."""
        version, app = (self.conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("user_version", "application_id"))
        if version == 0 and app == 0 and self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            return False
        if app != APPLICATION_ID or version == 0:
            raise InputError(f"{self.shown}: an SQLite database, but not an imgbuild inventory",
                               "point $IMGBUILD_INVENTORY (or --inventory) at the inventory, or move this file away")
        if version > SCHEMA_VERSION:
            raise InputError(f"{self.shown}: an inventory of schema {version}, made by a newer imgbuild (this one "
                               f"reads schema {SCHEMA_VERSION})", "use that imgbuild, or import an export of it")
        return True

    def _schema(self, initial: Callable[[], Sequence[GuestRecord]] | None) -> None:
        if self._checked():
            return
        for statement in filter(str.strip, SCHEMA.split(";")):    # not executescript: it would COMMIT first
            self.conn.execute(statement)
        self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.add(initial() if initial else ())

    # -------------------------------------------------------------- reading

    def _records(self, where: str, args: Sequence[object] = ()) -> list[GuestRecord]:
        with self.guard():
            rows = self.conn.execute(f"SELECT id, name, hostname, place, updated FROM guests {where}",
                                     args).fetchall()
            if not rows:
                return []
            macs: dict[int, list[str]] = {}
            ips: dict[int, list[str]] = {}
            if len(rows) > 500:         # all of them, or most: read the tables once
                sel, ids = "", ()
            else:
                ids = tuple(r[0] for r in rows)
                sel = f"WHERE guest IN ({','.join('?' * len(ids))})"
            for g, v in self.conn.execute(f"SELECT guest, mac FROM macs {sel} ORDER BY guest, pos", ids):
                macs.setdefault(g, []).append(v)
            for g, v in self.conn.execute(f"SELECT guest, ip FROM ips {sel} ORDER BY guest, pos", ids):
                ips.setdefault(g, []).append(v)
        return sorted((GuestRecord(name, hostname, tuple(ips.get(i, ())), tuple(macs.get(i, ())), place, updated)
                       for i, name, hostname, place, updated in rows), key=sort_key)

    def all(self) -> list[GuestRecord]:
        return self._records("")

    def count(self) -> int:
        with self.guard():
            return self.conn.execute("SELECT count(*) FROM guests").fetchone()[0]

    def names(self) -> list[str]:
        with self.guard():
            return [r[0] for r in self.conn.execute("SELECT name FROM guests")]

    def get(self, name: str) -> GuestRecord | None:
        return next(iter(self._records("WHERE name = ?", (name,))), None)

    def at(self, where: str) -> GuestRecord | None:
        return next(iter(self._records("WHERE place = ?", (where,))), None)

    def near(self, candidate: GuestRecord) -> list[GuestRecord]:
        """The guests that hold one of the candidate's MACs or IP addresses, or a host name same_host() may match
        (equal, or a short name and an FQDN starting with it): the only ones conflicts() can find. Indexed."""
        clauses, args = [], []
        if candidate.macs:
            clauses.append(f"id IN (SELECT guest FROM macs WHERE mac IN ({','.join('?' * len(candidate.macs))}))")
            args += candidate.macs
        if candidate.ips:
            clauses.append(f"id IN (SELECT guest FROM ips WHERE ip IN ({','.join('?' * len(candidate.ips))}))")
            args += candidate.ips
        key, short = host_forms(candidate.hostname)
        if key and short != "localhost":
            if "." in key:
                clauses.append("host_key IN (?, ?)")
                args += [key, short]
            else:
                clauses.append("host_short = ?")
                args.append(key)
        return self._records(f"WHERE {' OR '.join(clauses)}", args) if clauses else []

    def mac_taken(self, mac: str) -> bool:
        with self.guard():
            return self.conn.execute("SELECT 1 FROM macs WHERE mac = ? LIMIT 1", (mac,)).fetchone() is not None

    def macs_between(self, low: str, high: str) -> set[str]:
        """The MACs in use from `low` to `high` (lower-case colon notation sorts as the numbers do)."""
        with self.guard():
            return {r[0] for r in self.conn.execute("SELECT mac FROM macs WHERE mac BETWEEN ? AND ?", (low, high))}

    # -------------------------------------------------------------- writing (inside transaction())

    def add(self, guests: Iterable[GuestRecord]) -> None:
        """Insert records (no name or where of theirs may be in the store already)."""
        with self.guard():
            for g in guests:
                key, short = host_forms(g.hostname)
                cur = self.conn.execute("INSERT INTO guests (name, hostname, host_key, host_short, place, updated) "
                                        "VALUES (?, ?, ?, ?, ?, ?)", (g.name, g.hostname, key, short, g.where,
                                                                       g.updated))
                gid = cur.lastrowid
                self.conn.executemany("INSERT INTO macs VALUES (?, ?, ?)", [(gid, i, m) for i, m in enumerate(g.macs)])
                self.conn.executemany("INSERT INTO ips VALUES (?, ?, ?)", [(gid, i, a) for i, a in enumerate(g.ips)])

    def delete(self, name: str | None = None, where: str | None = None) -> list[GuestRecord]:
        """Remove the records with this name or this where; returns them."""
        gone = self._records("WHERE name = ? OR place = ?", (name, where))
        with self.guard():
            self.conn.execute("DELETE FROM guests WHERE name = ? OR place = ?", (name, where))
        return gone

    def clear(self) -> None:
        with self.guard():
            self.conn.execute("DELETE FROM guests")

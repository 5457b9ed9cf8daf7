"""Files inside an unmounted ext2/3/4 image, read and written with debugfs (e2fsprogs); nothing is mounted.

An image may be a guest's disk: its names, link targets and sizes are untrusted. So here

- a path is resolved one component at a time, the way the kernel would inside a chroot of the image: a link on
  the way is followed inside the image (an absolute target starts again at the image's top, `..` stops there),
  at most MAX_LINKS of them; the last component is looked at itself, never followed (a link there is a link).
  debugfs is only ever handed paths of real directories, or inode numbers, so its own link following (libext2fs
  follows links on the way, at most 8) never decides anything;
- every name in a debugfs command is quoted the way debugfs's command parser reads it ("..." with "" for a
  quote). A name it cannot take is refused (InputError, naming the image and the path): a newline, carriage
  return or NUL would end the command early, and `debugfs -f` would run the rest as a command of its own (a line
  that starts with `!` runs a shell). No command line is longer than debugfs reads in one go;
- a file is read only after its inode says it is no larger than the caller's limit, by inode number, into a
  private directory (0700) that is removed afterwards, and the dump itself is bounded (RLIMIT_FSIZE) in case the
  image changes meanwhile (a running guest's disk, read for a dry run).
"""
from __future__ import annotations

import collections
import os
import re
import stat as statmod
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError, UnsafePath

MAX_LINKS = 40
MAX_LINK_TARGET = 4095       # PATH_MAX - 1: the longest link target the kernel follows
LINE_MAX = 4096              # debugfs -f reads a line into a BUFSIZ (8192) buffer and cuts it there
MAX_QUOTED = 1800            # a quoted name: a command line holds two of them and stays below LINE_MAX

ROOT_INO = 2

_UNQUOTABLE = re.compile(r"[\n\r\x00]")
_KINDS = {"regular": statmod.S_IFREG, "directory": statmod.S_IFDIR, "symlink": statmod.S_IFLNK,
          "character": statmod.S_IFCHR, "block": statmod.S_IFBLK, "FIFO": statmod.S_IFIFO,
          "socket": statmod.S_IFSOCK}
# the first lines of debugfs's `stat`: everything the image controls (link targets, xattrs) comes after them
_STAT = re.compile(r"\AInode: (\d+)\s+Type: (\w+)[^\n]*?Mode:\s+([0-7]+)\s+Flags: [^\n]*\n"
                   r"Generation: [^\n]*\n"
                   r"User:\s+(\d+)\s+Group:\s+(\d+)(?:\s+Project:\s+\d+)?\s+Size: (\d+)\n")
_LS = re.compile(r"/(\d+)/([0-7]{6})/(\d+)/(\d+)/(.*)/(\d*)/")

QUOTE_HINT = ("debugfs cannot be handed a name with a line break or NUL in it: rename the file inside the image, "
              "or edit the image loop-mounted (--loop)")


@dataclass(frozen=True)
class Inode:
    ino: int
    mode: int          # full st_mode
    uid: int
    gid: int
    size: int

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return statmod.S_ISLNK(self.mode)

    @property
    def is_reg(self) -> bool:
        return statmod.S_ISREG(self.mode)


@dataclass
class Loc:
    """Where a path ends: `name` in the real directory `dirs` (None: that directory itself); `inode` is what is
    there (None: nothing); `rest` what could not be walked (`name` is missing or not a directory)."""

    dirs: list[str]
    name: str | None
    inode: Inode | None
    rest: list[str]

    @property
    def path(self) -> str:
        """The path without links on the way (debugfs follows none of it)."""
        return "/" + "/".join([*self.dirs, *([self.name] if self.name is not None else [])])


class LinkLoop(UnsafePath):
    pass


def at(image: Path, offset: int) -> Path:
    """How e2fsprogs (debugfs, e2fsck) opens a filesystem that starts `offset` bytes into a file (a partition of
    a disk image): NAME?offset=N, read by their unix I/O manager. A file name with a `?` in it cannot be opened
    either way, so it is refused."""
    if "?" in str(image):
        raise InputError(f"{image}: e2fsprogs cannot open a file whose path has a '?' in it",
                         "build into a directory without '?' in its path")
    return Path(f"{image}?offset={offset}") if offset else Path(image)


def env(epoch: int | None) -> dict[str, str]:
    e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if epoch is not None:
        e["E2FSPROGS_FAKE_TIME"] = str(epoch)   # the superblock's and new inodes' times: reproducible
    return e


def quote(name: str, image: Path | str) -> str:
    """`name` as one argument of a debugfs command; InputError for a name debugfs cannot be handed."""
    quoted = '"' + name.replace('"', '""') + '"'
    if _UNQUOTABLE.search(name) or len(quoted.encode("utf-8", "surrogateescape")) > MAX_QUOTED:
        raise InputError(f"{image}: {name!r}: a name debugfs cannot be handed (a line break or NUL in it, or "
                         "too long): nothing done with it", QUOTE_HINT)
    return quoted


def _line(command: str) -> str:
    """One command line for `debugfs -f`: a command and its arguments, nothing that would make it two (or a
    shell escape, or a comment)."""
    if (_UNQUOTABLE.search(command) or len(command.encode("utf-8", "surrogateescape")) >= LINE_MAX
            or not re.match(r"[a-z_]", command)):
        raise BuilderError(f"not a debugfs command line: {command[:80]!r}", "this is a bug in imgbuild; report it")
    return command


def settle(image: Path, epoch: int | None = None) -> None:
    """The last write to an image: its superblock's lifetime-writes counter (s_kbytes_written, which every
    e2fsprogs session adds its own I/O to, so it differs between two builds of one tree) reset, so two builds give
    the same bytes: in the primary superblock and, with `close -a`, in every backup."""
    script(image, ["ssv kbytes_written 0", "close -a"], epoch)


def script(image: Path, commands: list[str], epoch: int | None = None) -> None:
    """Run debugfs commands on an image, writable, one a line on its stdin. debugfs exits 0 even when a command
    fails, so its error lines ("CMD: message") are turned into a BuilderError here."""
    lines = [_line(c) for c in commands if c.strip()]
    if not lines:
        return
    r = _run_lines(["debugfs", "-w"], image, lines, env(epoch))
    verbs = {c.split()[0] for c in lines}
    errors = [line for line in r.tail if line.split(":", 1)[0] in verbs and not line.startswith("debugfs ")]
    if r.returncode != 0 or errors:
        raise BuilderError(f"debugfs on {Path(image).name}: " + ("; ".join(errors) or f"exit {r.returncode}"),
                           "is the image full? give the target a larger size")


def _query(image: Path, commands: list[str]) -> str:
    """debugfs's stdout for read-only commands (the image opened read-only)."""
    return _run_lines(["debugfs"], image, [_line(c) for c in commands], env(None)).stdout


def _run_lines(argv: list[str], image: Path, lines: list[str], e: dict[str, str]) -> runner.Result:
    """debugfs with its commands in a file (-f): a pipe would need reading its echo of them while writing."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", errors="surrogateescape", prefix="imgbuild-",
                                     suffix=".debugfs") as f:       # 0600
        f.write("\n".join(lines) + "\n")
        f.flush()
        return runner.run([*argv, "-f", f.name, str(image)], capture=True, check=False, env=e)


def _parse_stat(text: str) -> Inode | None:
    m = _STAT.match(text)
    if not m or m.group(2) not in _KINDS:
        return None
    return Inode(int(m.group(1)), _KINDS[m.group(2)] | (int(m.group(3), 8) & 0o7777), int(m.group(4)),
                 int(m.group(5)), int(m.group(6)))


def _stats(image: Path, specs: list[str]) -> list[Inode | None]:
    """`stat` of each (a quoted path or <ino>), in one debugfs run. Its output is cut at the lines debugfs
    echoes before each command; only the first lines of each part are read, and a part may be cut short by a
    link target that looks like an echo line: whoever uses the parts stops at the first link."""
    cmds = [f"stat {s}" for s in specs]
    out = _query(image, cmds)
    found: list[Inode | None] = []
    pos = 0
    for i, c in enumerate(cmds):
        mark = f"debugfs: {c}\n"
        at = out.find(mark, pos)
        if at < 0:
            found += [None] * (len(cmds) - i)
            break
        start = at + len(mark)
        nxt = out.find(f"debugfs: {cmds[i + 1]}\n", start) if i + 1 < len(cmds) else -1
        found.append(_parse_stat(out[start:nxt if nxt >= 0 else len(out)]))
        pos = nxt if nxt >= 0 else len(out)
    return found


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def _link_target(image: Path, ino: Inode) -> str | None:
    """A link's target as the image has it (None: too long, not UTF-8 or not readable)."""
    if ino.size == 0 or ino.size > MAX_LINK_TARGET:
        return None
    out = runner.run(["debugfs", "-R", f"stat <{ino.ino}>", str(image)], capture=True, check=False,
                     env=env(None)).stdout
    head = _parse_stat(out)
    if head is None or head.ino != ino.ino or not head.is_link:
        return None
    m = re.search(r'\nFast link dest: "', out)       # the last thing `stat` prints; xattrs before it are escaped
    if m:
        target = out[m.end():]
        if not target.endswith('"\n'):
            return None
        target = target[:-2]
    else:                                              # a slow link: its target is in a data block
        data = read_inode(image, ino, ino.size, f"<{ino.ino}>")
        try:
            target = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if "\ufffd" in target or "\0" in target or len(target.encode()) != ino.size:
        return None
    return target


def walk(image: Path, path: str, follow_last: bool = False) -> Loc:
    """Resolve `path` inside the image (see the module's docstring); LinkLoop past MAX_LINKS links."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise UnsafePath(f"{path}: paths inside an image must be absolute")
    todo = collections.deque(_split(path))
    dirs: list[str] = []
    here: Inode | None = None          # the inode of "/" + dirs, when known
    hops = 0
    while todo:
        if todo[0] == "..":
            todo.popleft()
            if dirs:
                dirs.pop()
                here = None
            continue
        run = []
        for c in todo:
            if c == "..":
                break
            run.append(c)
        specs = [quote("/" + "/".join([*dirs, *run[:k + 1]]), image) for k in range(len(run))]
        for comp, ino in zip(run, _stats(image, specs)):
            todo.popleft()
            last = not todo
            if ino is None:
                return Loc(dirs, comp, None, list(todo))
            if ino.is_link and (follow_last or not last):
                hops += 1
                if hops > MAX_LINKS:
                    raise LinkLoop(f"{image}: {path}: too many levels of symbolic links")
                target = _link_target(image, ino)
                if target is None:                     # a target that cannot be followed leads nowhere
                    return Loc(dirs, comp, None, list(todo))
                if target.startswith("/"):
                    dirs, here = [], None
                todo.extendleft(reversed(_split(target)))
                break                                  # the rest is looked at anew from here
            if last:
                return Loc(dirs, comp, ino, [])
            if not ino.is_dir:
                return Loc(dirs, comp, ino, list(todo))
            dirs.append(comp)
            here = ino
    if here is None:
        here = _stats(image, [quote("/" + "/".join(dirs), image)])[0]
    return Loc(dirs, None, here, [])


def lookup(image: Path, path: str, follow_last: bool = False) -> Inode | None:
    """What is at path (the last component itself unless follow_last); None when missing or in a loop."""
    try:
        loc = walk(image, path, follow_last)
    except LinkLoop:
        return None
    return None if loc.rest else loc.inode


def read_inode(image: Path, ino: Inode, limit: int, shown: str) -> bytes:
    """The bytes of a regular file (or slow link) by inode number, at most `limit` of them: into a private
    directory, the dump bounded by RLIMIT_FSIZE to the size the inode said."""
    if ino.size > limit:
        raise InputError(f"{image}:{shown}: {ino.size:,} bytes, more than the {limit:,} imgbuild reads of a file "
                         "in an image", "a file imgbuild edits in a guest is small text; look at what the image "
                                        f"holds at {shown}")
    with tempfile.TemporaryDirectory(prefix="imgbuild-debugfs-") as d:      # 0700, removed whatever happens
        out = Path(d) / "f"
        r = runner.run(["prlimit", f"--fsize={ino.size}", "--core=0", "--", "debugfs", "-R",
                        f"dump <{ino.ino}> {quote(str(out), image)}", str(image)], capture=True, check=False,
                       env=env(None))
        try:
            fd = os.open(out, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BuilderError(f"{image}:{shown}: debugfs could not read it (exit {r.returncode}): "
                               + "; ".join(r.tail[-3:])) from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(ino.size + 1)
    if len(data) != ino.size or r.returncode != 0:
        raise BuilderError(f"{image}:{shown}: read {len(data):,} bytes, the inode says {ino.size:,}: the image "
                           "changed while it was read (is it in use?)", "stop what uses the image and try again")
    return data


def read(image: Path, path: str, limit: int) -> bytes | None:
    """A regular file's bytes; None for anything else (missing, a link, a directory, a device node ...);
    InputError when it is larger than limit (nothing is dumped then)."""
    ino = lookup(image, path)
    if ino is None or not ino.is_reg:
        return None
    return read_inode(image, ino, limit, path)


def listdir(image: Path, path: str) -> list[str]:
    """Names in a directory (links on the way followed inside the image, the last not), sorted; [] when it is
    not a directory. A name debugfs cannot list unambiguously (a line break in it) is refused: InputError."""
    ino = lookup(image, path)
    if ino is None or not ino.is_dir:
        return []
    out = runner.run(["debugfs", "-R", f"ls -p <{ino.ino}>", str(image)], capture=True, check=False,
                     env=env(None)).stdout
    names = []
    for line in out.split("\n"):
        if not line:
            continue
        m = _LS.fullmatch(line)
        if not m or "/" in m.group(5):
            raise InputError(f"{image}: {path} holds a name with a line break or a slash in it "
                             f"({line[:60]!r}): its names cannot be read unambiguously", QUOTE_HINT)
        if m.group(5) not in (".", ".."):
            names.append(m.group(5))
    return sorted(names)


def _parent(image: Path, path: str, what: str) -> Loc:
    """The real directory holding path's last component (links on the way followed inside the image)."""
    loc = walk(image, path, follow_last=False)
    if loc.name is None:
        raise UnsafePath(f"{image}: {path}: not a file path")
    if loc.rest:
        raise BuilderError(f"cannot {what} {path} in {Path(image).name}: "
                           f"{loc.path} is {'missing' if loc.inode is None else 'not a directory'} in the image",
                           "the directory must exist in the image first")
    if loc.inode is not None and loc.inode.is_dir:
        raise UnsafePath(f"{image}: {path} is a directory in the image; cannot {what} a file there")
    return loc


def write(image: Path, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
          epoch: int | None = None) -> None:
    """Replace (or create) path by a regular file with this content, mode and owner: whatever is there (a link
    too) is removed first, never written through. Read back afterwards (debugfs exits 0 when a write is lost)."""
    loc = _parent(image, path, "write")
    p = quote(loc.path, image)
    with tempfile.TemporaryDirectory(prefix="imgbuild-debugfs-") as d:
        src = Path(d) / "f"
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        times = [f"sif {p} {t} @{epoch}" for t in ("atime", "mtime", "ctime")] if epoch is not None else []
        script(image, [f"rm {p}" if loc.inode is not None else "", f"write {quote(str(src), image)} {p}",
                       f"sif {p} mode 0{statmod.S_IFREG | statmod.S_IMODE(mode):o}", f"sif {p} uid {uid}",
                       f"sif {p} gid {gid}", *times], epoch)
    if read(image, loc.path, len(data)) != data:
        raise BuilderError(f"writing {path} into {Path(image).name} failed (debugfs)",
                           "is the image full? give the target a larger size")


def remove(image: Path, path: str, epoch: int | None = None) -> bool:
    """Remove a file, link or device node (the entry itself, never what a link points at)."""
    loc = walk(image, path, follow_last=False)
    if loc.rest or loc.inode is None:
        return False
    if loc.name is None or loc.inode.is_dir:
        raise UnsafePath(f"{image}: {path} is a directory in the image; not removed")
    script(image, [f"rm {quote(loc.path, image)}"], epoch)
    return True


def exists(image: Path, path: str) -> bool:
    return lookup(image, path) is not None


def is_dir(image: Path, path: str) -> bool:
    ino = lookup(image, path, follow_last=True)
    return ino is not None and ino.is_dir

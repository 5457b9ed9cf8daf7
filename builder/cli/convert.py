"""`migrate convert-xen` and `migrate convert-lxc`: a guest config between tool generations, never losing
the original (a backup beside it) and saying what was written."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click

from builder.cli.common import apply_verbosity, log, verbosity
from builder.core.errors import InputError
from builder.core.outputs import write_atomic
from builder.core.untrusted import read_file
from builder.guestconf import xen as xenconf
from builder.guestconf.lxc import MAX_BYTES, convert


def _read_input(name: str, limit: int, hint: str) -> bytes:
    """The bytes of the file `name` (- for standard input), at most `limit` of them (InputError beyond: the
    file is outside input: a device, fifo or directory is refused)."""
    if name != "-":     # a regular file only, opened without blocking (a fifo no one writes to is refused)
        return read_file(name, what="the config", limit=limit, hint=hint)
    try:
        data = sys.stdin.buffer.read(limit + 1)
    except OSError as e:
        raise InputError(f"{name}: cannot read the config: {e.strerror or e}", hint) from None
    if len(data) > limit:
        raise InputError(f"{name}: larger than {limit} bytes, which no config is", hint)
    return data


def _new_file_mode(source: str) -> int:
    """The mode for a new output made from `source`: the source's own permission bits (a config may hold a
    password: a copy is no more readable than the original), or what the umask gives for standard input."""
    if source != "-":
        try:
            return os.stat(source).st_mode & 0o777
        except OSError:
            pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _keep_backup(path: Path, data: bytes, mode: int) -> Path:
    """`data` (the file as it was) at PATH.backup, or PATH.backup.1, .2 ... when that exists: a backup is never
    overwritten (a second run must not replace the original with what the first run wrote)."""
    for n in range(1000):
        cand = path.with_name(f"{path.name}.backup" + (f".{n}" if n else ""))
        try:
            fd = os.open(cand, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(f"{cand}: cannot write the backup: {e.strerror or e}",
                             "choose an -o OUT in a writable directory") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(cand)
            raise
        return cand
    raise InputError(f"{path}: {path.name}.backup to {path.name}.backup.999 all exist",
                     "remove the backups you no longer need")


def _write_output(out: Path, data: bytes, source: str, limit: int) -> list[str]:
    """Write `data` at `out` (atomically). A different file already there is kept first (_keep_backup).
    Returns what was written, in order: [] when `out` already holds exactly `data`."""
    hint = "give a file path as -o OUT, or leave -o out to write to standard output"
    written: list[str] = []
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"{out}: cannot write it: {e.strerror or e}", hint) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{out}: not a regular file; nothing written", hint)
    backup = None
    try:
        if st is not None:
            mode = st.st_mode & 0o7777
            old = _read_input(str(out), limit, hint)
            if old == data:
                return written
            if old:
                backup = _keep_backup(out, old, mode)
                written.append(f"{backup} ({out} as it was)")
        else:
            mode = _new_file_mode(source)
        write_atomic(out, data, mode)
    except BaseException as e:
        if backup is not None:            # OUT is unchanged: its copy is not needed, nothing is left behind
            backup.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(f"{out}: cannot write it: {e.strerror or e}",
                             "choose an -o OUT in a writable directory") from None
        raise
    written.append(str(out))
    return written


def _same_file(a: str, b: Path) -> bool:
    try:
        return a != "-" and os.path.samefile(a, b)
    except OSError:
        return False


# ------------------------------------------------------------------ convert-xen (Xen 3 xm -> Xen 4 xl)


@click.command("convert-xen")
@click.argument("old", metavar="OLD.cfg", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--disk-map", "disk_maps", multiple=True, metavar="OLD=NEW",
              help="Move disk paths: an exact path, or a directory prefix (/var/xen=/srv/xen). Repeatable.")
@click.option("--bridge-map", "bridge_maps", multiple=True, metavar="OLD=NEW",
              help="Rename a vif bridge (xenbr0=br0); a vif without bridge gets xenbr0's. Repeatable.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the xl config here (default: standard output). A file already there (also OLD.cfg "
                   "itself) is kept as FILE.backup, or FILE.backup.1 ... if that exists.")
@verbosity
def convert_xen(old: Path, disk_maps: tuple[str, ...], bridge_maps: tuple[str, ...], output: Path | None,
                verbose: int, quiet: bool, debug: bool) -> None:
    """Convert a Xen 3 (xm) domain config to xl syntax for Xen 4.

    The old file is read, never run: Python in it (imports, expressions, conditionals) is reported line by
    line. A value only running Python could give (Xen's xmexample.hvm sets arch_libdir inside an `if` on
    os.uname()) is unknown: a setting xl drops anyway (device_model ...) goes with a note, one xl keeps is an
    error. Warnings go to stderr as `warning: FILE:LINE: message`; if xl cannot take something, or xl's own
    parser would refuse the result, nothing is written and the exit status is 2 (bad input), as it is for a
    file that is no xm config (binary, larger than 256 KB, expressions nested deeper than 50 levels). Every file
    written is named on stderr.
    """
    apply_verbosity(verbose, quiet, debug)
    try:
        disk_map = xenconf.parse_map(disk_maps, "--disk-map")
        bridge_map = xenconf.parse_map(bridge_maps, "--bridge-map")
    except ValueError as e:
        raise InputError(str(e), "e.g. --disk-map /var/xen=/srv/xen/images --bridge-map xenbr0=br0") from None
    hint = "give the domain's config file, e.g. /etc/xen/NAME.cfg"
    data = _read_input(str(old), xenconf.MAX_BYTES, hint)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{old}:{line}: not a text config (byte {e.start} is not UTF-8)", hint) from None
    result = xenconf.convert_text(text, str(old), disk_map, bridge_map)
    for f in result.findings:
        {"note": lambda m: log.info("note: %s", m), "warning": log.warning, "error": log.error}[f.level](
            f.show(str(old)))
    if result.text is None:
        n = len(result.errors)
        raise InputError(f"{old}: not converted: {n} problem{'s' if n != 1 else ''} xl cannot take (above)",
                         "fix them in a copy of the old config, or write those settings by hand")
    if output is None:
        click.echo(result.text, nl=False)
        return
    written = _write_output(output, result.text.encode(), str(old), xenconf.MAX_BYTES)
    if not written:
        log.info("%s: already holds this xl config, nothing written", output)
    for w in written:
        log.info("wrote %s%s", w, "" if result.checked or w != str(output)
                 else " (not checked: xl's parser is not installed)")


# ------------------------------------------------------------------ convert-lxc (legacy <-> modern LXC keys)


CONVERT_LXC_EPILOG = """\b
Examples:
  migrate convert-lxc /var/lib/lxc/vm0/config --to modern -o /var/lib/lxc/vm0/config
        convert in place (LXC 0.7-2.0 -> 2.1+), keeping the old file as config.backup
        (config.backup.1 ... if that exists; a config already modern is left as it is)
  migrate convert-lxc old.conf --to modern > new.conf
  migrate convert-lxc output/debian12/lxc.conf --to legacy -o vm0.legacy.conf

\b
legacy: LXC 0.7 to 2.0 keys (lxc.network.*, lxc.utsname, lxc.rootfs, lxc.tty, lxc.pts ...)
modern: LXC 2.1 and later (lxc.net.N.*, lxc.uts.name, lxc.rootfs.path, lxc.tty.max, lxc.pty.max ...)

\b
Every file written is named on stderr (`wrote PATH`); a backup is never overwritten.
Exit status: 0 converted (also with warnings), 2 unreadable input or not an LXC config.
"""


@click.command("convert-lxc", epilog=CONVERT_LXC_EPILOG)
@click.argument("file", metavar="FILE")
@click.option("--to", "to", type=click.Choice(["modern", "legacy"]), required=True,
              help="The form to write: modern (LXC 2.1+) or legacy (LXC 0.7-2.0).")
@click.option("-o", "--output", "out", metavar="OUT",
              help="Write here (atomically) instead of stdout. OUT = FILE converts in place, keeping FILE.backup "
                   "(FILE.backup.1 ... if that exists); any other file at OUT is kept the same way.")
@verbosity
def convert_lxc(file: str, to: str, out: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Convert an LXC container config FILE between legacy and modern keys.

    Comments, blank lines and the order of lines are kept. legacy -> modern renames keys as LXC's own
    lxc-update-config does (lxc.network.* -> lxc.net.N.*, counted per lxc.network.type line; lxc.utsname ->
    lxc.uts.name; lxc.rootfs -> lxc.rootfs.path with dir: ...) and fixes what it gets wrong; modern -> legacy
    writes lxc.network blocks in lxc.net.N order. A key with no equivalent in the target form is kept
    commented out ("# imgbuild: no equivalent in ...") and reported on stderr as
    `warning: FILE:LINE: KEY: why`; unknown keys are kept as they are, with a warning.
    """
    apply_verbosity(verbose, quiet, debug)
    hint = "give the path of a container config, e.g. /var/lib/lxc/NAME/config"
    data = _read_input(file, MAX_BYTES, hint)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{file}:{line}: not an LXC config: it is not UTF-8 text", hint) from None
    try:
        converted, warnings = convert(text, to)
    except InputError as e:
        raise InputError(f"{file}: {e.message}", e.hint) from None
    for w in warnings:
        click.echo(f"warning: {file}:{w.line}: {w.key}: {w.message}", err=True)
    if out is None:
        click.echo(converted, nl=False)
        return
    in_place = _same_file(file, Path(out))
    if in_place and converted == text:
        log.info("%s: already %s, nothing written", file, to)
        return
    written = _write_output(Path(out), converted.encode(), file, MAX_BYTES)
    if not written:
        log.info("%s: already holds the %s config, nothing written", out, to)
    for w in written:
        log.info("wrote %s", w)

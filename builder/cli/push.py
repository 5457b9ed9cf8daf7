"""`migrate push`: a whole OS tree to a directory on a host, over the user's own ssh."""
from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli.common import NONEMPTY, apply_verbosity, log, verbosity
from builder.cli.common import Path as PathType
from builder.cli.fanout import fanout_options
from builder.cli.ssh import ssh_options
from builder.core.errors import BuilderError
from builder.migrate import push as p
from builder.migrate.remote import Remote

PUSH_EPILOG = """\b
Examples:
  migrate push vps1 --port 3843 --dest /usr/local/newos --source /srv/images/newos --dry-run
  migrate push --hosts web1,web2,@more-hosts.txt -j 3 --dest /srv/os --source /srv/images/newos
  migrate push vps1 --port 3843 --dest /usr/local/newos --source /srv/images/newos --delete --verify
  migrate push web2 --dest /srv/os --profile core --bwlimit 20000      (20 MB/s, the OS without data)

\b
Never sent (the contents of): /proc /sys /run /tmp /var/tmp /mnt /media, and every live filesystem
(proc, sysfs, devtmpfs, tmpfs ...) mounted under the source; on the receiver, every mount under --dest is
left alone (a running chroot's /proc, /dev, /lib/modules).
Protected (kept on the receiver, never sent, never deleted): /etc/hostname, /etc/machine-id, ssh host keys,
/etc/hosts, /etc/resolv.conf, /etc/fstab, network config (interfaces, ifcfg-*, netplan, networkd, NM,
70-persistent-net.rules), the chroot's boot script and escape helper (/usr/local/sbin/imgbuild-chroot,
chroot-escape). --unprotect PATH sends one of them anyway. Those the source has and HOST lacks
are named ("not sent ..."); `migrate chroot-install` gives a pushed tree its own.
Refused (nothing changed; --force overrides): --dest / and the remote system's own trees and everything
inside them (/usr, /etc, /boot, /root, /lib, /var/lib, /var/log ...; /usr/local/NAME is fine), the
directories that hold others' trees themselves (/srv, /home, /opt, /mnt, /var, /usr/local), a --dest that
resolves into any of these on HOST, --delete through a symlink, and --delete into a directory that holds files
but no .imgbuild-push (the marker a push leaves in the empty or new directory it fills).
Every local input (--source, --files-from, --profile, patterns) is checked before HOST is contacted.
An unknown host key is refused unless --accept-new-host-key.
An interrupted push keeps what arrived (in .imgbuild-partial/ directories); run it again to resume.

With --hosts, every host is pushed by its own `migrate push` process (-j at once); a table sums up, each
host's output is kept under --logs.

Exit status: 0 pushed (or verified equal; with --hosts: every host), 1 failed or --verify found differences
(with --hosts: the hosts that failed are named), 2 bad input.
"""


@click.command("push", epilog=PUSH_EPILOG)
@click.argument("host", required=False)
@click.option("--dest", required=True, metavar="DIR", help="Directory on HOST to push into (absolute).")
@click.option("--source", type=PathType(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              metavar="DIR", help="Root of the local tree to push.")
@click.option("--files-from", type=PathType(dir_okay=False, path_type=Path), metavar="LIST",
              help="Push only the paths in LIST (relative to --source, one per line).")
@click.option("--profile", type=NONEMPTY, metavar="NAME", help="A named set of rsync filter rules: core, os, a file in "
              "/etc/imgbuild/profiles/NAME.rules, or a path.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN", help="rsync exclude pattern. Repeatable.")
@click.option("--protect", "protect", multiple=True, metavar="PATH",
              help="Also keep PATH on the receiver (not sent, not deleted). Repeatable.")
@click.option("--unprotect", multiple=True, metavar="PATH", help="Send a default-protected PATH anyway.")
@click.option("--bwlimit", type=click.IntRange(1), metavar="KBPS", help="Bandwidth limit in KB/s (rsync --bwlimit).")
@click.option("--delete", is_flag=True, help="Delete files under --dest that the source does not have.")
@click.option("-n", "--dry-run", is_flag=True, help="List what would change: every path that would be created, "
              "changed (content, mode, owner ...) or deleted, grouped; change nothing on HOST or here (not even "
              "known_hosts).")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the paths as JSON on stdout, for scripts.")
@click.option("--verify", is_flag=True, help="Afterwards, compare every file by checksum and report differences.")
@click.option("--force", is_flag=True, help="Allow --dest / or a system directory, --delete through a symlink, or "
              "--delete into a directory no earlier push filled.")
@click.option("--rsync-path", metavar="CMD", help="rsync on HOST, e.g. 'sudo rsync'.")
@fanout_options
@ssh_options
@verbosity
@click.pass_context
def push(ctx, host, dest, source, files_from, profile, excludes, protect, unprotect, bwlimit, delete, dry_run,
         as_json, verify, force, rsync_path, fan, ssh, verbose, quiet, debug) -> None:
    """Push the OS tree at --source to DIR on HOST with rsync over ssh (-aHAXS --numeric-ids: owners, modes,
    hardlinks, ACLs, xattrs, device nodes and sparse files kept), safely for a running host.

    A second push sends only what changed; an interrupted one resumes. Use --dry-run first.
    """
    apply_verbosity(verbose, quiet, debug)
    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run")
    fan.check(host)
    dest = p.check_dest(dest, force)
    req = p.PushRequest(dest=dest, source=source, files_from=files_from, profile=profile, excludes=excludes,
                        protect=protect, unprotect=unprotect, bwlimit=bwlimit, delete=delete, dry_run=dry_run,
                        verify=verify, force=force, rsync_path=rsync_path)
    p.check_request(req)        # every local input before the first connection
    if fan.many(ctx, host):
        return
    remote = Remote(host, ssh, dry_run=dry_run)
    with remote.session():
        changes = _push(remote, req, source, host, dest, dry_run, verify, as_json)
    fan.report(p.as_json(changes, host, dest, dry_run))


def _push(remote, req, source, host, dest, dry_run, verify, as_json=False) -> p.Changes:
    changes = p.push(remote, req)
    where = f"{host}:{dest}"
    if dry_run:
        if as_json:
            click.echo(json.dumps(p.as_json(changes, host, dest, True), indent=2))
            return changes
        click.echo(f"dry run: {source} -> {where}; nothing was changed")
        for line in p.summary(changes, True):
            click.echo(f"  {line}")
        for line in p.listing(changes):
            click.echo(f"  {line}")
        return changes
    for line in p.summary(changes, False):
        log.info("%s: %s", where, line)
    if verify:
        diffs = p.verify(remote, req)
        if diffs:
            for d in diffs[:50]:
                log.error("verify: differs: %s", d)
            raise BuilderError(f"{where}: --verify found {len(diffs)} difference(s) after the push",
                               "run the push again; if they stay, files changed during the push or the receiver "
                               "cannot store them (xattrs/ACLs on its filesystem)")
        log.info("%s: verify: every file equal by checksum", where)
    return changes

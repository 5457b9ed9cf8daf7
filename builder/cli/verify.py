"""`imgbuild verify`, `sign` and `publish`: the checksums and signatures of outputs, and image server trees."""
from __future__ import annotations

import os
from pathlib import Path

import click

from builder.cli.common import apply_verbosity, verbosity
from builder.core import sums
from builder.core.errors import InputError

VERIFY_EPILOG = """\b
Examples:
  imgbuild verify output/debian12
  imgbuild verify /srv/images --keyring /etc/imgbuild/signers.gpg
  imgbuild verify output/debian12 --allowed-signers ~/.ssh/allowed_signers

Exit status: 0 every file matches and every signature is good, 1 a mismatch (the file is named), 2 bad input.
"""


@click.command("verify", epilog=VERIFY_EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--keyring", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="GnuPG keyring (gpg --export KEY > FILE) whose keys may sign; also makes a missing "
              "SHA256SUMS.asc a failure. Default: the keyring of GNUPGHOME.")
@click.option("--allowed-signers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="ssh-keygen's allowed signers file: checks SHA256SUMS.sig, and makes a missing one a failure.")
@verbosity
def verify(paths: tuple[Path, ...], keyring: Path | None, allowed_signers: Path | None, verbose: int, quiet: bool,
           debug: bool) -> None:
    """Check the SHA256SUMS of each output (OUTPUT/NAME) or image server tree (every directory in it that has
    one): every file it lists, byte for byte, and its signatures (SHA256SUMS.asc by GnuPG, SHA256SUMS.sig by
    ssh-keygen -Y).

    Prints one line per directory; each problem names its file. Files the directory holds that SHA256SUMS does
    not list are named as not covered (nothing vouches for them).
    """
    apply_verbosity(verbose, quiet, debug)
    failed = False
    for top in paths:
        found = sums.directories(top)
        if not found:
            raise InputError(f"{top}: no SHA256SUMS in it or under it",
                             "give an output directory (output/NAME) or a tree imgbuild publish wrote")
        for report in (sums.verify(d, keyring, allowed_signers) for d in found):
            failed |= bool(report.problems)
            signed = f", signed by {', '.join(report.signed_by)}" if report.signed_by else ""
            if report.problems:
                click.echo(f"{report.directory}: FAILED ({len(report.problems)} problems, {len(report.checked)} "
                           f"files ok{signed})")
                for p in report.problems:
                    click.echo(f"  {p}")
            elif not quiet:
                click.echo(f"{report.directory}: ok ({len(report.checked)} files{signed})")
            for n in report.notes if not quiet else ():
                click.echo(f"  note: {n}")
    if failed:
        raise SystemExit(1)


@click.command("sign")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--key", "gpg_key", metavar="KEY", help="GnuPG key (id, fingerprint or e-mail) to sign with.")
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="ssh private key to sign with (ssh-keygen -Y sign).")
@verbosity
def sign(paths: tuple[Path, ...], gpg_key: str | None, ssh_key: Path | None, verbose: int, quiet: bool,
         debug: bool) -> None:
    """Sign the SHA256SUMS of outputs again (after `migrate reidentify` of an output, which drops the old
    signature), or of every directory of an image server tree (with --key, also the files LXC's download
    template checks: index-system.asc, rootfs.tar.xz.asc, meta.tar.xz.asc). The files are checked against
    SHA256SUMS first, and nothing is signed if one does not match.
    """
    apply_verbosity(verbose, quiet, debug)
    from builder.images import lxcdownload

    signing = sums.Signing(gpg_key, ssh_key)
    if not signing:
        raise InputError("sign: nothing to sign with", "give --key KEY (GnuPG) and/or --ssh-key FILE")
    sums.check_signing(signing)
    for top in paths:
        for d in sums.directories(top) or [top]:
            sums.resign(d, signing, lxcdownload.detached(sums.parse(d, sums.Report(d))))
            click.echo(f"{d}: signed ({', '.join(signing.describe())})")


PUBLISH_EPILOG = """\b
Examples:
  imgbuild publish output/debian12 --to /srv/images
  imgbuild publish output/debian12 output/el7 --to /srv/images --keep 5 --sign builds@example.org
Then, with /srv/images served over HTTPS (any web server; the download template fetches over HTTPS only):
  lxc-create -n web1 -t download -- --server images.example.org -d debian -r bookworm -a amd64 --variant debian12
  lxc remote add mine https://images.example.org --protocol simplestreams --public; lxc launch mine:debian12 c1

Exit status: 0 ok, 1 failed, 2 bad input (an output whose files do not match its SHA256SUMS, a link in DIR).
"""


@click.command("publish", epilog=PUBLISH_EPILOG)
@click.argument("outputs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "top", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The image server tree (made if missing).")
@click.option("--keep", default=3, show_default=True, type=int, help="Serials kept of each image.")
@click.option("--sign", "gpg_key", metavar="KEY", help="Sign every SHA256SUMS with this GnuPG key.")
@click.option("--sign-ssh", "ssh_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also (or instead) sign with this ssh private key.")
@verbosity
def publish(outputs: tuple[Path, ...], top: Path, keep: int, gpg_key: str | None, ssh_key: Path | None, verbose: int,
            quiet: bool, debug: bool) -> None:
    """Lay out built OUTPUTs (OUTPUT/NAME) as a static image server tree in DIR: LXC's download template index
    and images (rootfs.tar.xz, meta.tar.xz), and simplestreams for `lxc|incus remote add` (outputs built with
    the lxd target: lxd.tar.xz + rootfs.squashfs). Each image serial gets SHA256SUMS (`imgbuild verify DIR`).

    Each OUTPUT's files are checked against its SHA256SUMS first; publishing the same build again changes
    nothing; a new build of the same image adds a serial and the oldest beyond --keep are removed. Needs root
    (each tarball is unpacked, device nodes included, to name the host LXC_NAME).
    """
    apply_verbosity(verbose, quiet, debug)
    from builder.images import publish as pub  # only this command needs it

    if os.geteuid() != 0:
        raise InputError("publish needs root: it unpacks each output's tarball, device nodes included",
                         "run it as root (sudo imgbuild publish ...)")
    signing = sums.Signing(gpg_key, ssh_key.resolve() if ssh_key else None)
    sums.check_signing(signing)
    for line in pub.publish(list(outputs), top, keep, signing):
        click.echo(line)

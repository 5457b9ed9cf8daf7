"""`imgbuild cache list|verify|rm|prune`: the bootstrap and package caches."""
from __future__ import annotations

import os

import click

from builder.build import bootcache
from builder.build import unprivileged as unpriv
from builder.cli.common import apply_verbosity, verbosity
from builder.core.errors import InputError
from builder.debian import pkgcache


@click.group("cache")
def cache_group() -> None:
    """The caches: trees right after the bootstrap, reused by rebuilds with the same inputs; and the .debs
    builds downloaded, each verified against the mirror's index on the way in and on the way out, with their
    prepared copies (data.tar uncompressed, so dpkg never decompresses xz; each with its own sha256).

    Where: $IMGBUILD_CACHE/bootstrap and $IMGBUILD_CACHE/packages (default /var/cache/imgbuild as root,
    ~/.cache/imgbuild for others). The bootstrap cache is bounded by $IMGBUILD_CACHE_MAX (default 4G; least
    recently used entries go first); the package cache by $IMGBUILD_PACKAGES_MAX (default 2G, least recently
    used packages first, after each build); `prune --packages` empties it. `rm NAME` removes the entries of
    one recipe (or one KEY).
    """


def _as_tree_owner() -> None:
    """An ordinary user's entries hold files of the user namespace's ids (their unprivileged builds made them),
    which the user cannot read or remove from outside: run this command again inside such a namespace."""
    if os.geteuid() != 0 and not unpriv.active() and bootcache.root_dir().is_dir():
        unpriv.reexec()


@cache_group.command("list")
@verbosity
def cache_list(verbose: int, quiet: bool, debug: bool) -> None:
    """Every entry: key, recipe, size, last use, what it was bootstrapped with."""
    apply_verbosity(verbose, quiet, debug)
    es = sorted(bootcache.entries(), key=lambda e: -e.meta.get("last_used", 0))
    for e in es:
        click.echo(bootcache.describe(e))
    click.echo(f"{len(es)} entries, {sum(e.size for e in es) / (1 << 20):.1f} MB in {bootcache.root_dir()}", err=True)
    files, size = pkgcache.size()
    click.echo(f"package cache: {files} packages, {size / (1 << 20):.1f} MB (with their prepared copies) in "
               f"{pkgcache.deb_dir().parent}", err=True)


@cache_group.command("prune")
@click.option("--max-size", metavar="SIZE", help="Keep at most this much (500M, 4G); default $IMGBUILD_CACHE_MAX.")
@click.option("--packages", is_flag=True, help="Also empty the package cache.")
@click.option("--all", "everything", is_flag=True, help="Remove every entry, and the package cache.")
@verbosity
def cache_prune(max_size: str | None, packages: bool, everything: bool, verbose: int, quiet: bool,
                debug: bool) -> None:
    """Remove the least recently used bootstrap entries until the cache fits."""
    apply_verbosity(verbose, quiet, debug)
    _as_tree_owner()
    try:
        limit = bootcache.parse_size(max_size) if max_size else bootcache.max_size()
    except InputError as e:
        raise InputError(f"{'--max-size' if max_size else '$IMGBUILD_CACHE_MAX'}: {e.message}", e.hint) from None
    gone = bootcache.prune(limit, everything=everything)
    for e in gone:
        click.echo(f"removed {e.key} ({e.meta.get('name', '?')}, {e.size / (1 << 20):.1f} MB)")
    click.echo(f"{len(gone)} removed", err=True)
    if packages or everything:
        files, size = pkgcache.prune()
        click.echo(f"removed {files} packages ({size / (1 << 20):.1f} MB) from {pkgcache.deb_dir().parent}")


@cache_group.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME|KEY...]")
@verbosity
def cache_verify(names: tuple[str, ...], verbose: int, quiet: bool, debug: bool) -> None:
    """Check bootstrap cache entries in full: every file's type, mode, owner, size, times and contents against
    the listing sealed when the entry was made (a build checks all but the contents before each use). Every
    entry, or those of recipe NAME, or the entry KEY. Exit 1 naming each damaged entry and its first differing
    files; `imgbuild cache rm KEY` removes one (the next build makes it again)."""
    apply_verbosity(verbose, quiet, debug)
    _as_tree_owner()
    damaged = 0
    chosen = bootcache.select(list(names))
    for e in chosen:
        bad = bootcache.verify(e)
        old = bad and bad[0].startswith("an older")
        click.echo(f"{e.key}  {e.meta.get('name', '?')}: " + ("ok" if not bad else "skipped, " + bad[0] if old
                                                              else "DAMAGED"))
        if bad and not old:
            damaged += 1
            for line in bad:
                click.echo(f"    {line}")
    click.echo(f"{len(chosen)} entries checked, {damaged} damaged", err=True)
    if damaged:
        raise SystemExit(1)


@cache_group.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME|KEY...")
@verbosity
def cache_rm(names: tuple[str, ...], verbose: int, quiet: bool, debug: bool) -> None:
    """Remove bootstrap cache entries: every entry of a recipe NAME, or the entry KEY (its first 6+ characters,
    as `cache list` shows it). Nothing is removed when one NAME matches nothing or an entry is in use."""
    apply_verbosity(verbose, quiet, debug)
    _as_tree_owner()
    gone = bootcache.remove(list(names))
    for e in gone:
        click.echo(f"removed {e.key} ({e.meta.get('name', '?')}, {e.size / (1 << 20):.1f} MB)")

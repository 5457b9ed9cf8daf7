"""`imgbuild build` (also `imgbuild RECIPE`), `validate` and `schema`: recipes in, outputs out."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from builder.build import bootcache
from builder.build import pipeline as build_mod
from builder.build import recipe as recipe_mod
from builder.build import unprivileged as unpriv
from builder.build.targets import lxc
from builder.cli import lazy
from builder.cli.common import NONEMPTY, apply_verbosity, verbosity
from builder.cli.common import Path as PathType
from builder.core import checks, outputs, sums
from builder.core.errors import BuilderError, InputError, RecipeError
from builder.debian import pkgcache

# --install-lxc runs `imgbuild install-lxc`, loaded only then: a build (and a no-change rebuild) does not load
# the identity engine that installing needs
INSTALL_LXC = "builder.cli.install:install_lxc"

BUILD_EPILOG = """\b
Examples:
  imgbuild build recipes/debian12.yml            (same as: imgbuild recipes/debian12.yml)
  imgbuild recipes/debian12.yml -o /srv/images --set hostname=web1
  imgbuild recipes/debian12.yml --set 'bootstrap.packages=[systemd-sysv, vim]' -v

Exit status: 0 ok, 1 build failed, 2 bad input (recipe, options), 130 interrupted.
"""


@click.command("build", epilog=BUILD_EPILOG)
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=PathType(file_okay=False, path_type=Path), default=Path("output"),
              show_default=True, help="Directory for outputs; the build lands in OUTPUT/NAME/.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (dotted path, VALUE read as YAML); repeatable.")
@click.option("--keep-tree", is_flag=True, help="Also keep the finished root tree as OUTPUT/NAME.rootfs/ (replacing "
              "only a tree an earlier --keep-tree left there).")
@click.option("--no-cache", is_flag=True, help="Bootstrap afresh: neither use nor fill the bootstrap cache.")
@click.option("--force", is_flag=True, help="Build even when OUTPUT/NAME is up to date (same inputs, outputs "
              "intact).")
@click.option("--install-lxc", is_flag=True, help="Then install it as LXC container(s), as `imgbuild install-lxc` "
              "does (a cluster: every node); replaces containers of the same names that imgbuild installed "
              "and that are not running.")
@click.option("--lxcpath", type=NONEMPTY, default="/var/lib/lxc", show_default=True,
              help="With --install-lxc: LXC's directory.")
@click.option("-n", "--dry-run", is_flag=True, help="Say whether OUTPUT/NAME is up to date or would be built (the "
              "recipe checked, the mirror's index read); build nothing.")
@click.option("--sign", "gpg_key", metavar="KEY", help="Sign OUTPUT/NAME/SHA256SUMS with this GnuPG key (id, "
              "fingerprint or e-mail of GNUPGHOME's keyring): SHA256SUMS.asc. `imgbuild verify` checks it.")
@click.option("--sign-ssh", "ssh_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also (or instead) sign it with this ssh private key (ssh-keygen -Y sign): SHA256SUMS.sig.")
@click.option("--result-json", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@verbosity
def build(recipe: Path, output: Path, overrides: tuple[str, ...], keep_tree: bool, no_cache: bool, force: bool,
          install_lxc: bool, lxcpath: str, dry_run: bool, gpg_key: str | None, ssh_key: Path | None,
          result_json: Path | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Build RECIPE into OUTPUT/NAME/ (tarball, guest configs, manifest.json, SHA256SUMS).

    Everything that can be checked first is: the recipe, the bootstrap method, the mirror and every requested
    package. A failed or interrupted build leaves the previous output untouched and nothing mounted.

    Packages come from a verified package cache and the tree after the bootstrap from the bootstrap cache, both
    under $IMGBUILD_CACHE (root: /var/cache/imgbuild, others: ~/.cache/imgbuild); see `imgbuild cache`.
    A build whose inputs (recipe, the files it names, packages, mirror index) are unchanged and whose outputs
    still match their sha256 is not done again: --force does it anyway. Recipes with secrets are always built.

    Without root, the build runs in a user namespace of your own (Debian recipes with mmdebstrap; needs uidmap
    and 65536 ids for you in /etc/subuid and /etc/subgid): device nodes go into the tarball and image as they
    would as root (the same tarball), /sys in hooks is the host's; --install-lxc, other bootstrap methods and
    an output directory under /dev/shm need root.
    """
    apply_verbosity(verbose, quiet, debug)
    loaded = recipe_mod.load(recipe, overrides)
    _check_cache_limits()
    if os.geteuid() != 0 or unpriv.active():
        if install_lxc:
            raise InputError("--install-lxc needs root (LXC's directory is root's)",
                             f"build without it, then as root: imgbuild install-lxc {output}/{loaded.recipe.name}")
    _check_build_destinations(loaded.recipe, output, keep_tree, lxcpath if install_lxc else None)
    signing = sums.Signing(gpg_key, ssh_key.resolve() if ssh_key else None)
    sums.check_signing(signing)
    if dry_run:
        final = Path(output).resolve() / loaded.recipe.name
        current = build_mod.up_to_date(loaded, output, keep_tree=keep_tree, use_cache=not no_cache, force=force,
                                       signing=signing)
        click.echo(f"{final} is up to date: nothing to build" if current else f"would build {final}")
        if result_json:
            outputs.write_atomic(result_json, json.dumps({"changed": not current, "output": str(final)}))
        return
    if os.geteuid() != 0:
        unpriv.reexec()   # the same command again, as root of a user namespace of its own
    before = _manifest_id(Path(output).resolve() / loaded.recipe.name)
    final = build_mod.build(loaded, output, keep_tree=keep_tree, use_cache=not no_cache, force=force,
                            signing=signing)
    click.echo(str(final))
    if result_json:     # an up-to-date output keeps its manifest.json (a build swaps in a new directory)
        outputs.write_atomic(result_json, json.dumps({"changed": _manifest_id(final) != before,
                                                      "output": str(final)}))
    if install_lxc:
        click.get_current_context().invoke(lazy.load(INSTALL_LXC, "install-lxc"), output=final, lxcpath=lxcpath,
                                           force=True, verbose=verbose, quiet=quiet, debug=debug)


def _manifest_id(final: Path) -> tuple[int, int, int, int] | None:
    """OUTPUT/NAME/manifest.json's identity (device, inode, size, mtime): another one after a build that built."""
    try:
        st = (final / "manifest.json").stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _check_cache_limits() -> None:
    """$IMGBUILD_CACHE_MAX and $IMGBUILD_PACKAGES_MAX are read when the caches are trimmed, after the bootstrap
    and the build: a bad one is bad input now, before anything is done."""
    for var, limit in (("$IMGBUILD_CACHE_MAX", bootcache.max_size), ("$IMGBUILD_PACKAGES_MAX", pkgcache.max_size)):
        try:
            limit()
        except InputError as e:
            raise InputError(f"{var}: {e.message}", e.hint) from None


def _check_build_destinations(r, output: Path, keep_tree: bool, lxcpath: str | None) -> None:
    """Before building: every place the build will replace is one it may replace (OUTPUT/NAME an earlier
    output or empty, OUTPUT/NAME.rootfs a tree --keep-tree left, LXCPATH/NAME a stopped container imgbuild
    installed), so a refusal comes now and not after the build."""
    checks.directory(output, "-o")
    base = Path(output).resolve()
    outputs.check_replaceable(base / r.name)
    if keep_tree:
        outputs.check_tree_replaceable(base / f"{r.name}.rootfs")
    if lxcpath is not None:
        if r.targets.tarball is None or r.targets.lxc is None:
            raise InputError("--install-lxc: the recipe makes no tarball or no LXC config to install",
                             "add targets: {tarball: {}, lxc: {}} to the recipe (or --set 'targets.lxc={}')")
        checks.directory(lxcpath, "--lxcpath")
        for n in (r.nodes or ()):
            lxc.destination(lxcpath, n.name, force=True, what=f"--install-lxc: node {n.name}")
        if not r.nodes:
            lxc.destination(lxcpath, r.name, force=True, what="--install-lxc: name")


@click.command("validate")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key.")
@click.option("--offline", is_flag=True, help="Do not ask the mirror whether the packages exist.")
@verbosity
def validate(recipes: tuple[Path, ...], overrides: tuple[str, ...], offline: bool, verbose: int, quiet: bool,
             debug: bool) -> None:
    """Check RECIPES without building: keys, types, values, files they name and (unless --offline) that the
    mirror has every package. Prints one line per recipe; exit 2 if any is bad."""
    apply_verbosity(verbose, quiet, debug)
    failed: list[BuilderError] = []
    broken: list[Exception] = []      # a bug met on one recipe: reported, and the others are still checked
    for path in recipes:
        try:
            loaded = recipe_mod.load(path, overrides)
            if not offline:
                build_mod.preflight(loaded)   # mirror, release, packages (writes nothing but caches)
            click.echo(f"{path}: ok")
        except BuilderError as e:
            failed.append(e)
            click.echo(f"{path}: invalid", err=True)
        except Exception as e:  # noqa: BLE001 - one recipe's internal error must not hide the others' results
            broken.append(e)
            click.echo(f"{path}: internal error: {e.__class__.__name__}: {e}", err=True)
    if broken:
        for e in failed:
            click.echo(f"error: {e.message}", err=True)
        raise broken[0]
    if len(failed) == 1:
        raise failed[0]
    if failed:
        problems = [p for e in failed if isinstance(e, RecipeError) for p in e.problems]
        others = [e for e in failed if not isinstance(e, RecipeError)]
        if problems and not others:
            raise RecipeError(problems, failed[0].hint)
        raise InputError(f"{len(failed)} of {len(recipes)} recipes are invalid:\n" +
                         "\n".join(str(e) for e in failed), failed[0].hint)


@click.command("schema")
@click.option("--markdown", is_flag=True, help="The reference tables of docs/recipes.md instead.")
def schema(markdown: bool) -> None:
    """Print the recipe JSON Schema (for editors and CI)."""
    if markdown:
        click.echo(recipe_mod.markdown(), nl=False)
    else:
        click.echo(json.dumps(recipe_mod.json_schema(), indent=2))

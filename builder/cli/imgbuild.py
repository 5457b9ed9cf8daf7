"""`imgbuild`: the command line. Each command parses its arguments and calls one library function."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from builder import __version__
from builder.core import checks
from builder.cli import identity as cli_identity
from builder.build import unprivileged as unpriv
from builder.cli.common import NONEMPTY, apply_verbosity, run_cli, verbosity
from builder.cli.common import Path as PathType
from builder.core.errors import InputError

EPILOG = """\b
Examples:
  imgbuild recipes/debian12.yml                 build into output/debian12/
  imgbuild recipes/debian12.yml -o /srv/images --set hostname=web1 --set dns=[192.0.2.53]
  imgbuild validate recipes/*.yml               check recipes (and their packages) without building
  imgbuild install-lxc output/debian12 --name vm0
  imgbuild schema > recipe.schema.json          JSON Schema for editors

Recipe keys: docs/recipes.md. Exit status: 0 ok, 1 build failed, 2 bad input, 130 interrupted.
"""


class _DefaultToBuild(click.Group):
    """`imgbuild RECIPE ...` means `imgbuild build RECIPE ...`."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "build", self.commands["build"], args
        return super().resolve_command(ctx, args)


@click.group(cls=_DefaultToBuild, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgbuild")
@verbosity
def imgbuild(verbose: int, quiet: bool, debug: bool) -> None:
    """Build a root filesystem from a YAML recipe, and the guest configs and images made from it.

    A build bootstraps the distro (mmdebstrap or debootstrap), makes device nodes, writes hostname, hosts,
    resolv.conf, network config and fstab, sets the root password, installs an init shim for containers,
    places files, runs hooks, cleans out build noise, then writes each target (a reproducible tarball, an
    LXC config ...) and output/NAME/manifest.json. Building needs root.
    """
    apply_verbosity(verbose, quiet, debug)


BUILD_EPILOG = """\b
Examples:
  imgbuild build recipes/debian12.yml            (same as: imgbuild recipes/debian12.yml)
  imgbuild recipes/debian12.yml -o /srv/images --set hostname=web1
  imgbuild recipes/debian12.yml --set 'bootstrap.packages=[systemd-sysv, vim]' -v

Exit status: 0 ok, 1 build failed, 2 bad input (recipe, options), 130 interrupted.
"""


@imgbuild.command(epilog=BUILD_EPILOG)
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
@verbosity
def build(recipe: Path, output: Path, overrides: tuple[str, ...], keep_tree: bool, no_cache: bool, force: bool,
          install_lxc: bool, lxcpath: str, verbose: int, quiet: bool, debug: bool) -> None:
    """Build RECIPE into OUTPUT/NAME/ (tarball, guest configs, manifest.json).

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
    from builder.build import pipeline as build_mod
    from builder.build import recipe as recipe_mod

    loaded = recipe_mod.load(recipe, overrides)
    _check_cache_limits()
    if os.geteuid() != 0 or unpriv.active():
        if install_lxc:
            raise InputError("--install-lxc needs root (LXC's directory is root's)",
                             f"build without it, then as root: imgbuild install-lxc {output}/{loaded.recipe.name}")
    _check_build_destinations(loaded.recipe, output, keep_tree, lxcpath if install_lxc else None)
    if os.geteuid() != 0:
        unpriv.reexec()   # the same command again, as root of a user namespace of its own
    final = build_mod.build(loaded, output, keep_tree=keep_tree, use_cache=not no_cache, force=force)
    click.echo(str(final))
    if install_lxc:
        from builder.build import cluster
        from builder.build.targets import lxc

        if cluster.read_nodes(final) is not None:
            for d in cluster.install_nodes(final, lxcpath, force=True):
                click.echo(str(d))
        else:
            click.echo(str(lxc.install(final, None, lxcpath, force=True)))


def _check_cache_limits() -> None:
    """$IMGBUILD_CACHE_MAX and $IMGBUILD_PACKAGES_MAX are read when the caches are trimmed, after the bootstrap
    and the build: a bad one is bad input now, before anything is done."""
    from builder.build import bootcache as bcache
    from builder.debian import pkgcache

    for var, limit in (("$IMGBUILD_CACHE_MAX", bcache.max_size), ("$IMGBUILD_PACKAGES_MAX", pkgcache.max_size)):
        try:
            limit()
        except InputError as e:
            raise InputError(f"{var}: {e.message}", e.hint) from None


def _check_build_destinations(r, output: Path, keep_tree: bool, lxcpath: str | None) -> None:
    """Before building: every place the build will replace is one it may replace (OUTPUT/NAME an earlier
    output or empty, OUTPUT/NAME.rootfs a tree --keep-tree left, LXCPATH/NAME a stopped container imgbuild
    installed), so a refusal comes now and not after the build."""
    from builder.core import outputs

    checks.directory(output, "-o")
    base = Path(output).resolve()
    outputs.check_replaceable(base / r.name)
    if keep_tree:
        outputs.check_tree_replaceable(base / f"{r.name}.rootfs")
    if lxcpath is not None:
        from builder.build.targets import lxc

        if r.targets.tarball is None or r.targets.lxc is None:
            raise InputError("--install-lxc: the recipe makes no tarball or no LXC config to install",
                             "add targets: {tarball: {}, lxc: {}} to the recipe (or --set 'targets.lxc={}')")
        checks.directory(lxcpath, "--lxcpath")
        for n in (r.nodes or ()):
            lxc.destination(lxcpath, n.name, force=True, what=f"--install-lxc: node {n.name}")
        if not r.nodes:
            lxc.destination(lxcpath, r.name, force=True, what="--install-lxc: name")


@imgbuild.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key.")
@click.option("--offline", is_flag=True, help="Do not ask the mirror whether the packages exist.")
@verbosity
def validate(recipes: tuple[Path, ...], overrides: tuple[str, ...], offline: bool, verbose: int, quiet: bool,
             debug: bool) -> None:
    """Check RECIPES without building: keys, types, values, files they name and (unless --offline) that the
    mirror has every package. Prints one line per recipe; exit 2 if any is bad."""
    apply_verbosity(verbose, quiet, debug)
    from builder.build import pipeline as build_mod
    from builder.build import recipe as recipe_mod
    from builder.core.errors import BuilderError, RecipeError

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


@imgbuild.command()
@click.option("--markdown", is_flag=True, help="The reference tables of docs/recipes.md instead.")
def schema(markdown: bool) -> None:
    """Print the recipe JSON Schema (for editors and CI)."""
    from builder.build import recipe as recipe_mod

    if markdown:
        click.echo(recipe_mod.markdown(), nl=False)
    else:
        click.echo(json.dumps(recipe_mod.json_schema(), indent=2))


@imgbuild.group("cache")
def cache_group() -> None:
    """The caches: trees right after the bootstrap, reused by rebuilds with the same inputs; and the .debs
    builds downloaded, each verified against the mirror's index on the way in and on the way out, with their
    prepared copies (data.tar uncompressed, so dpkg never decompresses xz; each with its own sha256).

    Where: $IMGBUILD_CACHE/bootstrap and $IMGBUILD_CACHE/packages (default /var/cache/imgbuild as root,
    ~/.cache/imgbuild for others). The bootstrap cache is bounded by $IMGBUILD_CACHE_MAX (default 4G; least
    recently used entries go first); the package cache by $IMGBUILD_PACKAGES_MAX (default 2G, least recently
    used packages first, after each build); `prune --packages` empties it.
    """


@cache_group.command("list")
@verbosity
def cache_list(verbose: int, quiet: bool, debug: bool) -> None:
    """Every entry: key, recipe, size, last use, what it was bootstrapped with."""
    apply_verbosity(verbose, quiet, debug)
    from builder.build import bootcache as bcache
    from builder.debian import pkgcache

    es = sorted(bcache.entries(), key=lambda e: -e.meta.get("last_used", 0))
    for e in es:
        click.echo(bcache.describe(e))
    click.echo(f"{len(es)} entries, {sum(e.size for e in es) / (1 << 20):.1f} MB in {bcache.root_dir()}", err=True)
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
    from builder.build import bootcache as bcache
    from builder.debian import pkgcache

    try:
        limit = bcache.parse_size(max_size) if max_size else bcache.max_size()
    except InputError as e:
        raise InputError(f"{'--max-size' if max_size else '$IMGBUILD_CACHE_MAX'}: {e.message}", e.hint) from None
    gone = bcache.prune(limit, everything=everything)
    for e in gone:
        click.echo(f"removed {e.key} ({e.meta.get('name', '?')}, {e.size / (1 << 20):.1f} MB)")
    click.echo(f"{len(gone)} removed", err=True)
    if packages or everything:
        files, size = pkgcache.prune()
        click.echo(f"removed {files} packages ({size / (1 << 20):.1f} MB) from {pkgcache.deb_dir().parent}")


@imgbuild.command("install-lxc")
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", help="Container name, and the guest's host name (default: the recipe's name and host "
              "name).")
@click.option("--lxcpath", type=NONEMPTY, default="/var/lib/lxc", show_default=True, help="LXC's container directory.")
@click.option("--force", is_flag=True, help="Replace an existing container of that name, if imgbuild installed it "
              "and it is not running.")
@click.option("--node", "nodes", multiple=True, metavar="NAME", help="A cluster build: install only this node "
              "(repeatable; default: every node).")
@click.option("--inventory", type=NONEMPTY, metavar="FILE",
              help="Inventory of guests (cluster nodes are recorded there).")
@verbosity
def install_lxc(output: Path, name: str | None, lxcpath: str, force: bool, nodes: tuple[str, ...],
                inventory: str | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Install a built OUTPUT (e.g. output/debian12) as an LXC container: the rootfs unpacked with numeric
    owners under LXCPATH/NAME/rootfs and the config written with those paths. Start it with
    `lxc-start -n NAME`.

    The container gets new ssh host keys and machine-id, and --name as its host name. Its MAC, IP and host
    name are checked against the inventory and the LXC, Xen and OpenVZ configs of this host: one another guest
    has is refused, naming both (install a copy with `imgbuild clone` instead, which gives it its own). The
    new container is recorded in the inventory.

    A cluster build (a recipe with nodes:) installs every node: each its own container, with the node's
    host name, address and MAC everywhere in it, new ssh host keys and machine-id, and its templates rendered
    with its own variables (docs/clusters.md).
    """
    apply_verbosity(verbose, quiet, debug)
    from builder.build import cluster
    from builder.core.errors import InputError
    from builder.build.targets import lxc

    checks.directory(lxcpath, "--lxcpath")
    if cluster.read_nodes(output) is not None:
        if name:
            raise InputError("--name: a cluster build installs its nodes under their own names",
                             "use --node NAME to install one node")
        for d in cluster.install_nodes(output, lxcpath, force, nodes, inventory):
            click.echo(str(d))
        return
    if nodes:
        raise InputError(f"--node: {output} is not a cluster build", "nodes: in the recipe makes one")
    click.echo(str(lxc.install(output, name, lxcpath, force, inventory)))


CLONE_EPILOG = """\b
Examples:
  imgbuild clone /var/lib/lxc/vm0 vm1 --ip 10.0.3.2=10.0.3.3            LXC container vm0 -> vm1, new MAC
  imgbuild clone lxc:vm0 vm2 --ip 10.0.3.2=10.0.3.4 --set server_id=3   also re-render the guest's templates
  imgbuild clone /etc/xen/www.cfg www2 --ip 192.0.2.10=192.0.2.11 --dry-run
  imgbuild clone output/debian12/debian12.ext4 /srv/img/web1.ext4 --hostname web1

SRC: an LXC container (dir or lxc:NAME), a Xen .cfg (its image is copied too), an ext2/3/4 image, an imgbuild
output directory or a root directory. Every MAC gets a fresh one (unless given); IPs change as --ip says.
"""


@imgbuild.command(epilog=CLONE_EPILOG)
@click.argument("src")
@click.argument("new")
@cli_identity.options
@verbosity
def clone(src, new, hostname, ips, macs, variables, files, dry_run, force, inventory, lxcpath, xen_dir, vz_dir,
          local_mac, loop, verbose, quiet, debug) -> None:
    """Copy SRC to NEW and give the copy its own identity: host name (default: NEW's name), IPs, MACs (fresh
    ones), machine-id, ssh host keys, DHCP leases, and the guest's templates, in the guest and in its config.

    A MAC, IP or host name another guest already has (in the inventory, or in the LXC, Xen and OpenVZ configs
    of this host) is refused, naming both guests. The copy keeps owners, devices, hardlinks and xattrs (cp -a,
    reflinks where the filesystem has them). The new guest is recorded in the inventory.
    """
    apply_verbosity(verbose, quiet, debug)
    from builder.identity.reidentify import clone as do_clone

    req = cli_identity.request(hostname, ips, macs, variables, files)
    w = cli_identity.where(inventory, lxcpath, xen_dir, vz_dir, local_mac)
    cli_identity.report(do_clone(src, new, req, w, dry_run=dry_run, force=force, loop=loop), dry_run)


def main() -> None:
    run_cli(imgbuild)


if __name__ == "__main__":
    main()

"""EL planning and release seeding.

What users do by hand: download centos-release, rpm2cpio | cpio it, sed $releasever, then yum.
Here `plan()` does everything that can fail before the build writes anything: read the seed repo's repodata,
find and download the release package (checksum-verified, cached), read its repo files and GPG keys with
rpmfile, point every repo at the recipe's mirror, read the enabled repos' repodata and resolve the requested
packages and groups (a missing package, group or dependency fails here, naming the repos searched).
`apply()` then writes the repo files and keys into the root.
"""
from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from functools import cmp_to_key
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core import net
from builder.core.errors import InputError, MirrorError, Problem, RecipeError
from builder.rpm import fetch, repofiles
from builder.rpm.repodata import Package, Repo, fetch_repo
from builder.rpm.resolve import ResolveError, Resolver, evr_cmp
from builder.rpm.unpack import read_files

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Loaded

log = logging.getLogger("imgbuild")
REPO_DIR = "/etc/yum.repos.d"
KEY_DIR = "/etc/pki/rpm-gpg"


@dataclass(frozen=True)
class Plan:
    releasever: str
    vars: dict[str, str]
    release: Package
    files: dict[str, bytes]                   # repo files (rewritten) and keys, by path in the root
    repos: tuple[repofiles.RepoDef, ...]      # the enabled ones
    repodata: tuple[Repo, ...]                # their metadata
    packages: tuple[Package, ...]             # the resolved closure of what the recipe asks for

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p for p in self.files if p.startswith(KEY_DIR + "/"))


def releasever(release: str, explicit: str | None) -> str:
    return explicit or release.split(".")[0]


def _wanted(path: str) -> bool:
    d = posixpath.dirname(path)
    return (d == REPO_DIR and path.endswith(".repo")) or d == KEY_DIR


def rewrite_all(files: dict[str, str], mirror: str, vars: dict[str, str], want: tuple[str, ...], source: str
                ) -> tuple[dict[str, str], list[repofiles.RepoDef]]:
    """Every .repo file pointed at the mirror; (new texts, enabled repos). Unknown repo names are errors."""
    out, enabled, seen = {}, [], set()
    for path, text in sorted(files.items()):
        out[path], repos = repofiles.rewrite(text, posixpath.basename(path), mirror, vars, want)
        seen |= {r.id for r in repos}
        enabled += [r for r in repos if r.enabled]
    problems = [Problem(source, "bootstrap.repos", f"no repo {r!r} in the release's repo files (it has: "
                                                   f"{', '.join(sorted(seen))})") for r in want if r not in seen]
    problems += [Problem(source, "bootstrap.repos", f"repo {r!r} has no $releasever-shaped baseurl to point at "
                                                    "the mirror") for r in want
                 if r in seen and r not in {x.id for x in enabled}]
    if problems:
        raise RecipeError(problems)
    if not enabled:
        raise InputError("no repo is enabled in the release package's repo files",
                         "name the repos to use in bootstrap.repos")
    return out, enabled


def _key_bytes(rid: str, gpgkey: str, source: str) -> bytes:
    if "://" in gpgkey:
        try:
            data = net.get(gpgkey)
        except MirrorError as e:
            raise RecipeError([Problem(source, f"bootstrap.extra_repos.{rid}.gpgkey", e.message)],
                              "check the URL") from None
    else:
        try:
            data = Path(gpgkey).read_bytes()
        except OSError as e:
            raise RecipeError([Problem(source, f"bootstrap.extra_repos.{rid}.gpgkey",
                                       f"cannot read {gpgkey}: {e.strerror}")]) from None
    if b"BEGIN PGP PUBLIC KEY BLOCK" not in data:
        raise RecipeError([Problem(source, f"bootstrap.extra_repos.{rid}.gpgkey",
                                   f"{gpgkey} is not an ASCII-armored PGP public key")])
    return data


def extra_repo(rid: str, x, vars: dict[str, str], source: str
               ) -> tuple[str, str, tuple[str, bytes] | None, repofiles.RepoDef]:
    """A recipe's extra repository: (its .repo file's path, its text, (key path, key) or None, its RepoDef)."""
    url = repofiles.expand(x.baseurl, vars).rstrip("/")
    key = None
    if x.gpgkey:
        key = (f"{KEY_DIR}/imgbuild-{rid}.key", _key_bytes(rid, x.gpgkey, source))
    name = x.name or rid
    lines = [f"# written by imgbuild from the recipe's bootstrap.extra_repos.{rid}", f"[{rid}]", f"name={name}",
             f"baseurl={url}", "enabled=1", f"gpgcheck={1 if x.gpgcheck else 0}"]
    if key:
        lines.append(f"gpgkey=file://{key[0]}")
    if not x.gpgcheck:
        log.warning("bootstrap.extra_repos.%s: gpgcheck is false: its packages' signatures are NOT checked", rid)
    file = f"imgbuild-{rid}.repo"
    repo = repofiles.RepoDef(rid, name, url, True, x.gpgcheck, (f"file://{key[0]}",) if key else (), file)
    return f"{REPO_DIR}/{file}", "\n".join(lines) + "\n", key, repo


def plan(loaded: "Loaded", cache: Path) -> Plan:
    r = loaded.recipe
    b = r.bootstrap
    rv = releasever(r.release, b.releasever)
    vars = repofiles.variables(rv, r.arch)
    seed_url = repofiles.expand(f"{b.mirror.rstrip('/')}/{b.seed_repo.strip('/')}", vars)
    log.info("reading %s for %s", seed_url, b.release_package)
    seed_repo = fetch_repo("seed", seed_url, cache / "repodata")
    candidates = [p for p in seed_repo.packages if p.name == b.release_package]
    if not candidates:
        raise RecipeError([Problem(str(loaded.path), "bootstrap.release_package",
                                   f"no package {b.release_package!r} in {seed_url}")],
                          "check bootstrap.mirror, bootstrap.seed_repo and the package name")
    release = max(candidates, key=lambda p: cmp_to_key(evr_cmp)(p.evr))
    path = fetch.download([release], cache / "rpms")[release.nevra]
    raw = read_files(path, _wanted)
    repo_texts = {p: d.decode("utf-8", "replace") for p, d in raw.items() if p.endswith(".repo")}
    if not repo_texts:
        raise InputError(f"{release.nevra} has no repo files under {REPO_DIR}",
                         "check bootstrap.release_package (e.g. centos-release)")
    texts, enabled = rewrite_all(repo_texts, b.mirror, vars, b.repos, str(loaded.path))
    files = {p: d for p, d in raw.items() if not p.endswith(".repo")} | {p: t.encode() for p, t in texts.items()}
    for rid, x in sorted(b.extra_repos.items()):
        path, text, key, repo = extra_repo(rid, x, vars, str(loaded.path))
        files[path] = text.encode()
        if key:
            files[key[0]] = key[1]
        enabled.append(repo)
    log.info("repos: %s", ", ".join(f"{x.id} ({x.baseurl})" for x in enabled))
    repodata = tuple(fetch_repo(x.id, x.baseurl, cache / "repodata") for x in enabled)
    wanted = list(dict.fromkeys([*b.packages, release.name]))
    try:
        packages = Resolver(list(repodata), r.arch).resolve(wanted, list(b.groups))
    except ResolveError as e:
        raise RecipeError([Problem(str(loaded.path), "bootstrap.packages" if "group" not in e.message
                                   else "bootstrap.groups", e.message)], e.hint) from None
    if not b.gpgcheck:
        log.warning("bootstrap.gpgcheck is false: package signatures are NOT checked during this build "
                    "(the guest's repo files keep their own gpgcheck setting)")
    return Plan(rv, vars, release, files, tuple(enabled), repodata, tuple(packages))


def apply(ctx: "Context", plan: Plan) -> None:
    """Write the seeded repo files and keys into the root."""
    for path, data in plan.files.items():
        ctx.root.write(path, data)


def point_repos(ctx: "Context", plan: Plan) -> None:
    """After the install: the release package's own repo files are pointed at the mirror again."""
    for name in ctx.root.listdir(REPO_DIR):
        if name.endswith(".repo.rpmnew"):      # %config(noreplace) kept ours
            ctx.root.remove(f"{REPO_DIR}/{name}")
    for path, data in plan.files.items():   # ours, if the release package's install replaced them
        if path.endswith(".repo") and ctx.root.read_bytes(path) != data:
            ctx.root.write(path, data)

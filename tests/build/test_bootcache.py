"""The bootstrap cache: a rebuild that changes no bootstrap input starts from the cached tree and gives the same
tarball; a miss says which input changed; a damaged entry is detected, removed and rebuilt, never used."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from builder.build import bootcache
from builder.core.errors import InputError
from tests.conftest import DEFAULT_RECIPE, imgbuild, sha256

BASE = {"format": bootcache.FORMAT, "method": "mmdebstrap", "distro": "debian", "release": "bookworm", "arch": "amd64",
        "mirror": "http://mirror.example/debian", "variant": "minbase", "components": ["main"],
        "packages": ["iproute2", "systemd-sysv"], "epoch": 1700000000, "index": ["a" * 64]}


def _entry(base: Path, name: str, inputs: dict, created: float) -> None:
    d = base / bootcache.key_of(inputs)
    d.mkdir(parents=True)
    (d / bootcache.META).write_text(json.dumps({"name": name, "inputs": inputs, "created": created,
                                             "last_used": created, "size": 10, "sha256": "0"}))


def test_a_miss_names_every_input_that_changed(tmp_path):
    _entry(tmp_path, "web", BASE, 1)
    _entry(tmp_path, "web", {**BASE, "packages": ["iproute2"]}, 0)      # older: not the one compared with
    _entry(tmp_path, "db", {**BASE, "release": "trixie"}, 2)            # another recipe: not compared with
    new = {**BASE, "packages": ["iproute2", "systemd-sysv", "vim"], "mirror": "http://other.example/debian"}
    assert bootcache.explain(new, "web", tmp_path) == \
        "mirror (http://mirror.example/debian -> http://other.example/debian), packages (+vim)"
    assert bootcache.explain({**BASE, "packages": ["iproute2"]}, "web", tmp_path) == "packages (-systemd-sysv)"
    assert bootcache.explain({**BASE, "index": ["b" * 64]}, "web", tmp_path) == \
        "mirror index (the mirror has other package versions)"
    assert bootcache.explain(BASE, "new", tmp_path) == "no earlier bootstrap of new in the cache"


def test_keys_depend_on_every_input_and_not_on_order_of_writing():
    assert bootcache.key_of(BASE) == bootcache.key_of(dict(reversed(list(BASE.items()))))
    for k, v in (("packages", ["iproute2"]), ("epoch", 1), ("index", ["c" * 64]), ("variant", "buildd")):
        assert bootcache.key_of({**BASE, k: v}) != bootcache.key_of(BASE), k


def test_sizes():
    assert bootcache.parse_size("4G") == 4 << 30 and bootcache.parse_size("500M") == 500 << 20
    assert bootcache.parse_size("1.5k") == 1536 and bootcache.parse_size("123") == 123
    with pytest.raises(InputError):
        bootcache.parse_size("lots")


def _build(out: Path, *args: str, env: dict) -> tuple[str, Path]:
    r = imgbuild(DEFAULT_RECIPE, "-o", out, *args, env=env)
    assert r.returncode == 0, r.stderr
    return r.stderr, out / "debian12" / "debian12.tar.zst"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_cold_warm_changed_damaged(tmp_path):
    env = {**os.environ, "IMGBUILD_CACHE": str(tmp_path / "cache")}
    err_cold, cold = _build(tmp_path / "cold", env=env)
    err = err_cold
    assert "cache miss: no earlier bootstrap of debian12 in the cache" in err and "bootstrap kept in the cache" in err
    debs = sorted((tmp_path / "cache/packages/deb").glob("*.deb"))
    prepared = tmp_path / "cache/packages/deb-prepared"
    assert len(debs) > 100 and f"downloaded {len(debs)} packages" in err and "0 from the cache" in err, err
    assert sorted(p.name for p in prepared.glob("*.deb")) == [d.name for d in debs]
    t0 = time.monotonic()
    err, warm = _build(tmp_path / "warm", env=env)
    print(f"warm rebuild: {time.monotonic() - t0:.1f} s")
    assert "cache hit: bootstrap" in err and "I: success" not in err
    assert sha256(cold) == sha256(warm), "a warm build gave another tarball than the cold one"
    m = json.loads((tmp_path / "warm/debian12/manifest.json").read_text())
    assert m["bootstrap"]["cache"].startswith("hit ") and m["packages"]["openssh-server"]
    # the cold build bootstrapped in RAM, copied the tree into the cache and went on in RAM; the warm one went
    # on above the entry: an overlay, no copy
    cold_m = json.loads((tmp_path / "cold/debian12/manifest.json").read_text())
    assert cold_m["bootstrap"]["cache"].startswith("miss, kept as ") and cold_m["bootstrap"]["cache"].endswith(
        " (copied into the cache; the build goes on in its own tree)"), cold_m["bootstrap"]["cache"]
    assert "bootstrapping in RAM (a tmpfs of up to" in err_cold
    assert m["bootstrap"]["cache"].endswith(" (overlay)"), m["bootstrap"]["cache"]
    assert m["sub_timings"]["bootstrap"]["check the cache entry"] < 5, m["sub_timings"]
    # the next build on the entry reuses the tarball's zstd frames of the warm one: only the chunks of the files
    # the steps write again are compressed again; the same bytes
    err, warm2 = _build(tmp_path / "warm2", env=env)
    reused = re.search(r"debian12\.tar\.zst: (\d+) of (\d+) zstd frames reused", err)
    assert reused and int(reused[1]) >= 0.8 * int(reused[2]), err
    assert sha256(warm2) == sha256(warm)
    # the fallback, a copy of the entry: the same tarball, byte for byte (no whiteout, no opaque directory
    # reaches it either way)
    err, copied = _build(tmp_path / "copied", env={**env, "IMGBUILD_TREE": "copy"})
    assert "building on a copy of the cache entry (IMGBUILD_TREE=copy)" in err, err
    assert json.loads((tmp_path / "copied/debian12/manifest.json").read_text())["bootstrap"]["cache"].endswith(
        " (copy)")
    assert sha256(copied) == sha256(warm), "the copy fallback gave another tarball than the overlay"
    # a hook that removes and changes files of the entry (whiteouts, an opaque directory, a copy-up of a
    # hard-linked file): the overlay build and the copy build give the same tarball
    changes = ["--set", "hooks.post-files=[{run: 'rm -rf /usr/share/doc && mkdir /usr/share/doc && "
               "echo x > /usr/share/doc/new && rm /etc/issue.net && echo y >> /usr/bin/perl'}]"]
    _, o_changed = _build(tmp_path / "o-changed", *changes, env=env)
    _, c_changed = _build(tmp_path / "c-changed", *changes, env={**env, "IMGBUILD_TREE": "copy"})
    assert sha256(o_changed) == sha256(c_changed) != sha256(warm)
    names = subprocess.run(["tar", "--zstd", "-tvf", str(o_changed)], capture_output=True, text=True).stdout
    assert ".wh." not in names and "./usr/share/doc/new" in names and "./etc/issue.net" not in names
    perl = [line for line in names.splitlines() if line.endswith(("./usr/bin/perl", "./usr/bin/perl5.36.0"))
            or " link to ./usr/bin/perl" in line]
    assert any(" link to " in line for line in perl), f"perl's hard link was split by the copy-up: {perl}"
    # nothing changed: the output is up to date and not built again; --force builds it (from the cache)
    t0 = time.monotonic()
    err, same = _build(tmp_path / "warm", env=env)
    print(f"no-change rebuild: {time.monotonic() - t0:.1f} s")
    assert "is up to date" in err and "==> bootstrap" not in err and sha256(same) == sha256(warm), err
    err, forced = _build(tmp_path / "warm", "--force", env=env)
    assert "cache hit: bootstrap" in err and sha256(forced) == sha256(warm), err

    # one entry, listed; damage it: detected, removed, bootstrapped again -> the same tarball
    r = imgbuild("cache", "list", env=env)
    assert r.returncode == 0 and "debian12" in r.stdout and r.stdout.count("\n") == 1
    (entry,) = [p for p in (tmp_path / "cache/bootstrap").iterdir() if not p.name.startswith(".")]   # no locks
    assert sorted(p.name for p in (tmp_path / "cache/bootstrap").iterdir()) == [entry.name], "locks or temps left"
    r = imgbuild("cache", "verify", env=env)
    assert r.returncode == 0 and f"{entry.name}  debian12: ok" in r.stdout, r.stdout + r.stderr
    # one byte of one file changed, its size and mtime kept: verify names it; a build finds it (ctime) and
    # bootstraps again -> the same tarball
    f = entry / "tree/etc/debian_version"
    st = f.stat()
    f.write_bytes(f.read_bytes()[::-1])
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = imgbuild("cache", "verify", "debian12", env=env)
    assert r.returncode == 1 and "DAMAGED" in r.stdout and "/etc/debian_version: ctime" in r.stdout, r.stdout
    # (bootstrapped on the disk this time: the tree itself becomes the entry, the build goes on above it)
    err, again = _build(tmp_path / "again", env={**env, "IMGBUILD_BOOTSTRAP_IN_RAM": "0"})
    assert "is damaged (/etc/debian_version: ctime" in err and "I: success" in err, err
    assert "bootstrapping in RAM" not in err
    again_cache = json.loads((tmp_path / "again/debian12/manifest.json").read_text())["bootstrap"]["cache"]
    assert again_cache == f"miss, kept as {entry.name} (overlay)", again_cache
    assert sha256(again) == sha256(cold)

    # a changed package list: the miss says what changed
    err, _ = _build(tmp_path / "less", "--set",
                    "bootstrap.packages=[systemd-sysv, ifupdown, iproute2, openssh-server, less]", env=env)
    assert "cache miss: packages (+less)" in err, err
    n = len(list((tmp_path / "cache/packages/deb").glob("*.deb")))
    assert n == len(debs) + 1      # and less
    # --no-cache neither uses nor fills it, but takes the packages from the package cache. A damaged prepared
    # file is made again from its original; a damaged original is downloaded again; neither is used.
    # (the cache's files may be hard-linked elsewhere: each is replaced by a damaged copy of its own)
    p_bad = prepared / next(d.name for d in debs if d.name.startswith("openssh-server_"))
    o_bad = next(d for d in debs if d.name.startswith("iproute2_"))
    good = sha256(o_bad)
    for path in (p_bad, o_bad):
        path.unlink()
        path.write_bytes(b"not a deb")
    (prepared / o_bad.name).unlink()
    err, nocache = _build(tmp_path / "nocache", "--no-cache", env=env)
    assert "cache hit" not in err and "kept in the cache" not in err and sha256(nocache) == sha256(cold)
    assert f"prepared {p_bad.name} is damaged" in err and f"package cache: {o_bad.name} is damaged" in err, err
    assert "downloaded 1 packages" in err and f"2 prepared now, {len(debs) - 2} from the cache" in err, err
    assert sha256(o_bad) == good and (prepared / o_bad.name).exists()
    # mmdebstrap downloading from the mirror itself (with the package cache's .debs) gives the same tarball;
    # with the package cache bounded below its size, the least recently used package not of this build (less)
    # goes, with its prepared copy
    err, plain = _build(tmp_path / "plain", "--no-cache", env={**env, "IMGBUILD_PREPARED": "0",
                                                               "IMGBUILD_PACKAGES_MAX": "1K"})
    assert "taken from the cache" in err and "package set:" not in err and sha256(plain) == sha256(cold), err
    assert "package cache: removed 1 least recently used packages" in err, err
    assert not list((tmp_path / "cache/packages").glob("*/less_*"))
    r = imgbuild("cache", "list", env=env)
    assert r.returncode == 0 and f"package cache: {len(debs)} packages" in r.stderr, r.stderr
    r = imgbuild("cache", "prune", "--all", env=env)
    assert r.returncode == 0 and r.stdout.count("removed ") == 3 and f"removed {len(debs)} packages" in r.stdout
    assert not list((tmp_path / "cache/bootstrap").iterdir()) and not (tmp_path / "cache/packages/deb").exists()

"""Shared fixtures. Tests are marked by what they need (root, network, lxc, slow); a missing need skips the
test with its reason, but scripts/setup.sh installs everything, so in CI nothing is skipped."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as _hypothesis

from tests.support.contexts import small_context
from tests.support.digest import sha256  # noqa: F401 - tests import it from here
from tests.support.unprivileged import ordinary_user

# the test hosts `sshhost` and `two_sshhosts` (real sshd in network namespaces), for every test
pytest_plugins = ["tests.support.sshhost"]

# Property tests (hypothesis): a bounded run in the suite; `pytest --hypothesis-profile=long` (bench/fuzz_parsers.sh)
# runs thousands of examples per test ($IMGBUILD_FUZZ_EXAMPLES, default 5000). No example database in the tree:
# a failure prints its reproduce blob.
_hypothesis.register_profile("suite", max_examples=100, deadline=None, database=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow])
_hypothesis.register_profile("long", max_examples=int(os.environ.get("IMGBUILD_FUZZ_EXAMPLES", "5000")),
                             deadline=None, database=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow])
_hypothesis.load_profile("suite")

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_RECIPE = REPO / "recipes" / "debian12.yml"


def imgbuild(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900,
             input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed `imgbuild` console script; text output captured; stdin is `input`, else empty."""
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}   # never a prompt
    return subprocess.run([str(BIN / "imgbuild"), *map(str, args)], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=env, **stdin)


def migrate(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed `migrate` console script; text output captured."""
    return subprocess.run([str(BIN / "migrate"), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)




def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path in this mount namespace (read independently of builder.core.mounts)."""
    base = os.path.realpath(path)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return out


@functools.cache
def mirror_reason() -> str | None:
    """Why the host's Debian mirror cannot be used (None when it can)."""
    try:
        import requests

        from builder.debian.apt import host_mirror

        url = host_mirror("bookworm") + "/dists/bookworm/InRelease"
        r = requests.head(url, timeout=10)
        return None if r.status_code == 200 else f"{url}: HTTP {r.status_code}"
    except Exception as e:  # noqa: BLE001 - any failure means: no usable mirror (the reason is shown)
        return f"the host's Debian mirror is not usable: {e}"


@functools.cache
def lxc_reason() -> str | None:
    if not shutil.which("lxc-start"):
        return "lxc-start is not installed (apt-get install lxc)"
    if not os.path.exists("/sys/fs/cgroup"):
        return "no /sys/fs/cgroup"
    return None


def pytest_configure(config):
    """One cache for the whole session, empty at its start (so every run bootstraps cold once, as CI does) and
    removed at its end; tests that need their own set IMGBUILD_CACHE themselves."""
    if os.environ.get("IMGBUILD_CACHE"):
        return
    import shutil
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="imgbuild-test-cache-", dir=base)
    os.environ["IMGBUILD_CACHE"] = d
    config.add_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))


def pytest_sessionfinish(session, exitstatus):
    """LXC keeps an (empty) lock directory for every lxcpath it was asked about, under /run/lxc/lock/LXCPATH; the
    test session's lxcpaths all live under its base temp directory, so that one subtree is the session's own."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or os.geteuid() != 0:
        return
    base = factory.getbasetemp().resolve()
    shutil.rmtree(Path("/run/lxc/lock") / str(base).lstrip("/"), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root"))
        if "network" in item.keywords and mirror_reason():
            item.add_marker(pytest.mark.skip(reason=mirror_reason()))
        if "lxc" in item.keywords and lxc_reason():
            item.add_marker(pytest.mark.skip(reason=lxc_reason()))


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path_factory, monkeypatch):
    """No test reads or writes the host's guest inventory (/var/lib/imgbuild/inventory.db, or the .yml it would
    be migrated from): every command a test runs without an inventory of its own (install-lxc records the
    containers it makes) gets an empty one for that test alone (inventory.yml there names inventory.db beside it).
    A test that sets IMGBUILD_INVENTORY itself overrides it."""
    monkeypatch.setenv("IMGBUILD_INVENTORY", str(tmp_path_factory.mktemp("inventory") / "inventory.yml"))


@pytest.fixture(scope="session")
def debian12_build(tmp_path_factory) -> Path:
    """recipes/debian12.yml built once, as written, with the finished tree kept beside it.

    Returns the output directory (OUT/debian12); the tree is OUT/debian12.rootfs.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if mirror_reason():
        pytest.skip(mirror_reason())
    out = tmp_path_factory.mktemp("build") / "out"
    r = imgbuild(DEFAULT_RECIPE, "-o", out, "--keep-tree")
    assert r.returncode == 0, r.stderr
    (out.parent / "build.stderr").write_text(r.stderr)      # what the user saw (test_pipeline reads it)
    return out / "debian12"


@pytest.fixture(scope="session")
def image_build(tmp_path_factory, debian12_build) -> Path:
    """recipes/debian12.yml built again (from the bootstrap cache debian12_build filled) with the tarball, squashfs
    and lxd targets, the lxd target in both layouts. zstd everywhere: LXD reads it, and it keeps the suite fast
    (xz, the default, takes ~30 s more). Returns OUT/debian12."""
    out = tmp_path_factory.mktemp("images") / "out"
    r = imgbuild(DEFAULT_RECIPE, "-o", out, "--set",
                 "targets={tarball: {}, squashfs: {compression: zstd}, lxd: {layout: both, compression: zst}}")
    assert r.returncode == 0, r.stderr
    return out / "debian12"


@pytest.fixture
def ctx_for(tmp_path):
    """`ctx_for(**recipe keys)`: a build Context on a small temp tree, no bootstrap (tests/support/contexts.py)."""
    def make(**over):
        return small_context(tmp_path, **over)
    return make


@pytest.fixture(scope="module")
def user():
    """An ordinary user with a subordinate id range, a world-readable copy of imgbuild and its libraries, and a
    directory of its own; all removed afterwards (tests/support/unprivileged.py)."""
    with ordinary_user(REPO) as u:
        yield u


@pytest.fixture(scope="session")
def el_repo(tmp_path_factory):
    """A signed EL-like distribution ("testos" 6, x86_64; see tests/support/rpmrepo.py) built once and served on
    127.0.0.1 for the whole session. Yields its RepoInfo with `url` = http://127.0.0.1:PORT, the directory that
    holds 6/os/x86_64/ and 6/updates/x86_64/."""
    from tests.support.rpmrepo import build_repo, missing_tools, serve

    missing = missing_tools()
    if missing:
        pytest.skip(f"el_repo needs {', '.join(missing)} (scripts/setup.sh installs them)")
    info = build_repo(tmp_path_factory.mktemp("el_repo"))
    with serve(info.root) as url:
        info.url = url
        yield info

"""Guest names at the trust boundary of `imgbuild clone` and `migrate reidentify`: an `lxc:NAME` / `vz:CTID` spec
and a clone's NEW name pass the one Name check (no `..`, no `/`, no shell syntax), an `lxc:NAME` is a real
container of the lxcpath, and a symlink at LXCPATH/NAME is neither followed nor written through. Every refusal
exits 2 with `error:`, no traceback, and nothing written (no copy, no inventory)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import imgbuild, migrate
from tests.support.guests import make_container

pytestmark = pytest.mark.root


def state(top: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            if n == "inventory.yml.lock":      # taken while the guest is checked; holds nothing
                continue
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_size, os.readlink(p) if p.is_symlink() else None)
    return out


def refused(r, *fragments: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


@pytest.fixture
def site(tmp_path):
    lxcpath = tmp_path / "lxc"
    make_container(lxcpath, "vm0", leftovers=False)
    env = {**os.environ, "IMGBUILD_INVENTORY": str(tmp_path / "inventory.yml")}
    opts = ["--lxcpath", str(lxcpath), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]
    return lxcpath, env, opts


BAD_SPECS = ["lxc:../../etc", "lxc:..", "lxc:.", "lxc:/etc", "lxc:vm0/../../..", "lxc:a;$(id)", "lxc:",
             "vz:../../etc/passwd", "vz:101;id", "vz:"]


@pytest.mark.parametrize("spec", BAD_SPECS)
@pytest.mark.parametrize("command", ["clone", "reidentify"])
def test_a_guest_spec_with_a_bad_name_is_refused(site, tmp_path, spec, command):
    lxcpath, env, opts = site
    before = state(tmp_path)
    if command == "clone":
        r = imgbuild("clone", spec, "vm1", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env)
    else:
        r = migrate("reidentify", spec, "--hostname", "web2", *opts, env=env)
    refused(r, "is not a valid name")
    assert state(tmp_path) == before


@pytest.mark.parametrize("command", ["clone", "reidentify"])
def test_a_container_that_is_not_there_is_an_input_error(site, tmp_path, command):
    lxcpath, env, opts = site
    (lxcpath / "empty").mkdir()       # a directory without a config is no container either
    for spec in ("lxc:nothere", "lxc:empty"):
        before = state(tmp_path)
        if command == "clone":
            r = imgbuild("clone", spec, "vm1", *opts, env=env)
        else:
            r = migrate("reidentify", spec, "--hostname", "web2", *opts, env=env)
        refused(r, f"no container {spec[4:]} in {lxcpath}")
        assert state(tmp_path) == before


@pytest.mark.parametrize("command", ["clone", "reidentify"])
def test_an_lxc_spec_that_is_a_symlink_is_not_followed(site, tmp_path, command):
    """lxcpath/evil -> a directory outside holding a config and a root: reidentify would write there."""
    lxcpath, env, opts = site
    outside = make_container(tmp_path / "outside", "victim", leftovers=False)
    (lxcpath / "evil").symlink_to(outside)
    before = state(tmp_path)
    if command == "clone":
        r = imgbuild("clone", "lxc:evil", "vm1", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env)
    else:
        r = migrate("reidentify", "lxc:evil", "--hostname", "web2", *opts, env=env)
    refused(r, "is a symbolic link")
    assert state(tmp_path) == before


BAD_NEW = ["a;$(id)", "$(touch /tmp/imgbuild-clone-pwned)", "`id`", "..", ".", "a b", "vm1\n", ".vm1", "_vm1",
           "x" * 65, "../..", "/tmp/x/..", "vm1|id"]


@pytest.mark.parametrize("new", BAD_NEW)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_clone_name_with_a_path_or_shell_syntax_is_refused(site, tmp_path, new, dry_run):
    lxcpath, env, opts = site
    before = state(tmp_path)
    r = imgbuild("clone", "lxc:vm0", new, "--ip", "10.0.3.2=10.0.3.12", *opts, *(["--dry-run"] if dry_run else []),
                 env=env)
    refused(r, "clone name", "is not a valid name")
    assert state(tmp_path) == before and not Path("/tmp/imgbuild-clone-pwned").exists()


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_clones_place_is_neither_followed_nor_replaced(site, tmp_path, dangling):
    lxcpath, env, opts = site
    target = tmp_path / "target"
    if not dangling:
        target.mkdir()
        (target / "precious").write_text("keep\n")
    (lxcpath / "vm1").symlink_to(target)
    before = state(tmp_path)
    r = imgbuild("clone", "lxc:vm0", "vm1", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env)
    refused(r, "is a symbolic link")
    assert state(tmp_path) == before and os.path.lexists(target) != dangling


def test_a_good_name_still_clones_and_no_staging_directory_is_left(site, tmp_path):
    lxcpath, env, opts = site
    r = imgbuild("clone", "lxc:vm0", "vm1.prod", "--ip", "10.0.3.2=10.0.3.12", *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(lxcpath)) == ["vm0", "vm1.prod"]
    assert (lxcpath / "vm1.prod/rootfs/etc/hostname").read_text().strip() == "vm1"

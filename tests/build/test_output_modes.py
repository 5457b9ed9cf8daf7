"""Output modes: ordinary outputs follow the user's umask; an output that holds a secret (a password hash in the
tree's /etc/shadow, a cluster secret, an ssh host key a hook left) is 0600 in a 0700 output directory, and
manifest.json says which artifacts hold secrets and why. The bootstrap cache (whole trees) is private too."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import types
from pathlib import Path

import pytest
import yaml

from builder.build import manifest
from builder.build.families import Plan
from builder.core import outputs
from builder.debian.apt import Index
from tests.conftest import BIN, DEFAULT_RECIPE

LOCKED = "root:!*:19000:0:99999:7:::\nsshd:!:19000::::::\ndaemon:*:19000::::::\n"
HASHED = "root:$y$j9T$abcdefghijklmnopqrstuv$0123456789abcdefghijklmnopqrstuvwxyzABCDE:19000:0:99999:7:::\n"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test; restored after."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


# ---------------------------------------------------------------------------------------------- the umask


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_ordinary_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    f = tmp_path / "x.conf"
    outputs.write_atomic(f, "x\n")
    assert mode(f) == 0o666 & ~mask                 # the old code made every output 0644, whatever the umask
    assert outputs.file_mode() == 0o666 & ~mask and outputs.dir_mode() == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o000])
@pytest.mark.parametrize("secret", [set(), {"tarball"}, {"tarball", "image"}])
def test_set_modes(tmp_path, umask, mask, secret):
    umask(mask)
    d = tmp_path / "out"
    d.mkdir(mode=0o700)
    files = {k: d / n for k, n in (("tarball", "t.tar.zst"), ("image", "t.ext4"), ("lxc-config", "lxc.conf"),
                                   ("manifest", "manifest.json"))}
    for p in files.values():
        p.write_text("x")
        p.chmod(0o644)
    tree = d / "tree"
    tree.mkdir()
    tree.chmod(0o755)
    outputs.set_modes(d, {**files, "nspawn-tree": tree}, secret)
    for kind, p in files.items():
        assert mode(p) == (0o600 if kind in secret else 0o666 & ~mask), kind
    assert mode(d) == (0o700 if secret else 0o777 & ~mask)
    assert mode(tree) == 0o755                      # a machine tree keeps the guest's own mode for its /


# ---------------------------------------------------------------------------------------------- what is a secret


def _tree(ctx, shadow=LOCKED, gshadow="root:*::\n", ssh=()):
    (ctx.root.path / "etc/shadow").write_text(shadow)
    (ctx.root.path / "etc/gshadow").write_text(gshadow)
    for k in ssh:
        (ctx.root.path / "etc/ssh").mkdir(exist_ok=True)
        (ctx.root.path / "etc/ssh" / k).write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return ctx


SECRET_TREES = {
    "locked-root": (dict(), {}, []),
    "root-hash": (dict(shadow=HASHED), {}, ["/etc/shadow: a password hash for root"]),
    "locked-but-hashed": (dict(shadow="root:!$6$salt$hash:19000::::::\n"), {},
                          ["/etc/shadow: a password hash for root"]),
    "a-hook-made-user": (dict(shadow=LOCKED + "app:$6$s$h:19000::::::\n"), {},
                         ["/etc/shadow: a password hash for app"]),
    "group-password": (dict(gshadow="admins:$6$s$h::\n"), {}, ["/etc/gshadow: a password hash for admins"]),
    "ssh-host-key": (dict(ssh=("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub")), {},
                     ["/etc/ssh/ssh_host_ed25519_key: an ssh host private key"]),
    "cluster-secret": (dict(), {"secrets": {"cookie": {"path": "/var/lib/rabbitmq/.erlang.cookie", "generate": 20}}},
                       ["/var/lib/rabbitmq/.erlang.cookie: the secret cookie"]),
}


@pytest.mark.parametrize("case", SECRET_TREES)
def test_what_counts_as_a_secret(ctx_for, case):
    tree, recipe, want = SECRET_TREES[case]
    ctx = _tree(ctx_for(**recipe), **tree)
    assert manifest.tree_secrets(ctx) == want


def test_an_ssh_directory_leading_out_of_the_tree_is_not_followed(ctx_for, tmp_path):
    outside = tmp_path / "host-ssh"
    outside.mkdir()
    (outside / "ssh_host_rsa_key").write_text("host's own")
    ctx = _tree(ctx_for())
    os.symlink(str(outside), ctx.root.path / "etc/ssh")
    assert manifest.tree_secrets(ctx) == []


def _built(ctx, tmp_path, umask, shadow):
    """A stage as the targets leave it (files 0600, from mkstemp), then manifest.write."""
    umask(0o022)
    _tree(ctx, shadow=shadow)
    ctx.stage.mkdir(mode=0o700)
    ctx.artifacts = {"tarball": ctx.stage / "t1.tar.zst", "lxc-config": ctx.stage / "lxc.conf"}
    for p in ctx.artifacts.values():
        p.write_text("x")
        p.chmod(0o600)
    ctx.plan = Plan(index=Index("http://127.0.0.1:9/debian", "bookworm", "amd64", 0, ("a" * 64,), frozenset(),
                                signed_by=("F" * 40,), keyring="/k.gpg"))
    loaded = types.SimpleNamespace(path=tmp_path / "t1.yml", sha256="0" * 64)
    manifest.write(ctx, loaded)
    return json.loads((ctx.stage / "manifest.json").read_text())


def test_the_manifest_says_which_artifacts_hold_secrets(ctx_for, tmp_path, umask):
    ctx = ctx_for()
    m = _built(ctx, tmp_path, umask, HASHED)
    assert m["secrets"] == {"artifacts": ["tarball"], "found": ["/etc/shadow: a password hash for root"]}
    assert {a["kind"]: a["secret"] for a in m["artifacts"]} == {"tarball": True, "lxc-config": False}
    assert mode(ctx.stage / "t1.tar.zst") == 0o600 and mode(ctx.stage) == 0o700
    assert mode(ctx.stage / "lxc.conf") == 0o644 and mode(ctx.stage / "manifest.json") == 0o644
    assert "$y$" not in (ctx.stage / "manifest.json").read_text()
    assert m["bootstrap"]["signature"] == {"checked": True, "keyring": "/k.gpg", "signed_by": ["F" * 40]}


def test_without_a_secret_the_umask_rules(ctx_for, tmp_path, umask):
    ctx = ctx_for()
    m = _built(ctx, tmp_path, umask, LOCKED)
    assert m["secrets"] == {"artifacts": [], "found": []}
    assert mode(ctx.stage / "t1.tar.zst") == 0o644 and mode(ctx.stage) == 0o755


# ---------------------------------------------------------------------------------------------- real builds


def test_a_plain_build_follows_the_umask_and_records_the_signature(debian12_build):
    """recipes/debian12.yml (root locked): nothing secret, so the umask (022 here) rules; the index's signature
    is recorded with the Debian keys that made it."""
    m = json.loads((debian12_build / "manifest.json").read_text())
    assert m["secrets"] == {"artifacts": [], "found": []}
    assert mode(debian12_build / "debian12.tar.zst") == 0o644 and mode(debian12_build) == 0o755
    sig = m["bootstrap"]["signature"]
    assert sig["checked"] is True and sig["keyring"] == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert sig["signed_by"] and all(len(f) == 40 for f in sig["signed_by"])
    cache = Path(os.environ["IMGBUILD_CACHE"]) / "bootstrap"
    assert mode(cache) == 0o700
    entries = [e for e in cache.iterdir() if not e.name.startswith(".")]
    assert entries and all(mode(e) == 0o700 for e in entries)     # the trees: root's only


@pytest.mark.root
@pytest.mark.network
def test_a_build_with_a_password_is_private_and_an_unsigned_build_says_so(debian12_build, tmp_path):
    """debian12 with a root password, unsigned: true, an image and a host hook that looks at the work and stage
    directories while the build runs. The bootstrap is the one debian12_build cached (unsigned changes no input
    of the tree), so this build takes seconds. Run under umask 027: the configs follow it."""
    r = yaml.safe_load(DEFAULT_RECIPE.read_text())
    r["name"] = "modes"
    r["bootstrap"]["unsigned"] = True
    (tmp_path / "pw").write_text("correct horse battery staple\n")
    r["root_password"] = {"from_file": str(tmp_path / "pw")}
    r["targets"]["image"] = {}
    seen = tmp_path / "during"
    r["hooks"]["post-files"].append({"host": f'stat -c %a "$IMGBUILD_ROOT/.." "$IMGBUILD_ROOT"/../stage '
                                             f'> {seen}'})
    recipe = tmp_path / "modes.yml"
    recipe.write_text(yaml.safe_dump(r))
    out = tmp_path / "out"
    env = {**os.environ, "IMGBUILD_SECRETS_DIR": str(tmp_path / "secrets")}
    p = subprocess.run([str(BIN / "imgbuild"), str(recipe), "-o", str(out)], capture_output=True, text=True,
                       env=env, timeout=900, preexec_fn=lambda: os.umask(0o027))
    assert p.returncode == 0, p.stderr
    assert "cache hit" in p.stderr
    final = out / "modes"
    assert seen.read_text().split() == ["700", "700"]          # work (the tree) and stage, while building
    assert mode(final) == 0o700
    assert mode(final / "modes.tar.zst") == 0o600 and mode(final / "modes.ext4") == 0o600
    assert mode(final / "lxc.conf") == 0o640 and mode(final / "manifest.json") == 0o640     # umask 027
    m = json.loads((final / "manifest.json").read_text())
    assert m["secrets"] == {"artifacts": ["image", "tarball"], "found": ["/etc/shadow: a password hash for root"]}
    assert m["bootstrap"]["signature"] == {"checked": False, "why": "bootstrap.unsigned: true"}
    assert p.stderr.count("bootstrap.unsigned") >= 2                  # when the index is read, and at the end
    assert "correct horse" not in p.stderr + p.stdout + (final / "manifest.json").read_text()

"""A build replaces only what imgbuild made: OUTPUT/NAME only when it is an earlier imgbuild output (its
manifest.json names it and lists every file there) or an empty directory, OUTPUT/NAME.rootfs (--keep-tree) only
when it is the tree an earlier --keep-tree left. Anything else is refused with exit 2, naming the directory and
saying what to do, before the build starts; the user's files survive."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.core import outputs
from builder.core.errors import InputError
from tests.conftest import imgbuild

DEAD = "http://127.0.0.1:9/debian"     # nobody listens: a build that started anyway would fail at the mirror


def stage_with(tmp_path: Path, name: str = "x") -> Path:
    s = tmp_path / f".{name}.partial-1"
    s.mkdir()
    (s / "x.tar").write_text("new tarball")
    (s / "manifest.json").write_text(json.dumps({"name": name, "artifacts": [{"kind": "tarball", "path": "x.tar"}]}))
    return s


def user_dir(d: Path) -> dict[str, str]:
    d.mkdir(parents=True, exist_ok=True)
    files = {"notes.txt": "my notes\n", "sub/more.txt": "more\n"}
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return files


def still_there(d: Path, files: dict[str, str]) -> bool:
    return all((d / rel).read_text() == text for rel, text in files.items())


# ------------------------------------------------------------------ publish


def test_publish_replaces_an_earlier_output_and_an_empty_directory(tmp_path):
    final = tmp_path / "x"
    outputs.publish(stage_with(tmp_path), final)
    assert (final / "x.tar").read_text() == "new tarball"
    (final / "x.tar").write_text("old")
    outputs.publish(stage_with(tmp_path), final)          # the earlier output: replaced
    assert (final / "x.tar").read_text() == "new tarball"
    assert sorted(os.listdir(tmp_path)) == ["x"]         # no stage, no old copy left
    empty = tmp_path / "y"
    empty.mkdir()
    outputs.publish(stage_with(tmp_path, "y"), empty)
    assert (empty / "manifest.json").is_file()


def _manifest(name: str, *paths: str) -> str:
    return json.dumps({"name": name, "artifacts": [{"kind": "k", "path": p} for p in paths]})


# (id, how OUTPUT/x is prepared, a fragment of the message)
REFUSED = [
    ("user-dir", lambda d: None, "not an imgbuild output"),
    ("user-file-beside-an-output", lambda d: (d / "manifest.json").write_text(_manifest("x", "x.tar")),
     "holds files imgbuild did not write: notes.txt"),
    ("manifest-of-another-name", lambda d: (d / "manifest.json").write_text(_manifest("other", "notes.txt", "sub")),
     "not the manifest of an imgbuild output named 'x'"),
    ("manifest-a-list", lambda d: (d / "manifest.json").write_text("[]"), "manifest.json"),
    ("manifest-garbage", lambda d: (d / "manifest.json").write_bytes(b"\x00\xff"), "manifest.json"),
    ("manifest-escaping-path", lambda d: (d / "manifest.json").write_text(_manifest("x", "../x", "notes.txt", "sub")),
     "not the manifest"),
    ("manifest-a-symlink", lambda d: (d / "manifest.json").symlink_to("/etc/hostname"), "not an imgbuild output"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_publish_refuses_a_directory_imgbuild_did_not_make_and_it_survives(tmp_path, case):
    _, prepare, fragment = case
    final = tmp_path / "x"
    files = user_dir(final)
    prepare(final)
    stage = stage_with(tmp_path)
    with pytest.raises(InputError) as e:
        outputs.publish(stage, final)
    assert str(final) in e.value.message and fragment in e.value.message and "-o" in e.value.hint
    assert still_there(final, files) and (stage / "x.tar").is_file()


@pytest.mark.parametrize("kind", ["symlink-to-dir", "symlink-dangling", "file"])
def test_publish_refuses_a_link_or_a_file_at_the_output(tmp_path, kind):
    final = tmp_path / "x"
    target = tmp_path / "target"
    files = user_dir(target)
    if kind == "symlink-to-dir":
        final.symlink_to(target)
    elif kind == "symlink-dangling":
        final.symlink_to(tmp_path / "nowhere")
    else:
        final.write_text("a file of the user's")
    with pytest.raises(InputError):
        outputs.publish(stage_with(tmp_path), final)
    assert still_there(target, files) and not (tmp_path / "nowhere").exists()
    assert final.is_symlink() or final.read_text() == "a file of the user's"


# ------------------------------------------------------------------ --keep-tree


def tree(tmp_path: Path, tag: str) -> Path:
    t = tmp_path / f"work-{tag}"
    (t / "etc").mkdir(parents=True)
    (t / "etc/hostname").write_text(tag)
    return t


def test_keep_tree_replaces_the_tree_it_kept_and_nothing_else(tmp_path):
    kept = tmp_path / "x.rootfs"
    outputs.keep_tree(tree(tmp_path, "one"), kept)
    outputs.keep_tree(tree(tmp_path, "two"), kept)          # its own: replaced
    assert (kept / "etc/hostname").read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == [".x.rootfs.imgbuild", "x.rootfs"]
    # the user put a directory of their own in its place: its inode is not the one imgbuild noted
    os.rename(kept, tmp_path / "moved")
    files = user_dir(kept)
    with pytest.raises(InputError) as e:
        outputs.keep_tree(tree(tmp_path, "three"), kept)
    assert str(kept) in e.value.message and still_there(kept, files)


@pytest.mark.parametrize("marker", [None, "[]", '{"name": "x.rootfs", "device": 1, "inode": 2}', b"\xff\xfe"])
def test_keep_tree_refuses_a_tree_without_its_marker(tmp_path, marker):
    kept = tmp_path / "x.rootfs"
    files = user_dir(kept)
    if marker is not None:
        m = tmp_path / ".x.rootfs.imgbuild"
        m.write_bytes(marker if isinstance(marker, bytes) else marker.encode())
    with pytest.raises(InputError):
        outputs.keep_tree(tree(tmp_path, "new"), kept)
    assert still_there(kept, files)


# ------------------------------------------------------------------ the real command


def recipe(tmp_path: Path) -> Path:
    p = tmp_path / "r.yml"
    p.write_text(f"name: x\ndistro: debian\nrelease: bookworm\nbootstrap: {{mirror: '{DEAD}'}}\n")
    return p


@pytest.mark.parametrize("what", ["output", "keep-tree"])
def test_the_build_refuses_before_building_and_the_users_files_survive(tmp_path, what):
    out = tmp_path / "out"
    d = out / ("x" if what == "output" else "x.rootfs")
    files = user_dir(d)
    r = imgbuild(recipe(tmp_path), "-o", out, *(["--keep-tree"] if what == "keep-tree" else []))
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr and str(d) in r.stderr, r.stderr
    assert "hint:" in r.stderr and "-o" in r.stderr
    assert "mirror" not in r.stderr                     # refused before the build began
    assert still_there(d, files) and sorted(os.listdir(out)) == [d.name]


@pytest.mark.root
@pytest.mark.network
def test_a_real_output_and_its_kept_tree_are_recognised(debian12_build):
    """The session's build (made with --keep-tree) is one imgbuild may replace, and so is its tree."""
    outputs.check_replaceable(debian12_build)
    outputs.check_tree_replaceable(debian12_build.parent / "debian12.rootfs")
    assert outputs.previous_output(debian12_build)["name"] == "debian12"

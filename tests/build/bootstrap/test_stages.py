"""What a bootstrap shows and where its time goes: the tool's stage lines at the default level (imgbuild's own hook
scripts reduced to the hook's kind), each stage line starting a sub-phase of the bootstrap (manifest.json's
sub_timings), and the breakdown a build prints at its end."""
from __future__ import annotations

import logging
import time

from builder.build.bootstrap.mmdebstrap import progress
from builder.build.pipeline import breakdown

MMDEBSTRAP = [
    "I: automatically chosen mode: root",
    "I: running --setup-hook in shell: sh -c 'mkdir -p \"$1\"/var/cache/apt/archives && cp -al /x/. ...' exec /x",
    "I: running apt-get update...",
    "Get:1 file:/x bookworm InRelease",
    "I: downloading packages with apt...",
    "I: extracting archives...",
    "I: installing essential packages...",
    "I: running --essential-hook in shell: sh -c 'i=0; while [ ! -e /x/stage2.done ]; do sleep 0.05; done'",
    "I: installing remaining packages inside the chroot...",
    "I: cleaning package lists and apt cache...",
    "I: success in 12.1 seconds",
]


def test_stage_lines_are_shown_and_timed_hook_scripts_are_not(ctx_for, caplog):
    ctx = ctx_for()
    ctx.phase = "bootstrap"
    show = progress(r"^[IWE]: ", ctx)
    with caplog.at_level(logging.INFO, logger="imgbuild"):
        for line in MMDEBSTRAP:
            show(line)
            time.sleep(0.01)
    ctx.sub(None)
    said = [r.getMessage() for r in caplog.records]
    assert "  I: running --setup-hook" in said and "  I: running --essential-hook" in said, said
    assert not [s for s in said if "sh -c" in s or "Get:1" in s], said
    assert "  I: extracting archives..." in said and "  I: success in 12.1 seconds" in said, said
    subs = ctx.sub_timings["bootstrap"]
    assert list(subs) == ["apt update", "download", "extract", "install essential", "install the rest", "clean up"]
    assert all(v >= 0.009 for v in subs.values()), subs
    assert subs["install essential"] >= 0.019, subs          # two lines (the hook's too) inside that stage


def test_with_v_the_runner_shows_the_raw_lines_and_progress_shows_none(ctx_for, caplog):
    ctx = ctx_for()
    ctx.phase = "bootstrap"
    show = progress(r"^[IWE]: ", ctx)
    with caplog.at_level(logging.DEBUG, logger="imgbuild"):
        for line in MMDEBSTRAP:
            show(line)
    assert not caplog.records                               # no second copy of what -v prints already
    ctx.sub(None)
    assert list(ctx.sub_timings["bootstrap"])[-1] == "clean up"      # the stages are still timed


def test_the_breakdown_names_the_long_phases_in_order():
    t = {"preflight": 0.08, "bootstrap": 12.34, "steps": 0.31, "cleanup": 0.02, "target tarball": 1.5, "total": 14.3}
    assert breakdown(t) == "bootstrap 12.3 s, steps 0.3 s, target tarball 1.5 s, the rest 0.1 s"
    assert breakdown({"total": 1.0}) == "nothing measured"

"""Build steps: one small module each, with an options dataclass and `run(ctx, opts)`.

The order they run in is the STEPS table in builder/build/pipeline.py; each is callable on a temp tree in a test.
"""

#!/bin/sh
# A long run of the property tests over every parser of outside input (xm configs, LXC configs, identity files,
# .repo files, the Xen bridge readers, and whatever else tests/test_*_props.py covers): thousands of hypothesis
# examples per test instead of the suite's 100.
#
#   bench/fuzz_parsers.sh                          5000 examples per test (about an hour on 2 cores)
#   IMGBUILD_FUZZ_EXAMPLES=20000 bench/fuzz_parsers.sh -x
#   bench/fuzz_parsers.sh -k lxcconf               extra arguments go to pytest
#
# A failure prints the smallest input hypothesis found and a @reproduce_failure line to replay it.
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -p no:cacheprovider --hypothesis-profile=long \
    --hypothesis-show-statistics tests/test_*_props.py "$@"

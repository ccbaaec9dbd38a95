#!/usr/bin/env bash
# README command 2: set up, then run the test suite. pytest's exit code 5 ("no tests collected")
# is a failure here, not a pass: a suite that runs nothing checks nothing.
#
# The suite runs on one pytest-xdist worker per core (at most 4): most tests use one thread, so on
# 2 cores it takes about half the time of one process. EDGEKD_TEST_WORKERS=1 runs it in one process
# (e.g. to time a test alone); any other number sets the workers. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc 2>/dev/null || echo 1)
workers=${EDGEKD_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
  echo "test.sh: EDGEKD_TEST_WORKERS must be a whole number of workers, 1 or more (got '$workers')" >&2
  exit 2
fi
bash scripts/setup.sh || exit $?
parallel=()
if [ "$workers" -gt 1 ]; then
  # worksteal: each worker starts on its own contiguous half (a module's tests stay together and share
  # its fixtures); one that runs dry takes pending tests from the other
  parallel=(-n "$workers" --dist worksteal)
fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$rc"

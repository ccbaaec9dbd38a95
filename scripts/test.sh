#!/usr/bin/env bash
# README command 2: set up, then run the test suite. pytest's exit code 5 ("no tests collected")
# is a failure here, not a pass: a suite that runs nothing checks nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$rc"

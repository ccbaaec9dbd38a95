#!/usr/bin/env bash
# Idempotent set-up: creates .venv if missing and installs edgekd with its pinned dependencies.
# Quick when nothing changed: a stamp holds the hash of the files that define the install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.edgekd-install-stamp
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned dependencies into $VENV (first run takes a few minutes)" >&2
  # torch==2.13.0 is the CPU build; the constraints file keeps every later install from upgrading it.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt 'torch==2.13.0'
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[host,dev]'
  echo "$want" > "$STAMP"
fi

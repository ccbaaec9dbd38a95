#!/usr/bin/env bash
# README command 1: set up (idempotent), then run the main job on the built-in data:
# choose, distill, export and measure on this machine the smallest student that meets the budget.
# Extra arguments go to `edgekd deploy` (e.g. --budget-ms 0.02 --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edgekd deploy --target cpu "$@"

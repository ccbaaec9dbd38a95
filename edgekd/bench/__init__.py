"""The measurement harness: timing loop and statistics (measure.py), one artifact per fresh runner
process for attributable peak memory (runner_process.py), accuracy on the deployed runtime
(accuracy.py) and the per-format result table (table.py).

Device side: everything here except table.py imports numpy + stdlib only (plus the artifact's own
runtime, through `edgekd.runtimes.load_artifact`).
"""
from __future__ import annotations

"""Which few students to measure when a prior latency model is adapted to a device (few-shot
calibration, `edgekd profile calibrate --prior`): the ones that tell the per-group scales of the
`kinds` transfer (`edgekd.latency.transfer`) apart.

A `kinds` transfer fits one scale per group of the prior's terms (`correction.TERM_GROUPS`: cost per
call, per layer, per MAC of each layer kind, memory). A student whose predicted time is almost all
call overhead says nothing about the conv scale; five MLPs say the same thing five times. So the
students are picked greedily for a D-optimal design: each next one most increases the log-determinant
of sum_i s_i s_i^T, where s_i is the student's prior prediction split by group, normalised to sum 1
(its "shares"). Deterministic: the same prior and pool give the same picks.

Measured (scripts/bench_transfer.py, `informative` row vs the mean of 20 random draws, k = 5, 26 held-out
students within ±10 %, AMD EPYC AVX2 VM; pairs ORT 1 -> 2 threads / graph optimizations off -> on /
OpenVINO -> ORT): session 4's quiet measurements 96 / 96 / 85 % vs 75 / 77 / 57 %; session 5's
(load 3-9) 69 / 92 / 77 % vs 73 / 72 / 64 %; session 6's (load 2-3), picked from 20 random pools of 16,
86 / 89 / 83 % (worst pool 62 / 77 / 58 %) vs 83 / 74 / 61 %. Better on average, not on every pair; an
I-optimal design (least average prediction variance) did worse offline (docs/ARCHITECTURE.md).
Numpy only."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgekd.latency.correction import TERM_GROUPS, group_parts

DESIGN_RIDGE = 1e-3  # the design matrix starts at this multiple of the identity (a defined log-det)


def shares(base: Any, features: Mapping[str, Any], metric: str = "p50_ms") -> np.ndarray:
    """The prior's prediction of `metric` for a student, split by TERM_GROUPS and normalised to sum 1."""
    parts = group_parts(base, features, metric)
    return parts / max(float(parts.sum()), 1e-12)


def informative_students(base: Any, candidates: Mapping[str, Mapping[str, Any]], count: int,
                         metric: str = "p50_ms") -> list[str]:
    """`count` names of `candidates` ({name: architecture features}), in the order picked (see module doc)."""
    rows = {n: shares(base, f, metric) for n, f in candidates.items()}
    info = DESIGN_RIDGE * np.eye(len(TERM_GROUPS))
    chosen: list[str] = []
    for _ in range(min(count, len(rows))):
        best = max((n for n in rows if n not in chosen),
                   key=lambda n: (np.linalg.slogdet(info + np.outer(rows[n], rows[n]))[1], n))
        chosen.append(best)
        info = info + np.outer(rows[best], rows[best])
    return chosen

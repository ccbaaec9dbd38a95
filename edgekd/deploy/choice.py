"""Which distilled student to choose across model families: a per-family accuracy frontier.

Accuracy after distillation grows with size *inside one family* (a wider / deeper CNN of the same
shape learns at least as well), but not across families: at 28x28 a 61k-parameter CNN beats a
269k-parameter MLP. So the search never bisects one list ordered by parameters across families; it
keeps one frontier per family:

  * within a family, candidates are ordered by parameter count and accuracy is assumed monotone in
    it, so that family's smallest spec meeting the floor is found by bisection (~log2(n) distills);
  * a family is tried only below the best spec found so far (by `key`: parameters when choosing
    the smallest student, predicted latency when asking what budget a floor needs), so a family whose
    members are all larger than an already passing one costs nothing;
  * families are visited by the `key` of their most capable member (smallest first), so a small
    family that passes prunes the others before their large members are distilled.

`frontier_search` is pure (the accuracy oracle distills lazily and caches), so `edgekd deploy` uses it
for both the choice and the failure report's "budget needed for this floor". Host side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from edgekd.models.spec import parse_spec


def family_of(spec: str) -> str:
    """The model family of a spec string (`cnn:depth=2,width=8` -> `cnn`)."""
    return parse_spec(spec)[0]


@dataclass
class FrontierResult:
    """The best spec found (or None), every spec whose accuracy was asked, and families never
    distilled because the budget of distills (`max_distills`) ran out (the search was then partial)."""

    best: str | None
    asked: dict[str, float] = field(default_factory=dict)
    skipped_families: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.skipped_families


def frontier_search(
    specs: Iterable[str],
    accuracy_of: Callable[[str], float],
    floor: float,
    *,
    params: Callable[[str], int],
    key: Callable[[str], float] | None = None,
    tiebreak: Callable[[str], float] | None = None,
    rejected: Iterable[str] = (),
    max_distills: int | None = None,
) -> FrontierResult:
    """The spec with the smallest `key` (default: parameters) whose accuracy meets `floor`.

    `specs`: the candidates (any families, any order); `rejected`: specs already refused (over budget
    or under the floor on the device), never returned; `accuracy_of(spec)` distills (or reads a
    cached run) and returns the choosing accuracy; `params(spec)` orders specs inside a family.
    `tiebreak(spec)` (deploy: the predicted latency) decides between specs equal in key, params and
    accuracy, the smaller wins; without it, the spec's spelling.
    `max_distills` caps how many *new* specs are asked (already asked ones are free): when it runs
    out the result names the families left unexplored."""
    rejected = set(rejected)
    key = key or (lambda s: float(params(s)))
    tiebreak = tiebreak or (lambda s: 0.0)
    by_family: dict[str, list[str]] = {}
    for s in dict.fromkeys(specs):
        if s not in rejected:
            by_family.setdefault(family_of(s), []).append(s)
    for fam in by_family.values():
        fam.sort(key=lambda s: (params(s), key(s), tiebreak(s), s))
    result = FrontierResult(best=None)
    budget = [max_distills if max_distills is not None else 10**9]

    def ask(spec: str) -> float | None:
        if spec not in result.asked:
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            result.asked[spec] = float(accuracy_of(spec))
        return result.asked[spec]

    # smallest-largest-member first: the family most likely to give a small winner prunes the others
    order = sorted(by_family, key=lambda f: (key(by_family[f][-1]), params(by_family[f][-1]), f))
    for fam in order:
        pool = by_family[fam]
        if result.best is not None:
            bound = key(result.best)
            pool = [s for s in pool if key(s) < bound]  # only members that could still win
            if not pool:
                continue
        top = ask(pool[-1])
        if top is None:
            result.skipped_families.append(fam)
            continue
        if top < floor:
            continue  # even the family's most capable member misses: the whole family does
        lo, hi = 0, len(pool) - 1  # pool[hi] passes; find the first that passes
        partial = False
        while lo < hi:
            mid = (lo + hi) // 2
            acc = ask(pool[mid])
            if acc is None:
                partial = True
                break
            if acc >= floor:
                hi = mid
            else:
                lo = mid + 1
        if partial:
            result.skipped_families.append(fam)
        # every member from the boundary up passes (monotone in params); of those whose accuracy was
        # measured (the boundary always is), take the one with the smallest key: a winner is never
        # only inferred, so whatever names it (the choice, the failure report) has its accuracy; a tie
        # (same params: one architecture at two resolutions) goes to the more accurate, not to the
        # spec's spelling ("resolution=128" sorts before "resolution=96"); equally accurate too, to the
        # faster (`tiebreak`)
        passing = [s for s in pool[hi:] if s in result.asked]
        winner = min(passing, key=lambda s: (key(s), params(s), -result.asked[s], tiebreak(s), s))
        if result.best is None or key(winner) < key(result.best):
            result.best = winner
    return result


def best_reachable(accuracies: dict[str, float], within: Iterable[str]) -> tuple[str, float] | None:
    """The most accurate spec among those distilled (`accuracies`) that are in `within`."""
    pool = {s: a for s, a in accuracies.items() if s in set(within)}
    if not pool:
        return None
    spec = max(pool, key=lambda s: (pool[s], s))
    return spec, pool[spec]

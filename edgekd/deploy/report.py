"""What `edgekd deploy` tells a user when no student is good enough, and how sure its latency
predictions are. Host side, no I/O except what the callers pass in.

A failed deploy answers the two questions a user must decide between, each with the flag to change:

  * the best accuracy reachable at this budget (the most accurate student distilled within it) ->
    `--min-accuracy` at that figure accepts it;
  * the budget this floor needs (the fastest student that meets the floor, found by the same
    per-family frontier search over the students *over* budget, `edgekd.deploy.choice`) -> `--budget-ms`;
  * and `--epochs`, since students trained longer reach more.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from edgekd.deploy.choice import best_reachable, frontier_search


def latency_model_summary(profile: Any, key: str | None, metric: str) -> dict[str, Any] | None:
    """{key, n_samples, kind, median_abs_rel, within_10pct} of the latency model deploy predicts
    with (cross-validated on this device), or None when the profile has none for `key`."""
    if profile is None or key is None:
        return None
    from edgekd.latency.section import latency_section

    raw = latency_section(profile)["models"].get(key)
    if not raw:
        return None
    cv = dict((raw.get("cv") or {}).get(metric) or {})
    return {"key": key, "metric": metric, "kind": raw.get("kind"), "n_samples": raw.get("n_samples"),
            "median_abs_rel": cv.get("median_abs_rel"), "within_10pct": cv.get("within_10pct"),
            "p90_abs_rel": cv.get("p90_abs_rel")}


def latency_model_line(summary: dict[str, Any] | None, metric: str) -> str:
    """One line: the latency model's cross-validated error on this device (or that there is none)."""
    label = metric.replace("_ms", "")
    if summary is None:
        return (f"latency model: none fitted on this device; {label} predictions come from the target's "
                "datasheet (error unknown)")
    med, within = summary.get("median_abs_rel"), summary.get("within_10pct")
    if med is None or (isinstance(med, float) and math.isnan(med)):
        return f"latency model {summary['key']}: {summary.get('n_samples')} measurements, too few to cross-validate"
    return (f"latency model {summary['key']}: cross-validated {label} error median {med:.0%}, "
            f"{within:.0%} of students within ±10 % ({summary.get('n_samples')} measurements on this device)")


def failure_report(
    *,
    floor: float,
    budget_ms: float,
    percentile: int,
    epochs: int,
    table: dict[str, tuple[float, str]],
    accuracies: dict[str, float],
    within: list[str],
    accuracy_of: Callable[[str], float],
    params: Callable[[str], int],
    rejected: set[str],
    teacher: dict[str, Any],
    max_distills: int = 4,
) -> dict[str, Any]:
    """The failure report: best reachable at this budget, budget needed for the floor, the flags.

    `table`: {spec: (latency ms at the percentile, label)} of the whole space; `accuracies`: the
    choosing (val) accuracy of every student distilled so far; `within`: the specs within budget;
    `accuracy_of` distills more (at most `max_distills` new ones) to find the budget needed;
    `rejected`: specs the device refused on accuracy (never offered again)."""
    best = best_reachable(accuracies, within)
    over = [s for s in table if s not in set(within)]
    search = frontier_search(over, accuracy_of, floor, params=params, key=lambda s: table[s][0],
                             rejected=rejected, max_distills=max_distills)
    out: dict[str, Any] = {"floor": floor, "budget_ms": budget_ms, "percentile": percentile, "epochs": epochs,
                           "best_reachable": None, "budget_needed": None, "flags": []}
    if best is not None:
        spec, acc = best
        out["best_reachable"] = {"spec": spec, "val_accuracy": acc, "latency_ms": table.get(spec, (None, ""))[0],
                                 "latency_source": table.get(spec, (None, ""))[1]}
    if search.best is not None:
        spec = search.best
        out["budget_needed"] = {"budget_ms": table[spec][0], "spec": spec, "val_accuracy": search.asked.get(spec, accuracies.get(spec)),
                                "latency_source": table[spec][1], "exact": search.complete,
                                "from": "student"}
    elif (teacher.get("latency_ms") and teacher["latency_ms"] > budget_ms and teacher.get("val_accuracy") is not None
          and teacher["val_accuracy"] >= floor):
        # the teacher as the bound only when it needs more than the budget given: one that fits it (with
        # --space the teacher may run at another resolution than the students) says nothing of the budget
        out["budget_needed"] = {"budget_ms": teacher["latency_ms"], "spec": teacher.get("spec"),
                                "val_accuracy": teacher["val_accuracy"], "latency_source": teacher.get("source"),
                                "exact": False, "from": "teacher"}
    out["searched_over_budget"] = dict(search.asked)
    label = f"p{percentile}"
    if out["best_reachable"]:
        b = out["best_reachable"]
        out["flags"].append(f"--min-accuracy {math.floor(b['val_accuracy'] * 1e4) / 1e4:.4f}  "
                            f"(accept the best reachable at {budget_ms:.4g} ms: {b['spec']}, val {b['val_accuracy']:.2%})")
    if out["budget_needed"]:
        n = out["budget_needed"]
        bound = "" if n["exact"] else " at most"
        out["flags"].append(f"--budget-ms {_ceil(n['budget_ms'])}  (the floor {floor:.2%} needs{bound} {label} "
                            f"{n['budget_ms']:.4g} ms: {n['spec']}, {n['latency_source']})")
    out["flags"].append(f"--epochs {2 * epochs}  (students now train {epochs} epochs; longer training "
                        "reaches more accuracy at the same size)")
    return out


def _ceil(ms: float) -> str:
    """A budget just above `ms`, in 3 significant digits, so the student named is inside it."""
    digits = 3 - int(math.floor(math.log10(abs(ms)))) - 1 if ms > 0 else 3
    scale = 10 ** digits
    return f"{math.ceil(ms * scale * 1.02) / scale:g}"


def failure_text(report: dict[str, Any]) -> str:
    """The report as the lines deploy prints (after the one-line status)."""
    lines = []
    b, n = report.get("best_reachable"), report.get("budget_needed")
    p = f"p{report['percentile']}"
    lines.append(f"best accuracy reachable at {report['budget_ms']:.4g} ms: "
                 + (f"val {b['val_accuracy']:.2%} ({b['spec']})" if b else "none (no student within budget)"))
    if n:
        how = "" if n["exact"] else "at most "
        who = "the teacher itself" if n["from"] == "teacher" else n["spec"]
        lines.append(f"budget needed for the floor {report['floor']:.2%}: {how}{p} {n['budget_ms']:.4g} ms ({who})")
    else:
        lines.append(f"budget needed for the floor {report['floor']:.2%}: unknown (no student distilled reaches it)")
    lines.append("change one of: " + "; ".join(report["flags"]))
    return "\n".join(lines)

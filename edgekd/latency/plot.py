"""The trade-off on one device: measured latency vs accuracy, per format/precision (matplotlib, Agg).

Only measurements with an accuracy are placed (untrained calibration models have none; they are
counted in the caption). The budget is a vertical line, the accuracy floor a horizontal one, the
pareto front (nothing both faster and more accurate) is joined, the chosen student is ringed and the
teacher, when measured, is a star. Host side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import ProfileError


def _is_teacher(spec: str | None) -> bool:
    from edgekd.models.spec import MODELS

    if not spec:
        return False
    name = spec.split(":", 1)[0]
    return name in MODELS and MODELS.get(name).role == "teacher"


def _ms(v: float) -> str:
    """A latency in ms as people read it: 6 µs, 250 µs, 1.5 ms."""
    return f"{v * 1e3:.3g} µs" if v < 1 else f"{v:.3g} ms"


def pareto_points(profile: Any, percentile: int = 50, *, threads: int | None = None,
                  dataset_fingerprint: str | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(points with latency and accuracy, {why: how many measurements were left out for it}): no
    latency at that percentile, no accuracy (e.g. untrained calibration models), another thread
    setting, accuracy on another dataset (not comparable on the same axes), or an INT8 artifact of
    another quantization recipe than this device's exports now (`edgekd.latency.recipe`). The first
    reason that applies counts."""
    from edgekd.latency.model import metric_for
    from edgekd.latency.recipe import is_current
    from edgekd.latency.section import latency_section, measurement_shape

    metric = metric_for(percentile)
    section = latency_section(profile)
    points: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for m in profile.rows():
        lat = (m.latency or {}).get(metric)
        if lat is None:
            why = f"no {metric[:-3]} latency"
        elif m.accuracy is None:
            why = "no accuracy (untrained calibration)"
        elif threads is not None and m.threads != threads:
            why = "other thread setting"
        elif dataset_fingerprint and m.dataset_fingerprint and m.dataset_fingerprint != dataset_fingerprint:
            why = "other dataset"
        elif not is_current(m, profile.device, shape=measurement_shape(m, section)):
            why = "INT8 of another quantization recipe"
        else:
            points.append({"spec": m.spec or m.model_sha256[:12], "format": m.format, "precision": m.precision,
                           "threads": m.threads, "latency_ms": float(lat), "accuracy": float(m.accuracy),
                           "params": m.params, "model_sha256": m.model_sha256, "teacher": _is_teacher(m.spec)})
            continue
        skipped[why] = skipped.get(why, 0) + 1
    return points, skipped


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["latency_ms"], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def plot_profile(profile: Any, out: str | Path, *, percentile: int = 50, budget_ms: float | None = None,
                 min_accuracy: float | None = None, chosen_sha256: str | None = None,
                 chosen_format: str | None = None, chosen_precision: str | None = None, threads: int | None = None,
                 dataset_fingerprint: str | None = None, title: str | None = None) -> Path:
    """Write the latency/accuracy plot of `profile` to `out` (PNG, SVG or PDF by extension).

    `threads` / `dataset_fingerprint` keep only comparable measurements; the chosen student is the
    measurement of `chosen_sha256` in `chosen_format`/`chosen_precision` (any, when not given)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine; must precede pyplot
    import matplotlib.pyplot as plt

    points, skipped = pareto_points(profile, percentile, threads=threads, dataset_fingerprint=dataset_fingerprint)
    if not points:
        raise ProfileError(f"profile {profile.path or profile.name} has no measurement with an accuracy to plot; "
                           "run `edgekd bench RUN --data digits` or `edgekd deploy` first")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(f"{p['format']} {p['precision']}" + (f" t{p['threads']}" if p["threads"] else ""), []).append(p)
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    teacher_drawn = False
    for i, (label, pts) in enumerate(sorted(groups.items())):
        students = [p for p in pts if not p["teacher"]]
        if students:
            ax.scatter([p["latency_ms"] for p in students], [100 * p["accuracy"] for p in students],
                       marker=markers[i % len(markers)], s=42, alpha=0.85, label=label, zorder=3)
        for p in (p for p in pts if p["teacher"]):
            ax.scatter([p["latency_ms"]], [100 * p["accuracy"]], marker="*", s=160, color="black", zorder=4,
                       label=None if teacher_drawn else "teacher (every format)")
            if not teacher_drawn or (p["format"], p["precision"]) == (chosen_format, chosen_precision):
                ax.annotate(f"teacher {p['format']} {p['precision']}", (p["latency_ms"], 100 * p["accuracy"]),
                            textcoords="offset points", xytext=(-20, -14), fontsize=7)
            teacher_drawn = True
    front = pareto_front(points)
    ax.plot([p["latency_ms"] for p in front], [100 * p["accuracy"] for p in front], "--", color="grey", lw=1,
            zorder=2, label="pareto front")
    if budget_ms:
        ax.axvline(budget_ms, color="crimson", lw=1.5, label=f"budget {_ms(budget_ms)} (p{percentile})")
    if min_accuracy is not None:
        ax.axhline(100 * min_accuracy, color="darkorange", lw=1, ls=":", label=f"accuracy floor {100 * min_accuracy:.1f} %")
    for p in points:
        same_config = (chosen_format in (None, p["format"])) and (chosen_precision in (None, p["precision"]))
        if chosen_sha256 and p["model_sha256"] == chosen_sha256 and same_config:
            ax.scatter([p["latency_ms"]], [100 * p["accuracy"]], s=320, facecolors="none", edgecolors="crimson",
                       linewidths=2, zorder=5, label="chosen")
            ax.annotate(f"chosen: {p['spec']}", (p["latency_ms"], 100 * p["accuracy"]), textcoords="offset points",
                        xytext=(8, 8), fontsize=8, color="crimson")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    # plain µs / ms tick labels: "6e-3" is unreadable for a latency
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _ms(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.set_xlabel(f"latency p{percentile}, batch 1, measured on the device (log scale)")
    ax.set_ylabel("accuracy on the deployed runtime (%)")
    ax.grid(True, which="both", alpha=0.25)
    device = profile.device.get("cpu_model") or profile.name
    ax.set_title(title or f"{profile.name}: latency vs accuracy ({device})", fontsize=10)
    note = f"{len(points)} measured models" + (
        "; not shown: " + ", ".join(f"{n} {why}" for why, n in skipped.items())
        if skipped else "")
    fig.text(0.01, 0.01, note, fontsize=7, color="grey")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out

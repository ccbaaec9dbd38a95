"""The joint choice drawn (`edgekd deploy --format auto`): each runtime x precision's candidate of every
round, weights on the device (MB, log) against host val accuracy, with the latency it was chosen on
written beside it; the winner is ringed and the caption says why it won. What the choice was made on,
so it shows the students' size and val accuracy, not a device measurement (those are in `edgekd
profile plot`). matplotlib (Agg), host side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError


def _ms(v: float) -> str:
    return f"{v * 1e3:.3g} µs" if v < 1 else f"{v:.4g} ms"


def _points(report: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(round number, view) of every configuration's winner in `report`'s rounds."""
    rounds = [r for r in report.get("candidates") or [] if r]
    return [(i + 1, v) for i, views in enumerate(rounds) for v in views if v.get("winner")]


def has_candidates(report: dict[str, Any]) -> bool:
    """True when some configuration of some round had a student within budget meeting the floor (a
    deploy where none had ends `failed` with nothing to draw)."""
    return bool(_points(report))


def plot_joint(report: dict[str, Any], out: str | Path) -> Path:
    """Write the plot of a joint deploy `report` (its `candidates`) to `out` (.png / .svg / .pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r for r in report.get("candidates") or [] if r]
    points = _points(report)
    if not points:
        raise ConfigError("the deploy report has no joint candidate to plot (no configuration had a student "
                          "within budget meeting the floor)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5.4), dpi=120)
    markers = ["o", "s", "^", "D", "v", "P", "X", "<"]
    configs = list(dict.fromkeys(f"{v['runtime']}/{v['precision']}" for _, v in points))
    for i, config in enumerate(configs):
        pts = [(n, v) for n, v in points if f"{v['runtime']}/{v['precision']}" == config]
        ax.scatter([v["size_bytes"] / 1e6 for _, v in pts], [100 * v["val_accuracy"] for _, v in pts],
                   marker=markers[i % len(markers)], s=46, alpha=0.85, zorder=3, label=config)
        for n, v in pts:
            ax.annotate(f"r{n} {_ms(v['latency_ms'])} {v['latency_source']}",
                        (v["size_bytes"] / 1e6, 100 * v["val_accuracy"]), textcoords="offset points",
                        xytext=(6, -10 - 8 * (i % 3)), fontsize=6, color="dimgrey")
    won = [(n, v) for n, v in points if v["status"] == "chosen"]
    if won:
        n, v = won[-1]
        ax.scatter([v["size_bytes"] / 1e6], [100 * v["val_accuracy"]], s=320, facecolors="none", edgecolors="crimson",
                   linewidths=2, zorder=5, label=f"chosen (round {n})")
        ax.annotate(f"chosen: {v['winner']} on {v['runtime']}/{v['precision']}",
                    (v["size_bytes"] / 1e6, 100 * v["val_accuracy"]), textcoords="offset points", xytext=(8, 8),
                    fontsize=7, color="crimson")
    floor = (report.get("choice_floor") or {}).get("min_accuracy", report.get("min_accuracy"))
    if floor is not None:
        ax.axhline(100 * floor, color="darkorange", lw=1, ls=":", label=f"choosing floor (val) {100 * floor:.1f} %")
    ax.set_xscale("log")
    ax.set_xlabel("weights on the device, MB (params x bytes per weight of the precision; log scale)")
    ax.set_ylabel("host val accuracy (%)")
    ax.grid(True, which="both", alpha=0.25)
    everyone = list(dict.fromkeys(f"{v['runtime']}/{v['precision']}" for views in rounds for v in views))
    ax.set_title(f"joint choice among {len(everyone)} runtime x precision configurations "
                 f"(budget {_ms(report['budget_ms'])} p{report.get('percentile', '')})", fontsize=10)
    why = f"winner: {won[-1][1]['why']}" if won else "no winner"
    verdict = f"; deploy {report.get('status')}" if report.get("status") else ""
    none = [f"{v['runtime']}/{v['precision']} ({v['why']})" for v in rounds[-1] if not v.get("winner")]
    fig.text(0.01, 0.01, (why + verdict)[:160] + ("\nno candidate: " + "; ".join(none))[:170] * bool(none),
             fontsize=7, color="grey")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for the two caption lines
    fig.savefig(out)
    plt.close(fig)
    return out

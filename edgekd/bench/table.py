"""The per-format result row and how rows and profiles are printed (host side: rich).

One uniform row per (artifact, format, precision): a failure is a row with status ❌ and a reason,
never a missing row or a NaN, so one failing format can neither abort nor hide the others.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

OK, FAILED = "✅", "❌"


@dataclass
class BenchRow:
    """One line of the `edgekd bench` table."""

    model: str  # spec or artifact name
    format: str
    precision: str
    ok: bool
    reason: str | None = None  # why it failed or was skipped
    size_bytes: int | None = None
    accuracy: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_bytes: int | None = None
    artifact: str | None = None
    threads: int | None = None
    batch: int | None = None
    warnings: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None  # the full measurement, for --json

    @property
    def status(self) -> str:
        return OK if self.ok else FAILED

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = "ok" if self.ok else "failed"
        return out


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    # three significant digits: a 8 µs edge model must not print as 0.008
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def bench_table(rows: Iterable[BenchRow], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col, justify in (("model", "left"), ("format", "left"), ("precision", "left"), ("status", "left"),
                         ("size", "right"), ("accuracy", "right"), ("p50 ms", "right"), ("p90 ms", "right"),
                         ("peak mem", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        status = r.status if r.ok else f"{r.status} {r.reason or ''}".strip()
        if r.ok and r.warnings:
            status += " ⚠"
        table.add_row(r.model, r.format, r.precision, status, fmt_bytes(r.size_bytes), fmt_pct(r.accuracy),
                      fmt_ms(r.p50_ms), fmt_ms(r.p90_ms), fmt_bytes(r.peak_rss_bytes))
    return table


STALE_RECIPE_MARK = "†"
STALE_RECIPE_NOTE = (f"{STALE_RECIPE_MARK} an INT8 row of another quantization recipe than this device's exports now "
                     "(or none recorded): kept, but no fit, transfer or deploy uses it")


def stale_recipe_rows(profile: Any) -> set[str]:
    """Keys of the profile's INT8 rows whose recipe is not what this device's exports use now."""
    from edgekd.latency.recipe import is_current
    from edgekd.latency.section import latency_section, measurement_shape

    section = latency_section(profile)
    return {k for k, m in profile.measurements.items()
            if not is_current(m, profile.device, shape=measurement_shape(m, section))}


def profile_table(profile: Any) -> Any:
    """A rich table of every measurement in a Profile; INT8 rows of another recipe are marked
    (STALE_RECIPE_MARK)."""
    from rich.table import Table

    stale = stale_recipe_rows(profile)
    table = Table(title=f"profile {profile.name}", caption=STALE_RECIPE_NOTE if stale else None)
    for col in ("model", "format", "precision", "threads", "batch", "size", "accuracy", "p50 ms", "p90 ms",
                "p99 ms", "peak mem", "n", "measured"):
        table.add_column(col, justify="left" if col in ("model", "format", "precision", "measured") else "right")
    for m in profile.rows():
        lat = m.latency or {}
        precision = m.precision + (f" {STALE_RECIPE_MARK}" if m.key in stale else "")
        table.add_row(m.spec or m.model_sha256[:12], m.format, precision, str(m.threads or "default"),
                      str(m.batch), fmt_bytes(m.size_bytes), fmt_pct(m.accuracy), fmt_ms(lat.get("p50_ms")),
                      fmt_ms(lat.get("p90_ms")), fmt_ms(lat.get("p99_ms")), fmt_bytes(m.peak_rss_bytes),
                      str(m.count), m.measured_at)
    return table


def device_summary(fingerprint: dict[str, Any]) -> str:
    keys = ("cpu_model", "arch", "cores_physical", "cores", "os", "python")
    parts = [f"{k}={fingerprint[k]}" for k in keys if fingerprint.get(k)]
    return ", ".join(parts) if parts else "(no fingerprint)"

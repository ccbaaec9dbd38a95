"""Few-shot calibration: adapt another device's latency model (the *prior*) to this device from a
handful of measurements, instead of measuring dozens of students (`edgekd profile calibrate --prior`).

The prior is a latency model for the same configuration key (runtime / precision / threads / batch /
input shape) in another profile — another machine's, or this one's under another runtime version.
Its transfer (`edgekd.latency.transfer`, the default method) is written into this device's profile
first, with no points yet and `since` = now; the students then measured are picked by
`edgekd.latency.design.informative_students` from a pool spread over the search space, and the
profile's refit re-adapts the transfer on every point measured since (`section.readapt`), exactly as a
deploy's transfer grows round by round. HELP (NeurIPS 2021) adapts from 10 measurements; the
measured shares at k = 5 are in scripts/bench_transfer.py (`informative` row) and docs/MEASUREMENTS.md.
Host side."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from edgekd.errors import ConfigError

POOL = 48  # untrained students spread over the space that the informative ones are picked from


def _other_threads(key: str, models: Mapping[str, Any]) -> str | None:
    """A key of `models` that differs from `key` only in its thread count (`runtime/precision/tN/...`)."""
    want = key.split("/")
    for k in sorted(models):
        have = k.split("/")
        if len(have) == len(want) and have[:2] == want[:2] and have[3:] == want[3:] and have[2].startswith("t"):
            return k
    return None


def prior_from_profile(prior: str, key: str, profiles_dir: str | Path, own: Path) -> tuple[dict[str, Any], Path, str]:
    """The model dict for `key` in the profile `prior` (a name in `profiles_dir` or a .yaml path) — or,
    when it has none, its model of the same configuration at another thread count (a prior like any
    other: the transfer corrects the per-layer and per-MAC costs that threads change) — that
    profile's path and the key taken. A one-line ConfigError when the profile is missing,
    unreadable, this device's own, or has no model for the configuration."""
    from edgekd.device.profiles import Profile, profile_path
    from edgekd.errors import ProfileError
    from edgekd.latency.model import MODEL_KIND, TRANSFER_KIND
    from edgekd.latency.section import latency_section

    path = profile_path(prior, profiles_dir)
    if not path.is_file():
        raise ConfigError(f"--prior {prior}: no profile at {path}; pass a profile name in {profiles_dir} or a .yaml path")
    if path.resolve() == Path(own).resolve():
        raise ConfigError(f"--prior {prior} is this device's own profile ({own}); pass another device's profile, "
                          "or calibrate without --prior")
    try:
        models = latency_section(Profile.load(path))["models"]
    except ProfileError as err:
        raise ConfigError(f"--prior {prior}: {err}") from None
    taken = key if key in models else (_other_threads(key, models) or key)
    model = models.get(taken)
    if not isinstance(model, Mapping) or model.get("kind") not in (MODEL_KIND, TRANSFER_KIND):
        have = ", ".join(sorted(models)) or "none"
        raise ConfigError(f"--prior {prior} has no latency model for {key} (it has: {have}); calibrate without "
                          "--prior, or pass --threads / --runtimes / --precisions matching one of those")
    return dict(model), path, taken


def start_transfer(path: Path, key: str, model: Mapping[str, Any], prior_path: Path, fingerprint: Mapping[str, Any],
                   meta: Mapping[str, Any]) -> str:
    """Write the prior's transfer, with no points yet, as this device's model for `key`; returns `since`
    (the points measured from now on adapt it)."""
    from edgekd.device.identity import differences
    from edgekd.device.profiles import now_iso
    from edgekd.latency.drift import Assessment, adapt
    from edgekd.latency.recipe import config_identity

    current = config_identity(fingerprint, key, str(meta.get("runtime")))
    diff = differences(model.get("identity"), current)
    since = now_iso()
    a = Assessment(key=key, status="foreign", source=str(prior_path), differences=list(diff), prior=dict(model))
    adapt(path, a, fingerprint, meta, since=since)
    return since


def pick_students(model: Mapping[str, Any], key: str, count: int, *, shape: tuple[int, ...], classes: int,
                  seed: int, families: Any = None) -> list[str]:
    """`count` untrained students to measure: the most informative for the prior's transfer among
    POOL (or `count`, when larger) spread over the search space."""
    from edgekd.latency.design import informative_students
    from edgekd.latency.features import spec_features
    from edgekd.latency.model import LatencyModel
    from edgekd.latency.search_space import calibration_specs

    base = LatencyModel.from_dict(key, model).base_model()
    pool = calibration_specs(max(POOL, count), seed=seed, families=families)
    feats = {s: spec_features(s, shape, classes) for s in pool}
    return informative_students(base, feats, count)

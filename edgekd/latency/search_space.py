"""The students a device is calibrated on: each family's search space, and a sample spread around it.

`student_specs` lists the search space (what `select` and `deploy` choose from). `calibration_specs`
picks untrained students *around* it: each key takes the values seen in the family's space plus one
grid step beyond the largest, in new combinations, at evenly spaced ranks by parameter count, so the
sample encloses the space while the search-space specs themselves stay out of sample (every later
prediction for them is out-of-sample). Host side (model sizes come from `edgekd.latency.features`).
"""
from __future__ import annotations

import itertools
import random
from typing import Any, Iterable

from edgekd.models.spec import MODELS, canonical_spec, format_spec, parse_spec


def student_families(task: str = "image", scale: str | None = "micro") -> list[str]:
    """Names of the student families for inputs of `task` (image students take C x H x W tensors).

    `scale`: ``"micro"`` (default: the 8x8..32x32 families the default deploy chooses among),
    ``"real"`` (ImageNet-scale families and user families, `ModelFamily.scale`), or None for all.
    """
    return [name for name, fam in MODELS.items()
            if fam.role == "student" and fam.task == task and (scale is None or fam.scale == scale)]


def student_specs(task: str = "image", vocab: int | None = None, scale: str | None = "micro",
                  families: Iterable[str] | None = None) -> list[str]:
    """Every spec in the search space of every student family for `task` and `scale` (see
    `student_families`), in registry order, or of the named `families` only (any scale); text specs
    completed with ``vocab=N`` when `vocab` is given (a text model's size depends on it)."""
    names = list(families) if families is not None else student_families(task, scale)
    specs = [spec for name in names for spec in MODELS.get(name).search_space()]
    return [with_vocab(s, vocab) for s in specs] if vocab else specs


def with_vocab(spec: str, vocab: int | None) -> str:
    """`spec` with its vocabulary size filled in when it is a text spec and `vocab` is given."""
    if not vocab or MODELS.get(parse_spec(spec)[0]).task != "text":
        return spec
    from edgekd.models.bert import with_vocab as fill

    return fill(spec, int(vocab))


def _one_step_beyond(values: list[Any]) -> list[Any]:
    """`values` plus one grid step above the largest (32, 24 -> also 40): the calibration sample must
    enclose the search space, or its largest members are extrapolated (measured: the two biggest CNNs,
    whose weights no longer fit the L2 cache, were under-predicted by 11-12 % when nothing as large
    was in the sample)."""
    nums = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    if len(nums) < 2:
        return list(values)
    step = nums[-1] - nums[-2]
    beyond = nums[-1] + step
    # floats rounded: 1.0 + (1.0 - 0.7) is 1.2999999999999998, which would become the spec's text
    return [*values, round(beyond, 6) if isinstance(beyond, float) else type(nums[-1])(beyond)]


def _family_variants(name: str, specs: list[str]) -> list[str]:
    """Specs of family `name` whose values come from the family's search space (plus one grid step
    beyond its largest value per key), in new combinations."""
    fam = MODELS.get(name)
    seen: dict[str, list[Any]] = {}
    for spec in specs:
        kwargs = fam.resolve(parse_spec(spec)[1])
        for key, value in kwargs.items():
            bucket = seen.setdefault(key, [])
            if value not in bucket:
                bucket.append(value)
    choices: dict[str, list[Any]] = {}
    for key, values in seen.items():
        if values and isinstance(values[0], list):
            # lists (mlp hidden widths): any length seen, items drawn from the widths seen, non-increasing
            items = sorted(set(_one_step_beyond(sorted({v for lst in values for v in lst}))), reverse=True)
            lengths = sorted({len(lst) for lst in values})
            options = [list(c) for n in lengths for c in itertools.combinations_with_replacement(items, n)]
            choices[key] = options
        else:
            choices[key] = _one_step_beyond(values)
    keys = sorted(choices)
    out = []
    for combo in itertools.product(*(choices[k] for k in keys)):
        try:
            out.append(canonical_spec(format_spec(name, dict(zip(keys, combo)))))
        except Exception:  # noqa: BLE001 - a combination the family's validator refuses is simply not a variant
            continue
    return sorted(set(out))


# Calibration variants may be at most this many times the MACs of their family's largest search-space
# student. One grid step beyond the space in EVERY key at once (mobilenet width 2.0 x 3 blocks x depth
# 5; cnn depth 5 x width 40) reaches 2.5-6.5x the space's largest MACs, weights past the L2 cache, a
# cost regime no student of the space is in; measured on this Xeon (ONNX Runtime fp32, 1 and 2
# threads, OpenVINO, scripts/bench_transfer.py at load 20): those 3 of 24 sampled students pulled the
# fit so that the aligned 16/32-channel CNNs of the space were over-predicted by 11-29 %; without them
# held-out students within ±10 % went from 81-92 % to 88-100 % per configuration, and the largest
# CNNs of the space (no CNN variant lies between 1.0x and 1.5x) were predicted within -4..+9 %.
CALIBRATION_SIZE_MARGIN = 1.5


def calibration_specs(count: int = 36, *, seed: int = 0, exclude: Iterable[str] | None = None,
                      families: Iterable[str] | None = None, task: str = "image",
                      input_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10,
                      vocab: int | None = None, space: Iterable[str] | None = None) -> list[str]:
    """`count` student specs spread over the search space, round-robin over families.

    Within a family the variants are ordered by parameter count (by MACs where specs take a
    resolution) and picked at evenly spaced ranks (smallest and largest included), so the sample
    spans the whole size range of the space: a latency
    model fitted only on mid-sized students under-predicts the largest ones (measured: -12 % on the two
    biggest CNNs when their size class was missing), but no further than CALIBRATION_SIZE_MARGIN
    times the family's largest search-space MACs. `exclude` (default: every search-space spec)
    keeps held-out specs out of the sample. `seed` breaks ties and orders the families' picks.
    `families` (default: the micro-scale ones, `student_families`) names the families to sample, of
    any scale: a user's family (`edgekd.models.user_family`) is sampled like a built-in, and a
    variant its builder refuses (a value one step beyond the grid that it does not take) is skipped.
    Text specs (task "text") are sized and returned with ``vocab=vocab`` (1000 when not given).
    `space` (default: each family's registered search space) is the search space the sample must
    enclose, per family: a deploy over a few students (`edgekd deploy --space grid.yaml`) is
    calibrated around those, not around the family's whole registered range.
    """
    from edgekd.errors import ConfigError
    from edgekd.latency.features import spec_features

    def macs(spec: str) -> int:
        return spec_features(with_vocab(spec, vocab or 1000), input_shape, num_classes)["macs"]

    def builds(spec: str) -> bool:
        try:
            macs(spec)
        except ConfigError:  # e.g. a user builder refusing width=48 with groups=7: not a variant
            return False
        return True

    rng = random.Random(seed)
    names = [n for n in student_families(task, scale=None if families is not None else "micro")
             if families is None or n in set(families)]
    given: dict[str, list[str]] = {}
    for spec in space or ():
        given.setdefault(parse_spec(spec)[0], []).append(canonical_spec(spec))
    spaces = {n: given.get(n) or MODELS.get(n).search_space() for n in names}
    excluded = (set(student_specs(task, families=names)) | {s for v in spaces.values() for s in v}
                if exclude is None else {canonical_spec(s) for s in exclude})
    pools = []
    for name in names:
        pool = [s for s in _family_variants(name, spaces[name]) if s not in excluded and builds(s)]
        space_macs = max(macs(s) for s in spaces[name])
        pool = [s for s in pool if macs(s) <= CALIBRATION_SIZE_MARGIN * space_macs]
        rng.shuffle(pool)  # ties in size keep a seeded order
        # ranked by parameters, or by MACs where the spec takes a resolution: a student's params do not
        # change with its input size, so ranking those by params picked resolutions at random and left
        # the smallest students of the space out of the sample (measured, real space, ONNX Runtime
        # 1 thread: the five smallest, 0.4-1.9 ms, over-predicted by 10-25 % by a full calibration)
        size = "macs" if any("resolution" in parse_spec(s)[1] for s in spaces[name]) else "params"
        pool.sort(key=lambda s: spec_features(with_vocab(s, vocab or 1000), input_shape, num_classes)[size])
        pools.append(pool)
    share = [count // len(pools) + (1 if i < count % len(pools) else 0) for i in range(len(pools))] if pools else []
    # a family with fewer variants than its share hands the rest to the others
    spare = sum(max(0, k - len(p)) for k, p in zip(share, pools))
    share = [min(k, len(p)) for k, p in zip(share, pools)]
    while spare > 0 and any(k < len(p) for k, p in zip(share, pools)):
        for i, p in enumerate(pools):
            if spare > 0 and share[i] < len(p):
                share[i] += 1
                spare -= 1
    picked_per: list[list[str]] = []
    for pool, k in zip(pools, share):
        if k <= 0:
            picked_per.append([])
            continue
        ranks = sorted({round(i * (len(pool) - 1) / max(1, k - 1)) for i in range(k)})
        extra = [i for i in range(len(pool)) if i not in ranks]
        rng.shuffle(extra)
        ranks = sorted(ranks + extra[: k - len(ranks)])  # rounding collisions filled at random
        picked_per.append([pool[i] for i in ranks])
    picked: list[str] = []
    for i in range(max((len(p) for p in picked_per), default=0)):
        for p in picked_per:
            if i < len(p):
                picked.append(p[i])
    return [with_vocab(s, vocab) for s in picked]


def space_calibration_specs(count: int, space: list[str], *, seed: int = 0, families: Iterable[str] | None = None,
                            task: str = "image", input_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10,
                            vocab: int | None = None) -> list[str]:
    """The untrained students that calibrate a latency model for the search space `space` (the specs
    `edgekd deploy --space` / `edgekd profile calibrate --space` search): `count` around it
    (`calibration_specs(space=...)`: each key's values plus one step, resolution included), and, where
    a small grid has fewer variants around it than `count`, its own students fill the sample up (in
    sample, but a fit on too few points predicts nothing). `families` (default: those in `space`)."""
    names = list(families) if families is not None else list(dict.fromkeys(parse_spec(s)[0] for s in space))
    specs = calibration_specs(count, seed=seed, task=task, input_shape=input_shape, num_classes=num_classes,
                              vocab=vocab, families=names, space=space)
    return specs + [s for s in space if s not in specs][:max(0, count - len(specs))]

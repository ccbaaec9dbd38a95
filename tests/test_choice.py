"""Cross-family choice (`edgekd.deploy.choice`): the smallest student meeting the floor is found even where
the parameter order and the accuracy order disagree across families (issue 17: at 28x28 a 61k CNN
beats a 269k MLP), with few distills, and the failure report says what to change."""
from __future__ import annotations

import pytest

from edgekd.deploy.choice import family_of, frontier_search
from edgekd.deploy.report import failure_report, failure_text
from edgekd.latency.features import spec_features
from edgekd.latency.search_space import student_specs

SHAPE, CLASSES = (1, 28, 28), 10


def _params(spec: str) -> int:
    return spec_features(spec, SHAPE, CLASSES)["params"]


def _accuracy_table() -> dict[str, float]:
    """Accuracy that grows with size inside each family but not across families, as measured on
    28x28 handwriting: every MLP tops out below the floor, CNNs pass from a middle size up, the
    mobilenets pass only at their largest."""
    acc = {}
    for spec in student_specs():
        fam, p = family_of(spec), _params(spec)
        if fam == "mlp":
            acc[spec] = 0.80 + 0.12 * min(1.0, p / 270_000)  # at most 0.92
        elif fam == "cnn":
            acc[spec] = 0.90 + 0.08 * min(1.0, p / 60_000)  # 0.95 reached near 37k
        else:
            acc[spec] = 0.88 + 0.07 * min(1.0, p / 180_000)  # 0.95 only at the very top
    return acc


def test_params_order_and_accuracy_order_disagree_the_choice_still_finds_the_floor():
    acc = _accuracy_table()
    floor = 0.95
    specs = student_specs()
    by_params = sorted(specs, key=_params)
    # the premise: the largest student is an MLP that misses, so bisection by params over all of
    # them (the old rule) gives up, although students meeting the floor exist
    assert family_of(by_params[-1]) == "mlp" and acc[by_params[-1]] < floor
    passing = [s for s in specs if acc[s] >= floor]
    assert passing
    from edgekd.deploy.stages import pick

    assert pick(by_params, acc.__getitem__, floor, set()) is None  # what deploy did before issue 17

    asked: list[str] = []

    def oracle(spec: str) -> float:
        asked.append(spec)
        return acc[spec]

    res = frontier_search(specs, oracle, floor, params=_params)
    best = min(passing, key=_params)
    assert res.best == best and family_of(best) == "cnn"
    assert len(set(asked)) == len(asked)  # nothing distilled twice
    assert len(asked) <= 10, asked  # bisection per family, not a scan of 26 students


def test_frontier_respects_rejections_budget_of_distills_and_latency_key():
    acc = _accuracy_table()
    specs = student_specs()
    first = frontier_search(specs, acc.__getitem__, 0.95, params=_params).best
    second = frontier_search(specs, acc.__getitem__, 0.95, params=_params, rejected={first})
    assert second.best is not None and second.best != first and _params(second.best) >= _params(first)
    # a cap on distills: the search says it is partial instead of pretending
    capped = frontier_search(specs, acc.__getitem__, 0.95, params=_params, max_distills=1)
    assert not capped.complete and len(capped.asked) == 1
    # smallest key other than params: the fastest passing student under a latency table
    latency = {s: 1.0 + _params(s) / 1e4 * (3.0 if family_of(s) == "cnn" else 1.0) for s in specs}
    fastest = frontier_search(specs, acc.__getitem__, 0.95, params=_params, key=latency.__getitem__).best
    assert fastest == min((s for s in specs if acc[s] >= 0.95), key=latency.__getitem__)
    assert frontier_search(specs, acc.__getitem__, 0.999, params=_params).best is None


def test_failure_report_names_the_best_reachable_the_budget_needed_and_the_flags():
    acc = _accuracy_table()
    specs = student_specs()
    table = {s: (0.01 + _params(s) * 1e-6, "predicted") for s in specs}
    budget = 0.03  # only students under 20k params fit: no CNN meeting 0.95 among them
    within = [s for s in specs if table[s][0] <= budget]
    floor = 0.95
    assert frontier_search(within, acc.__getitem__, floor, params=_params).best is None
    distilled = {s: acc[s] for s in within}
    rep = failure_report(floor=floor, budget_ms=budget, percentile=90, epochs=15, table=table, accuracies=distilled,
                         within=within, accuracy_of=acc.__getitem__, params=_params, rejected=set(),
                         teacher={"latency_ms": 1.0, "val_accuracy": 0.97, "spec": "resnet", "source": "measured"},
                         max_distills=8)
    best_spec = max(within, key=acc.__getitem__)
    assert rep["best_reachable"]["spec"] == best_spec
    assert rep["best_reachable"]["val_accuracy"] == acc[best_spec]
    need = rep["budget_needed"]
    fastest = min((s for s in specs if acc[s] >= floor), key=lambda s: table[s][0])
    assert need["spec"] == fastest and need["budget_ms"] == table[fastest][0] and need["budget_ms"] > budget
    text = failure_text(rep)
    for flag in ("--min-accuracy", "--budget-ms", "--epochs 30"):
        assert flag in text
    # the --budget-ms suggested admits the student named
    suggested = float(text.split("--budget-ms ")[1].split()[0])
    assert suggested >= need["budget_ms"]
    # the --min-accuracy suggested is reached by the best reachable student
    assert float(text.split("--min-accuracy ")[1].split()[0]) <= acc[best_spec]


@pytest.mark.parametrize("teacher_ms,named", [(0.5, True), (0.02, False)])
def test_the_teacher_bounds_the_budget_needed_only_when_it_needs_more_than_the_budget(teacher_ms, named):
    """No student reaches the floor at any latency: the teacher (val above the floor) is the bound, if
    it needs more than the budget. A teacher inside the budget (with --space it may run at another
    resolution than the students) made the report suggest a *smaller* --budget-ms than the one given."""
    specs = ["cnn:depth=1,width=8", "cnn:depth=2,width=8"]
    table = {s: (0.01 * (i + 1), "predicted") for i, s in enumerate(specs)}
    low = {s: 0.5 for s in specs}
    rep = failure_report(floor=0.95, budget_ms=0.05, percentile=90, epochs=15, table=table, accuracies=low,
                         within=specs, accuracy_of=low.__getitem__, params=_params, rejected=set(),
                         teacher={"latency_ms": teacher_ms, "val_accuracy": 0.97, "spec": "resnet", "source": "measured"})
    if named:
        assert rep["budget_needed"]["from"] == "teacher" and rep["budget_needed"]["budget_ms"] == teacher_ms
    else:
        assert rep["budget_needed"] is None and "--budget-ms" not in failure_text(rep)


def test_a_tie_in_params_goes_to_the_more_accurate_resolution_not_the_spelling():
    """One architecture at two resolutions has the same params: the tie goes to the more accurate
    (measured in the real-scale joint bench: 96 px 92.19 % val vs 128 px 88.48 %, and the search took
    128 px because "resolution=128" sorts first)."""
    specs = ["resnet_basic:depth=10,resolution=96,width=8", "resnet_basic:depth=10,resolution=128,width=8",
             "resnet_basic:depth=10,resolution=96,width=16"]
    params = {specs[0]: 78178, specs[1]: 78178, specs[2]: 309178}
    acc = {specs[0]: 0.9219, specs[1]: 0.8848, specs[2]: 0.9368}
    best = frontier_search(specs, acc.__getitem__, 0.85, params=params.__getitem__).best
    assert best == specs[0]
    acc[specs[0]], acc[specs[1]] = 0.8848, 0.9219  # and the other way round
    assert frontier_search(specs, acc.__getitem__, 0.85, params=params.__getitem__).best == specs[1]


def test_equal_size_and_accuracy_goes_to_the_faster_not_the_spelling():
    """The joint bench at >= 10 M MACs (2026-12-01): ResNet-10 width 16 at 96 and 128 px, both 96.28 %
    val (259 of 269), and the deploy took the 128 px one, slower, because "resolution=128" sorts
    first. With the predicted latency as tiebreak the faster wins; without one, the old order."""
    specs = ["resnet_basic:depth=10,resolution=128,width=16", "resnet_basic:depth=10,resolution=96,width=16"]
    params = dict.fromkeys(specs, 309178)
    acc = dict.fromkeys(specs, 0.9628)
    latency = {specs[0]: 0.54, specs[1]: 0.31}
    assert frontier_search(specs, acc.__getitem__, 0.85, params=params.__getitem__,
                           tiebreak=latency.__getitem__).best == specs[1]
    latency[specs[0]] = 0.2  # the tiebreak decides, whichever way
    assert frontier_search(specs, acc.__getitem__, 0.85, params=params.__getitem__,
                           tiebreak=latency.__getitem__).best == specs[0]
    assert frontier_search(specs, acc.__getitem__, 0.85, params=params.__getitem__).best == specs[0]


def _view(runtime: str, precision: str, spec: str, params: int, val: float, latency: float):
    from edgekd.deploy.joint import ConfigView, size_bytes

    v = ConfigView(format={"onnxruntime": "onnx", "openvino": "openvino"}[runtime], runtime=runtime,
                   precision=precision, within_budget=3, students=5, winner=spec, params=params,
                   val_accuracy=val, latency_ms=latency, latency_source="predicted",
                   val_source="fp32 student" if precision == "fp32" else f"{precision} artifact on {runtime} (host)")
    v.size_bytes = size_bytes(params, precision)
    v.accuracy_per_mb = val / (v.size_bytes / 1e6)
    return ((v.format, precision), spec, (latency, "predicted"), v)


CONFIGS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "int8")]


def test_joint_choice_is_never_less_accurate_than_the_reference_configuration():
    """Session 7's case: the reference's winner and the same net in INT8. With the INT8 artifact's own
    val accuracy below the reference's, accuracy per MB alone would still take it (a quarter of the
    bytes); the rule keeps the reference's, and says why the INT8 one lost."""
    from edgekd.deploy.joint import choose_across

    ref = _view("onnxruntime", "fp32", "cnn:width=16", 10_000, 0.9700, 0.30)
    int8 = _view("openvino", "int8", "cnn:width=16", 10_000, 0.9663, 0.25)
    config, spec, _, best = choose_across([ref, int8], CONFIGS)
    assert config == ("onnx", "fp32") and best is ref[3] and best.status == "chosen"
    assert int8[3].status == "lost" and "96.63% (int8 artifact on openvino (host)) < 97.00%" in int8[3].why
    assert "reference configuration" in int8[3].why and "at least as accurate" in best.why
    # as accurate on val: the smaller bytes win, as before
    ref = _view("onnxruntime", "fp32", "cnn:width=16", 10_000, 0.9700, 0.30)
    same = _view("openvino", "int8", "cnn:width=16", 10_000, 0.9700, 0.25)
    config, _, _, best = choose_across([ref, same], CONFIGS)
    assert config == ("openvino", "int8") and ref[3].status == "lost" and "per MB" in ref[3].why
    # more accurate and smaller on another configuration wins; a less accurate one loses even if tinier
    ref = _view("onnxruntime", "fp32", "cnn:width=16", 10_000, 0.95, 0.30)
    better = _view("onnxruntime", "int8", "cnn:width=24", 20_000, 0.96, 0.28)
    tiny = _view("openvino", "int8", "cnn:width=8", 3_000, 0.94, 0.10)
    config, spec, _, best = choose_across([ref, better, tiny], CONFIGS)
    assert (config, spec) == (("onnx", "int8"), "cnn:width=24")
    assert "< 95.00%" in tiny[3].why and "per MB" in ref[3].why


def test_without_a_reference_winner_every_configuration_competes_on_accuracy_per_mb():
    from edgekd.deploy.joint import choose_across

    a = _view("onnxruntime", "int8", "cnn:width=24", 20_000, 0.96, 0.28)
    b = _view("openvino", "int8", "cnn:width=8", 3_000, 0.94, 0.10)
    config, spec, _, best = choose_across([a, b], CONFIGS)
    assert (config, spec) == (("openvino", "int8"), "cnn:width=8") and a[3].status == "lost"
    assert "reference" not in best.why


def test_an_int8_artifact_under_the_floor_moves_the_search_to_the_next_student_within_a_bound():
    """The smallest student meeting the floor on fp32 val sits at its edge, so its INT8 artifact often
    misses it: that student is out of the configuration (for later rounds too) and the frontier search
    goes on to the next one, at most 1 + REDUCED_RETRIES students per round; a refused export counts as
    a miss and is recorded as refused."""
    from edgekd.deploy.joint import REDUCED_RETRIES, first_that_holds
    from edgekd.errors import ExportError

    # accuracy that grows with size in every family, crossing the floor part-way up
    specs = sorted(student_specs(), key=_params)
    acc = {spec: 0.90 + 0.08 * min(1.0, _params(spec) / 250_000) for spec in specs}
    floor = 0.95
    first = frontier_search(specs, acc.__getitem__, floor, params=_params).best

    def search(exclude: set[str], narrate: bool) -> str | None:
        return frontier_search(specs, acc.__getitem__, floor, params=_params, rejected=exclude).best

    # quantization costs a little more than the edge student's margin over the floor: it misses, and so
    # does any other within that cost of the floor; the first one with enough margin holds
    cost = acc[first] - floor + 0.001
    measured: list[str] = []

    def int8_val(spec: str) -> float:
        measured.append(spec)
        return acc[spec] - cost

    missed: set[str] = set()
    said: list[str] = []
    spec, val, misses = first_that_holds(search, int8_val, floor, missed=missed, refuse=lambda s, w: None,
                                         say=said.append, retries=10)
    assert spec is not None and val is not None and val >= floor and acc[spec] - cost == val
    assert measured[0] == first and first in missed and spec not in missed
    assert _params(spec) > _params(first) and len(misses) == len(measured) - 1 >= 1
    assert f"{first}'s int8 artifact has val accuracy" in misses[0] and "trying the next student" in said[0]
    # every student the search found before it was measured and missed: nothing smaller that holds was skipped
    assert all(acc[m] - cost < floor for m in measured[:-1])

    # the bound: quantization costs 10 points, nothing holds; 1 + REDUCED_RETRIES are measured, then
    # the round gives up on the configuration and a later round starts past them
    measured.clear()
    missed = set()
    spec, val, misses = first_that_holds(search, lambda s: (measured.append(s), acc[s] - 0.1)[1], floor,
                                         missed=missed, refuse=lambda s, w: None, say=said.append)
    assert (spec, val) == (None, None) and len(measured) == len(misses) == 1 + REDUCED_RETRIES
    assert missed == set(measured) and "REDUCED_RETRIES" in said[-1]
    again: list[str] = []
    first_that_holds(search, lambda s: (again.append(s), acc[s] - 0.1)[1], floor, missed=missed,
                     refuse=lambda s, w: None)
    assert not set(again) & set(measured)

    # a refused export: recorded through `refuse`, and the next student is tried
    refused: dict[str, str] = {}

    def gate(spec: str) -> float:
        if spec == first:
            raise ExportError("int8 accuracy drop 3.1 points > 1.0")
        return acc[spec]

    spec, val, misses = first_that_holds(search, gate, floor, missed=set(), refuse=refused.__setitem__)
    assert spec is not None and spec != first and refused == {first: "int8 accuracy drop 3.1 points > 1.0"}
    assert "refused by the int8 export gate" in misses[0]

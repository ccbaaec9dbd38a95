"""`edgekd select`: the budget rule, reasons, closest miss, measured vs predicted, the prior, the plot."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from latency_helpers import calibrated_profile, copy_profile

from edgekd.cli import main
from edgekd.errors import ConfigError, ProfileError
from edgekd.device.profiles import Measurement, Profile, save_profile
from edgekd.deploy.candidates import MEASURED, PREDICTED, PRIOR, Candidate
from edgekd.deploy.select import apply_rule, select


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return calibrated_profile(tmp_path_factory.getbasetemp() / "latency-profile")


def _cand(spec, params, latency, accuracy=None, source=MEASURED):
    return Candidate(spec=spec, runtime="onnxruntime", format="onnx", precision="fp32", threads=1, batch=1,
                     params=params, macs=params * 10, latency_ms=latency, latency_source=source, accuracy=accuracy)


def test_smallest_that_fits_wins_and_every_candidate_says_why():
    cands = [_cand("big", 5000, 0.5, 0.99), _cand("small", 100, 0.5, 0.90), _cand("mid", 1000, 0.8, 0.98),
             _cand("slow", 50, 3.0, 0.99)]
    chosen, miss = apply_rule(cands, budget_ms=1.0, min_accuracy=0.95)
    assert chosen.spec == "mid" and miss is None
    by = {c.spec: c for c in cands}
    assert by["slow"].status == "rejected" and "> budget 1 ms" in " ".join(by["slow"].reasons)
    assert by["small"].status == "rejected" and "< floor 95.00%" in " ".join(by["small"].reasons)
    assert by["big"].status == "fits" and "5,000 params > 1,000" in by["big"].reasons[0]
    assert by["mid"].reasons[0] == "smallest that fits"
    assert [c.spec for c in cands] == ["slow", "small", "mid", "big"]  # rule order: params ascending


def test_tie_on_params_goes_to_higher_accuracy():
    cands = [_cand("a", 100, 0.2, 0.95), _cand("b", 100, 0.3, 0.97)]
    chosen, _ = apply_rule(cands, budget_ms=1.0, min_accuracy=None)
    assert chosen.spec == "b"


def test_unmeasured_accuracy_is_not_assumed_unless_allowed():
    cands = [_cand("p", 100, 0.2, None, PREDICTED), _cand("m", 900, 0.4, 0.99)]
    chosen, _ = apply_rule(cands, budget_ms=1.0, min_accuracy=0.97)
    assert chosen.spec == "m"
    assert "accuracy not measured" in " ".join(cands[0].reasons)
    chosen, _ = apply_rule(cands, budget_ms=1.0, min_accuracy=0.97, allow_unmeasured_accuracy=True)
    assert chosen.spec == "p"


def test_closest_miss_when_nothing_fits():
    cands = [_cand("far", 100, 5.0, 0.99), _cand("near", 200, 1.1, 0.99), _cand("inacc", 300, 0.5, 0.5)]
    chosen, miss = apply_rule(cands, budget_ms=1.0, min_accuracy=0.97)
    assert chosen is None and miss.spec == "near"


def test_bad_budget_and_floor_are_user_errors():
    with pytest.raises(ConfigError, match="positive"):
        apply_rule([_cand("a", 1, 1.0)], budget_ms=0, min_accuracy=None)
    with pytest.raises(ConfigError, match="fraction"):
        apply_rule([_cand("a", 1, 1.0)], budget_ms=1, min_accuracy=97)


def test_select_on_a_measured_profile_flags_predictions(calibrated):
    profile = Profile.load(calibrated["path"])
    sel = select(profile, budget_ms=1000.0, percentile=50)
    sources = {c.latency_source for c in sel.candidates}
    assert sources == {MEASURED, PREDICTED}
    measured_specs = {m.spec for m in profile.measurements.values()}
    for c in sel.candidates:
        assert (c.latency_source == MEASURED) == (c.spec in measured_specs)
        if c.latency_source == PREDICTED:
            assert c.latency_ms == c.predicted_ms and c.latency_label == "predicted"
    assert sel.chosen.params == min(c.params for c in sel.candidates)
    tight = select(profile, budget_ms=1e-6, percentile=90)
    assert tight.chosen is None and tight.closest_miss is not None


def test_measured_accuracy_decides_against_the_floor(calibrated, tmp_path):
    path = copy_profile(calibrated["path"], tmp_path)
    profile = Profile.load(path)
    spec = "cnn:depth=2,width=8"
    profile.record(Measurement(model_sha256="a" * 64, format="onnx", precision="fp32", threads=1, batch=1, spec=spec,
                               params=1442, macs=23200, latency={"p50_ms": 0.001, "p90_ms": 0.002, "p99_ms": 0.003},
                               accuracy=0.975, runtime="onnxruntime"))
    save_profile(profile, path)
    sel = select(Profile.load(path), budget_ms=0.01, percentile=90, min_accuracy=0.97)
    assert sel.chosen.spec == spec and sel.chosen.latency_source == MEASURED and sel.chosen.latency_ms == 0.002
    assert sel.chosen.accuracy == 0.975
    # through the CLI: the same answer, as JSON
    out = CliRunner().invoke(main, ["select", "--profile", str(path), "--budget-ms", "0.01", "--min-accuracy", "0.97",
                                    "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["chosen"]["spec"] == spec


def test_cli_prints_reasons_and_exits_1_on_no_fit(calibrated):
    ok = CliRunner().invoke(main, ["select", "--profile", str(calibrated["path"]), "--budget-ms", "1000",
                                   "--percentile", "50"])
    assert ok.exit_code == 0, ok.output
    assert "chosen:" in ok.output and "smallest that fits" in ok.output and "predicted" in ok.output
    none = CliRunner().invoke(main, ["select", "--profile", str(calibrated["path"]), "--budget-ms", "0.000001"])
    assert none.exit_code == 1 and "closest miss:" in none.output
    floor = CliRunner().invoke(main, ["select", "--profile", str(calibrated["path"]), "--budget-ms", "1000",
                                      "--min-accuracy", "0.9"])
    assert floor.exit_code == 1 and "accuracy not measured" in floor.output


def test_cli_bad_input_exits_2(calibrated, tmp_path):
    missing = CliRunner().invoke(main, ["select", "--profile", str(tmp_path / "nope.yaml"), "--budget-ms", "1"])
    assert missing.exit_code == 2 and "nope.yaml" in missing.output
    fmt = CliRunner().invoke(main, ["select", "--profile", str(calibrated["path"]), "--budget-ms", "1",
                                    "--format", "onxx"])
    assert fmt.exit_code == 2 and "onnx" in fmt.output


def test_without_measurements_the_target_prior_is_used_and_labelled(tmp_path):
    from edgekd.device.targets import load_target

    empty = Profile(name="fresh", path=tmp_path / "fresh.yaml")
    sel = select(empty, budget_ms=1.0, input_shape=(1, 8, 8), num_classes=10, target=load_target("jetson"))
    assert sel.candidates and {c.latency_source for c in sel.candidates} == {PRIOR}
    assert all(c.latency_label == "predicted, unmeasured" for c in sel.candidates)
    assert all("predicted, unmeasured" in " ".join(c.reasons) for c in sel.candidates)
    assert sel.candidates[0].format == "tensorrt"
    with pytest.raises(ProfileError, match="calibrate"):
        select(empty, budget_ms=1.0, input_shape=(1, 8, 8), num_classes=10)


def test_plot_writes_a_png_with_the_chosen_student(calibrated, tmp_path):
    from edgekd.latency.section import latency_section, update_profile_section

    path = copy_profile(calibrated["path"], tmp_path)
    profile = Profile.load(path)
    for i, (spec, params, lat, acc) in enumerate([("cnn:depth=2,width=8", 1442, 0.008, 0.97),
                                                  ("resnet:blocks=1,depth=3,width=32", 308074, 0.07, 0.985),
                                                  ("mlp:hidden=16", 1210, 0.006, 0.93)]):
        profile.record(Measurement(model_sha256=str(i) * 64, format="onnx", precision="fp32", threads=0, batch=1,
                                   spec=spec, params=params, latency={"p50_ms": lat, "p90_ms": lat * 1.1},
                                   accuracy=acc, runtime="onnxruntime"))
    save_profile(profile, path)

    def mark(prof):
        sec = latency_section(prof)
        sec["deployments"].append({"model_sha256": "0" * 64, "budget_ms": 0.014, "percentile": 90, "min_accuracy": 0.97})
        prof.latency_model = sec

    update_profile_section(path, mark)
    out = CliRunner().invoke(main, ["profile", "plot", str(path), "-o", str(tmp_path / "pareto.png")])
    assert out.exit_code == 0, out.output
    png = (tmp_path / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    bare = CliRunner().invoke(main, ["profile", "plot", str(calibrated["path"]), "-o", str(tmp_path / "x.png")])
    assert bare.exit_code == 2 and "no measurement with an accuracy" in bare.output


def test_plot_says_why_each_measurement_it_leaves_out_is_left_out(tmp_path):
    """The plot draws only comparable, current figures and counts the rest by reason: no latency at the
    plotted percentile, an untrained calibration row (no accuracy), a row of another thread setting, an
    INT8 row of another quantization recipe than this device's exports get now (`edgekd.latency.recipe`)."""
    from edgekd.latency.plot import pareto_points
    from edgekd.latency.recipe import current_recipe

    profile = Profile(name="host", path=tmp_path / "host.yaml")
    rows = [("fp32", 1, 0.97, None), ("fp32", 1, None, None), ("fp32", 2, 0.97, None),
            ("int8", 1, 0.96, "an-older-recipe"), ("int8", 1, 0.96, current_recipe(profile.device, "onnxruntime", "int8"))]
    for i, (precision, threads, acc, recipe) in enumerate(rows):
        profile.record(Measurement(model_sha256=str(i) * 64, format="onnx", precision=precision, threads=threads,
                                   batch=1, spec="cnn:depth=2,width=8", params=1442,
                                   latency={"p50_ms": 0.01, "p90_ms": 0.011}, accuracy=acc, runtime="onnxruntime",
                                   recipe=recipe))
    points, skipped = pareto_points(profile, 90, threads=1)
    assert sorted(p["precision"] for p in points) == ["fp32", "int8"]
    assert skipped == {"no accuracy (untrained calibration)": 1, "other thread setting": 1,
                       "INT8 of another quantization recipe": 1}
    # at p99, which these rows never measured, every row is left out for that, not for its accuracy
    assert pareto_points(profile, 99, threads=1) == ([], {"no p99 latency": len(rows)})


def test_cpu_and_npu_figures_of_one_device_never_mix(tmp_path):
    """OpenVINO measured on the CPU (one row from before accelerators) and on the NPU of one host:
    select on the NPU sees only NPU rows, by default only CPU rows; each accelerator gets its own
    latency model key when the profile is fitted."""
    from edgekd.latency.section import fit_profile

    profile = Profile(name="host", path=tmp_path / "host.yaml")
    specs = [f"cnn:depth=2,width={w}" for w in (4, 8, 12, 16, 20, 24, 28)]
    for i, spec in enumerate(specs):
        for accelerator, ms in ((None, 1.0 + i), ("npu", 0.1 + 0.01 * i)):
            profile.record(Measurement(model_sha256=f"{i}{accelerator}".ljust(64, "0"), format="openvino",
                                       precision="fp32", threads=1, batch=1, spec=spec, runtime="openvino",
                                       accelerator=accelerator, latency={"p50_ms": ms, "p90_ms": ms * 1.1}))
    assert len(profile.measurements) == 2 * len(specs)
    on_npu = select(profile, budget_ms=0.5, input_shape=(1, 8, 8), num_classes=10, specs=[], accelerator="NPU")
    assert {c.latency_ms for c in on_npu.candidates} == {0.1 + 0.01 * i for i in range(len(specs))}
    assert on_npu.chosen is not None
    on_cpu = select(profile, budget_ms=0.5, input_shape=(1, 8, 8), num_classes=10, specs=[])
    assert {c.latency_ms for c in on_cpu.candidates} == {1.0 + i for i in range(len(specs))} and on_cpu.chosen is None
    profile.latency_model = {"schema": "edgekd.latency/1", "input_shape": [1, 8, 8], "num_classes": 10}
    fitted = fit_profile(profile)
    assert {"openvino/fp32/t1/b1", "openvino/fp32/t1/b1@npu"} <= set(fitted)
    assert profile.latency_model["models"]["openvino/fp32/t1/b1@npu"]["accelerator"] == "npu"
    with pytest.raises(ConfigError, match="unknown accelerator 'tpu'"):
        select(profile, budget_ms=0.5, input_shape=(1, 8, 8), num_classes=10, specs=[], accelerator="tpu")


def test_latency_model_keys_name_the_accelerator_the_same_way_everywhere():
    from edgekd.deploy.candidates import Config
    from edgekd.latency.model import model_key, shape_tag

    assert model_key("openvino", "fp32", 0, 1) == model_key("openvino", "fp32", 0, 1, accelerator="cpu") \
        == "openvino/fp32/t0/b1"  # the default accelerator: the key as it was before accelerators
    assert model_key("tensorrt", "fp16", 0, 1, accelerator="gpu") == "tensorrt/fp16/t0/b1"
    assert model_key("tensorrt", "fp16", 0, 1, accelerator="dla") == "tensorrt/fp16/t0/b1@dla"
    text = model_key("openvino", "fp32", 0, 1, (16,), accelerator="npu")
    assert text == "openvino/fp32/t0/b1@npu/seq16"
    assert Config("openvino", "openvino", "fp32", 0, 1, shape_tag((16,)), "npu").key == text  # select's own key

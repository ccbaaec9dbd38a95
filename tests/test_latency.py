"""The latency model: NNLS fit, cross-validation, features, the datasheet prior, calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from latency_helpers import COUNT, FAST_REQUEST, calibrated_profile

from edgekd.latency.calibrate import CALIBRATION_ROUNDS
from edgekd.latency.section import fit_profile, latency_section
from edgekd.latency.search_space import calibration_specs, student_specs
from edgekd.errors import ProfileError
from edgekd.latency.model import (PREDICTED_UNMEASURED, TERM_NAMES, LatencyModel, Sample, design_row, fit_latency_model,
                            metric_for, model_key, prior_model)
from edgekd.latency.features import LEGACY_PAD_BLOCK, padded_conv_macs, spec_features
from edgekd.device.profiles import Measurement, Profile

SHAPE, CLASSES = (1, 8, 8), 10


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return calibrated_profile(tmp_path_factory.getbasetemp() / "latency-profile")


def _synthetic(specs, coef, pad_block=LEGACY_PAD_BLOCK):
    out = []
    for spec in specs:
        feats = spec_features(spec, SHAPE, CLASSES)
        lat = float(design_row(feats, pad_block) @ coef)
        out.append(Sample(spec, feats, {"p50_ms": lat, "p90_ms": 1.1 * lat, "p99_ms": 1.3 * lat}))
    return out


def test_fit_recovers_a_non_negative_ground_truth():
    coef = np.zeros(len(TERM_NAMES))
    truth = {"const": 0.005, "conv_macs": 0.01, "linear_macs": 0.03, "conv": 0.001, "depthwise_conv": 0.002}
    for name, value in truth.items():
        coef[TERM_NAMES.index(name)] = value
    samples = _synthetic(student_specs(), coef)
    model = fit_latency_model(samples, "onnxruntime/fp32/t1/b1", folds=5)
    for s in samples:
        assert model.predict(s.features) == pytest.approx(s.latency["p50_ms"], rel=1e-3)
        assert model.predict(s.features, "p90_ms") == pytest.approx(s.latency["p90_ms"], rel=1e-3)
    assert model.cv["p50_ms"]["within_10pct"] == 1.0
    assert model.cv["p50_ms"]["median_abs_rel"] < 1e-3
    assert model.n_samples == len(samples) and model.folds == 5


def test_padding_counts_the_macs_of_channels_rounded_up_to_blocks():
    # cnn width 12, depth 2 on 8x8: conv 1->12 at 8x8 (stride 1), conv 12->24 at 4x4 (stride 2), 3x3 kernels
    f = spec_features("cnn:width=12,depth=2", SHAPE, CLASSES)
    first, second = 64 * 9 * 1 * 12, 16 * 9 * 12 * 24
    assert f["conv_macs"] == first + second and f["conv_shapes"] == f"1:12:{first} 12:24:{second}"
    assert padded_conv_macs(f, 1, 1) == 0
    # the image conv keeps its 1 input channel; only its 12 outputs round up
    assert padded_conv_macs(f, 16, 16) == pytest.approx(64 * 9 * 1 * 16 - first + 16 * 9 * 16 * 32 - second)
    assert padded_conv_macs(f, 32, 64) == pytest.approx(64 * 9 * 1 * 64 - first + 16 * 9 * 32 * 64 - second)
    assert padded_conv_macs(spec_features("mlp:hidden=32", SHAPE, CLASSES), 32, 64) == 0


def test_fit_finds_the_channel_blocks_the_device_pads_to():
    coef = np.zeros(len(TERM_NAMES))
    truth = {"const": 0.005, "conv_macs": 0.01, "conv_pad_macs": 0.01, "depthwise_macs": 0.02, "linear_macs": 0.03,
             "conv": 0.001}
    for name, value in truth.items():
        coef[TERM_NAMES.index(name)] = value
    specs = student_specs() + calibration_specs(30, seed=0)
    samples = _synthetic(specs, coef, pad_block=(32, 64))
    model = fit_latency_model(samples, "onnxruntime/fp32/t1/b1")
    assert model.pad_block == (32, 64)
    assert model.coef["p50_ms"]["conv_pad_macs"] == pytest.approx(0.01, rel=1e-3)
    # too few measurements to choose among 25 pairs: the fit keeps the default blocks
    assert fit_latency_model(samples[:12], "k").pad_block == LEGACY_PAD_BLOCK
    assert model.cv["p50_ms"]["max_abs_rel"] < 1e-3
    back = LatencyModel.from_dict(model.key, yaml.safe_load(yaml.safe_dump(model.to_dict())))
    assert back.pad_block == (32, 64) and back.predict(samples[0].features) == pytest.approx(model.predict(samples[0].features))
    # the same truth read at the wrong blocks does not fit: the choice is what makes it exact
    wrong = LatencyModel(**{**model.__dict__, "pad_block": (16, 16)})
    assert max(abs(wrong.predict(s.features) / s.latency["p50_ms"] - 1) for s in samples) > 0.01


def test_the_fit_depends_on_the_measurements_not_their_order():
    """The folds that choose the channel blocks and give the cross-validated error are drawn over the
    samples' positions: the same measurements in another order (a profile rewritten, a store merged)
    must still fit the same model."""
    coef = np.zeros(len(TERM_NAMES))
    for name, value in {"const": 0.005, "conv_macs": 0.01, "conv_pad_macs": 0.01, "linear_macs": 0.03}.items():
        coef[TERM_NAMES.index(name)] = value
    rng = np.random.default_rng(3)
    samples = [Sample(s.name, s.features, {k: v * float(rng.uniform(0.85, 1.15)) for k, v in s.latency.items()})
               for s in _synthetic(student_specs() + calibration_specs(20, seed=1), coef, pad_block=(16, 32))]
    first = fit_latency_model(samples, "k")
    for order in (samples[::-1], [samples[i] for i in rng.permutation(len(samples))]):
        again = fit_latency_model(order, "k")
        assert (again.coef, again.cv, again.pad_block) == (first.coef, first.cv, first.pad_block)


def test_features_recorded_before_conv_shapes_still_fit_at_the_old_blocks():
    old = []
    for s in _synthetic(student_specs(), np.full(len(TERM_NAMES), 1e-3)):
        feats = {k: v for k, v in s.features.items() if k != "conv_shapes"}
        feats["conv_pad_macs"] = int(padded_conv_macs(s.features, *LEGACY_PAD_BLOCK))
        old.append(Sample(s.name, feats, s.latency))
    model = fit_latency_model(old, "k")
    assert model.pad_block == LEGACY_PAD_BLOCK
    assert model.predict(old[5].features) == pytest.approx(old[5].latency["p50_ms"], rel=1e-3)
    with pytest.raises(ProfileError, match="calibrate"):
        padded_conv_macs(old[5].features, 32, 64)
    # a model stored before pad_block existed reads as the old blocks; a broken one says what to do
    stored = {k: v for k, v in model.to_dict().items() if k != "pad_block"}
    assert LatencyModel.from_dict("k", stored).pad_block == LEGACY_PAD_BLOCK
    with pytest.raises(ProfileError, match="calibrate"):
        LatencyModel.from_dict("k", {**stored, "pad_block": [0, "x"]})


def test_coefficients_stay_non_negative_and_explain_the_prediction():
    rng = np.random.default_rng(0)
    samples = []
    for spec in student_specs():
        feats = spec_features(spec, SHAPE, CLASSES)
        lat = float(rng.uniform(0.005, 0.05))  # latencies unrelated to the features: a worst case
        samples.append(Sample(spec, feats, {"p50_ms": lat}))
    model = fit_latency_model(samples, "k")
    assert all(v >= 0 for v in model.coef["p50_ms"].values())
    feats = samples[0].features
    parts = model.explain(feats)
    assert sum(ms for _, ms in parts) == pytest.approx(model.predict(feats))
    assert set(model.coef) == {"p50_ms"}  # no p90/p99 measured -> no model for them


def test_too_few_measurements_say_what_to_run():
    samples = _synthetic(student_specs()[:3], np.ones(len(TERM_NAMES)) * 1e-3)
    with pytest.raises(ProfileError, match="edgekd profile calibrate"):
        fit_latency_model(samples, "onnxruntime/fp32/t1/b1")


def test_model_round_trips_through_yaml():
    samples = _synthetic(student_specs(), np.full(len(TERM_NAMES), 1e-3))
    model = fit_latency_model(samples, "onnxruntime/fp32/t0/b1")
    back = LatencyModel.from_dict(model.key, yaml.safe_load(yaml.safe_dump(model.to_dict())))
    feats = samples[3].features
    assert back.predict(feats) == pytest.approx(model.predict(feats))
    assert back.cv == model.cv
    with pytest.raises(ProfileError, match="calibrate"):
        LatencyModel.from_dict("x", {"kind": "something-else"})


def test_features_split_macs_by_layer_kind():
    f = spec_features("mobilenet:width=0.5,depth=2", SHAPE, CLASSES)
    assert f["depthwise_macs"] > 0 and f["conv_macs"] > 0 and f["linear_macs"] > 0
    assert f["conv_macs"] + f["depthwise_macs"] + f["linear_macs"] == f["macs"]
    mlp = spec_features("mlp:hidden=32", SHAPE, CLASSES)
    assert mlp["conv_macs"] == 0 and mlp["linear_macs"] == mlp["macs"] == 64 * 32 + 32 * 10
    assert f["matmul_macs"] == mlp["matmul_macs"] == 0  # every MAC of an image student is in a layer
    # a transformer's attention is not: QK^T and probs x V cost L*L*hidden MACs each, per layer
    text = spec_features("tinybert:layers=2,hidden=48,heads=2,intermediate=96,vocab=300", (16,), 3)
    assert text["matmul_macs"] == 2 * 2 * 16 * 16 * 48


def test_features_split_dense_conv_macs_by_shape():
    """`pointwise_macs`: 1 x 1 dense convs on a map (not on a 1 x 1 map: matvec_conv_macs prices those);
    `stem_macs`: dense convs reading at most 4 channels (the image). Counting them adds no reader to
    the graph counter: a plain chain still has no fan-out."""
    from torch import nn

    from edgekd.latency.features import architecture_features, matvec_conv_macs

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1))
    f = architecture_features(net, (3, 6, 6))
    stem, pointwise, fc = 36 * 9 * 3 * 8, 36 * 8 * 16, 16 * 4
    assert f["conv_macs"] == stem + pointwise + fc and f["depthwise_macs"] == 36 * 9 * 16
    assert f["stem_macs"] == stem and f["pointwise_macs"] == pointwise and matvec_conv_macs(f) == fc
    assert f["branch_conv_macs"] == 0
    # a gray-image CNN's first conv is its stem; an MLP has neither
    cnn = spec_features("cnn:width=8,depth=2", SHAPE, CLASSES)
    assert cnn["stem_macs"] == 64 * 9 * 8 and cnn["pointwise_macs"] == 0
    mlp = spec_features("mlp:hidden=32", SHAPE, CLASSES)
    assert mlp["stem_macs"] == mlp["pointwise_macs"] == 0


def test_fit_prices_pointwise_and_stem_convs_apart_from_other_convs():
    """A device where 1 x 1 convs and the image-reading stem cost more per MAC than other convs: the fit
    recovers both extra costs; a device where they do not fits them to 0."""
    specs = student_specs() + calibration_specs(30, seed=0)
    base = {"const": 0.005, "conv_macs": 0.01, "depthwise_macs": 0.02, "linear_macs": 0.03, "conv": 0.001}
    for truth in (base, {**base, "pointwise_macs": 0.02, "stem_macs": 0.01}):
        coef = np.zeros(len(TERM_NAMES))
        for name, value in truth.items():
            coef[TERM_NAMES.index(name)] = value
        samples = _synthetic(specs, coef)
        assert any(s.features["pointwise_macs"] for s in samples) and any(s.features["stem_macs"] for s in samples)
        model = fit_latency_model(samples, "onnxruntime/fp32/t1/b1")
        assert model.cv["p50_ms"]["max_abs_rel"] < 1e-3
        for name in ("pointwise_macs", "stem_macs"):
            assert model.coef["p50_ms"][name] == pytest.approx(truth.get(name, 0.0), rel=1e-3, abs=1e-9)


def test_features_count_elementwise_work_by_kind():
    """Elements written by each kind of elementwise op (a reduction: read), whichever module or
    functional call issued it: what lets a fit price hard-swish or a squeeze-excite gate on its own."""
    from torch import nn

    from edgekd.latency.features import architecture_features
    from edgekd.models.scaled import SqueezeExcite

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.relu = nn.ReLU6()
            self.hswish = nn.Hardswish()
            self.se = SqueezeExcite(4, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            y = self.hswish(self.relu(self.conv(x)))
            return self.pool(self.se(y) + y).flatten(1)

    f = architecture_features(Block(), (2, 5, 5))
    per_map = 4 * 5 * 5
    assert f["clamp_elements"] == per_map + 2  # ReLU6 on the conv output, the SE's ReLU on its 2 channels
    assert f["act_elements"] == per_map + 4  # hard-swish, and the SE gate's hard-sigmoid on 4 channels
    assert f["mul_elements"] == per_map  # the SE gate scales the whole map
    assert f["add_elements"] == per_map  # the residual join
    assert f["reduce_elements"] == 2 * per_map  # the SE's pool and the final pool each read the map
    # the conv's output is read three times (the SE's pool and gate, the residual add): a fan-out; the
    # SE's own 1x1 convs each read and write a tensor only one op uses
    assert f["branch_conv_macs"] == per_map * 2 * 9
    # a plain ReLU CNN has no other activation, mul, add or fan-out
    cnn = spec_features("cnn:width=8,depth=2", SHAPE, CLASSES)
    assert cnn["clamp_elements"] > 0 and cnn["act_elements"] == cnn["mul_elements"] == cnn["add_elements"] == 0
    assert cnn["branch_conv_macs"] == 0
    # MobileNetV2: each residual block's expand conv reads the tensor its shortcut adds back, and each
    # stage's first projection writes one (what ONNX Runtime's INT8 graph kept float, see the feature)
    mnv2 = spec_features("mobilenetv2:resolution=32,width=0.35", (3, 32, 32), CLASSES)
    assert 0 < mnv2["branch_conv_macs"] < mnv2["conv_macs"]
    # the model's `unfused_elements` term: the activations, gates and reductions no runtime folds into
    # a conv (not the clamps, not the residual add), in M elements
    from edgekd.latency.terms import TERM_NAMES, design_row

    unfused = TERM_NAMES.index("unfused_elements")
    assert design_row(f)[unfused] * 1e6 == (per_map + 4) + per_map + 2 * per_map
    # MobileNetV3 (hard-swish, squeeze-excite) carries far more of it per MAC than MobileNetV2 (ReLU6,
    # its only unfused op the final pool)
    mnv3 = spec_features("mobilenetv3:layout=small,resolution=32,width=0.75", (3, 32, 32), CLASSES)
    per_mac = {name: design_row(x)[unfused] / x["macs"] for name, x in (("v2", mnv2), ("v3", mnv3))}
    assert per_mac["v3"] > 10 * per_mac["v2"] > 0
    # `reduce_elements`, the pools and reductions on their own (LiteRT INT8 prices them apart): a
    # ResNet's stem max pool reads the whole stem output (8 channels x 16 x 16 at 32 px), then the
    # global pool reads the last map
    reduce = TERM_NAMES.index("reduce_elements")
    assert design_row(f)[reduce] * 1e6 == f["reduce_elements"] == 2 * per_map
    rn = spec_features("resnet_basic:depth=10,resolution=32,width=8", (3, 32, 32), CLASSES)
    assert design_row(rn)[reduce] * 1e6 == rn["reduce_elements"] > 8 * 16 * 16
    # `matvec_conv_macs`, the convs that are matrix-vector products (1x1 conv on a 1x1 map): the SE's
    # two FCs (4 -> 2 -> 4 channels), not the 3x3 conv; the same at any resolution (OpenVINO runs them as
    # FullyConnected, memory-bound), none in a ResNet
    from edgekd.latency.features import matvec_conv_macs

    matvec = TERM_NAMES.index("matvec_conv_macs")
    assert matvec_conv_macs(f) == 4 * 2 + 2 * 4 == design_row(f)[matvec] * 1e6
    # (at 64 px and up: at 32 px the last stage's map is 1x1 too, and its pointwise convs are matvecs)
    v3_at = [spec_features(f"mobilenetv3:layout=small,resolution={r},width=0.75", (3, r, r), CLASSES) for r in (64, 128)]
    assert matvec_conv_macs(v3_at[0]) == matvec_conv_macs(v3_at[1]) > 0
    assert v3_at[1]["conv_macs"] > 3 * v3_at[0]["conv_macs"]  # while the conv MACs grow with the pixels
    rn64 = spec_features("resnet_basic:depth=10,resolution=64,width=8", (3, 64, 64), CLASSES)
    assert matvec_conv_macs(rn64) == 0 and matvec_conv_macs({"macs": 1}) == 0  # features without conv shapes


def test_prior_from_target_datasheet_is_labelled_unmeasured():
    from edgekd.device.targets import load_target

    hw = dict(load_target("jetson").hardware)
    hw["peak_gflops"] = hw["peak_gflops_fp32"]
    prior = prior_model(hw, model_key("tensorrt", "fp16", 0))
    small, big = spec_features("cnn:width=4,depth=1", SHAPE, CLASSES), spec_features("cnn:width=32,depth=4", SHAPE, CLASSES)
    assert 0 < prior.predict(small) < prior.predict(big)
    assert prior.predict(big, "p90_ms") > prior.predict(big, "p50_ms")
    assert PREDICTED_UNMEASURED in prior.label and prior.is_prior
    with pytest.raises(ProfileError, match="datasheet"):
        prior_model({}, "k")


def test_percentile_names():
    assert metric_for(90) == "p90_ms"
    with pytest.raises(Exception, match="50, 90, 99"):
        metric_for(75)


def test_calibration_sample_is_spread_and_out_of_sample():
    specs = calibration_specs(30, seed=1)
    assert len(specs) == len(set(specs)) == 30
    assert not set(specs) & set(student_specs())  # the search space itself stays held out
    assert {s.split(":")[0] for s in specs} == {s.split(":")[0] for s in student_specs()}
    assert calibration_specs(30, seed=1) == specs  # deterministic
    # spread over sizes: each family's smallest and largest out-of-sample variant is in the sample
    from edgekd.latency.search_space import CALIBRATION_SIZE_MARGIN, _family_variants
    from edgekd.models import MODELS

    for family in ("cnn", "mobilenet"):
        space_macs = max(spec_features(v, SHAPE, CLASSES)["macs"] for v in MODELS.get(family).search_space())
        pool = [v for v in _family_variants(family, MODELS.get(family).search_space()) if v not in student_specs()]
        # the sample reaches beyond the space, but not into a cost regime none of its students is in
        pool = [v for v in pool if spec_features(v, SHAPE, CLASSES)["macs"] <= CALIBRATION_SIZE_MARGIN * space_macs]
        sizes = {v: spec_features(v, SHAPE, CLASSES)["params"] for v in pool}
        picked_macs = [spec_features(s, SHAPE, CLASSES)["macs"] for s in specs if s.startswith(family + ":")]
        assert 0.9 * space_macs <= max(picked_macs) <= CALIBRATION_SIZE_MARGIN * space_macs
        picked = [s for s in specs if s.startswith(family + ":")]
        assert max(sizes[s] for s in picked) == max(sizes.values())
        assert min(sizes[s] for s in picked) == min(sizes.values())
    for spec in specs[:6]:
        assert spec_features(spec, SHAPE, CLASSES)["params"] > 0  # every sampled spec builds


def test_calibration_records_real_measurements_and_fits(calibrated):
    path, report = calibrated["path"], calibrated["report"]
    profile = Profile.load(path)
    assert len(profile.measurements) == COUNT and all(r["ok"] for r in report["rows"])
    section = latency_section(profile)
    assert section["input_shape"] == [1, 8, 8] and len(section["features"]) == COUNT
    key = "onnxruntime/fp32/t1/b1"
    assert key in section["models"] and key in report["models"]
    model = LatencyModel.from_dict(key, section["models"][key])
    assert model.n_samples == COUNT and not math.isnan(model.cv["p50_ms"]["median_abs_rel"])
    kept = {r["model_sha256"]: r["p50_ms"] for r in report["rows"]}
    for m in profile.measurements.values():
        assert m.spec and m.params and m.latency["p50_ms"] > 0 and m.threads == 1
        assert "untrained" in " ".join(m.warnings)
        # measured in interleaved rounds; the profile holds the round the report kept
        assert f"least-disturbed of {CALIBRATION_ROUNDS}" in " ".join(m.warnings)
        assert m.latency["p50_ms"] == kept[m.model_sha256]
        # in-sample sanity only (6 samples, short loops on a shared CPU): the right order of magnitude
        pred = model.predict(section["features"][m.model_sha256]["features"])
        assert 0.3 < pred / m.latency["p50_ms"] < 3


def test_fit_ignores_measurements_whose_architecture_is_unknown(calibrated):
    profile = Profile.load(calibrated["path"])
    pruned = Measurement(model_sha256="f" * 64, format="onnx", precision="fp32", threads=1, batch=1,
                         spec="cnn:depth=2,width=8", params=123, latency={"p50_ms": 1.0}, runtime="onnxruntime")
    profile.record(pruned)  # params differ from the plain spec's: a pruned model, features unknown
    fitted = fit_profile(profile)
    assert fitted["onnxruntime/fp32/t1/b1"].n_samples == COUNT


def test_cli_calibrate_reuses_exports_and_prints_the_error(calibrated, tmp_path):
    from click.testing import CliRunner

    from edgekd.cli import main

    out = CliRunner().invoke(main, ["profile", "calibrate", "--device", "inprocess", "--profile",
                                    str(tmp_path / "p.yaml"), "--count", str(COUNT), "--threads", "1",
                                    "--min-seconds", "0.1", "--min-count", "30",
                                    "--work-dir", str(calibrated["work_dir"]), "--json"])
    assert out.exit_code == 0, out.output
    import json

    report = json.loads(out.output)
    assert report["models"]["onnxruntime/fp32/t1/b1"]["n_samples"] == COUNT
    bad = CliRunner().invoke(main, ["profile", "calibrate", "--device", "inprocess", "--target", "jetsn",
                                    "--profile", str(tmp_path / "q.yaml")])
    assert bad.exit_code == 2 and "jetson" in bad.output

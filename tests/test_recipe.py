"""An INT8 latency figure belongs to its quantization recipe: points measured on artifacts of another
recipe (ONNX Runtime S8 activations on x86, as every export before U8 was) join no fit and are no
"measured" latency, and a model fitted on them is foreign here, adapted rather than trusted. Real
exports, real benchmarks on this machine (`--device inprocess`), real profiles on disk."""
from __future__ import annotations

import pytest

from edgekd.device.identity import differences, model_identity
from edgekd.runtimes import RUNTIMES, read_manifest
from edgekd.runtimes.int8_settings import device_recipe, ort_int8_settings, recipe_of

X86 = {"arch": "x86_64", "isa": ["avx2", "avx512f", "avx512_vnni"]}
ARM = {"arch": "aarch64", "isa": ["asimd", "asimddp"]}
FAST = {"warmup_count": 3, "warmup_s": 0.02, "min_count": 30, "min_s": 0.05}
KEY = "onnxruntime/int8/t1/b1"


def test_recipe_names_what_changes_speed() -> None:
    x86, arm = recipe_of("onnxruntime", ort_int8_settings(X86)), recipe_of("onnxruntime", ort_int8_settings(ARM))
    assert "activation_type=QUInt8" in x86 and "activation_type=QInt8" in arm
    assert x86 != arm
    assert device_recipe("onnxruntime", "fp32", X86) is None  # fp32 has no recipe: its identity is unchanged
    assert device_recipe("tensorrt", "int8", X86) is None  # built on the device: no rule here
    assert device_recipe("openvino", "int8", X86) != device_recipe("openvino", "int8", {"arch": "x86_64", "isa": ["avx2"]})


@pytest.mark.parametrize("bad", [None, "QUInt8", [], {"activation_type": "QUInt8"},
                                 {**ort_int8_settings(X86), "activation_type": "x" * 65},
                                 {**ort_int8_settings(X86), "activation_type": 1.5},
                                 {**ort_int8_settings(X86), "activation_type": {"nested": 1}},
                                 {**ort_int8_settings(X86), "activation_type": "a;b=c"}],
                         ids=["none", "str", "list", "missing-keys", "long", "float", "nested", "separators"])
def test_a_record_that_is_not_one_has_no_recipe(bad) -> None:
    assert recipe_of("onnxruntime", bad) is None


def test_an_int8_identity_differs_by_recipe_and_fp32_is_unchanged() -> None:
    fp = {"arch": "x86_64", "cpu": {"vendor": "GenuineIntel", "flags": ["avx2"]}, "runtimes": {"onnxruntime": "1.31.1"}}
    plain = model_identity(fp, "onnxruntime")
    assert "recipe" not in plain  # an fp32 model's identity is what it always was
    u8 = model_identity(fp, "onnxruntime", "activation_type=QUInt8")
    s8 = model_identity(fp, "onnxruntime", "activation_type=QInt8")
    assert differences(u8, u8) == []
    assert differences(s8, u8) == ["recipe: activation_type=QInt8 -> activation_type=QUInt8"]
    assert differences(plain, u8) == ["recipe: None -> activation_type=QUInt8"]  # fitted before recipes


def _other_identity(host_fp):
    """An identity whose ONNX Runtime INT8 recipe is not this host's (S8 activations on x86, U8 elsewhere)."""
    host = device_recipe("onnxruntime", "int8", host_fp)
    return ARM if host == recipe_of("onnxruntime", ort_int8_settings(X86)) else X86


def _record_other_recipe(dev, host_fp, path, specs, shape, work):
    """Benchmark `specs` exported with another device's recipe and record them in this host's profile,
    as the exporter before a rule change would have (the Measurement says which recipe it was)."""
    from edgekd.device.profiles import Measurement, record_measurements
    from edgekd.latency.calibrate import export_untrained
    from edgekd.latency.features import spec_features
    from edgekd.latency.recipe import artifact_recipe
    from edgekd.latency.section import latency_section, update_profile_section

    rows = []
    for spec in specs:
        art = export_untrained(spec, shape, 10, "onnxruntime", "int8", work, device_identity=_other_identity(host_fp))
        feats = spec_features(spec, shape, 10)
        rows.append(Measurement.from_result(dev.bench(art, {"threads": 1, "batch": 1, **FAST}), spec=spec,
                                            params=feats["params"], macs=feats["macs"],
                                            recipe=artifact_recipe(read_manifest(art))))

        def add(prof, sha=rows[-1].model_sha256, spec=spec, feats=feats):
            sec = latency_section(prof)
            sec["features"][sha] = {"spec": spec, "input_shape": list(shape), "num_classes": 10, "features": feats}
            sec["input_shape"], sec["num_classes"] = list(shape), 10
            prof.latency_model = sec
        record_measurements(path, rows[-1:], device=host_fp)
        update_profile_section(path, add)
    return rows


@pytest.fixture(scope="module")
def recipe_profiles(tmp_path_factory):
    """A profile of this host holding six ONNX Runtime INT8 points of another recipe (and the model
    fitted on them the way it was before recipes), then the same six students calibrated now."""
    if RUNTIMES.get("onnxruntime").unavailable_reason():
        pytest.skip(RUNTIMES.get("onnxruntime").unavailable_reason())
    from edgekd.bench.devices import open_device
    from edgekd.device.profiles import Profile, save_profile
    from edgekd.latency.model import MIN_SAMPLES, Sample, fit_latency_model
    from edgekd.latency.search_space import calibration_specs
    from edgekd.latency.section import latency_section, measurement_features

    root = tmp_path_factory.mktemp("recipe")
    dev = open_device("inprocess")
    host_fp = dev.fingerprint()
    shape = (1, 8, 8)
    specs = calibration_specs(MIN_SAMPLES, seed=0)
    path = root / "host.yaml"
    old_rows = _record_other_recipe(dev, host_fp, path, specs, shape, root / "old")
    prof = Profile.load(path)
    sec = latency_section(prof)
    # the model as the code before recipes fitted it: every row of the key, identity without a recipe
    old = fit_latency_model([Sample(m.spec, measurement_features(m, sec), m.latency) for m in old_rows], KEY,
                            source="before recipes")
    old.identity = model_identity(host_fp, "onnxruntime")
    sec["models"][KEY] = {**old.to_dict(), "runtime": "onnxruntime", "format": "onnx", "precision": "int8",
                          "threads": 1, "batch": 1}
    prof.latency_model = sec
    save_profile(prof, path)
    return {"dev": dev, "fp": host_fp, "path": path, "specs": specs, "shape": shape, "root": root,
            "old_rows": old_rows}


def test_points_of_another_recipe_join_no_fit_and_are_no_measured_latency(recipe_profiles):
    from edgekd.deploy.candidates import gather_candidates
    from edgekd.device.profiles import Profile
    from edgekd.latency.section import device_points, fit_profile

    r = recipe_profiles
    prof = Profile.load(r["path"])
    assert all(m.recipe and "activation_type" in m.recipe for m in prof.measurements.values())
    assert device_points(prof, KEY) == []
    fitted = fit_profile(prof)
    assert KEY not in fitted  # six points, all of another recipe: nothing to fit
    cands, models = gather_candidates(prof, input_shape=r["shape"], num_classes=10, formats=["onnx"],
                                      precisions=["int8"], threads=1, target=None, percentile=90, specs=r["specs"])
    # neither its points nor the model fitted on them predict anything here
    assert cands == [] and KEY not in models
    from edgekd.deploy.candidates import stale_models

    assert stale_models(prof) == [KEY]
    from click.testing import CliRunner

    from edgekd.cli import main

    res = CliRunner().invoke(main, ["select", "--profile", str(r["path"]), "--budget-ms", "1", "--format", "onnx",
                                    "--precision", "int8", "--threads", "1"])
    assert res.exit_code == 2 and "another quantization recipe" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    # `edgekd profile show` marks them, and says why
    res = CliRunner().invoke(main, ["profile", "show", str(r["path"])], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert res.output.count("int8 †") == len(r["old_rows"]) and "another quantization recipe" in res.output


def test_a_model_fitted_on_another_recipe_is_foreign_and_adapted_on_current_points(recipe_profiles):
    from edgekd.device.profiles import Profile, now_iso
    from edgekd.latency.calibrate import calibrate_device
    from edgekd.latency.drift import adapt, assess
    from edgekd.latency.section import device_points, fit_profile, latency_section

    r = recipe_profiles
    a = assess(r["path"], r["fp"], KEY, "onnxruntime", teacher_features=None, teacher_latency=None,
               metric="p90_ms", profiles_dir=r["root"] / "none")
    current = device_recipe("onnxruntime", "int8", r["fp"])
    assert a.status == "foreign"
    assert a.differences == [f"recipe: None -> {current}"]
    since = now_iso()
    calibrate_device(r["dev"], r["fp"], r["path"], specs=r["specs"][:3], shape=r["shape"], classes=10,
                     runtimes=["onnxruntime"], precisions=["int8"], threads=1, work_dir=r["root"] / "now",
                     request=FAST, rounds=1)
    prof = Profile.load(r["path"])
    points = device_points(prof, KEY)
    assert len(points) == 3  # of the nine rows of the key, only this recipe's count
    assert len(prof.measurements) == 9 and len({m.recipe for m in prof.measurements.values()}) == 2
    meta = {"runtime": "onnxruntime", "format": "onnx", "precision": "int8", "threads": 1, "batch": 1}
    model = adapt(r["path"], a, r["fp"], meta, since=since)
    assert model.kind == "transfer/1" and model.n_samples == 3
    assert model.identity["recipe"] == current
    again = assess(r["path"], r["fp"], KEY, "onnxruntime", teacher_features=None, teacher_latency=None,
                   metric="p90_ms", profiles_dir=r["root"] / "none")
    assert again.status == "trusted"
    # the next fit re-adapts the transfer on this recipe's points only
    prof = Profile.load(r["path"])
    assert fit_profile(prof)[KEY].n_samples == 3
    assert latency_section(prof)["models"][KEY]["identity"]["recipe"] == current


def test_text_int8_points_have_no_recipe_and_count():
    """Text models' INT8 is dynamic quantization, chosen by no device rule: their rows record no recipe
    and are this device's all the same (an image INT8 row without one is not)."""
    from edgekd.device.profiles import Measurement
    from edgekd.latency.recipe import is_current, key_recipe

    m = Measurement(model_sha256="a" * 64, format="onnx", precision="int8", threads=1, batch=1, runtime="onnxruntime",
                    latency={"p50_ms": 1.0})
    assert is_current(m, {"arch": "x86_64"}, shape=[16])
    assert not is_current(m, {"arch": "x86_64"}, shape=[1, 8, 8])
    assert key_recipe({"arch": "x86_64"}, "onnxruntime/int8/t1/b1/seq16") is None
    assert key_recipe({"arch": "x86_64"}, "onnxruntime/int8/t1/b1") is not None
    assert key_recipe({"arch": "x86_64"}, "onnxruntime/fp32/t1/b1") is None


def test_device_points_of_an_accelerator_configuration():
    """A configuration on a non-default accelerator (`@npu`) gets its own points, as its fit does."""
    from edgekd.device.profiles import Measurement, Profile
    from edgekd.latency.features import spec_features
    from edgekd.latency.section import device_points

    spec = "cnn:width=4,depth=1"
    feats = spec_features(spec, (1, 8, 8), 10)
    prof = Profile(name="p", device={})
    prof.latency_model = {"schema": "edgekd.latency/1", "input_shape": [1, 8, 8], "num_classes": 10}
    prof.record(Measurement(model_sha256="a" * 64, format="openvino", precision="fp32", threads=1, batch=1,
                            accelerator="npu", runtime="openvino", spec=spec, params=feats["params"],
                            latency={"p50_ms": 1.0}))
    assert len(device_points(prof, "openvino/fp32/t1/b1@npu")) == 1
    assert device_points(prof, "openvino/fp32/t1/b1") == []

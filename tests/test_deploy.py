"""`edgekd deploy`: the closed loop on this machine (real device path, real files), the unverified
path for a target that is not here, the bundle's device-only script, bad input."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
from click.testing import CliRunner

from latency_helpers import FAST_REQUEST, calibrated_profile, copy_profile
from tests.torchless import DEFAULT_BLOCKED, run_torchless

from edgekd import api
from edgekd.cli import main
from edgekd.deploy.stages import default_device, kept_val_accuracy, pick
from edgekd.errors import EdgeKDError
from edgekd.device.profiles import Profile
from edgekd.device.targets import load_target

FAST = {"epochs": 2, "min_s": 0.2, "calibrate_count": 6}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return calibrated_profile(tmp_path_factory.getbasetemp() / "latency-profile")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy-work")


def test_pick_bisects_to_the_smallest_accurate_spec():
    acc = {"a": 0.5, "b": 0.8, "c": 0.96, "d": 0.97, "e": 0.99}
    asked: list[str] = []

    def oracle(spec: str) -> float:
        asked.append(spec)
        return acc[spec]

    assert pick(list(acc), oracle, 0.95, set()) == "c"
    assert len(set(asked)) <= 4  # bisection, not a scan
    assert pick(list(acc), acc.get, 0.95, {"c"}) == "d"
    assert pick(list(acc), acc.get, 0.995, set()) is None
    assert pick([], acc.get, 0.5, set()) is None


def test_default_device_is_local_only_where_this_machine_is_the_target():
    assert default_device(load_target("cpu")) == "local"
    assert default_device(load_target("jetson")) is None
    assert default_device(load_target("rpi5")) is None


@pytest.mark.slow
def test_deploy_verifies_on_the_device_records_and_bundles(calibrated, work, tiny_teacher_ckpt, tmp_path):
    profile = copy_profile(calibrated["path"], tmp_path)
    bundle = tmp_path / "bundle"
    # the core promise, so a failed deploy FAILS this test. The test teacher is itself tiny (~8 µs), so
    # the budget is four times its own latency (speedup goal 0.25) and the floor 50 %: the smallest
    # students run in a fraction of that, and the pick is one whose host val accuracy already clears
    # 50 %, so a working loop always verifies; one that mispredicts by multiples, miscounts rounds or
    # loses a measurement does not. scripts/bench_select.py and bench_transfer.py check the real targets.
    logs: list[str] = []
    report = api.deploy(target="cpu", device="inprocess", teacher=str(tiny_teacher_ckpt), threads=1,
                        profile=str(profile), output=str(bundle), work_dir=str(work), max_rounds=2,
                        speedup_goal=0.25, min_accuracy=0.5, transfer_probes=1, log=logs.append, **FAST)
    assert report["status"] == "verified", (report["status_note"], logs)
    assert report["teacher"]["source"] == "measured" and report["teacher"]["p50_ms"] > 0
    assert report["budget_ms"] == pytest.approx(report["teacher"]["latency_ms"] / 0.25)
    # --min-accuracy serves both floors: the device check (test split) and the host choice (val split)
    assert report["min_accuracy"] == 0.5 and report["choice_floor"]["split"].startswith("val")
    assert report["choice_floor"]["min_accuracy"] == 0.5
    assert 1 <= report["device_rounds"] <= 2, report["status_note"]
    # the drift check ran on the teacher before anything trusted the model, and says what it did
    trust = report["latency_trust"]
    assert trust["status"] in ("trusted", "drifted") and trust["measured_ms"] == report["teacher"]["latency_ms"]
    assert trust["predicted_ms"] > 0 and trust["action"] and any(line.startswith("drift check:") for line in logs)
    prof = Profile.load(profile)
    specs = {m.spec for m in prof.measurements.values() if m.accuracy is not None}
    assert report["teacher"]["spec"] in specs  # the teacher was measured with its accuracy, and recorded
    for r in report["rounds"]:
        assert r["measured_ms"] is not None and r["accuracy"] is not None and r["peak_rss_bytes"] > 0
        assert r["spec"] in specs
        assert r["predicted_ms"] > 0 and r["prediction_error"] == pytest.approx(r["predicted_ms"] / r["measured_ms"] - 1)
        assert r["budget_verdict"]["confidence"] in ("clear", "confirmed", "uncertain")
    assert any("predicted p90" in line and "measured" in line for line in logs)
    chosen = report["chosen"]
    assert chosen["measured"]["p90_ms"] <= report["budget_ms"]
    assert chosen["measured"]["accuracy"] >= report["min_accuracy"]
    assert chosen["host_val_accuracy"] >= report["choice_floor"]["min_accuracy"]
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["status"] == "verified" and meta["student"]["spec"] == chosen["spec"]
    assert meta["input"]["shape"] == [1, 1, 8, 8] and meta["normalization"]["mean"]
    assert set(meta["sha256"]) >= {"artifact/model.onnx", "artifact/manifest.json", "run_model.py", "samples.npz"}
    assert "edgekd agent --listen" in (bundle / "DEVICE.md").read_text()
    # the example runs with only numpy + onnxruntime: no torch, no onnx, not even edgekd
    proc = run_torchless("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                         tmp_path, blocked=DEFAULT_BLOCKED + ("edgekd",), args=[str(bundle / "run_model.py")])
    assert proc.returncode == 0, proc.stderr
    assert "/16 correct" in proc.stdout
    deployments = (prof.latency_model or {}).get("deployments") or []
    assert deployments and deployments[-1]["spec"] == chosen["spec"]


@pytest.mark.slow
def test_deploy_is_not_fooled_by_a_foreign_profile(work, tiny_teacher_ckpt, tmp_path):
    """A latency model from another device must not fool deploy. The other device is built honestly:
    untrained students measured on this machine under OpenVINO (another runtime: another cost per layer
    and per inference), recorded as the ONNX Runtime model of a machine with another identity (another
    CPU model number, AVX-512 toggled). Deploy, whose own profile for this machine is empty,
    must find it, call it foreign, run the drift check on the teacher, adapt it on this device's
    points and end VERIFIED within 2 device rounds."""
    from edgekd.agent.fingerprint import device_fingerprint
    from edgekd.latency.calibrate import run_calibration
    from edgekd.latency.section import fit_profile
    from edgekd.device.identity import differences, model_identity
    from edgekd.device.profiles import device_name, save_profile

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    foreign = profiles / "other-device.yaml"
    run_calibration(device="inprocess", target="cpu", profile=str(foreign), count=6, threads=1, runtimes=["openvino"],
                    work_dir=str(tmp_path / "exports"), request=FAST_REQUEST, rounds=1)
    prof = Profile.load(foreign)
    here = device_fingerprint()
    other = copy.deepcopy(here)
    # another CPU model number and another ISA, whichever machine this runs on: AVX-512 / AMX dropped
    # where this CPU has them (an Intel Xeon), added where it has not (an AVX2-only AMD EPYC Zen 3)
    other["cpu"]["model"] = f"{here['cpu'].get('model')}-other"
    flags = list(other["cpu"]["flags"])
    wide = [f for f in flags if f.startswith(("avx512", "amx"))]
    other["cpu"]["flags"] = [f for f in flags if f not in wide] if wide else sorted(flags + ["avx512f", "avx512_vnni"])
    prof.device = other
    for m in prof.measurements.values():
        m.runtime, m.format = "onnxruntime", "onnx"
    prof.latency_model = {**prof.latency_model, "models": {}}
    fit_profile(prof)
    save_profile(prof, foreign)
    key = "onnxruntime/fp32/t1/b1"
    assert differences(prof.latency_model["models"][key]["identity"], model_identity(here, "onnxruntime"))

    logs: list[str] = []
    report = api.deploy(target="cpu", device="inprocess", teacher=str(tiny_teacher_ckpt), threads=1,
                        profiles_dir=str(profiles), output=str(tmp_path / "bundle"), work_dir=str(work), max_rounds=2,
                        speedup_goal=0.25, min_accuracy=0.5, transfer_probes=2, log=logs.append, **FAST)
    assert report["status"] == "verified", (report["status_note"], logs)
    assert report["device_rounds"] <= 2
    assert report["profile"].endswith(f"{device_name(here)}.yaml")  # its own profile, never the foreign one
    trust = report["latency_trust"]
    assert trust["status"] == "foreign" and trust["source"] == str(foreign)
    assert trust["action"].startswith("adapted") and trust["ratio"] > 0
    assert any(line.startswith("drift check:") and "FOREIGN" in line for line in logs), logs
    own = Profile.load(report["profile"]).latency_model["models"][key]
    assert own["kind"] == "transfer/1" and own["identity"] == model_identity(here, "onnxruntime")
    # and as --profile it is refused outright: it belongs to another device
    with pytest.raises(EdgeKDError, match="another device"):
        api.deploy(target="cpu", device="inprocess", teacher=str(tiny_teacher_ckpt), threads=1, profile=str(foreign),
                   output=str(tmp_path / "b2"), work_dir=str(work), max_rounds=1, speedup_goal=0.25, min_accuracy=0.5,
                   **FAST)


def test_calibration_rounds_are_a_sixteenth_of_min_seconds_within_bounds():
    from edgekd.deploy.session import calibration_request

    assert calibration_request(2.0) == {"min_s": 0.125, "warmup_s": 0.125, "min_count": 20}  # the default
    assert calibration_request(0.2) == {"min_s": 0.1, "warmup_s": 0.05, "min_count": 20}  # never shorter
    assert calibration_request(3.2) == {"min_s": 0.2, "warmup_s": 0.2, "min_count": 20}
    assert calibration_request(60.0)["min_s"] == 0.25  # never longer


def test_deploy_without_a_device_ends_unverified_and_says_what_to_run(work, tiny_teacher_ckpt, tmp_path):
    out = CliRunner().invoke(main, ["deploy", "--target", "jetson", "--teacher", str(tiny_teacher_ckpt),
                                    "--budget-ms", "5", "--min-accuracy", "0.5", "--epochs", "2",
                                    "--work-dir", str(work), "-o", str(tmp_path / "jb")])
    assert out.exit_code == 0, out.output
    assert "UNVERIFIED" in out.output and "NOT measured on a device" in out.output
    assert "edgekd agent --listen 0.0.0.0:7000" in out.output and "--device tcp://" in out.output
    meta = json.loads((tmp_path / "jb" / "bundle.json").read_text())
    assert meta["status"] == "unverified" and meta["student"]["measured"] is None
    assert meta["precision"] == "fp16" and meta["format"] == "tensorrt-onnx"
    assert all(r["measured_ms"] is None for r in meta["rounds"])


def test_kept_val_accuracy_follows_the_kept_weights(tmp_path):
    where = tmp_path / "summary.json"
    run = {"val_acc_best": 0.9, "val_acc_last": 0.8, "test_acc": 0.99}
    assert kept_val_accuracy(run | {"kept": "best"}, where) == 0.9
    assert kept_val_accuracy(run | {"kept": "last"}, where) == 0.8
    assert kept_val_accuracy({"after": {"val_acc": 0.7, "test_acc": 0.99}, "test_acc": 0.99}, where) == 0.7
    with pytest.raises(EdgeKDError, match="summary.json"):
        kept_val_accuracy({"test_acc": 0.99, "kept": "best"}, where)


def test_deploy_chooses_on_val_not_test(work, tiny_teacher_ckpt, tmp_path):
    """The choice reads each cached run's val figure: a student whose summary.json says test 100 % but
    val 0 % is passed over, though a choice on test would take it again."""
    mine = tmp_path / "work"
    shutil.copytree(work, mine)  # reuse what earlier tests distilled; this test edits its copy only
    opts = dict(target="jetson", teacher=str(tiny_teacher_ckpt), budget_ms=5.0, min_accuracy=0.5, epochs=2,
                work_dir=str(mine))
    first = api.deploy(output=str(tmp_path / "b1"), **opts)
    assert first["status"] == "unverified", first["status_note"]
    assert first["choice_floor"] == {"min_accuracy": 0.5, "source": "given", "split": "val (host)"}
    spec = first["chosen"]["spec"]
    assert first["chosen"]["host_val_accuracy"] == first["distilled"][spec]["val_acc"] >= 0.5
    summaries = [p for p in (mine / "students").glob("*/summary.json")
                 if json.loads(p.read_text())["student"] == spec]
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    summary.update(val_acc_best=0.0, val_acc_last=0.0, test_acc=1.0, test_acc_best=1.0, test_acc_last=1.0)
    summaries[0].write_text(json.dumps(summary))

    second = api.deploy(output=str(tmp_path / "b2"), **opts)
    assert second["distilled"][spec] == {"val_acc": 0.0, "test_acc": 1.0}  # read from the cache
    if second["chosen"] is None:  # it was the largest within budget: nothing else qualifies
        assert second["status"] == "failed" and "val accuracy" in second["status_note"]
    else:
        assert second["chosen"]["spec"] != spec
        assert second["chosen"]["params"] > first["chosen"]["params"]
        assert second["chosen"]["host_val_accuracy"] >= 0.5


def test_deploy_bad_input_exits_2(tiny_teacher_ckpt, tmp_path):
    cases = [
        (["--target", "jetsn"], "jetson"),
        (["--target", "cpu", "--teacher", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--target", "cpu", "--precision", "fp16"], "fp16"),
        (["--target", "cpu", "--format", "tensorrt"], "tensorrt"),
    ]
    for args, needle in cases:
        out = CliRunner().invoke(main, ["deploy", *args, "--work-dir", str(tmp_path / "w")])
        assert out.exit_code == 2, (args, out.output)
        assert needle in out.output


@pytest.mark.parametrize("args,words", [
    (["--calibrate-count", "5"], "'--calibrate-count': 5 is not in the range x>=6"),
    (["--min-seconds", "0"], "'--min-seconds': 0.0 is not in the range x>=0.05"),
    (["--min-seconds", "nan"], "'--min-seconds'"),
])
def test_timing_and_calibration_flags_out_of_range_are_refused_before_any_work(args, words, tmp_path):
    out = CliRunner().invoke(main, ["deploy", *args, "--work-dir", str(tmp_path / "w")])
    assert out.exit_code == 2 and words in out.output, out.output
    assert not any(tmp_path.iterdir())

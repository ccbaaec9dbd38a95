"""INT8 on an x86 CPU without VNNI, run by that CPU's own integer kernels under emulation (issue 14).

    .venv/bin/python scripts/bench_int8_isa.py [--checkpoint RUN/student.pt ...] [--runtimes onnxruntime,openvino]
                                               [--cpu Haswell] [--samples N] [--work DIR]

Why. Without VNNI, x86 INT8 kernels multiply u8 activations by s8 weights with VPMADDUBSW, which sums
each pair of products into a *saturating* int16 (ONNX Runtime's MLAS U8S8 GEMM; OpenVINO's oneDNN too).
edgekd's rule (`edgekd.runtimes.int8_settings`) quantizes for such a device so that nothing saturates.
An export's parity gate runs on *this* host's kernels: on a host with VNNI it cannot see a loss that
only the device's kernels make.

How. `qemu-x86_64 -cpu Haswell` (user mode) runs a process on a CPU with AVX2 and FMA and without
AVX-512 or VNNI. ONNX Runtime and OpenVINO choose their kernels from CPUID, so under it they run the
kernels they run on such a CPU, and integer arithmetic is exact: the outputs are that CPU's (emulated
timings mean nothing; none are taken). For each checkpoint and runtime: fp32 and one INT8 artifact per
distinct recipe the rule gives (x86 without VNNI, x86 with VNNI, no device) are exported here through
the parity gate; then every artifact is run on the test split here and under emulation. A row: test
accuracy here and emulated, the share of predictions that agree, and max |logits emulated - logits
here| / max |logits here| (0 = the same outputs on both CPUs). The last line is one JSON object.
A host without VNNI runs the same kernels here as emulated: the script says so, and the rows then
compare nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the identities whose recipes are compared (each runtime's rule, `int8_settings.RULES`, picks from them)
IDENTITIES: dict[str, dict[str, Any] | None] = {
    "x86 without VNNI": {"arch": "x86_64", "isa": ["avx", "avx2", "fma", "sse4_2"]},
    "x86 with VNNI": {"arch": "x86_64", "isa": ["avx2", "avx512f", "avx512bw", "avx512_vnni"]},
    "no device": None,
}
FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite"}
QEMU_NAMES = ("qemu-x86_64-static", "qemu-x86_64")


def find_qemu() -> str | None:
    """The qemu-x86_64 user-mode emulator on PATH (Debian: `apt install qemu-user-static`), or None."""
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def run_logits(runtime: str, artifacts: Sequence[str | Path], x: np.ndarray, *, cpu: str | None = None,
               qemu: str | None = None, timeout: float = 3600.0, exact_integer: bool = False) -> list[np.ndarray]:
    """Logits of each artifact (its model file) on `x`, one sample at a time, 1 thread, in a fresh
    process: this host's CPU (`cpu` None) or qemu's emulated `cpu` model. `exact_integer`: ONNX
    Runtime with the option edgekd's host-side checks use (`OnnxRuntimeRunner.exact_integer`); devices
    run without it. Raises RuntimeError with the worker's last output line when it fails."""
    with tempfile.TemporaryDirectory(prefix="edgekd-isa-") as tmp:
        data, out = Path(tmp) / "x.npy", Path(tmp) / "logits.npz"
        np.save(data, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
        worker = runtime + ("+exact" if exact_integer else "")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", worker, str(data), str(out),
               *map(str, artifacts)]
        if cpu:
            cmd = [qemu or find_qemu() or QEMU_NAMES[0], "-cpu", cpu, *cmd]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0 or not out.is_file():
            tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "TCG doesn't support" not in ln]
            raise RuntimeError(f"{runtime} worker{' on ' + cpu if cpu else ''} failed (exit {proc.returncode}): "
                               f"{tail[-1] if tail else 'no output'}")
        with np.load(out, allow_pickle=False) as z:
            return [z[f"m{i}"] for i in range(len(artifacts))]


def _worker(runtime: str, data: str, out: str, artifacts: list[str]) -> int:
    """Runs inside the (possibly emulated) process: numpy, the runtime and two light edgekd helpers (ONNX
    Runtime's exact-integer option, LiteRT's (de)quantization); no torch."""
    x = np.load(data, allow_pickle=False)
    runtime, exact = runtime.split("+")[0], runtime.endswith("+exact")
    res = {}
    for i, path in enumerate(artifacts):
        if runtime == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            if exact:
                from edgekd.runtimes.onnxruntime import EXACT_INTEGER_CONFIG  # no torch: cheap under emulation

                so.add_session_config_entry(*EXACT_INTEGER_CONFIG)
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            rows = [sess.run(None, {name: x[j:j + 1]})[0] for j in range(len(x))]
        elif runtime == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                             "INFERENCE_NUM_THREADS": 1})
            req = compiled.create_infer_request()
            rows = [np.array(req.infer({0: x[j:j + 1]})[compiled.output(0)]) for j in range(len(x))]
        elif runtime == "litert":
            rows = _litert_rows(path, x)
        else:
            raise SystemExit(f"unknown runtime {runtime!r}")
        res[f"m{i}"] = np.concatenate(rows).astype(np.float32)
    np.savez(out, **res)
    return 0


def _litert_rows(path: str, x: np.ndarray) -> list[np.ndarray]:
    """LiteRT, 1 thread; integer input / output (de)quantized with the model's own scale and zero point;
    an NHWC model gets the NCHW samples transposed."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekd.runtimes.litert import dequantize, quantize  # numpy only: cheap under emulation

    interp = Interpreter(model_path=path, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    nhwc = tuple(inp["shape"][1:]) != tuple(x.shape[1:])
    rows = []
    for j in range(len(x)):
        a = np.transpose(x[j:j + 1], (0, 2, 3, 1)) if nhwc else x[j:j + 1]
        if np.issubdtype(inp["dtype"], np.integer):
            a = quantize(a, *inp["quantization"], inp["dtype"])
        interp.set_tensor(inp["index"], a.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            y = dequantize(y, *out["quantization"])
        rows.append(np.asarray(y, dtype=np.float32))
    return rows


def compare(here: np.ndarray, emulated: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy on both CPUs, agreement of the predictions, and the largest logit difference relative
    to the largest logit here."""
    scale = float(np.max(np.abs(here))) or 1.0
    return {"accuracy_here": round(100.0 * float(np.mean(here.argmax(1) == y)), 2),
            "accuracy_emulated": round(100.0 * float(np.mean(emulated.argmax(1) == y)), 2),
            "agree": round(float(np.mean(here.argmax(1) == emulated.argmax(1))), 4),
            "max_rel_diff": round(float(np.max(np.abs(emulated - here))) / scale, 5)}


def _export(ckpt: str, runtime: str, work: Path, train_x: np.ndarray) -> list[dict[str, Any]]:
    """fp32 and one INT8 artifact per distinct recipe of IDENTITIES (plus, for OpenVINO, NNCF's default
    first-layer fix, the rule before 2026-12-02): [{precision, recipe, rule_for, dir, model, status}]."""
    from edgekd.latency.recipe import artifact_recipe
    from edgekd.runtimes import read_manifest
    from edgekd.runtimes.export import export_checkpoint

    fmt, made, by_recipe = FORMATS[runtime], [], {}
    r = export_checkpoint(ckpt, work / "fp32", formats=fmt, precisions="fp32")
    made.append({"precision": "fp32", "recipe": None, "rule_for": [], "dir": work / "fp32" / f"{fmt}-fp32",
                 "status": r.rows[0].status})
    for label, identity in IDENTITIES.items():
        tag = label.replace(" ", "-")
        r = export_checkpoint(ckpt, work / tag, formats=fmt, precisions="int8", device_identity=identity)
        art = work / tag / f"{fmt}-int8"
        recipe = artifact_recipe(read_manifest(art))
        if recipe in by_recipe:
            by_recipe[recipe]["rule_for"].append(label)
            continue
        by_recipe[recipe] = {"precision": "int8", "recipe": recipe, "rule_for": [label], "dir": art,
                             "status": r.rows[0].status}
        made.append(by_recipe[recipe])
    for m in made:
        m["model"] = str(m["dir"] / read_manifest(m["dir"])["model_file"])
    if runtime == "openvino":
        made.append(_openvino_first_layer_only(Path(made[0]["model"]), work / "nncf-default", train_x))
    return made


def _openvino_first_layer_only(fp32_xml: Path, out: Path, train_x: np.ndarray) -> dict[str, Any]:
    """The fp32 IR quantized with NNCF's default overflow fix (first layer only): no edgekd rule gives it
    now; shown for what it does on a CPU without VNNI. Not parity-gated (`status` "not gated")."""
    import openvino as ov

    from edgekd.runtimes.export import calibration_feeds
    from edgekd.runtimes.int8_settings import openvino_int8_settings
    from edgekd.runtimes.openvino import quantize_ir_int8

    settings = {**openvino_int8_settings(IDENTITIES["x86 without VNNI"]), "overflow_fix": "first_layer_only"}
    q = quantize_ir_int8(ov.Core().read_model(str(fp32_xml)), calibration_feeds(train_x, 256), batch=1,
                         calibration_samples=256, accuracy_control=False, max_drop=1.0, validation=None,
                         settings=settings)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out / "model.xml"), compress_to_fp16=False)
    return {"precision": "int8", "recipe": "preset=performance;overflow_fix=first_layer_only",
            "rule_for": ["NNCF's default (first layer only)"], "dir": out, "model": str(out / "model.xml"),
            "status": "not gated"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="edgekd .pt or run dir, repeatable (default: a teacher trained here on digits, 4 epochs)")
    ap.add_argument("--runtimes", default="onnxruntime,openvino,litert")
    ap.add_argument("--cpu", default="Haswell", help="qemu CPU model without VNNI (`qemu-x86_64 -cpu help`)")
    ap.add_argument("--samples", type=int, default=0, help="test samples (default: the whole test split)")
    ap.add_argument("--work", default=None, help="directory for the artifacts (default: a temporary one)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker[0], args.worker[1], args.worker[2], args.worker[3:])

    qemu = find_qemu()
    if platform.machine().lower() not in ("x86_64", "amd64") or qemu is None:
        print(f"error: needs an x86-64 host with qemu user mode ({' or '.join(QEMU_NAMES)}; Debian: "
              "apt install qemu-user-static)", file=sys.stderr)
        return 2
    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = [r for r in runtimes if r not in FORMATS]
    if unknown:
        print(f"error: unknown runtime {unknown[0]!r}; one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2

    from edgekd.bench.devices import local_fingerprint
    from edgekd.runtimes.export import checkpoint_data
    from edgekd.runtimes.int8_settings import ort_int8_settings

    host_dot = ort_int8_settings(local_fingerprint())["int32_dot"] or []  # the ISA facts the rule reads
    print(f"host: {platform.processor() or platform.machine()}, int32 dot products: {', '.join(host_dot) or 'none'}; "
          f"emulated: qemu -cpu {args.cpu} ({qemu})")
    if not host_dot:
        print("note: this host has no VNNI either, so 'here' already runs the kernels emulated below")
    from edgekd.errors import EdgeKDError

    checkpoints = args.checkpoint or [_default_checkpoint()]
    for ckpt in checkpoints:  # every checkpoint readable before anything long starts
        try:
            checkpoint_data(ckpt)
        except EdgeKDError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="edgekd-int8-isa-"))
    rows: list[dict[str, Any]] = []
    head = f"{'checkpoint':<48} {'runtime':<11} {'artifact':<56} {'acc here':>8} {'emulated':>8} {'agree':>6} {'max rel diff':>12}"
    print(head)
    for n, ckpt in enumerate(checkpoints):
        _, ds = checkpoint_data(ckpt)
        x, y = ds.test.x, ds.test.y
        if args.samples:
            x, y = x[:args.samples], y[:args.samples]
        for runtime in runtimes:
            made = _export(ckpt, runtime, work_root / f"c{n}" / runtime, ds.train.x)
            models = [m["model"] for m in made]
            here = run_logits(runtime, models, x)
            emulated = run_logits(runtime, models, x, cpu=args.cpu, qemu=qemu)
            for m, h, e in zip(made, here, emulated):
                row = {"checkpoint": str(ckpt), "runtime": runtime, "precision": m["precision"], "recipe": m["recipe"],
                       "rule_for": m["rule_for"], "parity_here": m["status"], **compare(h, e, y)}
                rows.append(row)
                what = "fp32" if m["precision"] == "fp32" else "int8 for " + " / ".join(m["rule_for"])
                print(f"{_label(ckpt):<48} {runtime:<11} {what:<56} {row['accuracy_here']:>7.2f}% "
                      f"{row['accuracy_emulated']:>7.2f}% {row['agree']:>6.3f} {row['max_rel_diff']:>12.5f}", flush=True)
    summary = {"cpu": args.cpu, "host_int32_dot": host_dot, "samples": int(len(y)), "rows": rows,
               "rule_without_vnni": _worst(rows, "x86 without VNNI"), "rule_with_vnni": _worst(rows, "x86 with VNNI")}
    print(json.dumps(summary))
    return 0


def _worst(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Per runtime, over the checkpoints: the largest relative logit difference of the recipe the rule
    gives `label` devices, and its largest accuracy drop emulated against fp32 here (points)."""
    out: dict[str, Any] = {}
    for r in rows:
        if label not in r["rule_for"]:
            continue
        fp32 = next(f for f in rows if f["runtime"] == r["runtime"] and f["checkpoint"] == r["checkpoint"]
                    and f["precision"] == "fp32")
        cur = out.setdefault(r["runtime"], {"max_rel_diff": 0.0, "accuracy_drop_emulated_pts": -1e9})
        cur["max_rel_diff"] = max(cur["max_rel_diff"], r["max_rel_diff"])
        cur["accuracy_drop_emulated_pts"] = round(max(cur["accuracy_drop_emulated_pts"],
                                                      fp32["accuracy_here"] - r["accuracy_emulated"]), 2)
    return out


def _label(ckpt: str) -> str:
    """A short name for a checkpoint: its run directory, without a deploy's hash suffix."""
    name = Path(ckpt).parent.name if Path(ckpt).suffix == ".pt" else Path(ckpt).name
    return name.rsplit("-", 1)[0] if len(name) > 13 and name[-13] == "-" else name


def _default_checkpoint() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from int8_saturation import default_checkpoint

    return default_checkpoint()


if __name__ == "__main__":
    sys.exit(main())

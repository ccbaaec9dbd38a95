"""The parity gate every export ends in: the same labelled inputs through the torch model and through
the artifact in its own runtime, compared numerically.

Gate (defaults from issue 3): an fp32 artifact fails when any logit differs from torch by more than
`fp32_tol` (1e-4); an fp16/int8 artifact fails when its accuracy on the labelled split is more than
`max_drop` points (1.0) below torch's. A failed artifact is kept on disk with status "failed" and
the reason in its manifest, so it can be inspected; `load_artifact` refuses it by default.

The gate also stores `reference.npz` (a few inputs and torch's logits for them) in the artifact, so
a device can re-check its own runtime against torch without having torch.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import RuntimeMissingError
from edgekd.fileio import atomic_write_with, sha256_file
from edgekd.runtimes.base import Runner, feeds_from_nchw, read_manifest, write_manifest

DEFAULT_FP32_TOL = 1e-4
DEFAULT_MAX_DROP_PTS = 1.0
REFERENCE_FILE = "reference.npz"
REFERENCE_COUNT = 8


def torch_logits(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Eager torch logits for normalized NCHW float32 inputs (host side)."""
    import torch

    model = model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(x[start:start + batch]))).float().numpy())
    return np.concatenate(outs, axis=0)


def compare(reference: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """max/mean abs logit difference, top-1 agreement, and both accuracies (percent) on `labels`."""
    if reference.shape != got.shape:
        return {"n": int(reference.shape[0]), "shape_mismatch": [list(reference.shape), list(got.shape)],
                "max_abs": float("inf"), "mean_abs": float("inf"), "top1_agreement": 0.0}
    diff = np.abs(reference.astype(np.float64) - got.astype(np.float64))
    ref_top, got_top = reference.argmax(axis=1), got.argmax(axis=1)
    out: dict[str, Any] = {"n": int(reference.shape[0]), "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                           "top1_agreement": float((ref_top == got_top).mean())}
    if labels is not None:
        labels = np.asarray(labels)
        out["torch_accuracy"] = float((ref_top == labels).mean() * 100.0)
        out["accuracy"] = float((got_top == labels).mean() * 100.0)
        out["accuracy_drop_pts"] = out["torch_accuracy"] - out["accuracy"]
    return out


def gate(precision: str, metrics: dict[str, Any], *, fp32_tol: float = DEFAULT_FP32_TOL,
         max_drop: float = DEFAULT_MAX_DROP_PTS) -> str | None:
    """None when the artifact passes, else the one-line reason it fails."""
    if "shape_mismatch" in metrics:
        ref, got = metrics["shape_mismatch"]
        return f"output shape {got} differs from torch's {ref}"
    if not np.isfinite(metrics["max_abs"]):
        return "artifact produced non-finite logits"
    if precision == "fp32":
        if metrics["max_abs"] > fp32_tol:
            return f"fp32 parity: max |diff| {metrics['max_abs']:.3g} > {fp32_tol:g}"
        return None
    drop = metrics.get("accuracy_drop_pts")
    if drop is None:
        return f"{precision} parity needs labelled data to measure the accuracy drop; pass --data"
    if drop > max_drop:
        return (f"{precision} accuracy {metrics['accuracy']:.2f}% is {drop:.2f} points below torch's "
                f"{metrics['torch_accuracy']:.2f}% (allowed {max_drop:g})")
    return None


# runtime -> load options of its host-side checks: ONNX Runtime computes INT8 without int16 saturation
# even on an x86 host without VNNI, so an artifact made for a device that does not saturate is judged on
# what that device computes (`OnnxRuntimeRunner.exact_integer`). OpenVINO has no such option: on such a
# host its INT8 of a VNNI / ARM device's recipe scores what this host's kernels make of it (lower).
HOST_CHECK_OPTIONS: dict[str, dict[str, Any]] = {"onnxruntime": {"exact_integer": True}}


def _runner_for_gate(adapter: Any, artifact_dir: Path, manifest: dict[str, Any],
                     threads: int | None) -> tuple[Runner, str | None]:
    """The artifact's own runtime (with its HOST_CHECK_OPTIONS); for a TensorRT artifact on a machine
    without TensorRT, ONNX Runtime over the same ONNX graph as a proxy, with the reason recorded. The
    graph carries the precision (fp16 casts / int8 Q/DQ), so the proxy runs the reduced-precision
    graph, not an fp32 stand-in."""
    if adapter.unavailable_reason() is None:
        return adapter.load(artifact_dir, threads=threads, **HOST_CHECK_OPTIONS.get(manifest["runtime"], {})), None
    if manifest["format"] == "tensorrt-onnx":
        from edgekd.runtimes.onnxruntime import OnnxRuntimeRunner

        note = (f"TensorRT is not installed here: the {manifest['precision']} ONNX graph was checked with ONNX "
                "Runtime (CPU); the engine TensorRT builds from it is checked on the device against reference.npz")
        return OnnxRuntimeRunner(artifact_dir, threads=threads, **HOST_CHECK_OPTIONS["onnxruntime"]), note
    raise RuntimeMissingError(f"{manifest['runtime']}: {adapter.unavailable_reason()}")


def artifact_accuracy(artifact_dir: str | Path, x: np.ndarray, y: np.ndarray, *,
                      threads: int | None = None) -> float:
    """Top-1 accuracy (a fraction) of an exported artifact on labelled data, run on this host by the
    artifact's own runtime (a TensorRT graph by ONNX Runtime, as the gate runs it). What a reduced-
    precision student really scores: the joint choice compares configurations on it (on the val
    split) instead of assuming the fp32 student's figure."""
    from edgekd.runtimes import RUNTIMES

    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    runner, _ = _runner_for_gate(RUNTIMES.get(manifest["runtime"]), artifact_dir, manifest, threads)
    got = np.asarray(runner.run(feeds_from_nchw(manifest, np.ascontiguousarray(x, dtype=np.float32))))
    return float((got.argmax(axis=1) == np.asarray(y)).mean())


def check_parity(model: Any, artifact_dir: str | Path, x: np.ndarray, y: np.ndarray | None, *,
                 threads: int | None = None, fp32_tol: float = DEFAULT_FP32_TOL,
                 max_drop: float = DEFAULT_MAX_DROP_PTS, reference: np.ndarray | None = None) -> dict[str, Any]:
    """Run the gate on an exported artifact and record the result (parity, status, error) in its
    manifest. `x` is normalized NCHW float32, `y` the labels. Returns the parity dict with `passed`."""
    from edgekd.runtimes import RUNTIMES

    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    adapter = RUNTIMES.get(manifest["runtime"])
    x = np.ascontiguousarray(x, dtype=np.float32)
    ref = torch_logits(model, x) if reference is None else reference
    runner, proxy = _runner_for_gate(adapter, artifact_dir, manifest, threads)
    got = runner.run(feeds_from_nchw(manifest, x))
    metrics = compare(ref, got, y)
    # a proxy run of a graph without its precision in it (an old fp32-graph TensorRT artifact) checks
    # fp32 numerics, so it is held to the fp32 rule; a graph with fp16 casts / Q/DQ to its own precision's
    in_graph = "precision_in_graph" in manifest.get("options", {})
    rule = "fp32" if proxy and not in_graph else manifest["precision"]
    reason = gate(rule, metrics, fp32_tol=fp32_tol, max_drop=max_drop)
    caveat = _host_caveat(manifest)
    if reason and caveat:
        reason = f"{reason}; {caveat}"
    parity = {**metrics, "fp32_tol": fp32_tol, "max_drop_pts": max_drop, "passed": reason is None,
              "runtime": dict(runner.info), "proxy": proxy, "host_caveat": caveat}
    _write_reference(artifact_dir, manifest, x[:REFERENCE_COUNT], ref[:REFERENCE_COUNT],
                     None if y is None else np.asarray(y)[:REFERENCE_COUNT])
    manifest.update(parity=parity, status="ok" if reason is None else "failed", error=reason)
    write_manifest(artifact_dir, manifest)
    return parity


def _host_caveat(manifest: dict[str, Any]) -> str | None:
    """`int8_settings.host_check_caveat` for an INT8 artifact checked on this host; None otherwise."""
    if manifest.get("precision") != "int8":
        return None
    from edgekd.runtimes.int8_settings import host_check_caveat

    return host_check_caveat(str(manifest.get("runtime")), (manifest.get("options") or {}).get("int8_settings"),
                             _this_host())


@functools.lru_cache(maxsize=1)
def _this_host() -> dict[str, Any]:
    """This machine's architecture and CPU identity (flags), as an agent here would report them."""
    import platform

    from edgekd.agent.fingerprint import cpu_identity

    return {"arch": platform.machine(), "cpu": cpu_identity()}


def _write_reference(artifact_dir: Path, manifest: dict[str, Any], x: np.ndarray, logits: np.ndarray,
                     y: np.ndarray | None) -> None:
    arrays = {"x": x.astype(np.float32), "logits": logits.astype(np.float32)}
    if y is not None:
        arrays["y"] = y.astype(np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write_with(artifact_dir / REFERENCE_FILE, write)
    manifest["files"][REFERENCE_FILE] = sha256_file(artifact_dir / REFERENCE_FILE)
    manifest["reference"] = {"file": REFERENCE_FILE, "count": int(x.shape[0]), "layout": "NCHW",
                             "note": "normalized inputs and torch logits for on-device parity checks"}


def mark_failed(artifact_dir: str | Path, reason: str) -> None:
    """Record a failure in an artifact's manifest when one exists (export crashed after writing it)."""
    path = Path(artifact_dir)
    try:
        manifest = read_manifest(path)
    except Exception:
        return
    manifest.update(status="failed", error=reason)
    write_manifest(path, manifest)

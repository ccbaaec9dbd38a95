"""The timing loop and its statistics, used in-process and by the on-device agent.

Device side: numpy + stdlib only (the artifact's runtime is imported by `edgekd.runtimes`).

Methodology (see README, "How edgekd measures"): load the model and time it; time the first
inference on its own (it often pays for lazy allocation or kernel selection); warm up until BOTH a
minimum count and a minimum time have passed (benchmark_app / trtexec `--warmUp`); then time every
iteration with `perf_counter_ns` until BOTH a minimum count and a minimum duration are reached
(trtexec `--iterations` + `--duration`, MLPerf's min query count + min duration), with a hard cap so
a pathological model cannot hang the device. Statistics come from the per-iteration times.

Two entry points:
- `measure_artifact(artifact_dir, request)` measures in the calling process;
- `run_isolated(artifact_dir, request)` does the same in a fresh `python -m edgekd.bench.runner_process`
  child, so the peak RSS it reports belongs to that one model (what the agent and `edgekd bench` use);
- `run_isolated_many(artifact_dirs, request)` measures several in one fresh child per runtime, one
  after another (latency only: what calibration's many short rounds use).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, EdgeKDError
from edgekd.bench import inputs as inp
# what a request may hold and how it is checked (re-exported: callers import them from here)
from edgekd.bench.request import DEFAULT_REQUEST, normalize_request  # noqa: F401
from edgekd.bench.timing import latency_stats, timing_loop  # noqa: F401  (the timed loop and its statistics)


def measure_artifact(artifact_dir: str | Path, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load one artifact and measure it in THIS process: load time, first inference, latency
    statistics, accuracy over the whole evaluation set. Returns plain JSON-able data."""
    # lazy: keeps `import edgekd.bench.measure` light
    from edgekd.runtimes import load_artifact, verify_files

    req = normalize_request(request)
    artifact_dir = Path(artifact_dir)
    manifest = inp.read_manifest(artifact_dir)
    specs = inp.input_specs(manifest)
    inp.check_batch(specs, req["batch"], artifact_dir)
    model_size, total_size = inp.artifact_files_size(artifact_dir, manifest)
    rss_before_load = peak_rss_bytes()

    # the sha256 check of the files is not what a deployed app pays at start-up: keep it out of load_ms
    verify_files(artifact_dir, manifest)
    t0 = time.perf_counter_ns()
    runner = load_artifact(artifact_dir, threads=req["threads"], accelerator=req["accelerator"], verify=False)
    load_ms = (time.perf_counter_ns() - t0) / 1e6

    data = inp.load_eval_data(req["data"], specs, manifest) if req["data"] else None
    if req["input"] == "data":
        assert data is not None  # normalize_request guarantees it
        if len(data) < req["batch"]:
            raise ConfigError(f"evaluation data {data.path} has {len(data)} samples, fewer than batch {req['batch']}")
        feed, _ = data.batch(0, req["batch"])
    else:
        feed = inp.random_feed(specs, req["batch"], seed=req["seed"])

    t0 = time.perf_counter_ns()
    runner.run(feed)
    first_ms = (time.perf_counter_ns() - t0) / 1e6

    info = dict(getattr(runner, "info", {}) or {})
    result: dict[str, Any] = {
        "artifact": {
            "dir": str(artifact_dir),
            "format": manifest.get("format"),
            "runtime": manifest.get("runtime"),
            "precision": manifest.get("precision"),
            "model_file": manifest.get("model_file"),
            "model_sha256": (manifest.get("files") or {}).get(manifest.get("model_file", ""), None),
            # what gets deployed: every model file (an OpenVINO .xml needs its .bin)
            "size_bytes": total_size,
            "model_file_bytes": model_size,
        },
        "settings": {
            "threads": req["threads"],
            "batch": req["batch"],
            "accelerator": info.get("accelerator") or req["accelerator"],
            "input_source": "data" if req["input"] == "data" else "random_normal",
            "seed": req["seed"],
            "precision_hint": info.get("precision_hint") or info.get("precision") or manifest.get("precision"),
            "warmup_count": req["warmup_count"],
            "warmup_s": req["warmup_s"],
            "min_count": req["min_count"],
            "min_s": req["min_s"],
        },
        "runner_info": _jsonable(info),
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latency": None,
        "accuracy": None,
        "warnings": [],
        "versions": versions(info),
    }
    if req["latency"]:
        loop_args = {k: req[k] for k in ("warmup_count", "warmup_s", "min_count", "min_s", "max_s")}
        if req["anchor"]:
            # a fixed numpy workload timed in bursts during the loop: how fast the machine was meanwhile
            from edgekd.bench.anchor import SpeedAnchor, anchor_summary, anchored_timing_loop

            loop, times, anchor_times = anchored_timing_loop(lambda: runner.run(feed), SpeedAnchor(), **loop_args)
            result["speed_anchor"] = anchor_summary(times, anchor_times)
        else:
            loop, times = timing_loop(lambda: runner.run(feed), **loop_args)
        stats = latency_stats(times, req["batch"])
        result["latency"] = stats
        result["loop"] = loop
        if stats["cv"] > req["cv_warn"]:
            result["warnings"].append(
                f"latency is unstable: coefficient of variation {stats['cv']:.1%} > {req['cv_warn']:.0%}; "
                "close other programs, pin threads, or raise min_s"
            )
        if loop["capped_by_max_s"] and stats["count"] < req["min_count"]:
            result["warnings"].append(
                f"stopped at max_s={req['max_s']} s after {stats['count']} of {req['min_count']} iterations"
            )
    if req["accuracy"]:
        from edgekd.bench.accuracy import evaluate

        assert data is not None
        result["accuracy"] = evaluate(runner, data, specs, req["eval_batch"])
    result["memory"] = {
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_load_bytes": rss_before_load,
        "isolated": False,
    }
    return result


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes (kernel high-water mark).

    On Linux this is VmHWM from /proc/self/status: it belongs to the address space created at exec.
    `getrusage().ru_maxrss` is NOT used there, because the kernel carries the parent's RSS at fork
    time over into the child's ru_maxrss, so a child started from a 500 MB process would report
    500 MB whatever model it runs.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes, other BSDs KiB
    return int(peak if sys.platform == "darwin" else peak * 1024)


def versions(info: dict[str, Any] | None = None) -> dict[str, str]:
    """Versions that shape a measurement: python, numpy, edgekd, and the runtime's own."""
    import edgekd

    out = {"python": platform.python_version(), "numpy": np.__version__, "edgekd": edgekd.__version__}
    for key in ("runtime_version", "version"):
        if info and info.get(key):
            out["runtime"] = str(info[key])
            break
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# --- isolation: one fresh child process per artifact -----------------------------------------

class MeasurementError(EdgeKDError):
    """The runner child failed without a user-level error (crashed, killed, timed out)."""


def run_isolated(artifact_dir: str | Path, request: dict[str, Any] | None = None, *,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
    """Measure one artifact in a fresh `python -m edgekd.bench.runner_process` child.

    The request (see DEFAULT_REQUEST) goes to the child as JSON on stdin; the result comes back as
    JSON on stdout. The peak RSS is the child's own high-water mark (VmHWM of the address space it
    got at exec), so it belongs to this one model plus the interpreter and runtime it needs, never to
    the caller.
    A user error in the child (bad artifact, missing runtime, bad data) is re-raised here as the same
    EdgeKDError class; a crash or timeout raises MeasurementError with the child's stderr tail.
    When `cancel` is set (the agent's client left) the child is killed within ~50 ms and
    MeasurementError is raised: the measurement slot is never held for a client that is gone.
    """
    req = normalize_request(request)
    job = {"artifact_dir": str(Path(artifact_dir).resolve()), "request": req}
    reply, usage, pid = _run_child(job, req["timeout_s"], cancel, f"measuring {artifact_dir}")
    if not reply.get("ok"):
        raise rebuild_error(reply.get("error") or {}, artifact_dir)
    result = reply["result"]
    memory = result.get("memory") or {}
    if not memory.get("peak_rss_bytes"):
        # the child could not read its own high-water mark; the kernel's rusage is an upper bound
        memory["peak_rss_bytes"] = int(usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024)
    memory["isolated"] = True
    result["memory"] = memory
    result["runner_pid"] = pid
    return result


MAX_MANY = 64  # artifacts one run_isolated_many (and one agent `bench_many`) measures


def run_isolated_many(artifact_dirs: list[str | Path], request: dict[str, Any] | None = None, *,
                      cancel: threading.Event | None = None) -> list[dict[str, Any] | EdgeKDError]:
    """Measure several artifacts one after another in ONE fresh runner child per runtime, in the order
    given: the process start (~0.5-1 s of imports) is paid once per runtime, so many short interleaved
    rounds over a set of models (what `edgekd profile calibrate` does, `edgekd.latency.calibrate`)
    cost what a few long ones did. Artifacts of different runtimes never share a child
    (`runtime_runs`): a deployed app loads one runtime, and OpenVINO INT8 timed after ONNX Runtime
    models in one process ran up to 1.58x slower (median 1.14x, all 16 students; AMD EPYC Zen 5 VM,
    family 26, AVX-512, scripts/bench_scale.py, 2026-12-02). Returns one entry per artifact: its
    result, or the EdgeKDError it failed with (the others are still measured). No per-model peak RSS
    (`memory.peak_rss_bytes` None): use `run_isolated` for memory. A child is killed after `timeout_s`
    x the number of its artifacts. When it dies without a reply (a runtime that crashes on one model
    takes the process down), each of its artifacts is measured again in a child of its own, so only
    the culprit fails."""
    dirs = [Path(d) for d in artifact_dirs]
    if not 1 <= len(dirs) <= MAX_MANY:
        raise ConfigError(f"run_isolated_many measures 1 to {MAX_MANY} artifacts at a time, not {len(dirs)}")
    req = normalize_request(request)
    return [res for run in runtime_runs(dirs) for res in _many_in_one(run, req, cancel)]


def runtime_runs(dirs: list[Path]) -> list[list[Path]]:
    """`dirs` cut into consecutive runs of one runtime (the manifest's `runtime`; an artifact whose
    manifest cannot be read joins the run it sits in: its child reports the error)."""
    from edgekd.runtimes.base import read_manifest

    runs: list[list[Path]] = []
    last: Any = object()
    for d in dirs:
        try:
            runtime = read_manifest(d)["runtime"]
        except EdgeKDError:
            runtime = last
        if not runs or runtime != last:
            runs.append([])
        runs[-1].append(d)
        last = runtime
    return runs


def _many_in_one(dirs: list[Path], req: dict[str, Any], cancel: threading.Event | None
                 ) -> list[dict[str, Any] | EdgeKDError]:
    """`dirs` measured one after another in one runner child (see `run_isolated_many`)."""
    job = {"artifact_dirs": [str(d.resolve()) for d in dirs], "request": req}
    try:
        reply, _, pid = _run_child(job, req["timeout_s"] * len(dirs), cancel,
                                   f"measuring {len(dirs)} artifacts in one process")
    except MeasurementError:
        if cancel is not None and cancel.is_set():
            raise
        return [_isolated_or_error(d, req, cancel) for d in dirs]
    entries = reply.get("results") if reply.get("ok") else None
    if not isinstance(entries, list) or len(entries) != len(dirs):
        raise rebuild_error(reply.get("error") or {}, dirs[0])
    out: list[dict[str, Any] | EdgeKDError] = []
    for d, entry in zip(dirs, entries):
        if isinstance(entry, dict) and entry.get("ok") and isinstance(entry.get("result"), dict):
            out.append({**entry["result"], "runner_pid": pid})
        else:
            error = entry.get("error") if isinstance(entry, dict) else None
            out.append(rebuild_error(error if isinstance(error, dict) else {}, d))
    return out


def _isolated_or_error(artifact_dir: Path, req: dict[str, Any], cancel: threading.Event | None
                       ) -> dict[str, Any] | EdgeKDError:
    try:
        return run_isolated(artifact_dir, req, cancel=cancel)
    except EdgeKDError as err:
        if cancel is not None and cancel.is_set():
            raise
        return err


def _run_child(job: dict[str, Any], timeout_s: float, cancel: threading.Event | None,
               what: str) -> tuple[dict[str, Any], Any, int]:
    """Run `python -m edgekd.bench.runner_process` with `job` on stdin; (its reply, its rusage, pid).
    MeasurementError when it is cancelled, times out or replies nothing."""
    payload = json.dumps(job).encode()
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgekd.bench.runner_process"],
            stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
        )
        timed_out = cancelled = False
        deadline = time.monotonic() + timeout_s
        assert proc.stdin is not None
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died early; its stderr says why
        try:
            while True:
                # wait4 reaps exactly this child and returns ITS resource usage (ru_maxrss = its peak RSS)
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if not (timed_out or cancelled):
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        proc.kill()
                    elif time.monotonic() > deadline:
                        timed_out = True
                        proc.kill()
                (cancel.wait if cancel is not None and not cancelled else time.sleep)(0.02)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    tail = stderr.strip()[-800:]
    if cancelled:
        raise MeasurementError(f"{what} was cancelled (the client left); child killed")
    if timed_out:
        raise MeasurementError(f"{what} took longer than {timeout_s:g} s (timeout_s); child killed")
    reply = _last_json_line(stdout)
    if reply is None:
        raise MeasurementError(f"runner process {what} exited with code {proc.returncode} without a result; "
                               f"stderr: {tail or '(empty)'}")
    return reply, usage, proc.pid


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def rebuild_error(error: dict[str, Any], artifact_dir: str | Path) -> EdgeKDError:
    """The EdgeKDError a runner (or agent) reply names, by class name (MeasurementError for any other)."""
    from edgekd import errors

    cls = getattr(errors, str(error.get("type", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, EdgeKDError)):
        cls = MeasurementError
    message = str(error.get("message") or f"runner process failed on {artifact_dir}")
    return cls(message[:2000])  # from an agent too: never an unbounded line

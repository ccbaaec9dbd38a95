"""Every runner works in a process where torch (and onnx, litert-torch, nncf...) cannot be imported:
the artifact's own reference.npz (torch logits stored at export) is reproduced there."""
from __future__ import annotations

import json

import pytest

from edgekd.runtimes import RUNTIMES
from tests.torchless import run_torchless

CHILD = r"""
import json, sys
import numpy as np
from edgekd.runtimes import load_artifact, read_manifest, feeds_from_nchw
path = sys.argv[1]
try:
    import torch  # noqa: F401
    raise SystemExit("torch imported in the torchless child")
except ImportError:
    pass
runner = load_artifact(path, threads=1)
ref = np.load(path + "/reference.npz", allow_pickle=False)
got = runner.run(feeds_from_nchw(read_manifest(path), ref["x"]))
print(json.dumps({"max_abs": float(np.abs(got - ref["logits"]).max()), "info": runner.info,
                  "torch_loaded": "torch" in sys.modules}))
"""


def test_blocker_blocks_torch(tmp_path):
    proc = run_torchless("import torch", tmp_path)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_package_and_registry_import_without_torch(tmp_path):
    proc = run_torchless("import edgekd, edgekd.runtimes as r, edgekd.device.targets as t; "
                         "print(r.RUNTIMES.names(), [x.name for x in t.list_targets()])", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stdout and "rpi5" in proc.stdout


@pytest.mark.parametrize("runtime", RUNTIMES.names())
def test_runner_without_torch(runtime, runtime_artifacts, tmp_path):
    adapter = RUNTIMES.get(runtime)
    reason = adapter.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{runtime} cannot run here: {reason}")
    path = runtime_artifacts(runtime)
    proc = run_torchless(CHILD, tmp_path, args=[str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["max_abs"] <= 1e-4 and not out["torch_loaded"]
    assert out["info"]["runtime"] == runtime and out["info"]["threads"] == 1

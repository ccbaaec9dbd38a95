"""The deployment bundle `edgekd deploy` hands back: everything needed on the device, nothing more.

    <bundle>/
      artifact/          the exported model + its manifest (as `edgekd export` wrote it)
      student.pt         the checkpoint it came from (re-export for another target without retraining)
      samples.npz        16 normalised test samples with labels (what run_model.py runs by default)
      run_model.py       a minimal script: numpy + the runtime only (no torch, no edgekd)
      DEVICE.md          the exact commands to install the runtime and the agent on the device and verify
      bundle.json        input spec, normalisation, class names, the figures MEASURED on the device (or
                         none, with status "unverified"), sha256 of every file, versions, the rounds

Host side. Written into a temp directory and moved into place, so a failed deploy never leaves a
half-written bundle behind.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.fileio import atomic_write_json, sha256_file

BUNDLE_SCHEMA = "edgekd.bundle/1"

RUN_MODEL = r'''"""Run the deployed student with only its runtime installed (numpy + {runtime}; no torch, no edgekd).

    python run_model.py              # runs samples.npz (already prepared) and prints predictions next to the labels
    python run_model.py image.npy    # one RAW image as you have it (H x W, H x W x C or C x H x W;
                                     # uint8 0..255 or float 0..1): prepared here exactly as in training
    python run_model.py images.npz   # raw images under key x (N x ...), labels under y (optional)

Preparation (bundle.json "preprocess", the same steps edgekd applied to the training data):
uint8 pixels / 255 -> [0, 1] (float images must already be in [0, 1]); resize to the model's
H x W (bilinear); subtract the per-channel mean, divide by the std; batch of 1 in the model's layout.
"""
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "artifact" / "manifest.json").read_text())
INPUT = MANIFEST["inputs"][0]
MEAN = np.array(MANIFEST["normalization"]["mean"], dtype=np.float32)[:, None, None]
STD = np.array(MANIFEST["normalization"]["std"], dtype=np.float32)[:, None, None]
CLASSES = MANIFEST.get("class_names") or [str(i) for i in range(MANIFEST["num_classes"])]
SHAPE = list(INPUT["shape"]) + [None] * 4  # N, C, H, W (NCHW) or N, H, W, C (NHWC); images only
C, H, W = (SHAPE[3], SHAPE[1], SHAPE[2]) if INPUT.get("layout") == "NHWC" else (SHAPE[1], SHAPE[2], SHAPE[3])


def _interp(n_in, n_out):
    """Bilinear weights (n_out x n_in), half-pixel centres: the resize edgekd used in training."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1.0 - (src - lo)
        m[i, hi] += src - lo
    return m


def prepare(raw):
    """RAW images (N x H x W, N x H x W x C or N x C x H x W; uint8 0..255 or float 0..1) -> the
    model's normalised float32 N x C x H x W: scale to [0, 1], resize, (x - mean) / std."""
    x = np.asarray(raw)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] != C and x.shape[-1] == C:
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] != C:
        raise SystemExit(f"images of shape {{x.shape[1:]}} do not have the model's {{C}} channel(s)")
    if x.shape[2:] != (H, W):
        x = np.einsum("ih,nchw,jw->ncij", _interp(x.shape[2], H), x, _interp(x.shape[3], W)).astype(np.float32)
    return ((x - MEAN) / STD).astype(np.float32)


def to_layout(x_nchw):
    """The model takes a batch of 1 in the manifest's layout."""
    return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1) if INPUT.get("layout") == "NHWC" else x_nchw)


# where the runtime runs the model: the target's accelerator, in the runtime's own words
DEVICE = {device!r}

{loader}

def main():
    run = load_runner(str(HERE / "artifact" / MANIFEST["model_file"]), DEVICE)
    if len(sys.argv) > 1 and sys.argv[1].endswith(".npz"):
        data = np.load(sys.argv[1], allow_pickle=False)
        x = prepare(data["x"])
        label = data["y"] if "y" in data.files else None
    elif len(sys.argv) > 1:
        x = prepare(np.load(sys.argv[1], allow_pickle=False)[None])
        label = None
    else:
        data = np.load(HERE / "samples.npz", allow_pickle=False)
        x, label = data["x"], data["y"]
    correct = 0
    for k in range(x.shape[0]):
        logits = np.asarray(run(to_layout(x[k:k + 1].astype(np.float32))))
        pred = int(logits.reshape(-1).argmax())
        if label is None:
            print(f"predicted class: {{CLASSES[pred]}}")
        else:
            correct += int(pred == int(label[k]))
            print(f"sample {{k}}: predicted {{CLASSES[pred]}}, label {{CLASSES[int(label[k])]}}")
    if label is not None:
        print(f"{{correct}}/{{x.shape[0]}} correct")


if __name__ == "__main__":
    main()
'''


def run_model_source(runtime: str, accelerator: str | None = None) -> str:
    """run_model.py for an artifact of `runtime`: the template above plus the runtime adapter's own
    `standalone_loader` (numpy + that runtime only), set to run on `accelerator` (None: the default)."""
    from edgekd.runtimes.catalog import RUNTIMES, device_string

    adapter = RUNTIMES.get(runtime)
    return RUN_MODEL.format(runtime=runtime, device=device_string(runtime, accelerator),
                            loader=adapter.standalone_loader.strip())


def preprocessing(ds: Any) -> dict[str, Any]:
    """How raw inputs become what the model takes, as the bundle states it (image data): the scale to
    [0, 1], the resize, the per-channel normalisation, the model's input size; text data: the
    dataset's own record (tokenizer, length)."""
    if getattr(ds, "task", "image") != "image":
        return {"task": ds.task, **dict(ds.preprocess)}
    c, h, w = (int(d) for d in ds.input_shape)
    return {
        "task": "image",
        "steps": [
            "scale: uint8 pixels / 255 -> [0, 1]; float images must already be in [0, 1]",
            f"resize: bilinear (half-pixel centres) to {h}x{w}",
            "normalize: (x - mean) / std per channel (the train split's mean/std)",
            "layout: batch of C x H x W in the model's layout (artifact/manifest.json inputs[0].layout)",
        ],
        "scale": {"uint8": 1 / 255, "range": [0.0, 1.0]},
        "resize": {"to": [h, w], "method": "bilinear", "from": ds.preprocess.get("image_size") and "resampled"},
        "normalization": dict(ds.normalization),
        "channels": c,
        "source": ds.preprocess.get("source"),
    }


def for_artifact(preprocess: dict[str, Any] | None, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """`preprocess` (the dataset's record) brought to what the artifact takes: its resize target, its
    normalization and the spec's resolution, from the manifest's ``preprocess`` record. A student
    whose spec fixes ``resolution=r`` is prepared at r x r, not at the size the data were loaded at."""
    art = manifest.get("preprocess")
    if not isinstance(preprocess, dict) or preprocess.get("task") != "image" or not isinstance(art, dict):
        return preprocess
    h, w = art["resize"]["to"]
    out = dict(preprocess)
    out["resize"] = {**dict(preprocess.get("resize") or {}), **art["resize"]}
    out["normalization"] = {"mean": art["normalize"]["mean"], "std": art["normalize"]["std"]}
    out["resolution"] = art.get("resolution")
    out["steps"] = [f"resize: bilinear (half-pixel centres) to {h}x{w}" if str(step).startswith("resize:") else step
                    for step in preprocess.get("steps", [])]
    return out


def device_commands(target: Any, artifact_name: str = "artifact", profile: str | None = None,
                    data: str | None = None) -> list[str]:
    """The exact commands to verify this bundle on a device of `target` (shown and written to DEVICE.md).
    `data`: the dataset the bundle was built on (the user's file), named in the bench and deploy commands."""
    prof = profile or "<device-name>"
    data_flag = f" --data {shlex.quote(str(data))}" if data else ""
    return [
        f"# on the device (once): the runtime and the agent, no torch needed. Install (target {target.name}): "
        f"{' '.join(target.install.split())}",
        "python -c \"import secrets; print(secrets.token_hex(16))\" > agent.key   # copy this file to the host too",
        "edgekd agent --listen 0.0.0.0:7000 --key-file agent.key",
        "# on the host: measure the bundled artifact on the device and record it in its profile",
        f"edgekd bench {{bundle}}/{artifact_name} --device tcp://<device-ip>:7000 --key-file agent.key "
        f"{data_flag.strip() or '--data digits'} --profile {prof}",
        "# or run the whole loop again, verified on the device this time",
        f"edgekd deploy --target {target.name}{data_flag} --device tcp://<device-ip>:7000 --key-file agent.key",
        "# and, on the device, the model alone with only its runtime:",
        "python run_model.py",
    ]


def write_bundle(out: str | os.PathLike[str], *, artifact: Path, checkpoint: Path, target: Any, info: dict[str, Any],
                 samples: tuple[np.ndarray, np.ndarray], commands: list[str],
                 preprocess: dict[str, Any] | None = None) -> Path:
    """Write the bundle atomically (temp dir, then rename over `out`). `info` is the deploy summary
    that goes into bundle.json (status, measured figures, rounds, ...); `preprocess` how raw inputs
    are prepared (`preprocessing(ds)`). Returns the bundle path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (out / "bundle.json").is_file():
        from edgekd.errors import ConfigError

        if any(out.iterdir()):
            raise ConfigError(f"{out}: exists and is not an edgekd bundle; choose another -o directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(artifact, tmp / "artifact", ignore=shutil.ignore_patterns(".edgekd-*", "*.tmp"))
        shutil.copy2(checkpoint, tmp / "student.pt")
        x, y = samples
        with open(tmp / "samples.npz", "wb") as fh:
            np.savez(fh, x=np.ascontiguousarray(x[:16], dtype=np.float32), y=np.asarray(y[:16], dtype=np.int64))
        manifest = json.loads((tmp / "artifact" / "manifest.json").read_text(encoding="utf-8"))
        (tmp / "run_model.py").write_text(run_model_source(manifest["runtime"], getattr(target, "accelerator", None)),
                                          encoding="utf-8")
        text = "\n".join(c.replace("{bundle}", str(out)) for c in commands)
        (tmp / "DEVICE.md").write_text(
            f"# Verify `{manifest.get('source', {}).get('spec')}` on a {target.name} device\n\n"
            f"Status when this bundle was made: **{info.get('status')}**. {info.get('status_note', '')}\n\n"
            f"```sh\n{text}\n```\n", encoding="utf-8")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        bundle = {
            "schema": BUNDLE_SCHEMA,
            "target": target.name,
            "input": manifest["inputs"][0],
            "normalization": manifest.get("normalization"),
            "preprocess": for_artifact(preprocess, manifest),
            "class_names": manifest.get("class_names"),
            "format": manifest["format"], "runtime": manifest["runtime"], "precision": manifest["precision"],
            "model_file": f"artifact/{manifest['model_file']}",
            "sha256": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
            "versions": manifest.get("versions"),
            **info,
        }
        atomic_write_json(tmp / "bundle.json", bundle)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

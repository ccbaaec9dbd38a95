"""What a deployed model is fed: the artifact's declared inputs, random inputs for timing, and real
samples from an evaluation `.npz` (for timing on real data and for accuracy).

Device side: numpy + stdlib only.

Evaluation data format (`.npz`, loaded with `allow_pickle=False`):
- `x`: samples in the layout edgekd datasets use (N×C×H×W for images), or one array per model input
  named after the input (text models: `input_ids`, `attention_mask`, ...);
- `y`: integer class labels, shape (N,);
- optional `normalized`: 0-d bool. True (the default, what `edgekd.data` splits hold) means `x` is
  already normalized; False means the harness applies the manifest's `normalization` first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError, DataError


@dataclass(frozen=True)
class InputSpec:
    """One model input as the manifest declares it. `shape` holds None for a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    layout: str | None = None
    high: int | None = None  # integer inputs: values must stay below this (a text model's vocabulary size)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the model, or None when the batch dimension is dynamic."""
        return self.shape[0] if self.shape else None


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    """Read and validate `artifact_dir/manifest.json` (ModelError naming it when missing or bad)."""
    from edgekd.runtimes.base import read_manifest as _read

    return _read(artifact_dir)


def input_specs(manifest: dict[str, Any]) -> list[InputSpec]:
    specs = []
    text = manifest.get("text") if manifest.get("task") == "text" else None
    for entry in manifest["inputs"]:
        # exporters write dynamic dims as null, -1 or a symbolic name ("N", "batch")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in entry.get("shape", []))
        high = None
        if text:
            # a text model is timed at its stated sequence length (the position table, max_len),
            # with ids inside its vocabulary
            if len(shape) == 2 and shape[1] is None and text.get("max_len"):
                shape = (shape[0], int(text["max_len"]))
            high = int(text["vocab_size"]) if text.get("vocab_size") else None
        specs.append(InputSpec(str(entry["name"]), shape, str(entry.get("dtype", "float32")), entry.get("layout"), high))
    return specs


def artifact_files_size(artifact_dir: str | Path, manifest: dict[str, Any]) -> tuple[int, int]:
    """(model file size, total size of every file the manifest lists) in bytes."""
    root = Path(artifact_dir)
    model_file = manifest.get("model_file")
    model_size = (root / model_file).stat().st_size if model_file and (root / model_file).exists() else 0
    names = manifest.get("files") or {}
    # reference inputs/outputs kept for parity checks are not part of what gets deployed
    total = sum((root / n).stat().st_size for n in names if (root / n).exists() and not n.startswith("reference"))
    return model_size, max(total, model_size)


def check_batch(specs: list[InputSpec], batch: int, artifact_dir: str | Path) -> None:
    for spec in specs:
        if spec.fixed_batch is not None and spec.fixed_batch != batch:
            raise ConfigError(
                f"{artifact_dir}: input {spec.name!r} has a fixed batch of {spec.fixed_batch}, "
                f"asked for batch {batch}; use --batch {spec.fixed_batch} or export with a dynamic batch"
            )


def _concrete_shape(spec: InputSpec, batch: int) -> tuple[int, ...]:
    dims = []
    for i, d in enumerate(spec.shape):
        if d is None and i > 0:
            # a dynamic non-batch dim (e.g. sequence length) has no natural size: pick a modest one
            d = 32
        dims.append(batch if i == 0 else d)
    return tuple(dims)


def random_feed(specs: list[InputSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs: standard normal for float inputs (what normalized data looks like),
    small non-negative integers for integer inputs (ones for attention masks)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = _concrete_shape(spec, batch)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif "mask" in spec.name:
            feed[spec.name] = np.ones(shape, dtype=dtype)
        else:
            feed[spec.name] = rng.integers(0, min(100, spec.high or 100), size=shape).astype(dtype)
    return feed


@dataclass
class EvalData:
    """Evaluation samples prepared for one artifact: per-input arrays (already normalized and in the
    artifact's layout and dtype), labels, and the sha256 of the file they came from."""

    arrays: dict[str, np.ndarray]
    y: np.ndarray
    sha256: str
    path: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batch(self, start: int, size: int, pad_to: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        """Samples [start, start+size) as a feed; when the model's batch is fixed, the last short
        batch is padded by repeating its final sample. Returns (feed, number of real samples)."""
        feed = {k: v[start : start + size] for k, v in self.arrays.items()}
        real = next(iter(feed.values())).shape[0]
        if pad_to is not None and real < pad_to:
            feed = {k: np.concatenate([v, np.repeat(v[-1:], pad_to - real, axis=0)]) for k, v in feed.items()}
        return feed, real


# an evaluation set may unpack to at most this share of the memory available when it is read (a .npz
# is a zip: a few MB of compressed zeros can declare many GB); EDGEKD_MAX_EVAL_BYTES overrides it
EVAL_MEMORY_SHARE = 0.5
EVAL_BYTES_FLOOR = 256 * 2**20  # what is always allowed, whatever /proc/meminfo says


def max_eval_bytes() -> int:
    """How many bytes an evaluation `.npz` may unpack to here: $EDGEKD_MAX_EVAL_BYTES, else half the
    memory available now (Linux MemAvailable; 8 GiB where it cannot be read), never under 256 MiB."""
    import os

    env = os.environ.get("EDGEKD_MAX_EVAL_BYTES")
    if env:
        try:
            return max(int(env), 1)
        except ValueError:
            raise ConfigError(f"EDGEKD_MAX_EVAL_BYTES={env!r} is not a byte count; set an integer such as 2000000000") from None
    available = 8 * 2**30
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    return max(int(available * EVAL_MEMORY_SHARE), EVAL_BYTES_FLOOR)


def _check_unpacked_size(path: Path) -> None:
    """DataError unless `path` is a zip (an .npz) whose members declare at most `max_eval_bytes()` in all.
    The declared sizes bind: Python's zip reader stops at a member's declared size (and fails its CRC)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(max(int(i.file_size), 0) for i in zf.infolist())
    except FileNotFoundError:
        raise DataError(f"evaluation data {path} not found; pass an .npz with arrays x and y") from None
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise DataError(f"evaluation data {path} is not a readable .npz ({str(err)[:120]}); "
                        "write x and y with numpy.savez") from None
    limit = max_eval_bytes()
    if declared > limit:
        raise DataError(f"evaluation data {path} unpacks to {declared / 2**20:,.0f} MiB, more than this machine "
                        f"allows ({limit / 2**20:,.0f} MiB: half its available memory, or EDGEKD_MAX_EVAL_BYTES); "
                        "evaluate on fewer samples")


def read_eval_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an evaluation `.npz` (never unpickled), which must hold labels `y`; DataError otherwise,
    also when it would unpack to more than `max_eval_bytes()`. The one reader for the host's up-front
    check (`eval_check`) and the device's evaluation run."""
    import zipfile

    path = Path(path)
    _check_unpacked_size(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise DataError(f"evaluation data {path} not found; pass an .npz with arrays x and y") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        reason = "it holds Python objects (pickles are never loaded)" if "allow_pickle" in str(err) else str(err)[:120]
        raise DataError(f"evaluation data {path} is not a readable .npz ({reason}); write x and y with numpy.savez") from None
    if "y" not in raw:
        raise DataError(f"evaluation data {path} has no 'y' array (labels); it has {sorted(raw)}")
    return raw


def load_eval_data(path: str | Path, specs: list[InputSpec], manifest: dict[str, Any]) -> EvalData:
    """Load an evaluation `.npz` and shape it for the artifact described by `specs`/`manifest`."""
    from edgekd.fileio import sha256_file

    path = Path(path)
    raw = read_eval_arrays(path)
    y = np.asarray(raw["y"]).astype(np.int64).reshape(-1)
    normalized = bool(raw["normalized"]) if "normalized" in raw else True
    arrays: dict[str, np.ndarray] = {}
    text = manifest.get("text") if manifest.get("task") == "text" else None
    if text and "x" in raw and not any(spec.name in raw for spec in specs):
        # a text dataset's split holds token ids only; the mask is every non-pad position
        ids = np.asarray(raw["x"]).astype(np.int64)
        raw = {**raw, "input_ids": ids, "attention_mask": (ids != int(text.get("pad_id", 0))).astype(np.int64)}
    for spec in specs:
        if spec.name in raw:
            arr = raw[spec.name]
        elif "x" in raw and len(specs) == 1:
            arr = raw["x"]
        else:
            raise DataError(f"evaluation data {path} has no array for model input {spec.name!r}; it has {sorted(raw)}")
        if arr.shape[0] != y.shape[0]:
            raise DataError(f"evaluation data {path}: {arr.shape[0]} samples for {spec.name!r} but {y.shape[0]} labels")
        arrays[spec.name] = _prepare(arr, spec, manifest, normalized, path)
    return EvalData(arrays, y, sha256_file(path), str(path))


def _prepare(arr: np.ndarray, spec: InputSpec, manifest: dict[str, Any], normalized: bool, path: Path) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype.kind != "f":
        return arr.astype(dtype)
    arr = arr.astype(np.float32)
    if not normalized:
        norm = manifest.get("normalization") or {}
        mean = np.asarray(norm.get("mean", [0.0]), dtype=np.float32)
        std = np.asarray(norm.get("std", [1.0]), dtype=np.float32)
        if arr.ndim == 4:  # per-channel over N×C×H×W
            mean, std = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
        arr = (arr - mean) / std
    if (spec.layout or "").upper() == "NHWC" and arr.ndim == 4 and len(spec.shape) == 4:
        # edgekd data is channels-first; a channels-last artifact (some TFLite exports) gets it transposed
        if spec.shape[3] is not None and arr.shape[1] == spec.shape[3] and arr.shape[3] != spec.shape[3]:
            arr = np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
    expected = tuple(d for d in spec.shape[1:])
    got = arr.shape[1:]
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise DataError(
            f"evaluation data {path}: samples of shape {got} do not fit input {spec.name!r} of shape "
            f"{spec.shape[1:]}; prepare the data with the same preprocessing as the model"
        )
    return arr.astype(dtype)

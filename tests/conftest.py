"""Shared fixtures. Build expensive things once per session and keep them tiny (2 CPU cores)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_soft_target_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write a .edgekd-cache into the working tree: $EDGEKD_CACHE points to a temp dir."""
    old = os.environ.get("EDGEKD_CACHE")
    os.environ["EDGEKD_CACHE"] = str(tmp_path_factory.mktemp("edgekd-cache"))
    yield
    if old is None:
        os.environ.pop("EDGEKD_CACHE", None)
    else:
        os.environ["EDGEKD_CACHE"] = old


def _user_families() -> set[str]:
    spec = sys.modules.get("edgekd.models.spec")  # not imported yet: nothing can be registered
    if spec is None:
        return set()
    return {name for name, family in spec.MODELS.items() if getattr(family, "user_family", None) is not None}


@pytest.fixture(autouse=True)
def _user_families_do_not_outlive_their_test():
    """The model registry is process-wide: a family one test registers in process (api.register_family)
    would join every later listing in the same pytest worker, and which tests share a worker changes
    from run to run (pytest-xdist). So each test's own user families are removed after it."""
    before = _user_families()
    yield
    for name in _user_families() - before:
        sys.modules["edgekd.models.spec"].MODELS.remove(name)


@pytest.fixture(scope="session")
def digits_small():
    """The built-in digits dataset at its native 1×8×8 (seed 0): an `edgekd.data.Dataset`."""
    from edgekd.data import load_dataset

    return load_dataset("digits", seed=0)


# a small but accurate teacher for tests: ~96% on digits after 4 epochs, trains in about two seconds
TINY_TEACHER_SPEC = "cnn:width=16,depth=2"


@pytest.fixture(scope="session")
def tiny_teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of an edgekd checkpoint (`save_model` format) trained briefly on digits 8×8."""
    from edgekd import api

    run = tmp_path_factory.mktemp("tiny-teacher") / "run"
    cfg = api.teacher_config(arch=TINY_TEACHER_SPEC, epochs=4, patience=0, lr=3e-2, batch_size=32, threads=1,
                               output=str(run))
    api.train_teacher(cfg, progress=False)
    return run / "student.pt"


@pytest.fixture(scope="session")
def runtime_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_ckpt: Path, digits_small):
    """Factory `(runtime, precision="fp32", **options) -> artifact dir`: the tiny teacher exported by that
    runtime's adapter (calibrated on 64 train samples) and parity-checked on the test split. Cached per
    session, so each (runtime, precision, options) is exported once (litert alone takes ~15 s)."""
    from edgekd.models import load_model
    from edgekd.runtimes import RUNTIMES
    from edgekd.runtimes.parity import check_parity

    model, info = load_model(tiny_teacher_ckpt)
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("runtime-artifacts")

    def make(runtime: str, precision: str = "fp32", **options) -> Path:
        key = (runtime, precision, tuple(sorted(options.items())))
        if key not in cache:
            out = root / f"{runtime}-{precision}-{len(cache)}"
            calib = [{"input": digits_small.train.x[i:i + 1]} for i in range(64)]
            RUNTIMES.get(runtime).export(model, info, out, precision=precision, calibration=calib, **options)
            check_parity(model, out, digits_small.test.x, digits_small.test.y, threads=1)
            cache[key] = out
        return cache[key]

    return make

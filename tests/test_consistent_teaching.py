"""Consistent teaching: per-epoch shifted draws with the teacher's soft targets for exactly that
view, the recipe defaults that select it, and the run report's per-epoch timing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd import api
from edgekd.config import DEFAULT_RECIPE, RECIPES, DistillConfig, config_from_dict, recipe
from edgekd.distill.augment import augment_record, shift_draws, shifted_views
from edgekd.errors import ConfigError


def _old_shifted_views(x, y, shift, copies, seed):
    """The per-image loop edgekd used before (reference: the vectorized version must give the same
    arrays, so existing soft-target cache entries stay valid)."""
    rng = np.random.default_rng(seed)
    n, _, h, w = x.shape
    views = [x]
    for _ in range(copies):
        offsets = rng.integers(-shift, shift + 1, size=(n, 2))
        out = np.empty_like(x)
        for i, (dy, dx) in enumerate(offsets):
            img = x[i]
            shifted = np.full_like(img, img.min())
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            shifted[:, yd, xd] = img[:, ys, xs]
            out[i] = shifted
        views.append(out)
    return np.concatenate(views), np.concatenate([y] * (copies + 1))


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 7, 6)).astype(np.float32) + 0.5, rng.integers(0, 3, size=n)


def test_vectorized_shift_matches_the_per_image_reference():
    x, y = _images()
    got_x, got_y = shifted_views(x, y, shift=2, copies=2, seed=3)
    want_x, want_y = _old_shifted_views(x, y, 2, 2, 3)
    np.testing.assert_array_equal(got_x, want_x)
    np.testing.assert_array_equal(got_y, want_y)


def test_draws_stack_a_clean_draw_then_shifted_ones():
    x, y = _images()
    dx, dy = shift_draws(x, y, shift=1, draws=4, seed=0)
    n = len(y)
    assert dx.shape == (4 * n, *x.shape[1:]) and dy.tolist() == y.tolist() * 4
    np.testing.assert_array_equal(dx[:n], x)  # draw 0: the clean split
    for d in range(1, 4):
        view = dx[d * n:(d + 1) * n]
        assert not np.array_equal(view, x)
        # every image is its original moved by at most one pixel: the centre crop appears in it
        for i in range(n):
            centre = x[i, :, 1:-1, 1:-1]
            found = any(np.array_equal(view[i, :, 1 + a:view.shape[2] - 1 + a, 1 + b:view.shape[3] - 1 + b], centre)
                        for a in (-1, 0, 1) for b in (-1, 0, 1))
            assert found
    again, _ = shift_draws(x, y, shift=1, draws=4, seed=0)
    other, _ = shift_draws(x, y, shift=1, draws=4, seed=1)
    np.testing.assert_array_equal(again, dx)
    assert not np.array_equal(other, dx)


def test_draws_are_part_of_the_cache_key():
    a = augment_record(2, 0, 0, draws=8)
    assert a == {"kind": "shift-draws", "shift": 2, "draws": 8, "seed": 0}
    assert a != augment_record(2, 0, 0, draws=4) and a != augment_record(2, 0, 1, draws=8)
    assert augment_record(0, 0, 0, draws=8) is None and augment_record(2, 0, 0, draws=1) is None


def test_epoch_e_trains_on_draw_e_minus_1_mod_draws():
    """A frozen model that always predicts class 1 and draws whose labels are the draw index: the
    train accuracy of epoch e is 1 exactly when that epoch read draw 1."""
    from edgekd.config import TrainConfig
    from edgekd.distill.losses import build_loss_stack
    from edgekd.distill.trainer import StudentObjective, Tensors, Trainer

    n, draws = 10, 3
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    x = torch.zeros(n * draws, 4)
    y = torch.arange(draws).repeat_interleave(n)
    trainer = Trainer(StudentObjective(model, build_loss_stack([{"key": "ce"}])), Tensors(x, y), Tensors(x[:n], y[:n]),
                      TrainConfig(epochs=6, batch_size=4, lr=1e-12, threads=1), draws=draws)
    accs = [trainer.train_epoch(e)["train_acc"] for e in range(1, 7)]
    assert accs == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="draws"):
        Trainer(StudentObjective(model, build_loss_stack([{"key": "ce"}])), Tensors(x[:7], y[:7]), Tensors(x, y),
                TrainConfig(epochs=1), draws=draws)


def test_default_config_is_the_default_recipe():
    cfg = DistillConfig(student="mlp")
    r = RECIPES[DEFAULT_RECIPE]
    assert [(e.key, e.kwargs) for e in cfg.losses] == [(e["key"], e["kwargs"]) for e in r["losses"]]
    assert {k: getattr(cfg.augment, k) for k in r["augment"]} == r["augment"]
    from_yaml = config_from_dict({"student": "mlp"})
    assert from_yaml.losses == cfg.losses and from_yaml.augment == cfg.augment
    # keys not given keep the recipe's; fixed copies replace its draws; both at once is an error
    assert config_from_dict({"student": "mlp", "augment": {"seed": 4}}).augment.draws == cfg.augment.draws
    assert config_from_dict({"student": "mlp", "augment": {"shift": 1, "copies": 1}}).augment.draws == 0
    with pytest.raises(ConfigError, match="not both"):
        config_from_dict({"student": "mlp", "augment": {"copies": 1, "draws": 4}})
    with pytest.raises(ConfigError, match="Did you mean 'kd-consistent'"):
        recipe("kd-consistant")


def test_run_with_draws_caches_every_view_and_reports_epoch_times(tmp_path: Path, tiny_teacher_ckpt: Path):
    def run(name: str, **extra):
        cfg = {"teacher": str(tiny_teacher_ckpt), "student": "mlp:hidden=16", "cache_dir": str(tmp_path / "cache"),
               "train": {"epochs": 3, "threads": 1}, "output": str(tmp_path / name),
               "augment": {"shift": 1, "draws": 3, "seed": 0}, **extra}
        return api.distill(cfg, progress=False)

    first = run("a")
    second = run("b", losses=[{"key": "dkd"}])
    assert first["soft_target_cache"]["train"] == "miss" and second["soft_target_cache"]["train"] == "hit"
    assert first["augment"] == {"shift": 1, "copies": 0, "seed": 0, "draws": 3, "shift_fraction": 0.0, "mixup": 0.0,
                                 "shift_px": 1}
    assert len(first["epoch_times_s"]) == 3 and all(t > 0 for t in first["epoch_times_s"])
    assert len(first["val_acc_per_epoch"]) == 3
    on_disk = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert on_disk["epoch_times_s"] == first["epoch_times_s"]
    # the cached soft targets are the teacher's answer for the shifted view itself
    from edgekd.data import load_dataset
    from edgekd.distill.cache import SoftTargetCache
    from edgekd.distill.teachers import load_teacher

    ds = load_dataset("digits", seed=0)
    teacher = load_teacher(str(tiny_teacher_ckpt))
    views, _ = shift_draws(ds.train.x, ds.train.y, shift=1, draws=3, seed=0)
    cached, hit = SoftTargetCache(tmp_path / "cache").teacher_logits(
        teacher, ds, "train", x=views, augment=augment_record(1, 0, 0, draws=3))
    assert hit
    np.testing.assert_allclose(cached, teacher.logits(views), atol=1e-5)


def test_cli_recipe_sets_losses_and_augmentation_and_help_explains_it(tmp_path: Path, tiny_teacher_ckpt: Path):
    from click.testing import CliRunner

    from edgekd.cli import main

    def invoke(*args: str):
        return CliRunner().invoke(main, ["distill", *args], catch_exceptions=False)

    res = invoke("--help")
    assert res.exit_code == 0 and "--recipe" in res.output and DEFAULT_RECIPE in res.output
    assert "consistent teaching" in res.output and "cached per view" in res.output
    # digits at 8x8: the recipe's relative shift is 0 px there, so --shift 1 turns its views on
    res = invoke("--teacher", str(tiny_teacher_ckpt), "--student", "mlp:hidden=16", "--recipe", "dkd-consistent",
                 "--temperature", "2", "--shift", "1", "--epochs", "1", "--threads", "1", "--cache-dir", str(tmp_path / "c"),
                 "-o", str(tmp_path / "r"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["losses"] == ["dkd"] and summary["augment"]["draws"] == RECIPES["dkd-consistent"]["augment"]["draws"]
    assert summary["augment"]["shift_px"] == 1 and summary["augment"]["shift_fraction"] == 0.0
    import yaml

    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["losses"][0]["kwargs"]["temperature"] == 2.0 and cfg["losses"][0]["kwargs"]["beta"] == 8.0
    res = invoke("--teacher", str(tiny_teacher_ckpt), "--student", "mlp:hidden=16", "--recipe", "dkd-consistent",
                 "--epochs", "1", "--threads", "1", "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "r8"), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["augment"] is None  # 0.075 x 8 px: no shift, the plain split
    cfg = yaml.safe_load((tmp_path / "r8" / "config.yaml").read_text())
    assert cfg["augment"]["shift_fraction"] == RECIPES["dkd-consistent"]["augment"]["shift_fraction"]
    res = invoke("--loss", "ce", "--recipe", "kd", "--epochs", "1", "--threads", "1", "--patience", "1",
                 "-o", str(tmp_path / "plain"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["augment"] is None and summary["losses"] == ["ce"] and summary["patience"] == 1
    res = CliRunner().invoke(main, ["distill", "--recipe", "kd-consistant", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "Did you mean 'kd-consistent'" in res.output


def test_relative_shift_is_whole_pixels_of_the_shorter_side():
    from edgekd.config import AugmentConfig

    a = AugmentConfig(shift_fraction=0.075, draws=8)
    # 0.075 of the side, rounded down: 2 px at 28 (mnist) and 32, 1 at 14, none at 8 (digits' native size)
    assert [a.shift_pixels(n, n) for n in (8, 13, 14, 28, 32, 64)] == [0, 0, 1, 2, 2, 4]
    assert a.shift_pixels(8, 28) == 0  # the shorter side decides
    assert AugmentConfig(shift=3, shift_fraction=0.075).shift_pixels(8, 8) == 3  # pixels given: they win
    # a shift in pixels (file or --shift) replaces a recipe's relative shift; the fraction is range-checked
    assert config_from_dict({"student": "mlp", "augment": {"shift_fraction": 0.1, "draws": 4}}).augment.shift_fraction == 0.1
    assert config_from_dict({"student": "mlp", "augment": {"shift_fraction": 0.1, "shift": 0}}).augment.shift_fraction == 0.1
    for bad in (-0.1, 0.5, 2):
        with pytest.raises(ConfigError, match="shift_fraction"):
            config_from_dict({"student": "mlp", "augment": {"shift_fraction": bad}})


def test_relative_shift_leaves_tiny_images_alone_and_shifts_larger_ones(tmp_path: Path, tiny_teacher_ckpt: Path):
    """digits at 8x8 (what deploy trains on): 0.075 of 8 px is no shift, so the run is the plain
    un-augmented one and reads the clean split's soft targets; at 28 px the views are shifted by 2."""
    base = {"teacher": str(tiny_teacher_ckpt), "student": "mlp:hidden=16", "cache_dir": str(tmp_path / "cache"),
            "train": {"epochs": 1, "threads": 1}, "augment": {"shift": 0, "shift_fraction": 0.075, "draws": 4}}
    small = api.distill({**base, "output": str(tmp_path / "small")}, progress=False)
    assert small["augment"] is None and small["epoch_times_s"]
    plain = api.distill({**base, "augment": {"shift": 0, "shift_fraction": 0.0, "draws": 0},
                         "output": str(tmp_path / "plain")}, progress=False)
    assert plain["soft_target_cache"]["train"] == "hit"  # the same (un-augmented) cache entry as `small`
    assert small["test_acc"] == plain["test_acc"]
    from edgekd.distill.run import prepare_run

    prep = prepare_run(config_from_dict({**base, "student": "cnn:width=4,depth=2", "teacher": None,
                                         "losses": [{"key": "ce"}], "data": {"image_size": 28}, "output": "-"}),
                       write=False)
    assert prep.augmented and prep.shift_px == 2 and prep.trainer.draws == 4

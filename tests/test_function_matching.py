"""Function matching (mixup views labelled by the teacher): the mixed views and labels, the mixed
hard-label term of ce / kd against hand-computed values, and a real run on them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgekd.config import config_from_dict
from edgekd.distill.augment import augment_record, mix_draws, tile_draws
from edgekd.distill.losses import LossInputs, build_loss
from edgekd.errors import ConfigError


def test_mix_draws_mixes_every_view_but_the_clean_draw():
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 3, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 3])  # distinct labels: the label mix shows λ and the partner
    x3, y3 = tile_draws(x, y, 3)
    mixed, q = mix_draws(x3, y3, 4, draws=3, alpha=1.0, seed=5)
    assert mixed.shape == x3.shape and q.shape == (12, 4)
    np.testing.assert_array_equal(mixed[:4], x3[:4])  # draw 0 clean, one-hot labels
    np.testing.assert_array_equal(q[:4], np.eye(4, dtype=np.float32)[y])
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
    mixed_rows = 0
    for i in range(4, 12):
        lam = q[i, y3[i]]
        assert q[i].argmax() == y3[i] and lam >= 0.5 - 1e-6  # the image's own label dominates
        j = int(np.argsort(q[i])[-2]) if lam < 1 else int(y3[i])  # the partner: its label holds 1 − λ
        # x' = λ x_i + (1 − λ) x_j, j from the same draw
        np.testing.assert_allclose(mixed[i], lam * x3[i] + (1 - lam) * x[j], atol=1e-6)
        mixed_rows += lam < 1
    assert mixed_rows >= 6
    again, q2 = mix_draws(x3, y3, 4, draws=3, alpha=1.0, seed=5)
    other, _ = mix_draws(x3, y3, 4, draws=3, alpha=1.0, seed=6)
    np.testing.assert_array_equal(again, mixed)
    np.testing.assert_array_equal(q2, q)
    assert not np.array_equal(other, mixed)


def test_mix_record_and_config():
    assert augment_record(2, 0, 0, draws=8, mixup=0.4) == {"kind": "shift-mix-draws", "shift": 2, "draws": 8,
                                                            "seed": 0, "mixup": 0.4}
    assert augment_record(2, 0, 0, draws=8) == {"kind": "shift-draws", "shift": 2, "draws": 8, "seed": 0}
    assert config_from_dict({"student": "mlp:hidden=8", "augment": {"mixup": 0.5, "draws": 4}}).augment.active
    with pytest.raises(ConfigError, match="draws >= 2"):
        config_from_dict({"student": "mlp:hidden=8", "augment": {"mixup": 0.5, "draws": 0}})


S = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
T_ = torch.tensor([[3.0, 0.0, -2.0], [0.0, 1.0, 0.5]], dtype=torch.float64)
Y = torch.tensor([0, 2])
Q = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]], dtype=torch.float64)


def _log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _mixed_ce_by_hand():
    return -sum(q * l for s, qs in zip(S.tolist(), Q.tolist()) for q, l in zip(qs, _log_softmax(s))) / 2


def test_ce_reads_the_mixed_labels():
    got = build_loss("ce")(LossInputs(S, Y, label_dist=Q))
    assert float(got) == pytest.approx(_mixed_ce_by_hand(), rel=1e-12)
    plain = build_loss("ce")(LossInputs(S, Y))
    assert float(plain) == pytest.approx(-(_log_softmax(S[0].tolist())[0] + _log_softmax(S[1].tolist())[2]) / 2)


@pytest.mark.parametrize("alpha,temp", [(0.5, 4.0), (1.0, 2.0), (0.0, 1.0)])
def test_kd_hard_term_reads_the_mixed_labels(alpha, temp):
    s = S.clone().requires_grad_(True)
    loss = build_loss("kd", {"temperature": temp, "alpha": alpha})(LossInputs(s, Y, T_, label_dist=Q))
    kl = 0.0
    for si, ti in zip(S.tolist(), T_.tolist()):
        ls, lt = _log_softmax([v / temp for v in si]), _log_softmax([v / temp for v in ti])
        kl += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt)) * temp**2
    want = alpha * _mixed_ce_by_hand() + (1 - alpha) * kl / 2
    assert float(loss.detach()) == pytest.approx(want, rel=1e-10)
    # the fused closed-form gradient equals autograd of the same formula
    loss.backward()
    s2 = S.clone().requires_grad_(True)
    ref = alpha * -(Q * torch.log_softmax(s2, 1)).sum(1).mean() + (1 - alpha) * (
        torch.softmax(T_ / temp, 1) * (torch.log_softmax(T_ / temp, 1) - torch.log_softmax(s2 / temp, 1))).sum(1).mean() * temp**2
    ref.backward()
    torch.testing.assert_close(s.grad, s2.grad)


def test_dkd_and_dist_hard_term_reads_the_mixed_labels():
    for key in ("dkd", "dist"):
        loss = build_loss(key, {"ce_weight": 1.0})
        with_q = float(loss(LossInputs(S, Y, T_, label_dist=Q)))
        plain = float(loss(LossInputs(S, Y, T_)))
        ce_plain = float(build_loss("ce")(LossInputs(S, Y)))
        assert with_q - plain == pytest.approx(_mixed_ce_by_hand() - ce_plain, rel=1e-9)


def test_run_on_mixup_views_caches_the_teachers_answer_for_the_mixed_images(tmp_path, tiny_teacher_ckpt):
    from edgekd import api
    from edgekd.data import load_dataset
    from edgekd.distill.cache import SoftTargetCache
    from edgekd.distill.teachers import load_teacher

    def run(name, losses):
        cfg = {"teacher": str(tiny_teacher_ckpt), "student": "mlp:hidden=16", "cache_dir": str(tmp_path / "cache"),
               "train": {"epochs": 3, "threads": 1}, "output": str(tmp_path / name), "losses": losses,
               "augment": {"shift": 0, "shift_fraction": 0.0, "draws": 3, "seed": 0, "mixup": 1.0}}
        return api.distill(cfg, progress=False)

    kd = run("kd", [{"key": "kd", "kwargs": {"alpha": 0.5}}])
    ce = run("ce", [{"key": "ce"}])  # CE on the same mixed views, mixed hard labels
    assert kd["soft_target_cache"]["train"] == "miss" and kd["augment"]["mixup"] == 1.0
    assert ce["augment"]["mixup"] == 1.0 and 0.0 < ce["val_acc_last"] <= 1.0
    ds = load_dataset("digits", seed=0)
    teacher = load_teacher(str(tiny_teacher_ckpt))
    views, _ = mix_draws(*tile_draws(ds.train.x, ds.train.y, 3), ds.num_classes, draws=3, alpha=1.0, seed=0)
    cached, hit = SoftTargetCache(tmp_path / "cache").teacher_logits(
        teacher, ds, "train", x=views, augment=augment_record(0, 0, 0, draws=3, mixup=1.0))
    assert hit
    np.testing.assert_allclose(cached, teacher.logits(views), atol=1e-5)


def test_cli_recipe_kd_fm_trains_on_mixed_views_even_at_8x8(tmp_path, tiny_teacher_ckpt):
    import json

    from click.testing import CliRunner

    from edgekd.cli import main

    res = CliRunner().invoke(main, ["distill", "--teacher", str(tiny_teacher_ckpt), "--student", "mlp:hidden=16",
                                    "--recipe", "kd-fm", "--epochs", "1", "--threads", "1", "--cache-dir",
                                    str(tmp_path / "c"), "-o", str(tmp_path / "r"), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    # digits' 8x8: the shift rounds to 0 px, the mixes stay (8 draws, cached per mixed view)
    assert summary["augment"]["mixup"] == 1.0 and summary["augment"]["shift_px"] == 0
    assert summary["augment"]["draws"] == 8 and summary["soft_target_cache"]["train"] == "miss"

"""Every loss against values computed independently with numpy, plus the registry contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill.losses import LOSSES, LossInputs, build_loss, build_loss_stack
from edgekd.distill.taps import FeatureTaps
from edgekd.errors import ConfigError

S = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
T_ = np.array([[3.0, 0.0, -2.0], [0.0, 1.0, 0.5], [2.0, 1.0, 0.0], [0.5, -0.5, 2.0]])
Y = np.array([0, 2, 1, 2])  # the teacher is right on samples 0 and 3, wrong on 1 and 2


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_kl_rows(t: np.ndarray, s: np.ndarray, temp: float) -> np.ndarray:
    lt, ls = np_log_softmax(t / temp), np_log_softmax(s / temp)
    return (np.exp(lt) * (lt - ls)).sum(axis=1) * temp**2


def np_ce(s: np.ndarray, y: np.ndarray) -> float:
    return float(-np_log_softmax(s)[np.arange(len(y)), y].mean())


def inputs(**kw) -> LossInputs:
    return LossInputs(
        student_logits=torch.tensor(S, dtype=torch.float64),
        labels=torch.tensor(Y),
        teacher_logits=torch.tensor(T_, dtype=torch.float64),
        **kw,
    )


def test_ce_matches_numpy_and_a_hand_value():
    assert float(build_loss("ce")(inputs())) == pytest.approx(np_ce(S, Y), rel=1e-12)
    # by hand: uniform logits over 3 classes -> log 3
    inp = LossInputs(torch.zeros(2, 3), torch.tensor([0, 1]))
    assert float(build_loss("ce")(inp)) == pytest.approx(np.log(3.0), rel=1e-6)


@pytest.mark.parametrize("temp,alpha", [(1.0, 0.0), (4.0, 0.5), (2.0, 0.3), (8.0, 1.0)])
def test_kd_matches_numpy(temp: float, alpha: float):
    got = float(build_loss("kd", {"temperature": temp, "alpha": alpha})(inputs()))
    soft = np_kl_rows(T_, S, temp).mean()
    want = alpha * np_ce(S, Y) + (1 - alpha) * soft
    assert got == pytest.approx(want, rel=1e-10)


def test_kd_hand_value_two_classes():
    # teacher p = (0.5, 0.5) at any T (equal logits); student logits (ln 3, 0) at T=1 -> q = (0.75, 0.25)
    # KL(p || q) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3)
    inp = LossInputs(torch.tensor([[np.log(3.0), 0.0]]), torch.tensor([0]), torch.tensor([[1.0, 1.0]]))
    got = float(build_loss("kd", {"temperature": 1.0, "alpha": 0.0})(inp))
    assert got == pytest.approx(0.5 * np.log(4.0 / 3.0), rel=1e-6)
    # identical distributions -> zero soft loss, at any temperature
    same = LossInputs(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), torch.tensor([[1.0, 2.0]]))
    assert float(build_loss("kd", {"temperature": 3.0, "alpha": 0.0})(same)) == pytest.approx(0.0, abs=1e-6)


def test_kd_hard_targets_from_teacher_argmax():
    got = float(build_loss("kd", {"temperature": 2.0, "alpha": 0.4, "hard_targets": "teacher"})(inputs()))
    teacher_argmax = T_.argmax(axis=1)  # [0, 1, 0, 2], differs from Y on samples 1 and 2
    want = 0.4 * np_ce(S, teacher_argmax) + 0.6 * np_kl_rows(T_, S, 2.0).mean()
    assert got == pytest.approx(want, rel=1e-10)
    assert not np.isclose(got, float(build_loss("kd", {"temperature": 2.0, "alpha": 0.4})(inputs())))


def test_data_distill_matches_numpy():
    temp, alpha, lam = 3.0, 0.2, 0.7
    got = float(build_loss("data_distill", {"temperature": temp, "alpha": alpha, "lam": lam})(inputs()))
    rows = np_kl_rows(T_, S, temp)
    mask = (T_.argmax(axis=1) == Y).astype(float)
    assert mask.tolist() == [1.0, 0.0, 0.0, 1.0]
    kd = alpha * np_ce(S, Y) + (1 - alpha) * rows.mean()
    dd = (rows * mask).sum() / mask.sum()
    assert got == pytest.approx(kd + lam * dd, rel=1e-10)


def test_data_distill_with_no_correct_sample_adds_nothing():
    wrong = LossInputs(torch.tensor(S), torch.tensor([2, 0, 1, 0]), torch.tensor(T_))
    kd = float(build_loss("kd", {"temperature": 2.0})(wrong))
    dd = float(build_loss("data_distill", {"temperature": 2.0, "lam": 5.0})(wrong))
    assert dd == pytest.approx(kd, rel=1e-12)


def test_hint_linear_matches_numpy():
    rng = np.random.default_rng(0)
    fs, ft = rng.normal(size=(4, 3)), rng.normal(size=(4, 5))
    loss = build_loss("hint", {"student_layer": "a", "teacher_layer": "b", "student_shape": [3], "teacher_shape": [5]}).double()
    w = rng.normal(size=(5, 3))
    with torch.no_grad():
        loss.proj.weight.copy_(torch.tensor(w))
    inp = LossInputs(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long),
                     student_features={"a": torch.tensor(fs)}, teacher_features={"b": torch.tensor(ft)})
    want = ((fs @ w.T - ft) ** 2).mean()
    assert float(loss(inp).detach()) == pytest.approx(want, rel=1e-10)


def test_hint_conv_1x1_with_pooling_matches_numpy():
    rng = np.random.default_rng(1)
    fs = rng.normal(size=(2, 3, 4, 4))  # student map 4x4, teacher map 2x2 -> student pooled 2x2
    ft = rng.normal(size=(2, 6, 2, 2))
    loss = build_loss("hint", {"student_layer": "a", "teacher_layer": "b",
                               "student_shape": [3, 4, 4], "teacher_shape": [6, 2, 2]}).double()
    w = rng.normal(size=(6, 3))
    with torch.no_grad():
        loss.proj.weight.copy_(torch.tensor(w).view(6, 3, 1, 1))
    proj = np.einsum("oc,nchw->nohw", w, fs)
    pooled = proj.reshape(2, 6, 2, 2, 2, 2).mean(axis=(3, 5))  # 2x2 average pool
    want = ((pooled - ft) ** 2).mean()
    inp = LossInputs(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long),
                     student_features={"a": torch.tensor(fs)}, teacher_features={"b": torch.tensor(ft)})
    assert float(loss(inp).detach()) == pytest.approx(want, rel=1e-10)


def test_stack_is_the_weighted_sum():
    stack = build_loss_stack([{"key": "ce", "weight": 0.25}, {"key": "kd", "weight": 2.0, "kwargs": {"alpha": 0.0}}])
    total, parts = stack(inputs())
    assert set(parts) == {"ce", "kd"}
    assert float(total) == pytest.approx(0.25 * np_ce(S, Y) + 2.0 * np_kl_rows(T_, S, 4.0).mean(), rel=1e-10)
    assert stack.needs_teacher_logits


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _probe(role: str, path: str):
    # feature shapes of _Net at 1x8x8 (what the trainer's probe would report, errors included)
    shapes = {"features.0": (4, 8, 8), "features": (4, 8, 8), "classifier": (3,)}
    if path not in shapes:
        raise ConfigError(f"{role} has no module {path!r}")
    return shapes[path]


@pytest.mark.parametrize("key", LOSSES.names())
def test_every_registered_loss_builds_runs_and_backpropagates(key: str):
    kwargs = {"student_layer": "features", "teacher_layer": "features.0"} if key == "hint" else {}
    try:
        loss = build_loss(key, kwargs, _probe)
    except ConfigError as err:  # e.g. transformer-layer losses: they need encoder layers, tested in their own file
        if key in ("ce", "kd", "data_distill", "hint"):
            raise
        pytest.skip(f"{key} does not apply to an image CNN: {err}")
    student, teacher = _Net(), _Net()
    x = torch.randn(5, 1, 8, 8)
    with FeatureTaps(student, loss.student_taps) as st, FeatureTaps(teacher, loss.teacher_taps) as tt:
        s = student(x)
        with torch.no_grad():
            t = teacher(x)
        inp = LossInputs(s, torch.tensor([0, 1, 2, 0, 1]), t, dict(st.features), dict(tt.features))
        value = loss(inp)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert loss.__doc__ and ("L =" in loss.__doc__ or "L_" in loss.__doc__), f"{key} must document its formula"


def test_unknown_loss_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="Did you mean 'kd'"):
        build_loss("kdd")
    with pytest.raises(ConfigError, match="unknown option 'temp'.*temperature"):
        build_loss("kd", {"temp": 3})
    with pytest.raises(ConfigError, match="alpha"):
        build_loss("kd", {"alpha": 1.5})
    with pytest.raises(ConfigError, match="hard_targets"):
        build_loss("kd", {"hard_targets": "soft"})
    with pytest.raises(ConfigError, match="student_layer"):
        build_loss("hint", {"teacher_layer": "x"}, _probe)


def test_tap_on_unknown_path_lists_nearby_paths():
    with pytest.raises(ConfigError, match=r"no module 'featurs\.0'.*features\.0"):
        FeatureTaps(_Net(), ["featurs.0"], role="student")


def test_taps_record_features_without_changing_the_model():
    net = _Net()
    x = torch.randn(2, 1, 8, 8)
    before = net(x)
    with FeatureTaps(net, ["features.0", "classifier"]) as taps:
        out = net(x)
        assert taps.features["features.0"].shape == (2, 4, 8, 8)
        assert torch.equal(taps.features["classifier"], out)
    assert torch.equal(before, out)
    assert not net.features[0]._forward_hooks  # hooks removed on exit


@pytest.mark.parametrize("key,kwargs", [("kd", {"temperature": 3.0, "alpha": 0.4}), ("kd", {"alpha": 0.0}),
                                        ("kd", {"hard_targets": "teacher"}),
                                        ("data_distill", {"temperature": 2.0, "alpha": 0.3, "lam": 0.8})])
def test_fused_kd_gradient_matches_autograd_of_the_formula(key: str, kwargs: dict):
    """The fused KD node's closed-form gradient equals autograd through the plain formula."""
    from edgekd.distill.losses import soft_kl
    import torch.nn.functional as F

    loss = build_loss(key, kwargs)
    s = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    inp = LossInputs(s, torch.tensor(Y), torch.tensor(T_, dtype=torch.float64))
    loss(inp).backward()
    fused_grad = s.grad.clone()

    s.grad = None
    temp, alpha = loss.temperature, loss.alpha
    kl = soft_kl(s, inp.teacher_logits, temp)
    ref = alpha * F.cross_entropy(s, loss.hard_target(inp)) + (1 - alpha) * kl.mean()
    if key == "data_distill":
        mask = (inp.teacher_logits.argmax(1) == inp.labels).double()
        ref = ref + loss.lam * (kl * mask).sum() / mask.sum().clamp(min=1.0)
    ref.backward()
    torch.testing.assert_close(fused_grad, s.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: loss(LossInputs(z, inp.labels, inp.teacher_logits)),
                                    (torch.tensor(S, dtype=torch.float64, requires_grad=True),))

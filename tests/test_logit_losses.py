"""DKD and DIST against values computed independently (numpy loops, and by hand)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.distill.losses import LOSSES, LossInputs, build_loss, build_loss_stack
from edgekd.errors import ConfigError

S = np.array([[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, -0.4], [-1.0, 3.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
T_ = np.array([[3.0, 0.0, -2.0, 0.1], [0.0, 1.0, 0.5, 0.2], [2.0, 1.0, 0.0, -1.0], [0.5, -0.5, 2.0, 1.5]])
Y = np.array([0, 2, 1, 3])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def ce(s: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([-np.log(softmax(row)[c]) for row, c in zip(s, y)]))


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def np_dkd(s, t, y, temp, alpha, beta, ce_weight):
    tckd, nckd = [], []
    for si, ti, yi in zip(s, t, y):
        ps, pt = softmax(si / temp), softmax(ti / temp)
        tckd.append(kl(np.array([pt[yi], 1 - pt[yi]]), np.array([ps[yi], 1 - ps[yi]])))
        rest = [k for k in range(len(si)) if k != yi]
        nckd.append(kl(softmax(ti[rest] / temp), softmax(si[rest] / temp)))
    return ce_weight * ce(s, y) + temp**2 * (alpha * np.mean(tckd) + beta * np.mean(nckd))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def np_dist(s, t, y, temp, beta, gamma, ce_weight):
    ps = np.array([softmax(r / temp) for r in s])
    pt = np.array([softmax(r / temp) for r in t])
    inter = 1 - np.mean([pearson(ps[i], pt[i]) for i in range(len(s))])
    intra = 1 - np.mean([pearson(ps[:, k], pt[:, k]) for k in range(s.shape[1])])
    return ce_weight * ce(s, y) + temp**2 * (beta * inter + gamma * intra)


def inputs(s=S, t=T_, y=Y) -> LossInputs:
    return LossInputs(torch.tensor(s, dtype=torch.float64), torch.tensor(y), torch.tensor(t, dtype=torch.float64))


def test_registered():
    assert {"dkd", "dist"} <= set(LOSSES.names())


@pytest.mark.parametrize("temp,alpha,beta,cw", [(4.0, 1.0, 8.0, 1.0), (1.0, 0.5, 2.0, 0.0), (2.0, 0.0, 1.0, 0.3)])
def test_dkd_matches_numpy(temp, alpha, beta, cw):
    got = float(build_loss("dkd", {"temperature": temp, "alpha": alpha, "beta": beta, "ce_weight": cw})(inputs()))
    assert got == pytest.approx(np_dkd(S, T_, Y, temp, alpha, beta, cw), rel=1e-10)


def test_dkd_hand_values():
    # two classes: nothing is left among the non-target classes, so NCKD = 0 and TCKD is KD's KL.
    # teacher (0.5, 0.5), student (0.75, 0.25): KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3)
    inp = LossInputs(torch.tensor([[np.log(3.0), 0.0]]), torch.tensor([0]), torch.tensor([[1.0, 1.0]]))
    got = float(build_loss("dkd", {"temperature": 1.0, "alpha": 1.0, "beta": 8.0, "ce_weight": 0.0})(inp))
    assert got == pytest.approx(0.5 * np.log(4 / 3), rel=1e-6)
    # three classes, label 0: teacher exp-logits (2, 1, 1), student (1, 3, 1). Among classes 1, 2 the
    # teacher gives p̂ = (0.5, 0.5), the student (0.75, 0.25): NCKD = KL = 0.5 ln(4/3)
    inp = LossInputs(torch.tensor([[0.0, np.log(3.0), 0.0]]), torch.tensor([0]),
                     torch.tensor([[np.log(4.0 / 2.0), np.log(1.0), np.log(1.0)]]))
    # target mass: student 1/(1+3+1) = 0.2, teacher 2/(2+1+1) = 0.5 -> TCKD = KL((.5,.5) ‖ (.2,.8))
    tckd = 0.5 * np.log(0.5 / 0.2) + 0.5 * np.log(0.5 / 0.8)
    nckd = 0.5 * np.log(4 / 3)
    got = float(build_loss("dkd", {"temperature": 1.0, "alpha": 2.0, "beta": 3.0, "ce_weight": 0.0})(inp))
    assert got == pytest.approx(2.0 * tckd + 3.0 * nckd, rel=1e-6)


@pytest.mark.parametrize("temp,beta,gamma,cw", [(4.0, 1.0, 1.0, 1.0), (1.0, 2.0, 0.5, 0.0), (2.0, 0.0, 1.0, 0.5)])
def test_dist_matches_numpy(temp, beta, gamma, cw):
    got = float(build_loss("dist", {"temperature": temp, "beta": beta, "gamma": gamma, "ce_weight": cw})(inputs()))
    # the 1e-8 in the correlation denominator (as in the paper's code) moves the result by ~1e-7
    assert got == pytest.approx(np_dist(S, T_, Y, temp, beta, gamma, cw), rel=1e-6)


def test_dist_hand_values():
    # a student identical to the teacher correlates perfectly: only the CE term is left
    same = inputs(s=T_)
    got = float(build_loss("dist", {"temperature": 4.0})(same))
    # (up to the 1e-8 in the correlation's denominator: rows at T = 4 are nearly flat, small norms)
    assert got == pytest.approx(ce(T_, Y), abs=1e-4)
    # two classes, two samples: teacher rows (ln 3, 0) and (0, ln 3) -> P_t = [[.75,.25],[.25,.75]];
    # the student swaps them. Per row, centred vectors are ±(0.25, -0.25): correlation -1 -> inter = 2;
    # per class over the batch likewise -1 -> intra = 2. L = T²(β·2 + γ·2) with T = 1.
    t = np.array([[np.log(3.0), 0.0], [0.0, np.log(3.0)]])
    got = float(build_loss("dist", {"temperature": 1.0, "beta": 1.0, "gamma": 0.5, "ce_weight": 0.0})(
        inputs(s=t[::-1].copy(), t=t, y=np.array([0, 1]))))
    assert got == pytest.approx(2.0 + 0.5 * 2.0, rel=1e-6)


def test_precomputed_teacher_targets_give_the_same_loss_and_gradient():
    for key in ("dkd", "dist"):
        stack = build_loss_stack([{"key": key}])
        a = inputs()
        a.student_logits.requires_grad_(True)
        la, _ = stack(a)
        la.backward()
        b = inputs()
        b.teacher_targets = stack.teacher_targets(b.teacher_logits)
        b.teacher_logits = None
        b.student_logits.requires_grad_(True)
        lb, _ = stack(b)
        lb.backward()
        assert float(la.detach()) == pytest.approx(float(lb.detach()), rel=1e-12)
        assert torch.allclose(a.student_logits.grad, b.student_logits.grad)
        assert not stack.reads_raw_teacher_logits


@pytest.mark.parametrize("key,kwargs", [("dkd", {"temperature": 0}), ("dkd", {"beta": -1}), ("dist", {"gamma": -0.1}),
                                        ("dist", {"tau": 1.0})])
def test_bad_options_are_config_errors(key, kwargs):
    with pytest.raises(ConfigError):
        build_loss(key, kwargs)

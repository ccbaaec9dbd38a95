"""How often ONNX Runtime's x86 U8S8 kernels *without VNNI* would saturate on a model (issue 14).

    .venv/bin/python scripts/int8_saturation.py [--checkpoint RUN/student.pt] [--data digits] [--samples 256]

Without VNNI, ONNX Runtime's U8S8 GEMM (MLAS, AVX2 / AVX-512BW) multiplies u8 activations by s8
weights with VPMADDUBSW, which adds each pair of adjacent products (along K = Cin*kh*kw) into a
*saturating* int16. This script emulates that on the CPU it runs on (no AVX2-only machine needed):
it quantizes every dense conv's input the way the static QDQ export does (MinMax over calibration
samples, asymmetric, as u8) and its weights per output channel, symmetric s8 with 8 bits (ORT's
default) or 7 bits (`reduce_range`, what edgekd now picks on x86 without VNNI), forms the pairs
and counts the pair sums outside [-32768, 32767]. Depthwise convs run other kernels and are
skipped. Prints a table per conv, then ONE JSON line: saturated share of pair sums per setting.
It shows whether saturation *can* explain an INT8 accuracy loss on such a machine; the loss itself
needs that machine (`edgekd bench` there).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_checkpoint() -> str:
    """The default teacher trained here on digits (4 epochs, ~1 min), once: runs/int8-saturation-teacher."""
    from edgekd import api

    out = ROOT / "runs" / "int8-saturation-teacher"
    if not (out / "student.pt").is_file():
        api.train_teacher(api.teacher_config(epochs=4, patience=0, lr=3e-2, batch_size=32, output=str(out)),
                          progress=False)
    return str(out / "student.pt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="edgekd .pt (default: a teacher trained here on digits, 4 epochs)")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--samples", type=int, default=256)
    args = ap.parse_args(argv)

    import torch
    from torch import nn

    from edgekd.data import load_dataset
    from edgekd.models import load_model

    ckpt = args.checkpoint or default_checkpoint()
    model, info = load_model(ckpt)
    ds = load_dataset(args.data, image_size=info.input_shape[1] if info.input_shape[1:] != (8, 8) else None)
    x = torch.from_numpy(ds.train.x[: args.samples])
    inputs: dict[str, torch.Tensor] = {}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0].detach())) for n, m in convs.items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    totals = {"8bit": [0, 0], "7bit_reduce_range": [0, 0]}
    print(f"{'conv':<40} {'K':>5} {'8-bit weights':>14} {'7-bit weights':>14}")
    for name, conv in convs.items():
        a = inputs[name]
        lo, hi = min(0.0, float(a.min())), max(0.0, float(a.max()))
        scale = (hi - lo) / 255 or 1.0
        zp = int(round(-lo / scale))
        cols = nn.functional.unfold(a, conv.kernel_size, padding=conv.padding, stride=conv.stride,
                                    dilation=conv.dilation)  # N x K x L
        # padding is the zero point in the quantized domain: unfold pads with float 0 -> u8 zp
        u8 = torch.clamp(torch.round(cols / scale) + zp, 0, 255).to(torch.int32)
        w = conv.weight.detach().reshape(conv.out_channels, -1)
        k = w.shape[1] - w.shape[1] % 2
        row = []
        for label, qmax in (("8bit", 127), ("7bit_reduce_range", 63)):
            wscale = w.abs().amax(1, keepdim=True) / qmax
            s8 = torch.round(w / torch.where(wscale > 0, wscale, torch.ones_like(wscale))).to(torch.int32)
            # pair sums a[k]w[k] + a[k+1]w[k+1] for every output channel, sample and position
            pa = u8[:, :k].reshape(u8.shape[0], k // 2, 2, -1)
            pw = s8[:, :k].reshape(s8.shape[0], k // 2, 2)
            sums = torch.einsum("npjl,opj->nopl", pa.double(), pw.double())
            bad = int(((sums > 32767) | (sums < -32768)).sum())
            totals[label][0] += bad
            totals[label][1] += sums.numel()
            row.append(f"{bad / sums.numel():>13.4%}")
        print(f"{name:<40} {w.shape[1]:>5} {row[0]:>14} {row[1]:>14}")
    share = {k: (v[0] / v[1] if v[1] else None) for k, v in totals.items()}
    print(json.dumps({"checkpoint": ckpt, "samples": int(x.shape[0]), "saturated_pair_share": share,
                      "pairs": {k: v[1] for k, v in totals.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

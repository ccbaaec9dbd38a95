"""What reusing torch's aten -> ONNX registry (`edgekd.runtimes.onnx_registry`) saves per export, and
proof that it changes nothing in the files: each student is exported with the registry rebuilt (torch's
own behaviour) and reused, alternately, `--repeats` times; the per-export medians are compared side by
side in this one run, and the two ONNX files of each student must be byte-identical.

    .venv/bin/python scripts/bench_export_registry.py [--repeats 3]

Prints a table, then one JSON line: {"median_s": {"rebuilt": .., "reused": ..}, "ratio": .., "identical": ..}.
Exit 1 when any file differs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDENTS = (("cnn:width=16,depth=2", (1, 8, 8)), ("mlp:hidden=64", (1, 8, 8)),
            ("mobilenet:blocks=2,depth=2,expansion=4,width=0.5", (1, 8, 8)),
            ("mobilenetv3:layout=small,resolution=32,width=0.35", (3, 32, 32)),
            ("resnet_basic:depth=10,resolution=32,width=16", (3, 32, 32)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="exports of each student in each mode")
    args = ap.parse_args()
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        sys.exit(2)

    import torch

    from edgekd.models import ModelInfo, create_model
    from edgekd.runtimes.host import export_onnx
    from edgekd.runtimes import onnx_registry

    modes = ("rebuilt", "reused")
    times: dict[str, list[float]] = {m: [] for m in modes}
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        for spec, shape in STUDENTS:
            torch.manual_seed(0)
            model = create_model(spec, shape, 10).eval()
            info = ModelInfo(spec=spec, input_shape=shape, num_classes=10, class_names=[str(i) for i in range(10)])
            export_onnx(model, info, Path(tmp) / "warm.onnx")  # the first export pays torch's imports
            files = {}
            for r in range(args.repeats):
                for mode in (modes if r % 2 == 0 else modes[::-1]):
                    path = Path(tmp) / f"{mode}.onnx"
                    if mode == "rebuilt":  # the registry cache emptied: this export builds it, as torch alone does
                        onnx_registry._BUILT.clear()
                    t0 = time.perf_counter()
                    export_onnx(model, info, path)
                    times[mode].append(time.perf_counter() - t0)
                    files[mode] = path.read_bytes()
            same = files["rebuilt"] == files["reused"]
            identical &= same
            print(f"{spec:55s} rebuilt {statistics.median(times['rebuilt'][-args.repeats:]):5.2f} s  "
                  f"reused {statistics.median(times['reused'][-args.repeats:]):5.2f} s  "
                  f"files {'identical' if same else 'DIFFER'}", flush=True)
    med = {m: round(statistics.median(v), 3) for m, v in times.items()}
    print(f"\nper export, median over {len(STUDENTS)} students x {args.repeats}: registry rebuilt {med['rebuilt']} s, "
          f"reused {med['reused']} s ({med['reused'] / med['rebuilt']:.2f}x)")
    print(json.dumps({"median_s": med, "ratio": round(med["reused"] / med["rebuilt"], 3), "identical": identical,
                      "torch": torch.__version__, "exports_per_mode": len(times["reused"])}))
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()

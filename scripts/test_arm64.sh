#!/usr/bin/env bash
# The agent on aarch64 (Raspberry Pi class) under qemu user-mode emulation: builds an arm64 Debian
# root file system with /work/shared/tools/arm64 (first time ~10 min, needs root), installs the
# agent's base dependencies + onnxruntime + ai-edge-litert from aarch64 wheels, copies edgekd in,
# then runs tests/test_arm64.py: the host exports a tiny model to .onnx and .tflite, the emulated
# agent serves them over TCP, and its accuracy/outputs must equal the x86 ones.
# Timings under emulation mean nothing; this proves the agent and its runtimes start and answer.
# Never run in CI (too slow); run by hand:  bash scripts/test_arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ARM64=${ARM64_TOOL:-/work/shared/tools/arm64}
[ -x "$ARM64" ] || { echo "arm64 tool not found at $ARM64 (set ARM64_TOOL)" >&2; exit 2; }
pin() { grep -i "^$1==" constraints.txt | head -1; }
"$ARM64" setup
"$ARM64" install "$(pin numpy)" "$(pin pyserial)" "$(pin click)" "$(pin pyyaml)" "$(pin psutil)" \
  "$(pin onnxruntime)" "$(pin ai-edge-litert)"
"$ARM64" copy edgekd /work/edgekd
"$ARM64" run python -c 'import platform, edgekd.agent.server; print("agent imports on", platform.machine())'
EDGEKD_ARM64=1 ARM64_TOOL="$ARM64" .venv/bin/python -m pytest tests/test_arm64.py -m arm64 -q -p no:cacheprovider "$@"

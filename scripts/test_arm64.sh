#!/usr/bin/env bash
# The agent on aarch64 (Raspberry Pi class) under qemu user-mode emulation: builds an arm64 Debian
# root file system with /work/shared/tools/arm64 (first time ~10-15 min, needs root), installs the
# agent's base dependencies + onnxruntime + ai-edge-litert from aarch64 wheels (versions pinned by
# constraints.txt), copies edgekd in, then runs tests/test_arm64.py: the host exports the tiny digits
# teacher to .onnx and .tflite, the emulated agent (TCP on 127.0.0.1, with a key) answers hello and
# evaluates/benches both, and its accuracy, per-sample predictions and logits must equal the x86 ones;
# and INT8 convs built to saturate int16 sums run exactly on Cortex-A53 / A72 / max cores (QEMU_CPU).
# Timings under emulation mean nothing; this proves the agent and its runtimes start and agree.
# Not in CI (the rootfs alone takes longer than CI's time limit); run by hand:  bash scripts/test_arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ARM64=${ARM64_TOOL:-/work/shared/tools/arm64}
[ -x "$ARM64" ] || { echo "arm64 tool not found at $ARM64 (set ARM64_TOOL)" >&2; exit 2; }
pin() {
  local line; line=$(grep -i "^$1==" constraints.txt | head -1)
  [ -n "$line" ] || { echo "constraints.txt pins no $1" >&2; exit 2; }
  echo "$line"
}
"$ARM64" setup
"$ARM64" install "$(pin numpy)" "$(pin pyserial)" "$(pin click)" "$(pin pyyaml)" "$(pin psutil)" \
  "$(pin onnxruntime)" "$(pin ai-edge-litert)"
# a fresh copy of the package (a stale module left from an older copy must not be imported);
# `arm64 copy SRC` puts SRC under /work, so this is /work/edgekd, importable from the cwd /work
"$ARM64" run rm -rf /work/edgekd
"$ARM64" copy edgekd
"$ARM64" run python -c 'import platform, edgekd.agent.server; print("agent imports on", platform.machine())'
EDGEKD_ARM64=1 ARM64_TOOL="$ARM64" .venv/bin/python -m pytest tests/test_arm64.py -m arm64 -q -s -p no:cacheprovider "$@"

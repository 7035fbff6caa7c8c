#!/usr/bin/env bash
# The test command (README): the suite on this CPU as it is, then once more under TEXTRNN_CPU=avx2
# (oneDNN, PyTorch and MKL capped at AVX2, no native bfloat16, the C kernel built for AVX2), the
# path most laptops take. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== tests, this CPU as it is: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs)"
.venv/bin/python -m pytest "$@"
echo "== tests again as an AVX2 CPU without bfloat16 (TEXTRNN_CPU=avx2)"
TEXTRNN_CPU=avx2 .venv/bin/python -m pytest "$@"

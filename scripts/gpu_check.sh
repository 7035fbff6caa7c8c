#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run (a session is lent a GPU for minutes, not hours).
#
#   bash scripts/gpu_check.sh OUT_DIR [IMDB]
#
# IMDB: the archive, an extracted aclImdb folder, or a .tar.xz of the aclImdb folder (unpacked
# to /tmp first); default $TEXTRNN_IMDB. Runs, each under its own time limit so that one slow part
# cannot starve the rest, and each writing into OUT_DIR as it ends:
#   1. tests/test_device.py, whose CUDA-only tests are skipped on a CPU;
#   2. benchmarks/speed.py on CUDA (textrnn only: the peer is a CPU baseline) -> speed-<date>-cuda.json;
#   3. configs/imdb_best_gpu.toml: LM pretraining, fine-tuning two ways, the better on validation
#      tested once -> best-metrics.json.
# GPU_CHECK_QUICK=1 shrinks every part to a smoke run (how this script is tried on a CPU first).
set -u
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
IMDB=${2:-${TEXTRNN_IMDB:-}}
PY=${PYTHON:-python3}
QUICK=${GPU_CHECK_QUICK:-}
# The GPU image has torch but not tomli_w (textrnn writes run configs with it): carry its pure-Python
# package in .gpudata/pylib (cp -r .venv/lib/python3*/site-packages/tomli_w .gpudata/pylib/).
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD/.gpudata/pylib${PYTHONPATH:+:$PYTHONPATH}"
export TEXTRNN_CACHE_DIR=${TEXTRNN_CACHE_DIR:-/tmp/textrnn-gpu-cache}
START=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_check.log"; }

say "start $(date -u +%FT%TZ)"
# (at most 8 files come back from a device run: every part writes one log, plus its results file)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/gpu_check.log" 2>&1 || true
$PY - <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import torch, textrnn
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-", "textrnn", textrnn.__version__)
EOF

if [[ "$IMDB" == *.tar.xz ]]; then
    mkdir -p /tmp/imdb-gpu && tar xJf "$IMDB" -C /tmp/imdb-gpu && IMDB=/tmp/imdb-gpu/aclImdb
    say "unpacked IMDB to $IMDB"
fi
export TEXTRNN_IMDB=$IMDB

# 1. tests (the GPU-only ones are skipped on a CPU, run here)
say "tests"
timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_device.py \
    >"$OUT/pytest.txt" 2>&1
say "tests: exit $? - $(tail -1 "$OUT/pytest.txt")"

# (DDP over NCCL needs two GPUs: NCCL refuses two ranks on one device, and torchrun with one
#  process runs no process group at all; the gloo path is tested on the CPU.)

# 2. the speed benchmark on CUDA
say "speed"
if [ -n "$QUICK" ]; then SPEED=(--epochs 1); else SPEED=(--epochs 2); fi
timeout "${SPEED_LIMIT:-130}" $PY benchmarks/speed.py --skip-peer --tag cuda --imdb "$IMDB" --out /tmp/gpu-speed \
    "${SPEED[@]}" >"$OUT/speed.log" 2>&1
say "speed: exit $?"
cp /tmp/gpu-speed/speed-*-cuda.json "$OUT/" 2>/dev/null || cp /tmp/gpu-speed/speed-*-cuda.partial.json "$OUT/" 2>/dev/null

# 3. imdb_best on the GPU: the language model is pretrained once (then cached), the classifier
#    fine-tuned two ways with the test split left out; the one better on validation is tested once.
say "imdb_best_gpu"
if [ -n "$QUICK" ]; then
    BEST=(--limit 300 --set pretrain.max_tokens=20000 --set model.hidden_size=16 --set model.embedding_dim=16
          --set train.epochs=1 --set runtime.device=auto)
else
    BEST=()
fi
B0=$(date +%s)
VARIANTS=("ulmfit:--set train.learning_rate=0.002 --set train.encoder_lr_multiplier=0.5 --set train.freeze_encoder_epochs=1"
          "flat:--set train.learning_rate=0.005 --set train.encoder_lr_multiplier=1.0 --set train.freeze_encoder_epochs=0")
for v in "${VARIANTS[@]}"; do
    name=${v%%:*}; args=${v#*:}
    left=$(( ${TOTAL_LIMIT:-560} - ($(date +%s) - START) - 25 ))  # 25 s kept for the test evaluation
    [ "$left" -gt 30 ] || { say "imdb_best_gpu $name: skipped, ${left}s left"; continue; }
    # shellcheck disable=SC2086
    timeout "$left" $PY -m textrnn train --config configs/imdb_best_gpu.toml --test none --output "/tmp/gpu-best-$name" \
        --overwrite "${BEST[@]}" $args >>"$OUT/best.log" 2>&1
    say "imdb_best_gpu $name: exit $? (limit ${left}s)"
done
$PY - "$OUT/best-metrics.json" "$B0" <<'EOF' 2>&1 | tee -a "$OUT/gpu_check.log"
import json, sys, time
from pathlib import Path
import textrnn
from textrnn.pipeline import environment, load_split

runs = {p.name[len("gpu-best-"):]: json.loads((p / "metrics.json").read_text())
        for p in sorted(Path("/tmp").glob("gpu-best-*")) if (p / "metrics.json").is_file()}
if not runs:
    sys.exit("imdb_best_gpu: no fine-tuned model finished")
val = {k: r["validation"]["accuracy"] for k, r in runs.items()}
chosen = max(val, key=val.get)
clf = textrnn.load(f"/tmp/gpu-best-{chosen}/model")
test = load_split("imdb:test", clf.config_)
metrics = clf.evaluate(test.texts, test.labels)
out = {"recipe": "configs/imdb_best_gpu.toml", "validation_accuracy": val, "chosen": chosen,
       "test_accuracy": metrics["accuracy"], "test": metrics, "wall_seconds": time.time() - float(sys.argv[2]),
       "runs": runs, "environment": environment()}
Path(sys.argv[1]).write_text(json.dumps(out, indent=2, default=str))
print("imdb_best_gpu: validation", val, "chosen", chosen, "test accuracy", metrics["accuracy"],
      "wall", round(out["wall_seconds"]), "s")
EOF
grep -E "pretrain: epoch|^epoch|reached" "$OUT/best.log" | tail -20
say "done"

#!/usr/bin/env bash
# Train CONFIG on the built-in data set (best checkpoint picked on val), test
# that checkpoint on the held-out test split, print its test top-1.
#   tools/main_job.sh [CONFIG] [WORK_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${1:-configs/sknet/sknet18-cifar_1xb64_mnist5k.py}"
NAME="$(basename "$CONFIG" .py)"
WORK_DIR="${2:-work_dirs/$NAME}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$ROOT"

start=$(date +%s)
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
train_s=$(( $(date +%s) - start ))

best="$(ls -t "$WORK_DIR"/best_*.pth | head -n 1)"
echo "[main] trained in ${train_s}s; testing $best"
"$PYTHON" tools/test.py "$CONFIG" "$best" --work-dir "$WORK_DIR" \
    --out "$WORK_DIR/test_metrics.json" --out-item metrics
"$PYTHON" - "$WORK_DIR/test_metrics.json" "$train_s" "$CONFIG" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
print(f"[main] {sys.argv[3]}: test top-1 = {metrics['accuracy/top1']:.2f}% "
      f"(training took {sys.argv[2]} s)")
PY

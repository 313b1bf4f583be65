#!/usr/bin/env bash
# Train CONFIG on the built-in data set (best checkpoint picked on val), test
# that checkpoint on the held-out test split, print its test top-1.
#   tools/main_job.sh [--resume] [CONFIG] [WORK_DIR]
# CONFIG may be relative to the current folder or to the repository root,
# WORK_DIR to the current folder (default: work_dirs/CONFIG_NAME in the
# repository root). --resume continues a run that stopped (a crash, a kill, a
# reboot) from the newest whole checkpoint in WORK_DIR instead of training
# from the start (`make main RESUME=1`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESUME=()
if [[ "${1:-}" == "--resume" ]]; then
    RESUME=(--resume)
    shift
elif [[ "${1:-}" == -* ]]; then
    echo "error: unknown option $1 (usage: tools/main_job.sh [--resume]" \
        "[CONFIG] [WORK_DIR])" >&2
    exit 2
fi
if [[ $# -gt 2 ]]; then
    echo "error: too many arguments: $* (usage: tools/main_job.sh" \
        "[--resume] [CONFIG] [WORK_DIR])" >&2
    exit 2
fi
CONFIG="${1:-configs/sknet/sknet18-cifar_1xb64_mnist5k.py}"
# a path given from another folder: make it absolute before cd "$ROOT"
if [[ -e "$CONFIG" && "$CONFIG" != /* ]]; then
    CONFIG="$(pwd)/$CONFIG"
fi
NAME="$(basename "$CONFIG" .py)"
WORK_DIR="${2:-work_dirs/$NAME}"
if [[ -n "${2:-}" && "$WORK_DIR" != /* ]]; then
    WORK_DIR="$(pwd)/$WORK_DIR"
fi
source "$ROOT/tools/_python.sh"
cd "$ROOT"
if [[ ! -f "$CONFIG" ]]; then
    echo "error: no such config: ${1:-$CONFIG}" >&2
    exit 1
fi

if [[ ${#RESUME[@]} -eq 0 && -f "$WORK_DIR/last_checkpoint" ]]; then
    echo "[main] $WORK_DIR holds an earlier run (last checkpoint:" \
        "$(cat "$WORK_DIR/last_checkpoint")); this run trains from the start." \
        "To continue that run instead: tools/main_job.sh --resume" \
        "(make main RESUME=1)" >&2
elif [[ ${#RESUME[@]} -gt 0 ]]; then
    echo "[main] resuming from the newest whole checkpoint in $WORK_DIR" >&2
fi
start=$(date +%s)
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "${RESUME[@]}"
train_s=$(( $(date +%s) - start ))

# this run's best checkpoint, as its CheckpointHook recorded it in the
# run's last checkpoint: a best_*.pth that an earlier run left in WORK_DIR
# is not this run's result
best="$(PYTHONWARNINGS=ignore "$PYTHON" - "$WORK_DIR" <<'PY' || true
import os.path as osp
import sys

from mmsk.checkpoint import load_local_checkpoint
try:
    with open(osp.join(sys.argv[1], 'last_checkpoint')) as f:
        last = load_local_checkpoint(f.read().strip(), map_location='cpu')
    info = last['message_hub']['runtime_info']
except Exception as e:  # said below, with what the main job needs
    print(f"[main] cannot read this run's last checkpoint: {e}",
          file=sys.stderr)
    sys.exit(0)
# save_best='auto' or one metric: best_ckpt; several metrics: one
# best_ckpt_<metric> each, of which the first in name order
keys = ['best_ckpt'] + sorted(k for k in info if k.startswith('best_ckpt_'))
best = next((info[k] for k in keys if info.get(k)), None)
if best and osp.isfile(best):
    print(best)
PY
)"
if [[ -z "$best" ]]; then
    echo "error: training wrote no best_*.pth in $WORK_DIR: the main job" \
        "tests the checkpoint that is best on val, so the config needs" \
        "default_hooks.checkpoint.save_best='auto' and a val_dataloader" >&2
    exit 1
fi
echo "[main] trained in ${train_s}s; testing $best"
"$PYTHON" tools/test.py "$CONFIG" "$best" --work-dir "$WORK_DIR" \
    --out "$WORK_DIR/test_metrics.json" --out-item metrics
"$PYTHON" - "$WORK_DIR/test_metrics.json" "$train_s" "$CONFIG" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
print(f"[main] {sys.argv[3]}: test top-1 = {metrics['accuracy/top1']:.2f}% "
      f"(training took {sys.argv[2]} s)")
PY

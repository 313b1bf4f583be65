#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT NPROC [ARGS]
# Works on CPU (gloo) as well as on GPUs.
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/_python.sh"
if [[ $# -lt 3 || ! "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [ARGS] (NPROC: processes per node," \
        "a positive int; PYTHON, NNODES, NODE_RANK, PORT, MASTER_ADDR from" \
        "the environment)" >&2
    exit 2
fi

# a missing file: one line here, not one traceback per process
if [[ -d "$CONFIG" ]]; then
    echo "error: config $CONFIG is a folder, not a config file" >&2
    exit 1
elif [[ ! -f "$CONFIG" ]]; then
    echo "error: no such config file: $CONFIG" >&2
    exit 1
fi
if [[ -d "$CHECKPOINT" ]]; then
    echo "error: checkpoint $CHECKPOINT is a folder, not a checkpoint file" >&2
    exit 1
elif [[ "$CHECKPOINT" != *://* && ! -f "$CHECKPOINT" ]]; then
    echo "error: no such checkpoint file: $CHECKPOINT" >&2
    exit 1
fi

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$(dirname "$0")/test.py" \
    "$CONFIG" "$CHECKPOINT" \
    --launcher pytorch "${@:4}"

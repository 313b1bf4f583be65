#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG NPROC [ARGS]
# Works on CPU (gloo) as well as on GPUs.
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/_python.sh"
if [[ $# -lt 2 || ! "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: tools/dist_train.sh CONFIG NPROC [ARGS] (NPROC: processes per node," \
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

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"

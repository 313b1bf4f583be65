#!/usr/bin/env bash
# Create (or refresh) the .venv that mmsk's main job, tools and tests run in.
#
# Safe to rerun: every step is skipped when its result is already there, and
# the mmcv wheel (full build with CPU ops, 11-25 min on 2 cores) is cached under
# ${MMSK_CACHE:-~/.cache/mmsk} so that a second set-up, or a second clone,
# reuses it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMSK_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
CACHE="${MMSK_CACHE:-$HOME/.cache/mmsk}"
MMCV_VERSION=2.1.0
MMDEPLOY_VERSION=1.3.1
# mmcv-lite (pure Python, no mmcv.ops) beside the full build, in its own
# folder that only tests/test_mmcv_lite.py puts on the path
MMCV_LITE_DIR="$VENV/mmcv-lite"
STAMP="$VENV/.mmsk-setup-stamp"

log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
CONSTRAINTS=(-c "$ROOT/requirements/constraints.txt")

# Hash of everything that decides what gets installed: a changed pin reruns.
want="$(cat "$ROOT/requirements/"*.txt "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$PY" -c 'import mmcv.ops, mmsk' >/dev/null 2>&1 \
   && [ -f "$MMCV_LITE_DIR/mmcv/version.py" ]; then
  log "environment is up to date ($VENV)"
  exit 0
fi

log "installing build tools and PyTorch"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" -r "$ROOT/requirements/build.txt"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" -r "$ROOT/requirements/torch.txt"

# Full mmcv with CPU ops: mmdet and mmseg import mmcv.ops at import time.
if ! "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" >/dev/null 2>&1; then
  mkdir -p "$CACHE"
  torch_tag="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
  wheel_dir="$CACHE/mmcv-$MMCV_VERSION-torch$torch_tag"
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with CPU ops (11-25 minutes on 2 cores; cached in $wheel_dir)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary=:all: "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
    src="$work/mmcv-$MMCV_VERSION"
    # torch 2.14 headers need C++20; mmcv 2.1.0 asks for C++14/17.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
      "${PIP[@]}" wheel -q --no-build-isolation --no-deps . -w "$work/dist")
    mkdir -p "$wheel_dir"
    cp "$work"/dist/mmcv-*.whl "$wheel_dir/"
  fi
  log "installing cached mmcv wheel from $wheel_dir"
  "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
  # mmcv's own runtime needs (no torch, no build).
  "${PIP[@]}" install -q "${CONSTRAINTS[@]}" addict packaging pillow pyyaml yapf opencv-python
fi

log "installing mmcv-lite $MMCV_VERSION into $MMCV_LITE_DIR (for the tests)"
rm -rf "$MMCV_LITE_DIR"
"${PIP[@]}" install -q --no-deps --target "$MMCV_LITE_DIR" "mmcv-lite==$MMCV_VERSION"

log "installing the OpenMMLab stack, references and test tools"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"

log "installing the deploy tools (ONNX, onnxruntime, mmdeploy $MMDEPLOY_VERSION)"
"${PIP[@]}" install -q "${CONSTRAINTS[@]}" -r "$ROOT/requirements/deploy.txt"
# mmdeploy pins protobuf<=3.20.2, which current onnx cannot use: install it
# without its dependencies (requirements/deploy.txt lists what it imports).
if ! "$PY" -c "import mmdeploy, sys; sys.exit(mmdeploy.__version__ != '$MMDEPLOY_VERSION')" >/dev/null 2>&1; then
  "${PIP[@]}" install -q --no-deps "mmdeploy==$MMDEPLOY_VERSION"
fi

log "installing mmsk (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'PY'
import mmcv, mmcv.ops, mmengine, mmpretrain, mmdet, mmseg, timm, torch, mmsk
import onnx, onnxruntime, onnxscript, mmdeploy
print('[setup] ok: torch', torch.__version__, '| mmcv', mmcv.__version__,
      '| mmengine', mmengine.__version__, '| mmpretrain', mmpretrain.__version__,
      '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__,
      '| timm', timm.__version__, '| onnx', onnx.__version__,
      '| onnxruntime', onnxruntime.__version__, '| mmdeploy',
      mmdeploy.__version__, '| mmsk', mmsk.__version__)
PY
echo "$want" > "$STAMP"

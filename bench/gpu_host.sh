#!/usr/bin/env bash
# The GPU checks on a host that has torch but not the project's pins: install the wheels carried in .whl/
# (see docs/performance.md), then run bench/gpu_train.py (SFT and GRPO settings at the 3B shape), one
# DeepSpeed ZeRO-2 step through `accelerate launch`, and, where vLLM is found, bench/evaluate.py (the same
# items through the evaluator's hf and vllm backends) at the 3B shape. Results and logs go to ${OUT:-bench/gpu_host}.
#   bash bench/gpu_host.sh [extra gpu_train.py args]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu_host}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
START=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers, trl; print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__)'
WORK=${WORK:-/tmp/avrt-gpu-bench}
python3 bench/gpu_train.py --out "$WORK" "$@" 2>&1 | tee "$OUT/gpu_train.txt"
cp "$WORK/results.json" "$OUT/" 2>/dev/null
tail -c 4000 "$WORK"/*.log > "$OUT/setting_logs.txt" 2>/dev/null
if [ $(( $(date +%s) - START )) -lt "${ZERO_STEP_BEFORE_S:-430}" ]; then  # one ZeRO-2 step, when time allows
  rm -rf "$WORK/zero2"
  timeout 150 python3 -m accelerate.commands.launch --config_file configs/accelerate/zero2_offload.yaml --num_processes 1 \
      --offload_optimizer_device none -m training.sft_then_grpo --config configs/recipes/avrt.yaml --stages sft \
      --model "$WORK/model" --corpus "$WORK/corpus" --output-dir "$WORK/zero2" sft.max_steps=1 sft.save_steps=100000 \
      > "$OUT/zero2.txt" 2>&1
  echo "zero2 step: rc=$? $(grep -o 'memory plan.*' "$OUT/zero2.txt" | head -1) $(grep -o "'train_runtime': [0-9.]*" "$OUT/zero2.txt")" | tee -a "$OUT/gpu_train.txt"
fi
# evaluation, hf against vllm, on the 3B-shaped student: where vLLM is found and time allows
if [ -d "$WORK/model" ] && [ $(( $(date +%s) - START )) -lt "${EVAL_BEFORE_S:-600}" ] && python3 -c \
    'import sys; from serving.vllm_server import find_launcher; sys.exit(not find_launcher(must_exist=False).exists())'; then
  timeout "${EVAL_TIMEOUT_S:-480}" python3 bench/evaluate.py --model "$WORK/model" --size 1280x720 --clips "${EVAL_CLIPS:-32}" \
      --max-new-tokens "${EVAL_NEW_TOKENS:-256}" --out "$OUT/evaluate.json" > "$OUT/evaluate.txt" 2>&1
  echo "evaluate: rc=$?"; tail -n 5 "$OUT/evaluate.txt"
fi | tee -a "$OUT/gpu_train.txt"
echo "total $(( $(date +%s) - START )) s"

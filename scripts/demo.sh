#!/usr/bin/env bash
# The whole AVRT method end to end on tiny local models (what `make demo` runs).
# Builds tiny models and synthetic clips, starts `transformers serve` and `prefect server`, serves
# the build-avrt deployment, runs it, then trains and evaluates the tiny student. Stops everything
# it started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${DEMO_OUT:-outputs}
SERVE_PORT=${DEMO_SERVE_PORT:-8001}
PREFECT_PORT=${DEMO_PREFECT_PORT:-4200}
LOGS="$OUT/demo-logs"
mkdir -p "$LOGS"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

start() {  # start NAME CMD...: run in its own process group, log to $LOGS/NAME.log
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
}

wait_for() {  # wait_for URL SECONDS NAME
  for _ in $(seq "$2"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 1
  done
  echo "$3 did not come up; last log lines:"; tail -20 "$LOGS/$3.log"; exit 1
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
T0=$(date +%s)

step "1/6 tiny offline models and synthetic clips"
[ -f "$OUT/tiny/omni/config.json" ] || python -m training.tiny_models --out "$OUT/tiny"
[ -f "$OUT/synthetic/manifest.jsonl" ] || python -m media.synthetic --out "$OUT/synthetic" --n 8

step "2/6 servers: transformers serve (teachers + merger), prefect server"
mkdir -p "$OUT/.hf/hub"
HF_HOME="$OUT/.hf" HF_HUB_OFFLINE=1 start serve transformers serve --host 127.0.0.1 --port "$SERVE_PORT" --device cpu
export PREFECT_HOME="$PWD/$OUT/.prefect" PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
start prefect-server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
wait_for "http://127.0.0.1:$SERVE_PORT/v1/models" 180 serve
wait_for "$PREFECT_API_URL/health" 120 prefect-server

step "3/6 build-avrt as a Prefect deployment"
start flow-serve python -m flows.serve
for _ in $(seq 60); do
  prefect deployment inspect build-avrt/build-avrt >/dev/null 2>&1 && break
  sleep 1
done
PARAMS=$(printf '{"manifest": "%s", "out": "%s", "config": "configs/build/demo.yaml", "overrides": {"vision_teacher.base_url": "http://127.0.0.1:%s/v1", "audio_teacher.base_url": "http://127.0.0.1:%s/v1", "merger.base_url": "http://127.0.0.1:%s/v1"}}' \
  "$OUT/synthetic/manifest.jsonl" "$OUT/demo/corpus" "$SERVE_PORT" "$SERVE_PORT" "$SERVE_PORT")
prefect deployment run build-avrt/build-avrt --params "$PARAMS" --watch --watch-timeout 600
echo "--- flow-run log (summary) ---"
sed -n '/build-avrt: [0-9]* samples decided,/,/^.*  calls sent:/p' "$LOGS/flow-serve.log" | sed 's/^.*| //' | tail -40

step "4/6 train the tiny student: SFT then GRPO"
if [ -f training/sft_then_grpo.py ]; then
  rm -rf "$OUT/demo/student"  # a demo always trains afresh (the trainer itself resumes interrupted runs)
  python -m training.sft_then_grpo --config configs/train/tiny.yaml --corpus "$OUT/demo/corpus" \
    --model "$OUT/tiny/omni" output_dir="$OUT/demo/student"
else
  echo "(trainer not available yet)"
fi

step "5/6 evaluate the student with modality ablations"
if [ -f evaluation/evaluate.py ]; then
  MODEL="$OUT/demo/student/grpo/final"; [ -d "$MODEL" ] || MODEL="$OUT/tiny/omni"
  python -m evaluation.evaluate --model "$MODEL" --benchmark manifest --data "$OUT/synthetic/manifest.jsonl" \
    --modalities av,a,v --max-new-tokens 32 --out "$OUT/demo/eval" --difficulty-from "$OUT/demo/corpus" --quiet
  cat "$OUT/demo/eval/report.md"
else
  echo "(evaluation not available yet)"
fi

step "6/6 done in $(( $(date +%s) - T0 )) s; outputs"
echo "  corpus:        $OUT/demo/corpus/corpus  (card: $OUT/demo/corpus/README.md, stats: stats.json, stats.png)"
echo "  rejected:      $OUT/demo/corpus/rejected"
[ -d "$OUT/demo/student" ] && echo "  student:       $OUT/demo/student  (plots: */plots/*.png)"
[ -d "$OUT/demo/eval" ] && echo "  evaluation:    $OUT/demo/eval"
echo "  server logs:   $LOGS"

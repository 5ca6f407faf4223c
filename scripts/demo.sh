#!/usr/bin/env bash
# The whole AVRT method end to end on tiny local models (what `make demo` runs).
# Renders the demo's AV task (media.av_task), trains or reuses its vision and audio teachers and its
# merger (training.demo_models), starts `transformers serve` and `prefect server`, serves the
# build-avrt deployment and runs it on the train split (both-correct filter, LLM merger), trains a
# fresh tiny student (SFT then GRPO), evaluates it before and after on the test split (av, a, v),
# writes the corpus viewer and prints the figures. Stops everything it started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=$(realpath -m "${DEMO_OUT:-outputs}")
SERVE_PORT=${DEMO_SERVE_PORT:-8001}
PREFECT_PORT=${DEMO_PREFECT_PORT:-4200}
CLIPS=${DEMO_CLIPS:-320}  # clips of the AV task (about 3/4 train, 1/4 test); fewer keep too few for the pitch
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

T0=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m  (%s s)\n' "$*" "$(( $(date +%s) - T0 ))"; }

step "1/7 the AV task (coloured screen x tone pitch, train/test), a fresh tiny student"
[ -f "$OUT/tiny/omni/config.json" ] || python -m training.tiny_models --out "$OUT/tiny"
TASK="$OUT/demo/av-n$CLIPS"
[ -f "$TASK/manifest_test.jsonl" ] || python -m media.synthetic --task av --n "$CLIPS" --out "$TASK"
echo "$(wc -l <"$TASK/manifest_train.jsonl") train and $(wc -l <"$TASK/manifest_test.jsonl") test questions in $TASK"

step "2/7 the teachers (vision: frames only, audio: audio only) and the merger, trained or reused"
echo "(training takes a few minutes the first time; progress in $LOGS/demo-models.log)"
python -m training.demo_models --manifest "$TASK/manifest_train.jsonl" --out "$OUT/demo-models" \
  >"$LOGS/demo-models.log" 2>&1 || { tail -20 "$LOGS/demo-models.log"; exit 1; }
MODELS=$(sed -n 's/^models: //p' "$LOGS/demo-models.log")
[ -n "$MODELS" ] && [ -d "$MODELS" ] || { echo "demo models not built; see $LOGS/demo-models.log"; exit 1; }
echo "models: $MODELS"

step "3/7 servers: transformers serve (teachers + merger), prefect server"
mkdir -p "$OUT/.hf/hub"
HF_HOME="$OUT/.hf" HF_HUB_OFFLINE=1 start serve transformers serve --host 127.0.0.1 --port "$SERVE_PORT" --device cpu
export PREFECT_HOME="$OUT/.prefect" PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
start prefect-server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
wait_for "http://127.0.0.1:$SERVE_PORT/v1/models" 180 serve
wait_for "$PREFECT_API_URL/health" 120 prefect-server

step "4/7 build-avrt as a Prefect deployment, on the train split"
start flow-serve python -m flows.serve
for _ in $(seq 60); do
  prefect deployment inspect build-avrt/build-avrt >/dev/null 2>&1 && break
  sleep 1
done
URL="http://127.0.0.1:$SERVE_PORT/v1"
# the demo owns its corpus folder: rows of an older demo's manifest are replaced, not a reason to stop
PARAMS=$(printf '{"manifest": "%s", "out": "%s", "config": "configs/build/demo.yaml", "replace": true, "overrides": {"vision_teacher.base_url": "%s", "audio_teacher.base_url": "%s", "merger.base_url": "%s", "vision_teacher.model": "%s", "audio_teacher.model": "%s", "merger.model": "%s", "stats_tokenizer": "%s"}}' \
  "$TASK/manifest_train.jsonl" "$OUT/demo/corpus" "$URL" "$URL" "$URL" "$MODELS/vision" "$MODELS/audio" "$MODELS/merger" "$OUT/tiny/omni")
prefect deployment run build-avrt/build-avrt --params "$PARAMS" --watch --watch-timeout 600
echo "--- flow-run log (summary) ---"
sed -n '/build-avrt: [0-9]* samples decided,/,/^.*  calls sent:/p' "$LOGS/flow-serve.log" | sed 's/^.*| //' | tail -40
VIEW=$(python -m flows.view "$OUT/demo/corpus" | python -c "import json, sys; print(json.load(sys.stdin)[\"html\"])")

step "5/7 train a fresh tiny student on the corpus: SFT then GRPO"
rm -rf "$OUT/demo/student"  # a demo always trains afresh (the trainer itself resumes interrupted runs)
python -m training.sft_then_grpo --config configs/train/demo.yaml --corpus "$OUT/demo/corpus" \
  --model "$OUT/tiny/omni" --output-dir "$OUT/demo/student"

step "6/7 evaluate the untrained and the trained student on the test split (av, a, v)"
# 64 new tokens, as GRPO's max_completion_length in configs/train/demo.yaml: a whole merged trace
# (50-52 tokens) and its answer fit
evaluate() {  # evaluate MODEL OUTDIR
  rm -rf "$2"
  python -m evaluation.evaluate --model "$1" --benchmark manifest --data "$TASK/manifest_test.jsonl" \
    --modalities av,a,v --max-new-tokens 64 --out "$2" --difficulty-from "$OUT/demo/corpus" --quiet
}
evaluate "$OUT/tiny/omni" "$OUT/demo/eval-base"
evaluate "$OUT/demo/student/grpo/final" "$OUT/demo/eval"

step "7/7 done in $(( $(date +%s) - T0 )) s"
python -m evaluation.demo_summary --corpus "$OUT/demo/corpus" --base "$OUT/demo/eval-base" \
  --trained "$OUT/demo/eval" --json "$OUT/demo/summary.json"
echo
echo "  viewer:        $VIEW"
echo "  corpus:        $OUT/demo/corpus/corpus  (card: $OUT/demo/corpus/README.md, stats: stats.json, stats.png)"
echo "  rejected:      $OUT/demo/corpus/rejected"
echo "  student:       $OUT/demo/student  (plots: */plots/*.png)"
echo "  evaluation:    $OUT/demo/eval-base (untrained), $OUT/demo/eval (trained)"
echo "  server logs:   $LOGS"

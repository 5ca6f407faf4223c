#!/usr/bin/env bash
# The whole AVRT method end to end on tiny local models (what `make demo` runs).
# Renders the demo's AV task (demo.task), trains or reuses its vision and audio teachers and its
# merger (demo.models), starts `transformers serve` and `prefect server`, serves the build-avrt
# deployment and runs it on the train split (both-correct filter, LLM merger), writes the corpus
# viewer, then trains a fresh tiny student (SFT then GRPO), evaluates it before and after on the test
# split (av, a, v) and prints the figures (demo.student), and a table of each step's time. What a
# previous run made from the same inputs is reused. Stops everything it started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=$(realpath -m "${DEMO_OUT:-outputs}")
SERVE_PORT=${DEMO_SERVE_PORT:-8001}  # and the next port
PREFECT_PORT=${DEMO_PREFECT_PORT:-4200}
CLIPS=${DEMO_CLIPS:-320}  # clips of the AV task (about 3/4 train, 1/4 test); fewer keep too few for the pitch
LOGS="$OUT/demo-logs"
mkdir -p "$LOGS"
PIDS=()

# Per-step timing: wall seconds, and CPU seconds of all the step ran: finished children (read with
# the `times` builtin, which must run in this shell, not in a $(...) subshell) and the servers
# started in the background, which do the teachers' work during the build (read from /proc).
calc() { awk "BEGIN { print $* }"; }
STOPPED_CPU=0  # CPU of servers already stopped
read_cpu() {  # sets OWN_CPU (finished children), SERVERS_CPU and CPU_NOW (their sum)
  local servers=$STOPPED_CPU
  times >"$LOGS/.times"
  OWN_CPU=$(awk 'END { s = 0; for (i = 1; i <= NF; i++) { split($i, p, "m"); s += p[1] * 60 + p[2] } print s }' "$LOGS/.times")
  for pid in "${PIDS[@]:-}"; do  # each server is a session: its live processes and their reaped children
    [ -n "$pid" ] || continue
    for p in $(ps -o pid= -s "$pid" 2>/dev/null); do
      servers=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null \
        | awk -v s="$servers" -v hz="$(getconf CLK_TCK)" '{ s += ($12 + $13 + $14 + $15) / hz } END { print s }')
    done
  done
  SERVERS_CPU=$servers
  CPU_NOW=$(calc "$OWN_CPU + $servers")
}
T0=$(date +%s.%N); STEP_T=$T0; STEP_CPU=0; STEP_NAME=""; TIMINGS=""
end_step() {
  local now
  now=$(date +%s.%N); read_cpu
  [ -n "$STEP_NAME" ] && TIMINGS+=$(printf '%-28s %7.1f %7.1f' "$STEP_NAME" "$(calc "$now - $STEP_T")" "$(calc "$CPU_NOW - $STEP_CPU")")$'\n'
  STEP_T=$now; STEP_CPU=$CPU_NOW
}
step() {  # step SHORT_NAME HEADING
  end_step; STEP_NAME=$1
  printf '\n\033[1m== %s\033[0m  (%.0f s)\n' "$2" "$(calc "$STEP_T - $T0")"
}
timing_table() {
  end_step
  printf '\n%-28s %7s %7s\n' "step" "wall s" "CPU s"
  printf '%s' "$TIMINGS"
  printf '%-28s %7.1f %7.1f   (%s cores)\n' "total" "$(calc "$STEP_T - $T0")" "$CPU_NOW" "$(nproc)"
}

cleanup() {  # stop the servers (each its own process group)
  [ -n "${PIDS[*]:-}" ] || return 0
  local own live
  read_cpu; own=$OWN_CPU; live=$(calc "$SERVERS_CPU - $STOPPED_CPU")
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in "${PIDS[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  sleep 0.2
  PIDS=()
  # their CPU stays in the table: the part this shell did not get back as its reaped children's
  read_cpu; STOPPED_CPU=$(calc "$STOPPED_CPU + $live - ($OWN_CPU - $own)")
}
trap cleanup EXIT INT TERM

start() {  # start NAME CMD...: run in its own process group, log to $LOGS/NAME.log
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
  disown  # stopped by cleanup, without the shell's "Killed" notice
}

wait_for() {  # wait_for URL SECONDS NAME
  for _ in $(seq "$2"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 1
  done
  echo "$3 did not come up; last log lines:"; tail -20 "$LOGS/$3.log"; exit 1
}

step "task, tiny student" "1/5 the AV task (coloured screen x tone pitch, train/test), a fresh tiny student"
python -m training.tiny_models --out "$OUT/tiny" --if-changed &  # alongside the clips
TINY=$!
TASK="$OUT/demo/av-n$CLIPS"
[ -f "$TASK/manifest_test.jsonl" ] || python -m demo.task --n "$CLIPS" --out "$TASK"
wait "$TINY"
echo "$(wc -l <"$TASK/manifest_train.jsonl") train and $(wc -l <"$TASK/manifest_test.jsonl") test questions in $TASK"

step "teachers and merger" "2/5 the teachers (vision: frames only, audio: audio only) and the merger, trained or reused"
echo "(progress in $LOGS/demo-models.log)"
# the clips' frames and audio are extracted once, into the cache the build then reads them from
python -m demo.models --manifest "$TASK/manifest_train.jsonl" --out "$OUT/demo-models" --media-cache "$OUT/demo/cache" \
  >"$LOGS/demo-models.log" 2>&1 || { tail -20 "$LOGS/demo-models.log"; exit 1; }
MODELS=$(sed -n 's/^models: //p' "$LOGS/demo-models.log")
[ -n "$MODELS" ] && [ -d "$MODELS" ] || { echo "demo models not built; see $LOGS/demo-models.log"; exit 1; }
echo "models: $MODELS"

step "servers" "3/5 servers: transformers serve (vision teacher; audio teacher + merger), prefect server"
mkdir -p "$OUT/.hf/hub"
# Two servers, so that the two teachers answer side by side on two cores (one server runs all its
# models under one interpreter lock), each request on one torch thread (more threads than cores
# stall each other).
VISION_URL="http://127.0.0.1:$SERVE_PORT/v1" AUDIO_URL="http://127.0.0.1:$((SERVE_PORT + 1))/v1"
for name in serve-vision serve-audio; do
  port=$SERVE_PORT; [ "$name" = serve-audio ] && port=$((SERVE_PORT + 1))
  HF_HOME="$OUT/.hf" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 start "$name" transformers serve --host 127.0.0.1 --port "$port" --device cpu
done
export PREFECT_HOME="$OUT/.prefect" PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
start prefect-server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
wait_for "$VISION_URL/models" 180 serve-vision
wait_for "$AUDIO_URL/models" 180 serve-audio
wait_for "$PREFECT_API_URL/health" 120 prefect-server

step "build-avrt, viewer" "4/5 build-avrt as a Prefect deployment, on the train split"
start flow-serve python -m flows.serve
wait_for "$PREFECT_API_URL/deployments/name/build-avrt/build-avrt" 120 flow-serve  # registered
# the demo owns its corpus folder: rows of an older demo's manifest are replaced, not a reason to stop
PARAMS=$(printf '{"manifest": "%s", "out": "%s", "config": "configs/build/demo.yaml", "replace": true, "overrides": {"vision_teacher.base_url": "%s", "audio_teacher.base_url": "%s", "merger.base_url": "%s", "vision_teacher.model": "%s", "audio_teacher.model": "%s", "merger.model": "%s", "stats_tokenizer": "%s", "cache_dir": "%s"}}' \
  "$TASK/manifest_train.jsonl" "$OUT/demo/corpus" "$VISION_URL" "$AUDIO_URL" "$AUDIO_URL" "$MODELS/vision" "$MODELS/audio" "$MODELS/merger" "$OUT/tiny/omni" "$OUT/demo/cache")
prefect deployment run build-avrt/build-avrt --params "$PARAMS" --watch --watch-timeout 600
echo "--- flow-run log (summary) ---"
sed -n '/build-avrt: [0-9]* samples decided,/,/^.*  calls sent:/p' "$LOGS/flow-serve.log" | sed 's/^.*| //' | tail -40
VIEW=$(python -m flows.view "$OUT/demo/corpus" | python -c "import json, sys; print(json.load(sys.stdin)[\"html\"])")

cleanup  # the servers are done: their cores go to the student

step "student: train, evaluate" "5/5 a fresh tiny student: SFT then GRPO on the corpus, evaluated untrained and trained (av, a, v)"
python -m demo.student --corpus "$OUT/demo/corpus" --test "$TASK/manifest_test.jsonl" --model "$OUT/tiny/omni" \
  --out "$OUT/demo"
echo
echo "  viewer:        $VIEW"
echo "  corpus:        $OUT/demo/corpus/corpus  (card: $OUT/demo/corpus/README.md, stats: stats.json, stats.png)"
echo "  rejected:      $OUT/demo/corpus/rejected"
echo "  student:       $OUT/demo/student  (plots: */plots/*.png)"
echo "  evaluation:    $OUT/demo/eval-base (untrained), $OUT/demo/eval (trained)"
echo "  server logs:   $LOGS"
timing_table

#!/usr/bin/env bash
# Side by side: Ignis against Google's functions-framework (python) and serverless-offline
# (node), on this machine, with one load generator (wrk) and one cold-start client (peers.py)
# for every platform. Not part of CI: a separate, documented command like the soak test.
# Results: docs/performance.md, "Side by side: functions-framework and serverless-offline".
#
#   bash bench/peers/run.sh
#
# What it does:
#   1. installs what is missing: wrk (apt, as root), functions-framework in a venv and
#      serverless@3 + serverless-offline@13 with npm, both under $PEERS_SCRATCH;
#   2. builds ignis (cargo build --release) unless $IGNIS_BIN names a binary;
#   3. per platform: starts the server on 127.0.0.1 and a free port (ignis on a temporary data
#      dir), checks each route answers the expected body, then for each route, handler and
#      concurrency: waits for an idle machine, runs wrk for $PEERS_WARMUP s (discarded), then
#      for $PEERS_DURATION s (measured); then times cold starts; stops the server by its pid;
#   4. prints a table and writes it to $PEERS_OUT (raw records beside it, .jsonl).
#
# Knobs (environment): PEERS_DURATION (10), PEERS_WARMUP (3), PEERS_CONCURRENCY ("1 16"),
# PEERS_COLD_RUNS (20: fresh deploys / idle rounds), PEERS_SPAWN_RUNS (10: process starts),
# PEERS_MAX_BUSY (10: % CPU busy tolerated before a run), PEERS_QUIET_TIMEOUT (60 s),
# PEERS_MAX_OTHERS (5: % of the machine other processes may take during a measured run before
# it is tried again), PEERS_TRIES (3: tries at most; the one least disturbed is kept),
# PEERS_ONLY ("ignis-python ff ignis-node sls"), PEERS_SCRATCH (~/.cache/ignis-peers),
# PEERS_OUT (bench/peers/results/latest.md), PEERS_KEEP=1 keeps the run's logs and data dirs
# (kept anyway when the run fails),
# IGNIS_BIN (skip the build), PEERS_FF_VERSION, PEERS_SLS_VERSION, PEERS_SLS_OFFLINE_VERSION.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRATCH=${PEERS_SCRATCH:-${XDG_CACHE_HOME:-$HOME/.cache}/ignis-peers}
DURATION=${PEERS_DURATION:-10}
WARMUP=${PEERS_WARMUP:-3}
CONCURRENCY=${PEERS_CONCURRENCY:-"1 16"}
COLD_RUNS=${PEERS_COLD_RUNS:-20}
SPAWN_RUNS=${PEERS_SPAWN_RUNS:-10}
MAX_BUSY=${PEERS_MAX_BUSY:-10}
QUIET_TIMEOUT=${PEERS_QUIET_TIMEOUT:-60}
MAX_OTHERS=${PEERS_MAX_OTHERS:-5}
TRIES=${PEERS_TRIES:-3}
ONLY=${PEERS_ONLY:-"ignis-python ff ignis-node sls"}
OUT=${PEERS_OUT:-$HERE/results/latest.md}
FF_VERSION=${PEERS_FF_VERSION:-3.10.2}
SLS_VERSION=${PEERS_SLS_VERSION:-3.40.0}
SLS_OFFLINE_VERSION=${PEERS_SLS_OFFLINE_VERSION:-13.10.1}
MAX_INSTANCES=16 # Ignis: as `ignis bench` does, room for every request in flight at 16

log() { printf '%s peers: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
helper() { python3 "$HERE/peers.py" "$@"; }

# --- prerequisites ----------------------------------------------------------------------------

command -v python3 >/dev/null || die "python3 is needed"
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed"
command -v curl >/dev/null || die "curl is needed"
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" = 0 ] || die "wrk is needed (apt-get install wrk)"
  log "installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

mkdir -p "$SCRATCH"
FF_VENV=$SCRATCH/ff-venv
if ! "$FF_VENV/bin/python" -c 'import functions_framework' 2>/dev/null; then
  log "installing functions-framework $FF_VERSION in $FF_VENV"
  python3 -m venv "$FF_VENV"
  "$FF_VENV/bin/pip" install -q "functions-framework==$FF_VERSION"
fi
SLS_DIR=$SCRATCH/sls
if [ ! -x "$SLS_DIR/node_modules/.bin/serverless" ] || [ ! -d "$SLS_DIR/node_modules/serverless-offline" ]; then
  log "installing serverless@$SLS_VERSION and serverless-offline@$SLS_OFFLINE_VERSION in $SLS_DIR"
  mkdir -p "$SLS_DIR"
  [ -f "$SLS_DIR/package.json" ] || echo '{"name":"ignis-peers-sls","private":true}' >"$SLS_DIR/package.json"
  (cd "$SLS_DIR" && npm install --no-audit --no-fund --loglevel=error \
    "serverless@$SLS_VERSION" "serverless-offline@$SLS_OFFLINE_VERSION" >/dev/null)
fi
# serverless v3 offline needs no account; keep it from phoning home or nagging.
export SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off SLS_DEPRECATION_DISABLE='*'

if [ -n "${IGNIS_BIN:-}" ]; then
  IGNIS=$IGNIS_BIN
else
  log "building ignis (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet)
  IGNIS=$ROOT/target/release/ignis
fi
[ -x "$IGNIS" ] || die "no ignis binary at $IGNIS"

# --- run state and cleanup ----------------------------------------------------------------------

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ignis-peers.XXXXXX")
RESULTS=$RUN_DIR/results.jsonl
: >"$RESULTS"
QUIET_LAST='{"busy_pct": -1, "load": [-1]}'
SERVERS=() # pids of the servers this script started (each the leader of its own group)

# Stops one server this script started: SIGTERM to its process group (the group's id is the
# pid, from setsid), SIGKILL after 15 s. Never by name: other servers of the same name may run.
stop_server() {
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local rest=()
  for i in "${SERVERS[@]}"; do [ "$i" = "$pid" ] || rest+=("$i"); done
  SERVERS=("${rest[@]}")
}
cleanup() {
  local status=$? pid
  for pid in "${SERVERS[@]}"; do stop_server "$pid"; done
  if [ "${PEERS_KEEP:-0}" = 1 ] || [ "$status" != 0 ]; then
    log "logs and data kept in $RUN_DIR"
  else
    rm -rf "$RUN_DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server LOG CMD… — starts CMD in its own session; the pid lands in $SERVER_PID.
start_server() {
  local logfile=$1
  shift
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  SERVER_PID=$!
  SERVERS+=("$SERVER_PID")
}

# wait_http URL — until anything answers at URL (60 s at most).
wait_http() {
  local i
  for i in $(seq 1200); do
    curl -s -o /dev/null --max-time 2 "$1" && return 0
    sleep 0.05
  done
  die "nothing answered at $1"
}

# record JSON — one line of the results.
record() { printf '%s\n' "$1" >>"$RESULTS"; }

# --- measuring --------------------------------------------------------------------------------

BODY_NOOP=$HERE/empty.json
BODY_TRANSFORM=$HERE/order.json

# check URL BODY AUTH EXPECT — one request must answer 2xx with EXPECT in its body.
check() {
  local url=$1 body=$2 auth=$3 expect=$4 out
  local hdr=()
  [ -n "$auth" ] && hdr=(-H "Authorization: Bearer $auth")
  out=$(curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' "${hdr[@]}" \
    --data-binary "@$body" "$url") || die "$url: $out"
  [[ $out == *"$expect"* ]] || die "$url answered $out, expected $expect in it"
}

# warm PLATFORM ROUTE HANDLER URL AUTH [CONCURRENCY…] — wrk runs, one record per concurrency.
warm() {
  local platform=$1 route=$2 handler=$3 url=$4 auth=$5
  shift 5
  local conc=("$@") body expect c quiet line out
  [ ${#conc[@]} -gt 0 ] || read -r -a conc <<<"$CONCURRENCY"
  if [ "$handler" = noop ]; then body=$BODY_NOOP expect='"ok"'; else body=$BODY_TRANSFORM expect='"total":532.5'; fi
  check "$url" "$body" "$auth" "$expect"
  for c in "${conc[@]}"; do
    # up to $TRIES tries while other processes take more than $MAX_OTHERS % of the machine
    # during the measured run; the try with the least of them is kept
    local try best="" best_others=1000 others
    for try in $(seq "$TRIES"); do
      quiet=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
      PEERS_BODY=$body PEERS_AUTH=$auth wrk -t1 -c"$c" -d"${WARMUP}s" -s "$HERE/wrk.lua" "$url" >/dev/null
      out=$(PEERS_BODY=$body PEERS_AUTH=$auth helper during --tree "$SERVER_PID" -- \
        wrk -t1 -c"$c" -d"${DURATION}s" -s "$HERE/wrk.lua" "$url")
      line=$(sed -n 's/^PEERS //p' <<<"$out")
      others=$(sed -n 's/^OTHERS {"others_pct": \(.*\)}$/\1/p' <<<"$out")
      [ -n "$line" ] && [ -n "$others" ] || die "no summary for $url: $out"
      log "$platform $route $handler c=$c try $try: $line, others ${others} % (before: $quiet)"
      if python3 -c 'import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))' "$others" "$best_others"; then
        best=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); q = json.loads(sys.argv[2])
r.update(kind="warm", platform=sys.argv[3], route=sys.argv[4], handler=sys.argv[5], c=int(sys.argv[6]),
         busy_pct=q["busy_pct"], load1=q["load"][0], quiet=q["quiet"], others_pct=float(sys.argv[7]),
         tries=int(sys.argv[8]))
print(json.dumps(r))' "$line" "$quiet" "$platform" "$route" "$handler" "$c" "$others" "$try")
        best_others=$others
      fi
      python3 -c 'import sys; sys.exit(float(sys.argv[1]) > float(sys.argv[2]))' "$others" "$MAX_OTHERS" && break
    done
    record "$best"
  done
}

# cold PLATFORM WHAT FIELD NOTE JSONL — one record from the FIELD of each line of JSONL.
cold() {
  local rec
  rec=$(python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[5]) if l.strip()]
q = json.loads(sys.argv[6])
out = dict(kind="cold", platform=sys.argv[1], what=sys.argv[2], note=sys.argv[4],
           samples_ms=[r[sys.argv[3]] for r in rows], busy_pct=q["busy_pct"], load1=q["load"][0])
if rows and "deploy_cli_ms" in rows[0]:
    d = sorted(r["deploy_cli_ms"] for r in rows)
    out["note"] += "; the deploy (CLI wall time) took a p50 of %.0f ms" % d[(len(d) - 1) // 2]
if rows and "x-ignis-init-ms" in rows[0]:
    out["init_ms"] = [int(r["x-ignis-init-ms"]) for r in rows]
    out["cold_flags"] = [r.get("x-ignis-cold") for r in rows]
    inits = sorted(out["init_ms"])
    out["note"] = (out["note"] + "; " if out["note"] else "") + \
        "x-ignis-init-ms p50 %d ms; x-ignis-cold true in %d of %d" % (
            inits[(len(inits) - 1) // 2], out["cold_flags"].count("true"), len(rows))
print(json.dumps(out))' "$1" "$2" "$3" "$4" "$5" "$QUIET_LAST")
  record "$rec"
  log "cold $1 $2: $(python3 -c 'import json,sys,statistics; r=json.loads(sys.argv[1]); print("p50 %.1f ms of %d" % (statistics.median(r["samples_ms"]), len(r["samples_ms"])))' "$rec")"
}

# --- Ignis ------------------------------------------------------------------------------------

# ignis_start DATA_DIR [SERVE_ARGS…] — sets IGNIS_URL, IGNIS_KEY and IGNIS_PID.
ignis_start() {
  local data=$1
  shift
  local port
  port=$(helper free-port)
  start_server "$data.log" env IGNIS_LOG=warn "$IGNIS" serve --listen "127.0.0.1:$port" \
    --data-dir "$data" --no-cli-config "$@"
  IGNIS_PID=$SERVER_PID
  export IGNIS_URL=http://127.0.0.1:$port
  wait_http "$IGNIS_URL/healthz"
  IGNIS_KEY=$(tr -d '[:space:]' <"$data/admin.key")
  export IGNIS_KEY
}

# ignis_deploy NAME RUNTIME HANDLER DIR — a web function (public), max_instances 16.
ignis_deploy() {
  "$IGNIS" fn deploy "$1" --runtime "$2" --handler "$3" --web public \
    --max-instances "$MAX_INSTANCES" "$4" >/dev/null
}

# ignis_section RUNTIME MODULE CODE_DIR — warm runs on both routes, then the cold starts.
ignis_section() {
  local rt=$1 module=$2 code=$3 platform="ignis ($1)" data h
  data=$RUN_DIR/ignis-$rt
  log "ignis $rt: starting the server"
  ignis_start "$data"
  grep -E '^\s+\[(on |off)\]' "$data.log" | sed 's/^ *//' >"$RUN_DIR/sandbox-$rt.txt" || true
  for h in noop transform; do ignis_deploy "$h" "$rt" "$module.$h" "$code"; done
  for h in noop transform; do
    warm "$platform" "invoke API" "$h" "$IGNIS_URL/v1/namespaces/default/functions/$h/invoke" "$IGNIS_KEY"
    warm "$platform" "web function" "$h" "$IGNIS_URL/fn/default/$h" ""
  done

  log "ignis $rt: cold starts after a fresh deploy"
  QUIET_LAST=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
  helper deployed --runs "$COLD_RUNS" --gap 0.4 \
    --url "$IGNIS_URL/v1/namespaces/default/functions/{name}/invoke" --auth "$IGNIS_KEY" -- \
    "$IGNIS" fn deploy "{name}" --runtime "$rt" --handler "$module.noop" "$code" >"$RUN_DIR/deployed-$rt.jsonl"
  cold "$platform" "deploy, then first invoke (invoke API), 0.4 s later" first_request_ms \
    "a new function each time, deploy not included" "$RUN_DIR/deployed-$rt.jsonl"
  stop_server "$IGNIS_PID"

  log "ignis $rt: cold starts after the keep-alive (1 s)"
  ignis_start "$data" --keep-alive-secs 1
  QUIET_LAST=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
  helper idle --runs "$COLD_RUNS" --idle 2.5 --url "$IGNIS_URL/v1/namespaces/default/functions/noop/invoke" \
    --auth "$IGNIS_KEY" >"$RUN_DIR/idle-$rt.jsonl"
  cold "$platform" "first invoke after 2.5 s idle (--keep-alive-secs 1: scaled to zero)" after_idle_ms "" \
    "$RUN_DIR/idle-$rt.jsonl"
  stop_server "$IGNIS_PID"

  log "ignis $rt: server process start to first response"
  QUIET_LAST=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
  local port
  port=$(helper free-port)
  helper spawn --runs "$SPAWN_RUNS" --log "$data.spawn.log" \
    --ready-url "http://127.0.0.1:$port/healthz" \
    --url "http://127.0.0.1:$port/v1/namespaces/default/functions/noop/invoke" --auth "$IGNIS_KEY" -- \
    env IGNIS_LOG=warn "$IGNIS" serve --listen "127.0.0.1:$port" --data-dir "$data" --no-cli-config \
    >"$RUN_DIR/spawn-$rt.jsonl"
  cold "$platform" "server process start → first response (function deployed)" first_ok_ms \
    "from exec of \`ignis serve\`; the server itself answers /healthz after a p50 of $(
      python3 -c 'import json,sys,statistics; print("%.0f ms" % statistics.median(json.loads(l)["ready_ms"] for l in open(sys.argv[1])))' \
        "$RUN_DIR/spawn-$rt.jsonl")" "$RUN_DIR/spawn-$rt.jsonl"
}

# --- functions-framework ----------------------------------------------------------------------

ff_section() {
  local dir=$RUN_DIR/ff h port
  mkdir -p "$dir"
  cp "$HERE/python/ff_main.py" "$HERE/python/transform.py" "$dir/"
  for h in noop transform; do
    port=$(helper free-port)
    log "functions-framework: starting --target $h"
    start_server "$dir/$h.log" bash -c 'cd "$1" && exec "$2" --target "$3" --source ff_main.py --host 127.0.0.1 --port "$4"' \
      _ "$dir" "$FF_VENV/bin/functions-framework" "$h" "$port"
    wait_http "http://127.0.0.1:$port/"
    warm "functions-framework" "HTTP function" "$h" "http://127.0.0.1:$port/" ""
    stop_server "$SERVER_PID"
  done

  log "functions-framework: process start to first response"
  QUIET_LAST=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
  port=$(helper free-port)
  helper spawn --runs "$SPAWN_RUNS" --log "$dir/spawn.log" --url "http://127.0.0.1:$port/" -- \
    bash -c 'cd "$1" && exec "$2" --target noop --source ff_main.py --host 127.0.0.1 --port "$3"' \
    _ "$dir" "$FF_VENV/bin/functions-framework" "$port" >"$dir/spawn.jsonl"
  cold "functions-framework" "process start → first response" first_ok_ms \
    "the function is imported at start; there is no scale-to-zero of its own" "$dir/spawn.jsonl"
}

# --- serverless-offline -----------------------------------------------------------------------

# sls_start [OFFLINE_ARGS…] — sets SLS_HTTP, SLS_LAMBDA and SLS_PID.
sls_start() {
  local hp lp
  hp=$(helper free-port)
  lp=$(helper free-port)
  start_server "$RUN_DIR/sls-$hp.log" bash -c 'cd "$1" && shift && exec node node_modules/serverless/bin/serverless.js "$@"' \
    _ "$SLS_DIR" offline start --host 127.0.0.1 --httpPort "$hp" --lambdaPort "$lp" "$@"
  SLS_PID=$SERVER_PID
  SLS_HTTP=http://127.0.0.1:$hp
  SLS_LAMBDA=http://127.0.0.1:$lp/2015-03-31/functions
  wait_http "$SLS_HTTP/"
  wait_http "$SLS_LAMBDA/"
}

sls_section() {
  local platform="serverless-offline" h hp lp
  cp "$HERE/node/handler.js" "$HERE/node/serverless.yml" "$SLS_DIR/"
  log "serverless-offline: starting (default: worker threads)"
  sls_start
  for h in noop transform; do
    warm "$platform" "Lambda invoke endpoint" "$h" "$SLS_LAMBDA/peers-dev-$h/invocations" ""
    warm "$platform" "httpApi route" "$h" "$SLS_HTTP/$h" ""
  done
  stop_server "$SLS_PID"

  log "serverless-offline: --reloadHandler (a new worker for every request)"
  sls_start --reloadHandler
  warm "$platform" "httpApi route, --reloadHandler" noop "$SLS_HTTP/noop" "" 1
  stop_server "$SLS_PID"

  log "serverless-offline: first request after the idle-lambda cleanup (1 s)"
  sls_start --terminateIdleLambdaTime 1
  QUIET_LAST=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
  helper idle --runs "$COLD_RUNS" --idle 2.5 --url "$SLS_LAMBDA/peers-dev-noop/invocations" \
    >"$RUN_DIR/sls-idle.jsonl"
  cold "$platform" "first invoke after 2.5 s idle (--terminateIdleLambdaTime 1: worker gone)" after_idle_ms \
    "Lambda invoke endpoint" "$RUN_DIR/sls-idle.jsonl"
  stop_server "$SLS_PID"

  log "serverless-offline: process start to first response"
  QUIET_LAST=$(helper quiet --max-busy "$MAX_BUSY" --timeout "$QUIET_TIMEOUT")
  hp=$(helper free-port)
  lp=$(helper free-port)
  helper spawn --runs "$SPAWN_RUNS" --log "$RUN_DIR/sls-spawn.log" --ready-url "http://127.0.0.1:$lp/" \
    --url "http://127.0.0.1:$lp/2015-03-31/functions/peers-dev-noop/invocations" -- \
    bash -c 'cd "$1" && shift && exec node node_modules/serverless/bin/serverless.js "$@"' \
    _ "$SLS_DIR" offline start --host 127.0.0.1 --httpPort "$hp" --lambdaPort "$lp" >"$RUN_DIR/sls-spawn.jsonl"
  cold "$platform" "process start → first response" first_ok_ms \
    "\`serverless offline start\`, Lambda invoke endpoint" "$RUN_DIR/sls-spawn.jsonl"
  cold "$platform" "first request to a lambda once the server answers" first_request_ms \
    "worker thread start + handler load" "$RUN_DIR/sls-spawn.jsonl"
}

# --- the run ----------------------------------------------------------------------------------

record "$(python3 -c '
import json, platform, subprocess, sys
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
cpu = sh("lscpu | sed -n \"s/^Model name: *//p\"")
mem = sh("free -g | awk \"/^Mem:/{print \\$2}\"")
machine = "%s cores (%s), %s GiB, kernel %s, %s" % (sh("nproc"), cpu, mem, platform.release(),
          "root" if sh("id -u") == "0" else "not root")
versions = "ignis %s (%s), functions-framework %s (gunicorn %s, python %s), serverless %s + serverless-offline %s (node %s), %s" % (
    sh("git -C %s rev-parse --short HEAD" % sys.argv[1]), sys.argv[2],
    sh("%s/bin/pip show functions-framework | sed -n \"s/^Version: //p\"" % sys.argv[3]),
    sh("%s/bin/pip show gunicorn | sed -n \"s/^Version: //p\"" % sys.argv[3]),
    platform.python_version(),
    sh("node -p \"require(\\\"%s/node_modules/serverless/package.json\\\").version\"" % sys.argv[4]),
    sh("node -p \"require(\\\"%s/node_modules/serverless-offline/package.json\\\").version\"" % sys.argv[4]),
    sh("node --version"), sh("wrk -v 2>&1 | head -1 | cut -d\" \" -f1-2"))
print(json.dumps(dict(kind="meta", machine=machine, versions=versions)))' \
  "$ROOT" "$IGNIS" "$FF_VENV" "$SLS_DIR")"

log "run dir $RUN_DIR; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for section in $ONLY; do
  case $section in
    ignis-python)
      mkdir -p "$RUN_DIR/code-python"
      cp "$HERE/python/ignis_app.py" "$HERE/python/transform.py" "$RUN_DIR/code-python/"
      ignis_section python ignis_app "$RUN_DIR/code-python"
      ;;
    ignis-node)
      mkdir -p "$RUN_DIR/code-node"
      cp "$HERE/node/handler.js" "$RUN_DIR/code-node/"
      ignis_section node handler "$RUN_DIR/code-node"
      ;;
    ff) ff_section ;;
    sls) sls_section ;;
    *) die "unknown section $section (PEERS_ONLY: ignis-python ff ignis-node sls)" ;;
  esac
done

mkdir -p "$(dirname "$OUT")"
{
  echo "# bench/peers/run.sh, $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo
  echo "Command, every knob spelled out: \`PEERS_DURATION=$DURATION PEERS_WARMUP=$WARMUP PEERS_CONCURRENCY=\"$CONCURRENCY\" PEERS_COLD_RUNS=$COLD_RUNS PEERS_SPAWN_RUNS=$SPAWN_RUNS PEERS_MAX_BUSY=$MAX_BUSY PEERS_QUIET_TIMEOUT=$QUIET_TIMEOUT PEERS_MAX_OTHERS=$MAX_OTHERS PEERS_TRIES=$TRIES PEERS_ONLY=\"$ONLY\" bash bench/peers/run.sh\`"
  echo
  helper report "$RESULTS"
  if compgen -G "$RUN_DIR/sandbox-*.txt" >/dev/null; then
    echo
    echo "Ignis sandbox, as \`ignis serve\` reported it:"
    echo
    cat "$RUN_DIR"/sandbox-*.txt | awk '!seen[$0]++' | sed 's/^/    /'
  fi
} >"$OUT"
cp "$RESULTS" "${OUT%.md}.jsonl"
cat "$OUT"
log "written to $OUT"

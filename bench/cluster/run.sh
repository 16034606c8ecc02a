#!/usr/bin/env bash
# Cluster mode on one machine: throughput and latency through one gateway with 1, 2 and 3
# invokers (`ignis dev cluster`), and the single server (`ignis serve`) for comparison, loaded
# by `ignis bench` over several no-op functions so that rendezvous hashing gives them
# different home invokers. Not part of CI: a separate, documented command like
# bench/peers/run.sh. Results: docs/performance.md, "Cluster mode on one machine".
#
#   bash bench/cluster/run.sh
#
# Every process (NATS, the nodes, their instances, the load generator) shares this machine:
# on a small one this measures what cluster mode costs, not what it gains.
#
# What it does:
#   1. builds ignis (cargo build --release -p ignis) unless $IGNIS_BIN names a binary;
#   2. for each set-up: the single server, then `ignis dev cluster --invokers N` for each N:
#      starts it on a temporary directory (the CLI config in a scratch file, yours is left
#      alone), waits for a quiet machine, runs `ignis bench --functions F --json`
#      $CLUSTER_TRIES times through measure.py, which also reads from /proc the CPU time the
#      gateway, the invokers (with their instances), NATS and the load generator used during
#      each run; stops it (SIGTERM to its pid, which stops every child);
#   3. prints a markdown table and writes it to $CLUSTER_OUT (raw JSON beside it, .jsonl).
#
# Knobs (environment): CLUSTER_INVOKERS ("1 2 3"), CLUSTER_NATS (3: NATS servers; JetStream
# keeps min(N, 3) copies), CLUSTER_FUNCTIONS (8), CLUSTER_CONCURRENCY (16), CLUSTER_REQUESTS
# (20000), CLUSTER_WARMUP (2000), CLUSTER_RUNTIME (python), CLUSTER_TRIES (2),
# CLUSTER_SINGLE (1: also measure the single server; 0 to skip), CLUSTER_MAX_BUSY (20: % of
# the CPU others may use before a run starts), CLUSTER_QUIET_TIMEOUT (60 s to wait for that),
# CLUSTER_OUT (bench/cluster/results/latest.md), IGNIS_BIN (skip the build), MEASURE_EVERY
# (0.2: seconds between two readings of /proc by measure.py).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
INVOKERS=${CLUSTER_INVOKERS:-"1 2 3"}
NATS=${CLUSTER_NATS:-3}
FUNCTIONS=${CLUSTER_FUNCTIONS:-8}
CONCURRENCY=${CLUSTER_CONCURRENCY:-16}
REQUESTS=${CLUSTER_REQUESTS:-20000}
WARMUP=${CLUSTER_WARMUP:-2000}
RUNTIME=${CLUSTER_RUNTIME:-python}
TRIES=${CLUSTER_TRIES:-2}
SINGLE=${CLUSTER_SINGLE:-1}
MAX_BUSY=${CLUSTER_MAX_BUSY:-20}
QUIET_TIMEOUT=${CLUSTER_QUIET_TIMEOUT:-60}
OUT=${CLUSTER_OUT:-$HERE/results/latest.md}

log() { printf '%s cluster-bench: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 is needed"

if [ -n "${IGNIS_BIN:-}" ]; then
  BIN=$IGNIS_BIN
else
  log "building ignis (release)"
  (cd "$ROOT" && cargo build --release -p ignis >&2)
  BIN=$ROOT/target/release/ignis
fi
[ -x "$BIN" ] || die "$BIN is not an executable"

SCRATCH=$(mktemp -d -t ignis-cluster-bench-XXXXXX)
export IGNIS_CONFIG=$SCRATCH/cli.toml # the nodes' CLI config: never the user's
export IGNIS_LOG=${IGNIS_LOG:-warn}
unset IGNIS_URL IGNIS_KEY
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# The CPU share (%) others used over one second.
busy() {
  python3 - <<'EOF'
import time
def snap():
    f = [int(x) for x in open('/proc/stat').readline().split()[1:]]
    return sum(f), f[3] + f[4]
t0, i0 = snap(); time.sleep(1); t1, i1 = snap()
print(round(100 * (1 - (i1 - i0) / max(t1 - t0, 1))))
EOF
}

# Waits (up to CLUSTER_QUIET_TIMEOUT s) until others use less than CLUSTER_MAX_BUSY % of the
# CPU; prints the last share seen.
quiet() {
  local deadline=$((SECONDS + QUIET_TIMEOUT)) b
  while :; do
    b=$(busy)
    if [ "$b" -lt "$MAX_BUSY" ] || [ $SECONDS -ge $deadline ]; then
      echo "$b"
      return
    fi
  done
}

# Runs the bench against the server of $URL/$KEY and appends one JSON record per try; the
# arguments after the first two are measure.py's process groups (name=pid,pid… or
# name~data-dir: a node with its zygote and instances).
measure() {
  local setup=$1 invokers=$2 try b load out
  shift 2
  for try in $(seq 1 "$TRIES"); do
    b=$(quiet)
    load=$(cut -d' ' -f1 /proc/loadavg)
    log "$setup: try $try (CPU busy before: $b %, load $load)"
    out=$(python3 "$HERE/measure.py" "$@" -- "$BIN" bench --url "$URL" --key "$KEY" \
      --runtime "$RUNTIME" --functions "$FUNCTIONS" --concurrency "$CONCURRENCY" \
      --requests "$REQUESTS" --warmup "$WARMUP" --json)
    python3 - "$setup" "$invokers" "$try" "$b" "$load" "$out" >>"$RAW" <<'EOF'
import json, sys
setup, invokers, attempt, busy, load, out = sys.argv[1:]
m = json.loads(out)
if m["exit"] != 0:
    print(f"cluster-bench: {setup}: bench failed: {m['run']}", file=sys.stderr)
print(json.dumps({"setup": setup, "invokers": int(invokers), "try": int(attempt),
                  "busy_before": int(busy), "load_before": float(load), "run": m["run"],
                  "cpu_ms": m["cpu_ms"], "others_pct": m["others_pct"], "irq_pct": m["irq_pct"],
                  "others_top": m["others_top"]}))
EOF
  done
}

mkdir -p "$(dirname "$OUT")"
RAW=${OUT%.md}.jsonl
: >"$RAW"
STARTED=$(date -u +%FT%TZ)

if [ "$SINGLE" = 1 ]; then
  log "single server"
  DATA=$SCRATCH/single
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" --no-cli-config >"$SCRATCH/single.out" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 600); do
    grep -q 'listening on' "$SCRATCH/single.out" && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "ignis serve exited: $(tail -5 "$SCRATCH/single.out")"
    sleep 0.1
  done
  URL=$(grep -o 'listening on http://[0-9.:]*' "$SCRATCH/single.out" | cut -d' ' -f3)
  KEY=$(cat "$DATA/admin.key")
  measure single 0 "server=$SERVER_PID" "server~$DATA"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
fi

for n in $INVOKERS; do
  log "cluster: 1 gateway, $n invoker(s), $NATS NATS server(s)"
  TMPDIR=$SCRATCH "$BIN" dev cluster --invokers "$n" --nats "$NATS" --json \
    >"$SCRATCH/cluster-$n.out" 2>"$SCRATCH/cluster-$n.err" &
  SERVER_PID=$!
  for _ in $(seq 1200); do
    grep -q '"admin_key"' "$SCRATCH/cluster-$n.out" && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "ignis dev cluster exited: $(tail -20 "$SCRATCH/cluster-$n.err")"
    sleep 0.1
  done
  read -r URL KEY PARTS < <(python3 -c '
import json, sys
s = json.loads(open(sys.argv[1]).readline())
parts = []
for n in s["nodes"]:
    group = {"gateway": "gateway", "invoker": "invokers"}[n["role"]]
    parts += [group + "=" + str(n["pid"]), group + "~" + n["data_dir"] + "/"]
parts.append("nats=" + ",".join(str(n["pid"]) for n in s["nats"]))
print(s["gateways"][0], s["admin_key"], *parts)
' "$SCRATCH/cluster-$n.out")
  # shellcheck disable=SC2086 # PARTS is several words on purpose
  measure cluster "$n" $PARTS
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
done

python3 - "$RAW" "$OUT" "$STARTED" "$NATS" "$FUNCTIONS" "$CONCURRENCY" "$REQUESTS" "$RUNTIME" <<'EOF'
import json, platform, subprocess, sys
raw, out, started, nats, functions, concurrency, requests, runtime = sys.argv[1:]
rows = [json.loads(l) for l in open(raw)]
def ms(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us} µs"
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
lines = [
    f"Cluster mode on one machine ({started}): {runtime} no-ops, {functions} functions, "
    f"{concurrency} in flight, {requests} requests per run; NATS servers: {nats}",
    f"Machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs ({cpu}), "
    f"kernel {platform.release()}",
    "",
    "CPU per request: CPU time each part used during the run divided by the requests (server: "
    "the single server with its instances; invokers: with their instances; bench: the load "
    "generator). Others: the share of the machine's CPU that no process of the run was charged "
    "with (other processes, processes too short-lived to be seen); irq: the share spent in "
    "interrupts and softirqs (the loopback network).",
    "",
    "| set-up | invokers | try | req/s | p50 | p99 | errors | cold starts | CPU per request: server or gateway / invokers / NATS / bench | others | irq | CPU busy before |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
]
def per_request(r):
    cpu, n = r.get("cpu_ms", {}), max(r["run"].get("requests", 0), 1)
    us = lambda k: f"{cpu[k] * 1000 / n:.0f} µs" if k in cpu else "-"
    first = "server" if "server" in cpu else "gateway"
    return f"{us(first)} / {us('invokers')} / {us('nats')} / {us('bench')}"
for r in rows:
    run = r["run"]
    if "error" in run and "latency_us" not in run:
        lines.append(f"| {r['setup']} | {r['invokers']} | {r['try']} | failed | | | | | | | | "
                     f"{r['busy_before']} % |")
        continue
    lat = run.get("latency_us") or {}
    lines.append(
        f"| {r['setup']} | {r['invokers'] or '-'} | {r['try']} | {run['throughput_rps']:,.0f} | "
        f"{ms(lat.get('p50', 0))} | {ms(lat.get('p99', 0))} | {run['errors']['total']} | "
        f"{run['cold_starts']} | {per_request(r)} | {r.get('others_pct', '-')} % | "
        f"{r.get('irq_pct', '-')} % | {r['busy_before']} % |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
log "written to $OUT (raw records: $RAW)"

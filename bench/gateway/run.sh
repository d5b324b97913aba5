#!/usr/bin/env bash
# Gateway overhead: the same local upstream reached directly and through the
# metered gateway (request parsing, budget reservation, usage parsing and
# SQLite ledger writes all on), in one run per scenario. The two paths are
# measured in alternating slices so that both see the same machine load.
# Targets: p99 added latency < 1 ms, >= 10,000 req/s through the gateway.
# Only 127.0.0.1 is contacted; each phase is bounded in time.
#
# Besides latency and throughput, each scenario prints the CPU time and
# context switches per request of each thread group (from /proc), and, when
# valgrind is installed, a last section counts the user-space instructions
# per request of the gateway and ledger threads with callgrind: a figure the
# machine's load does not change.
#
# CALLGRIND=0 skips the instruction counts. RUNS=n repeats the scenarios.
# GATEWAY_BENCH_BIN=path runs a given build of the load generator instead
# of building this tree (to compare with another commit in the same way).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH="${SECONDS_EACH:-5}"
RUNS="${RUNS:-1}"
if [[ -n "${GATEWAY_BENCH_BIN:-}" ]]; then
  BIN="$GATEWAY_BENCH_BIN"
else
  cargo build --release -q -p runproof-net --example gateway_bench
  BIN=target/release/examples/gateway_bench
fi
echo "machine: $(nproc) cores; $(uptime | sed 's/.*load/load/')"
for run in $(seq 1 "$RUNS"); do
  [[ "$RUNS" == 1 ]] || echo "### run $run of $RUNS"
  echo
  echo "== 1. concurrency 64, closed loop (saturating), non-streaming =="
  "$BIN" --concurrency 64 --seconds "$SECONDS_EACH"
  echo
  echo "== 2. concurrency 64, paced at 10,000 req/s, non-streaming =="
  "$BIN" --concurrency 64 --seconds "$SECONDS_EACH" --rate 10000
  echo
  echo "== 3. concurrency 1 (per-request cost, no queueing), non-streaming =="
  "$BIN" --concurrency 1 --seconds "$SECONDS_EACH"
  echo
  echo "== 4. concurrency 64, closed loop, streaming SSE (9 events per response) =="
  "$BIN" --concurrency 64 --seconds "$SECONDS_EACH" --stream
  echo
  echo "machine after: $(uptime | sed 's/.*load/load/')"
done

if [[ "${CALLGRIND:-1}" == 0 ]]; then
  exit 0
fi
if ! command -v valgrind >/dev/null; then
  echo "(valgrind not installed: no instruction counts)"
  exit 0
fi
N="${CALLGRIND_REQUESTS:-20000}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
echo
echo "== 5. user-space instructions per request (callgrind, $N requests per path + 1,000 warm-up, concurrency 64) =="
for mode in json stream; do
  extra=()
  [[ "$mode" == stream ]] && extra=(--stream)
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/$mode" \
    "$BIN" --concurrency 64 --requests "$N" "${extra[@]}" >/dev/null 2>&1
  gw=0 ledger=0 up=0
  for f in "$OUT/$mode"-*; do
    ir=$(awk '/^summary:/ {print $2; exit}' "$f")
    if grep -q 'runproof_ledger::store::writer_loop' "$f"; then
      ledger=$((ledger + ir))
    elif grep -q 'runproof_net::gateway::Inner::handle' "$f"; then
      gw=$((gw + ir))
    elif grep -q 'gateway_bench::upstream' "$f"; then
      up=$((up + ir))
    fi
  done
  per=$((N + 1000))
  # The upstream serves both paths: 2 x (N + 1,000) requests.
  printf '%-6s gateway threads %6d/req, ledger writer %6d/req; the upstream server itself (the direct path'"'"'s server) %6d/req\n' \
    "$mode" $((gw / per)) $((ledger / per)) $((up / (2 * per)))
done

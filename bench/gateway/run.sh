#!/usr/bin/env bash
# Gateway overhead: the same local upstream reached directly and through the
# metered gateway (request parsing, budget reservation, usage parsing and
# SQLite ledger writes all on), in one run per scenario.
# Targets: p99 added latency < 1 ms, >= 10,000 req/s through the gateway.
# Only 127.0.0.1 is contacted; each phase is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH="${SECONDS_EACH:-5}"
cargo build --release -q -p runproof-net --example gateway_bench
BIN=target/release/examples/gateway_bench
echo "machine: $(nproc) cores; $(uptime | sed 's/.*load/load/')"
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

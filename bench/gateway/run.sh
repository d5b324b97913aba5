#!/usr/bin/env bash
# Gateway overhead: the same local upstream reached directly and through the
# metered gateway (ledger writes on), concurrency 64, in one run.
# Targets: p99 added latency < 1 ms, >= 10,000 req/s through the gateway.
# Only 127.0.0.1 is contacted; each phase is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH="${SECONDS_EACH:-5}"
CONCURRENCY="${CONCURRENCY:-64}"
cargo build --release -q -p runproof-net --example gateway_bench
BIN=target/release/examples/gateway_bench
echo "== non-streaming =="
"$BIN" --concurrency "$CONCURRENCY" --seconds "$SECONDS_EACH"
echo
echo "== streaming (SSE, 9 events per response) =="
"$BIN" --concurrency "$CONCURRENCY" --seconds "$SECONDS_EACH" --stream

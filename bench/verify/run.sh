#!/usr/bin/env bash
# Harness overhead per instance: `runproof verify --gold` versus the same steps
# done by hand with `git worktree add` + `git apply` (fix, then test patch) +
# the bare test command + `git worktree remove`, in the same run, on the
# bundled examples, after the environment is cached.
#
# Overhead = wall time of everything except the test command itself.
#   runproof:  total - test_run  (both from its report.json; plus process wall)
#   worktree:  wall of the whole sequence - wall of the test command
#
#   bench/verify/run.sh [ROUNDS]     (default 10)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-10}
bin=${RUNPROOF_BIN:-$root/target/release/runproof}
[ -x "$bin" ] || cargo build --release -p runproof-cli --manifest-path "$root/Cargo.toml"
bash "$root/examples/build.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RUNPROOF_CACHE=$work/cache
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

printf '%-16s %5s %12s %12s %12s %12s %8s\n' instance round rp_overhead rp_wall wt_overhead wt_wall ratio
for id in py-stats-1 js-slug-1 rs-wordcount-1; do
  task=$(jq -c --arg id "$id" 'select(.instance_id == $id)' "$root/examples/tasks.jsonl")
  jq -r .patch <<<"$task" >"$work/gold.diff"
  jq -r .test_patch <<<"$task" >"$work/test.diff"
  base=$(jq -r .base_commit <<<"$task")
  repo=$root/examples/$(jq -r .repo_path <<<"$task")
  cmd=$(jq -r .test_cmd <<<"$task")
  setup=$(jq -r '.setup // [] | join(" && ")' <<<"$task")
  # Warm-up: builds and caches the environment once (not measured).
  "$bin" verify --task "$root/examples/tasks.jsonl" --instance "$id" --gold --out "$work/out" >/dev/null 2>&1 || true
  # The worktree side gets the same one-time setup (e.g. cargo's target/).
  git -C "$repo" worktree add -q --detach "$work/wt-warm" "$base"
  (cd "$work/wt-warm" && sh -c "$setup" >/dev/null 2>&1) || true
  [ -d "$work/wt-warm/target" ] && mv "$work/wt-warm/target" "$work/shared-target"
  git -C "$repo" worktree remove --force "$work/wt-warm"
  for r in $(seq 1 "$rounds"); do
    t0=$(now)
    "$bin" verify --task "$root/examples/tasks.jsonl" --instance "$id" --gold --out "$work/out" >/dev/null 2>&1 || true
    t1=$(now)
    rep=$work/out/gold/$id/report.json
    status=$(jq -r '.[].runproof.status' "$rep")
    [ "$status" = resolved ] || { echo "runproof did not resolve $id: $status" >&2; exit 1; }
    rp_total=$(jq -r '.[].runproof.timings_ms.total' "$rep")
    rp_test=$(jq -r '.[].runproof.timings_ms.test_run' "$rep")
    rp_wall=$(ms "$t0" "$t1")
    rp_over=$(( rp_wall - rp_test ))

    w0=$(now)
    git -C "$repo" worktree add -q --detach "$work/wt" "$base"
    [ -d "$work/shared-target" ] && cp -a "$work/shared-target" "$work/wt/target"
    git -C "$work/wt" apply "$work/gold.diff"
    git -C "$work/wt" apply "$work/test.diff"
    s0=$(now)
    (cd "$work/wt" && RUNPROOF_REPORT_DIR=$work sh -c "$cmd" >/dev/null 2>&1) || true
    s1=$(now)
    git -C "$repo" worktree remove --force "$work/wt"
    w1=$(now)
    wt_wall=$(ms "$w0" "$w1")
    wt_over=$(( wt_wall - $(ms "$s0" "$s1") ))
    ratio=$(awk -v a="$rp_over" -v b="$wt_over" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }')
    printf '%-16s %5d %10dms %10dms %10dms %10dms %8s   (in-process overhead %dms)\n' \
      "$id" "$r" "$rp_over" "$rp_wall" "$wt_over" "$wt_wall" "$ratio" $(( rp_total - rp_test ))
  done
  rm -rf "$work/shared-target"
done

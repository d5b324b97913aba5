#!/usr/bin/env bash
# Harness overhead per instance: `runproof verify --gold` (copy-on-write
# workspaces, the default, and `--workspaces copy`) versus the same steps done
# by hand with `git worktree add` + `git apply` (fix, then test patch) + the
# bare test command + `git worktree remove`, interleaved in the same run, on
# the bundled examples, after the environment is cached.
#
# Overhead = wall time of everything except the test command itself.
#   runproof:  wall of the `runproof verify` process - the test command's own
#              time by the sandbox's clock (report.json timings_ms.test_command),
#              so the sandbox's set-up and teardown count as overhead
#   worktree:  wall of the whole sequence - wall of the test command
#
# Columns: overhead for each (ms) and ratios to the worktree, then the test
# command's own time on each side (ov_cmd, cp_cmd by the sandbox's clock;
# wt_cmd bare), then the copy-on-write run's wall and its steps.
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

# One graded run: prints "overhead wall test_command mode timings".
rp() { # id mode
  local t0 t1 rep
  t0=$(now)
  "$bin" verify --task "$root/examples/tasks.jsonl" --instance "$1" --gold \
    --workspaces "$2" --out "$work/out-$2" >/dev/null 2>&1 || true
  t1=$(now)
  rep=$work/out-$2/gold/$1/report.json
  [ "$(jq -r '.[].runproof.status' "$rep")" = resolved ] || {
    echo "runproof ($2) did not resolve $1: $(jq -c '.[].runproof.detail' "$rep")" >&2
    exit 1
  }
  local wall test
  wall=$(ms "$t0" "$t1")
  test=$(jq -r '.[].runproof.timings_ms.test_command' "$rep")
  # outside = process start, task loading, printing, and the wait at exit
  # for the background removal of the workspace (not in timings_ms.total).
  local total
  total=$(jq -r '.[].runproof.timings_ms.total' "$rep")
  echo "$(( wall - test )) $wall $test $(jq -r '.[].runproof.workspace' "$rep") $(jq -c --argjson o $(( wall - total )) '.[].runproof.timings_ms | del(.environment, .total, .test_run, .test_command) | .outside = $o' "$rep")"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-15s %3s %9s %9s %9s %7s %7s %9s %9s %9s\n' instance rnd overlay copy worktree ov/wt cp/wt ov_cmd cp_cmd wt_cmd
for id in py-stats-1 js-slug-1 rs-wordcount-1; do
  task=$(jq -c --arg id "$id" 'select(.instance_id == $id)' "$root/examples/tasks.jsonl")
  jq -r .patch <<<"$task" >"$work/gold.diff"
  jq -r .test_patch <<<"$task" >"$work/test.diff"
  base=$(jq -r .base_commit <<<"$task")
  repo=$root/examples/$(jq -r .repo_path <<<"$task")
  cmd=$(jq -r .test_cmd <<<"$task")
  setup=$(jq -r '.setup // [] | join(" && ")' <<<"$task")
  # Warm-up: builds and caches the environment once (not measured), and
  # runs each mode once.
  rp "$id" auto >/dev/null
  rp "$id" copy >/dev/null
  # The worktree side gets the same one-time setup (e.g. cargo's target/).
  git -C "$repo" worktree add -q --detach "$work/wt-warm" "$base"
  (cd "$work/wt-warm" && sh -c "$setup" >/dev/null 2>&1) || true
  [ -d "$work/wt-warm/target" ] && mv "$work/wt-warm/target" "$work/shared-target"
  git -C "$repo" worktree remove --force "$work/wt-warm"
  for r in $(seq 1 "$rounds"); do
    read -r ov_over ov_wall ov_cmd ov_mode ov_t < <(rp "$id" auto)
    [ "$ov_mode" = overlay ] || { echo "expected a copy-on-write workspace, got $ov_mode" >&2; exit 1; }
    read -r cp_over _ cp_cmd _ _ < <(rp "$id" copy)

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
    wt_cmd=$(ms "$s0" "$s1")
    wt_over=$(( wt_wall - wt_cmd ))
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }
    printf '%-15s %3d %7dms %7dms %7dms %7s %7s %7dms %7dms %7dms   overlay: wall %dms %s\n' \
      "$id" "$r" "$ov_over" "$cp_over" "$wt_over" "$(ratio "$ov_over" "$wt_over")" \
      "$(ratio "$cp_over" "$wt_over")" "$ov_cmd" "$cp_cmd" "$wt_cmd" "$ov_wall" "$ov_t"
  done
  rm -rf "$work/shared-target"
done

#!/usr/bin/env bash
# Benchmark: `runproof prepare` and `runproof prepare --check` on a large
# synthetic history, against `git clone --no-local --single-branch` +
# `git gc --prune=now` in the same run. Prints means and ratios.
#
#   bench/prepare/run.sh                 # 30,000 commits (~120,000 objects)
#   COMMITS=60000 RUNS=10 bench/prepare/run.sh
#
# Needs: git, python3, hyperfine (apt-get install -y hyperfine).
set -euo pipefail

COMMITS=${COMMITS:-30000}   # total commits
FILES=${FILES:-2000}        # distinct files touched
FUTURE=${FUTURE:-10000}     # commits after the base (the "future")
RUNS=${RUNS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/runproof-bench-prepare.XXXXXX)}
BIN="$ROOT/target/release/runproof"

command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install -y hyperfine" >&2; exit 2; }
(cd "$ROOT" && cargo build --release -q -p runproof-cli)

export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=Bench GIT_AUTHOR_EMAIL=bench@example.invalid GIT_COMMITTER_NAME=Bench GIT_COMMITTER_EMAIL=bench@example.invalid

SRC="$WORK/src"
echo "== building a $COMMITS-commit repository in $SRC"
git init -q "$SRC"
start=$EPOCHREALTIME
python3 "$HERE/make_repo.py" "$COMMITS" "$FILES" | git -C "$SRC" fast-import --quiet
git -C "$SRC" repack -adq
echo "   fast-import + repack: $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s"
BASE=$(git -C "$SRC" rev-parse "main~$FUTURE")
# Hide the future the ways a real task image does: a branch, an annotated
# tag, a remote with its tracking ref, and main's reflog.
git -C "$SRC" branch future main
git -C "$SRC" tag -a v9.9 -m "future release" main
git -C "$SRC" branch base "$BASE"
git -C "$SRC" remote add origin https://example.invalid/bench.git
git -C "$SRC" update-ref refs/remotes/origin/main main
git -C "$SRC" -c core.logAllRefUpdates=true update-ref -m "reset to base" refs/heads/main "$BASE"
git -C "$SRC" checkout -q main
OBJECTS=$(git -C "$SRC" count-objects -v | awk '/in-pack/ {print $2}')
echo "   objects: $OBJECTS; base: $BASE ($((COMMITS - FUTURE)) commits of history, $FUTURE after it)"

# A reference fix: one commit after the base, as a diff (for content matching).
python3 - "$COMMITS" "$FUTURE" "$FILES" > "$WORK/fix.diff" <<'PY'
import sys
commits, future, files = map(int, sys.argv[1:])
i = commits - future + 5
f = (i * 7919) % files
path = f"pkg{f % 40}/mod{f}.py"
print(f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,16 +1,16 @@")
for k in range(8):
    print(f" def f{f}_{k}(x):\n-    return x + 0\n+    return x + {i * 31 + k}")
PY

RP_OUT="$WORK/out-runproof"
GIT_OUT="$WORK/out-git"
hyperfine --runs "$RUNS" --warmup 1 -N --export-json "$WORK/prepare.json" \
  --prepare "rm -rf $RP_OUT" -n "runproof prepare (incl. its final --check)" \
    "$BIN prepare --repo $SRC --base $BASE --out $RP_OUT --format json" \
  --prepare "rm -rf $GIT_OUT" -n "git clone --single-branch + gc --prune=now" \
    "bash -c 'git clone -q --no-local --single-branch --branch base $SRC $GIT_OUT && git -C $GIT_OUT gc -q --prune=now'"

hyperfine --runs "$RUNS" --warmup 1 -N -i --export-json "$WORK/check.json" \
  -n "runproof prepare --check (leaky source, all objects)" "$BIN prepare --check $SRC --base $BASE --format json" \
  -n "runproof prepare --check --patch (also matches foreign blobs)" "$BIN prepare --check $SRC --base $BASE --patch $WORK/fix.diff --format json" \
  -n "runproof prepare --check (prepared workspace)" "$BIN prepare --check $RP_OUT --base $BASE --format json" \
  -n "git fsck --connectivity-only (leaky source, for scale)" "git -C $SRC fsck --connectivity-only --no-progress"

echo
echo "== what each result still leaks (runproof prepare --check)"
for d in "$RP_OUT" "$GIT_OUT"; do
  "$BIN" prepare --check "$d" --base "$BASE" --format json > "$WORK/leaks.json" || true
  python3 - "$d" "$WORK/leaks.json" <<'PY'
import json, sys, collections
r = json.load(open(sys.argv[2]))
kinds = collections.Counter(l["kind"] for l in r["leaks"] if l["severity"] == "leak")
print(f"   {sys.argv[1]}: {'clean' if r['clean'] else 'LEAKS'} {dict(kinds)}; objects {r['objects_total']}, outside base {r['objects_foreign']}")
PY
done
"$BIN" prepare --check "$SRC" --base "$BASE" --patch "$WORK/fix.diff" --format json > "$WORK/src-leaks.json" || true
python3 - "$WORK/src-leaks.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
blobs = sum(1 for l in r['leaks'] if l['kind'] == 'fixed_code_blob')
print(f"   source: {r['objects_total']} objects, {r['objects_foreign']} outside the base, {r['future_commits']} future commits, {blobs} blob(s) holding the fix, {sum(1 for l in r['leaks'] if l['severity']=='leak')} findings, check took {r['elapsed_ms']} ms (self-reported)")
PY

echo
echo "== ratios (mean wall time; user+sys CPU in brackets)"
python3 - "$WORK/prepare.json" "$WORK/check.json" <<'PY'
import json, sys
rows = []
for f in sys.argv[1:]:
    rows += json.load(open(f))["results"]
for r in rows:
    print(f"   {r['command']:<58} {r['mean']:7.3f} s ± {r['stddev']:.3f}  [cpu {r['user'] + r['system']:.3f} s]")
p = {r["command"]: r for r in rows}
a = p["runproof prepare (incl. its final --check)"]; b = p["git clone --single-branch + gc --prune=now"]
print(f"   prepare / (clone+gc): {a['mean'] / b['mean']:.2f}x wall, {(a['user']+a['system']) / (b['user']+b['system']):.2f}x cpu")
c = p["runproof prepare --check (leaky source, all objects)"]
print(f"   check of the leaky source vs the 2 s target: {c['mean']:.3f} s wall ({'met' if c['mean'] < 2 else 'NOT met'}), {c['user']+c['system']:.3f} s cpu")
PY
echo "   load average during the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
echo "   work dir: $WORK (remove it when done)"

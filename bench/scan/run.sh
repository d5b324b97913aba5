#!/usr/bin/env bash
# bench/scan/run.sh — `runproof scan` against GuardDog on the same large,
# real tree, in one run. Prints file counts, wall times, files/s and the
# ratio; keeps raw hyperfine JSON and both tools' reports in $WORK.
#
# The tree: two `npm ci --ignore-scripts` installs pinned by the lockfiles
# beside this script (about 150,000 files; no package script ever runs), plus
# a copy of the local cargo registry source cache if there is one.
#
# Usage: bench/scan/run.sh            (WORK defaults to /tmp/runproof-scan-bench)
#        RUNS=10 GUARDDOG_RUNS=1 bench/scan/run.sh
# Needs: npm, python3 (venv), cargo; hyperfine (apt-get install -y hyperfine).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${WORK:-/tmp/runproof-scan-bench}"
TREE="$WORK/tree"
RUNS="${RUNS:-5}"
GUARDDOG_RUNS="${GUARDDOG_RUNS:-1}"
GUARDDOG_VERSION="${GUARDDOG_VERSION:-3.2.0}"
mkdir -p "$TREE"

command -v hyperfine >/dev/null || { echo "hyperfine missing: apt-get install -y hyperfine" >&2; exit 2; }

# ---- the tree ---------------------------------------------------------------
for set in npm-a npm-b; do
    if [ ! -d "$TREE/$set/node_modules" ]; then
        mkdir -p "$TREE/$set"
        cp "$HERE/$set/package.json" "$HERE/$set/package-lock.json" "$TREE/$set/"
        echo "installing $set (npm ci --ignore-scripts)..." >&2
        (cd "$TREE/$set" && npm ci --ignore-scripts --no-audit --no-fund --legacy-peer-deps >/dev/null)
    fi
done
if [ ! -d "$TREE/cargo-src" ] && [ -d "$HOME/.cargo/registry/src" ]; then
    cp -r "$HOME/.cargo/registry/src" "$TREE/cargo-src"
fi

# ---- the tools ---------------------------------------------------------------
if [ ! -x "$WORK/guarddog/bin/guarddog" ]; then
    python3 -m venv "$WORK/guarddog"
    "$WORK/guarddog/bin/pip" install -q "guarddog==$GUARDDOG_VERSION"
fi
(cd "$REPO" && cargo build --release -q -p runproof-cli)
RUNPROOF="$REPO/target/release/runproof"
GUARDDOG="$WORK/guarddog/bin/guarddog"
# GuardDog counts files against a safety limit meant for archives.
export GUARDDOG_MAX_FILE_COUNT=100000000

FILES=$(find "$TREE" -type f | wc -l)
BYTES=$(du -sb "$TREE" | cut -f1)
echo "tree: $TREE"
echo "files: $FILES   bytes: $BYTES   cores: $(nproc)   load: $(cut -d' ' -f1-3 /proc/loadavg)"

# Warm the page cache so both tools read from memory.
find "$TREE" -type f -print0 | xargs -0 cat >/dev/null

# ---- runs ----------------------------------------------------------------------
# Exit status 1 only means "found something"; hyperfine -i keeps timing.
hyperfine -i --warmup 1 --runs "$RUNS" --export-json "$WORK/runproof.json" \
    -n "runproof scan" "$RUNPROOF scan $TREE --format json > $WORK/runproof-report.json"
hyperfine -i --runs "$GUARDDOG_RUNS" --export-json "$WORK/guarddog.json" \
    -n "guarddog npm scan" "$GUARDDOG npm scan $TREE --no-sandbox --output-format json > $WORK/guarddog-report.json 2> $WORK/guarddog.err"

python3 - "$WORK" "$FILES" <<'PY'
import json, sys
work, files = sys.argv[1], int(sys.argv[2])
def mean(name):
    r = json.load(open(f"{work}/{name}.json"))["results"][0]
    return r["mean"], r.get("stddev") or 0.0, len(r["times"]), r["user"] + r["system"]
rp, rps, rpn, rpc = mean("runproof")
gd, gds, gdn, gdc = mean("guarddog")
rep = json.load(open(f"{work}/runproof-report.json"))
by = {}
for f in rep["findings"]:
    by[f["severity"]] = by.get(f["severity"], 0) + 1
print()
print(f"{'tool':20} {'runs':>4} {'wall s':>9} {'stddev':>8} {'cpu s':>8} {'files/s':>11}")
print(f"{'runproof scan':20} {rpn:>4} {rp:>9.3f} {rps:>8.3f} {rpc:>8.2f} {files/rp:>11,.0f}")
print(f"{'guarddog npm scan':20} {gdn:>4} {gd:>9.3f} {gds:>8.3f} {gdc:>8.2f} {files/gd:>11,.0f}")
print(f"ratio guarddog/runproof: wall {gd/rp:.0f}x, cpu {gdc/rpc:.0f}x")
print(f"runproof per 100,000 files: {rp*100000/files:.2f} s wall, {rpc*100000/files:.2f} s cpu")
print(f"runproof findings by severity: {by}  (files scanned: {rep['stats']['files_scanned']})")
PY

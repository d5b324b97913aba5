#!/usr/bin/env bash
# Sandbox start-up and exec-heavy overhead, measured side by side in one run:
#   1. `runproof run -- /bin/true` (full default policy) vs bubblewrap with an
#      equivalent read-only view vs the bare /bin/true;
#   2. a workload that spawns 500 processes, unsandboxed vs runproof vs
#      runproof --audit (every exec logged through seccomp user notification).
# Prints the ratios. Needs hyperfine and bwrap (apt-get install hyperfine bubblewrap).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-60}
cargo build --release -q -p runproof-cli
RP="$PWD/target/release/runproof"
WS=$(mktemp -d /tmp/rp-bench-XXXXXX)
OUT=$(mktemp -d /tmp/rp-bench-out-XXXXXX)
trap 'rm -rf "$WS" "$OUT"' EXIT
cd "$WS"

# bubblewrap, twice: "bwrap" with the minimal view this benchmark always
# used (system read-only, private /tmp, home, /dev and /proc, the workspace
# read-write, every namespace unshared), and "bwrap-equiv" with the same
# mount table as runproof's default policy (31 mounts: the /etc secrets
# masked, /etc/ssh and /etc/ssl/private emptied, /run private, /proc/sys,
# /proc/irq and /proc/bus read-only, the toolchain homes read-only). Neither
# sets seccomp, Landlock or cgroup limits, or scans the workspace first;
# runproof does all of that in its figure.
BWRAP="bwrap --unshare-all --die-with-parent --new-session \
 --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
 --ro-bind /etc /etc --ro-bind-try /opt /opt --dev /dev --proc /proc --tmpfs /tmp --tmpfs $HOME --bind $WS $WS --chdir $WS"
TOOLS=""
for t in .cargo .rustup .pyenv .nvm; do
  [ -d "$HOME/$t" ] && TOOLS="$TOOLS --ro-bind $HOME/$t $HOME/$t"
done
BWRAP_EQ="bwrap --unshare-all --die-with-parent --new-session \
 --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
 --ro-bind /etc /etc --ro-bind-try /opt /opt --tmpfs /tmp --tmpfs /run --tmpfs $HOME --dev /dev --proc /proc \
 --ro-bind /dev/null /etc/shadow --ro-bind /dev/null /etc/shadow- --ro-bind /dev/null /etc/gshadow --ro-bind /dev/null /etc/gshadow- \
 --ro-bind-try /dev/null /etc/security/opasswd --tmpfs /etc/ssh --remount-ro /etc/ssh --tmpfs /etc/ssl/private --remount-ro /etc/ssl/private \
 --ro-bind /proc/sys /proc/sys --ro-bind /proc/irq /proc/irq --ro-bind /proc/bus /proc/bus $TOOLS \
 --bind $WS $WS --chdir $WS"

# Several rounds, so a burst of load on this shared machine hits every
# command alike; the medians are taken over all rounds' samples.
ROUNDS=${ROUNDS:-5}
for r in $(seq "$ROUNDS"); do
  hyperfine -N -w 5 -r $(( (RUNS + ROUNDS - 1) / ROUNDS )) --export-json "$OUT/startup-$r.json" \
    -n runproof "$RP run -- /bin/true" \
    -n bwrap "$BWRAP /bin/true" \
    -n bwrap-equiv "$BWRAP_EQ /bin/true" \
    -n bare "/bin/true" >/dev/null
done

LOOP='i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done'
hyperfine -w 2 -r "${EXEC_RUNS:-15}" --export-json "$OUT/exec.json" \
  -n bare "sh -c '$LOOP'" \
  -n runproof "$RP run -- sh -c '$LOOP'" \
  -n runproof-audit "$RP run --audit $OUT/audit.jsonl -- sh -c '$LOOP'" \
  -n bwrap "$BWRAP sh -c '$LOOP'" >/dev/null

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
import glob, statistics as st
def load(name):
    r = json.load(open(os.path.join(out, name)))["results"]
    return {x["command"]: (x["mean"] * 1000, x["stddev"] * 1000, x["median"] * 1000) for x in r}
def load_rounds(pattern):
    times = {}
    for f in sorted(glob.glob(os.path.join(out, pattern))):
        for x in json.load(open(f))["results"]:
            times.setdefault(x["command"], []).extend(t * 1000 for t in x["times"])
    return {k: (st.mean(v), st.stdev(v), st.median(v)) for k, v in times.items()}
s = load_rounds("startup-*.json"); e = load("exec.json")
print("start-up (ms, mean ± sd, median):")
for k in ("bare", "bwrap", "bwrap-equiv", "runproof"):
    print(f"  {k:16} {s[k][0]:7.2f} ± {s[k][1]:5.2f}  median {s[k][2]:7.2f}")
print(f"  runproof / bwrap-equiv = {s['runproof'][2] / s['bwrap-equiv'][2]:.2f} (median; target <= 1.00)")
print(f"  runproof / bwrap       = {s['runproof'][2] / s['bwrap'][2]:.2f} (median; minimal view)")
print("500 execs (ms, mean ± sd, median):")
for k in ("bare", "bwrap", "runproof", "runproof-audit"):
    print(f"  {k:16} {e[k][0]:7.1f} ± {e[k][1]:5.1f}  median {e[k][2]:7.1f}")
base = e["bare"][2]
print(f"  runproof       / bare = {e['runproof'][2] / base:.3f} (median; target < 1.05)")
print(f"  runproof-audit / bare = {e['runproof-audit'][2] / base:.3f}")
print(f"  bwrap          / bare = {e['bwrap'][2] / base:.3f}")
PY

#!/usr/bin/env bash
# Builds the example repositories under examples/repos/<name> as git
# repositories with one commit each, made with a fixed author, committer and
# date so that the commit hashes in tasks.jsonl are the same on every machine.
#
#   examples/build.sh           build (or reuse) the repositories and check
#                               that their commits match tasks.jsonl
#   examples/build.sh --regen   also rewrite tasks.jsonl and predictions.jsonl
#                               from the sources: <name>/base (the repository),
#                               <name>/fix (gold fix), <name>/tests (test patch),
#                               <name>/preds/<model>/ (files a model changed) or
#                               <name>/preds/<model>.diff (a raw diff), and
#                               <name>/task.json (the other task fields).
#
# Needs git, jq and flock. Safe to run concurrently (it takes a lock).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
examples=(py-stats rs-wordcount js-slug)

export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME="runproof examples" GIT_AUTHOR_EMAIL="examples@runproof.invalid"
export GIT_COMMITTER_NAME="runproof examples" GIT_COMMITTER_EMAIL="examples@runproof.invalid"
export GIT_AUTHOR_DATE="2024-01-01T00:00:00+0000" GIT_COMMITTER_DATE="2024-01-01T00:00:00+0000"

mkdir -p "$here/repos"
exec 9>"$here/repos/.lock"
flock 9

build_repo() { # name -> prints the base commit
  local name=$1 dest=$here/repos/$1 tmp
  tmp=$(mktemp -d "$here/repos/.tmp-$name.XXXXXX")
  cp -R "$here/$name/base/." "$tmp/"
  git -C "$tmp" init -q -b main
  git -C "$tmp" add -A
  git -C "$tmp" commit -q -m "$name: base"
  local sha
  sha=$(git -C "$tmp" rev-parse HEAD)
  if [ -d "$dest/.git" ] && [ "$(git -C "$dest" rev-parse HEAD 2>/dev/null)" = "$sha" ] \
     && [ -z "$(git -C "$dest" status --porcelain)" ]; then
    rm -rf "$tmp"
  else
    rm -rf "$dest"
    mv "$tmp" "$dest"
  fi
  echo "$sha"
}

overlay_diff() { # name overlay-dir -> prints the diff that turns base into base+overlay
  local tmp
  tmp=$(mktemp -d)
  git clone -q "$here/repos/$1" "$tmp/r"
  cp -R "$2/." "$tmp/r/"
  git -C "$tmp/r" add -A
  git -C "$tmp/r" -c core.quotepath=off diff --cached --no-color --no-ext-diff HEAD
  rm -rf "$tmp"
}

regen=0
[ "${1:-}" = "--regen" ] && regen=1
tasks_tmp=$(mktemp) preds_tmp=$(mktemp)
trap 'rm -f "$tasks_tmp" "$preds_tmp"' EXIT

for name in "${examples[@]}"; do
  sha=$(build_repo "$name")
  if [ $regen = 1 ]; then
    gold=$(mktemp) tp=$(mktemp)
    overlay_diff "$name" "$here/$name/fix" >"$gold"
    overlay_diff "$name" "$here/$name/tests" >"$tp"
    jq -c --arg sha "$sha" --arg rp "repos/$name" --rawfile patch "$gold" --rawfile tp "$tp" \
      '.[] | . + {base_commit: $sha, repo_path: $rp, patch: $patch, test_patch: $tp}' \
      "$here/$name/task.json" >>"$tasks_tmp"
    for ids in $(jq -r '.[].instance_id' "$here/$name/task.json"); do
      for p in "$here/$name/preds/"*; do
        model=$(basename "$p" .diff)
        pf=$(mktemp)
        if [ -d "$p" ]; then overlay_diff "$name" "$p" >"$pf"; else cp "$p" "$pf"; fi
        jq -nc --arg id "$ids" --arg m "$model" --rawfile d "$pf" \
          '{instance_id: $id, model_name_or_path: $m, model_patch: $d}' >>"$preds_tmp"
        rm -f "$pf"
      done
    done
    rm -f "$gold" "$tp"
  else
    want=$(jq -r --arg rp "repos/$name" 'select(.repo_path == $rp) | .base_commit' "$here/tasks.jsonl" | sort -u)
    if [ "$want" != "$sha" ]; then
      echo "examples/build.sh: $name built at $sha but tasks.jsonl says '$want'; run examples/build.sh --regen" >&2
      exit 1
    fi
  fi
done

if [ $regen = 1 ]; then
  cp "$tasks_tmp" "$here/tasks.jsonl"
  cp "$preds_tmp" "$here/predictions.jsonl"
  echo "wrote $here/tasks.jsonl ($(wc -l <"$here/tasks.jsonl") tasks) and $here/predictions.jsonl ($(wc -l <"$here/predictions.jsonl") predictions)"
fi

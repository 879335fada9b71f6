#!/usr/bin/env bash
# Runs every libFuzzer target in DIR for SECONDS each, starting from the seed corpus in
# tests/data/fuzz/<name without _fuzz>/ (copied, so the repository's seeds stay as they are).
# Crashes are written to build/fuzz/artifacts/. Usage: run-fuzzers.sh DIR [SECONDS]
set -euo pipefail
dir=$1
seconds=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
artifacts=$root/build/fuzz/artifacts
mkdir -p "$artifacts"
status=0
for fuzzer in "$dir"/*_fuzz; do
  name=$(basename "$fuzzer" _fuzz)
  corpus=$(mktemp -d)
  if [[ -d $root/tests/data/fuzz/$name ]]; then cp -r "$root/tests/data/fuzz/$name/." "$corpus/"; fi
  echo "fuzz: $name for ${seconds}s" >&2
  if ! "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/$name-" -print_final_stats=1 "$corpus" 2>"$artifacts/$name.log"; then
    echo "fuzz: $name FAILED; see $artifacts/$name.log" >&2
    tail -30 "$artifacts/$name.log" >&2
    status=1
  else
    grep -E 'stat::number_of_executed_units|Done' "$artifacts/$name.log" >&2 || true
  fi
  rm -rf "$corpus"
done
exit $status

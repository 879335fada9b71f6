#!/usr/bin/env bash
# Build engine benchmarks (docs/benchmarks.md, "Build engine"):
#  1. packing a ~500 MB output as the agent does (NAR + sha256 + refscan + zstd + sha256, one
#     pass, bench_nar_pack_bench) vs `nix-store --dump | zstd -3 -T1` (and `nix-store --dump |
#     sha256sum`) on the same tree in the same run;
#  2. reference scanning of 1 GB with 1,000 candidates vs a naive scan (bench_refscan_bench).
#
#   bench/build.sh [BUILD_DIR] [SIZE_MB]      (defaults: build/agent, 500)
set -euo pipefail
BUILD=${1:-build/agent}
SIZE_MB=${2:-500}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/narcache-build-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The tree: half incompressible (random 1 MiB files), half text (scripts, numbers, paths).
tree=$WORK/tree
mkdir -p "$tree/bin" "$tree/share" "$tree/lib"
half=$((SIZE_MB / 2))
set +o pipefail  # head closes the text pipelines early
for i in $(seq 1 "$half"); do head -c 1048576 /dev/urandom > "$tree/lib/blob$i.so"; done
for i in $(seq 1 "$half"); do
  { seq 1 150000 | sed "s|^|/nix/store/00000000000000000000000000000000-dep-$i/bin/x |"; } |
    head -c 1048576 > "$tree/share/text$i.txt"
done
for i in $(seq 1 200); do printf '#!/bin/sh\necho %s\n' "$i" > "$tree/bin/s$i"; chmod +x "$tree/bin/s$i"; done
ln -s ../lib/blob1.so "$tree/bin/link"
set -o pipefail
sync

echo "== tree: $(du -sh "$tree" | cut -f1), $(find "$tree" -type f | wc -l) files"
echo "== warm-up (page cache)"; cat "$tree"/*/* > /dev/null
echo "== narcache (bench_nar_pack_bench, 1000 candidates, zstd inline)"
"$BUILD/bench/bench_nar_pack_bench" "$tree" 1000 "$WORK/out.nar.zst" 0
echo "== narcache (bench_nar_pack_bench, 1000 candidates, 1 zstd worker thread: as the agent)"
"$BUILD/bench/bench_nar_pack_bench" "$tree" 1000 "$WORK/out.nar.zst" 1
if command -v nix-store > /dev/null; then
  echo "== nix-store --dump | zstd -3 -T1"
  /usr/bin/time -f "%e s" sh -c "nix-store --dump '$tree' | zstd -q -3 -T1 > '$WORK/nix.nar.zst'"
  echo "== nix-store --dump | sha256sum"
  /usr/bin/time -f "%e s" sh -c "nix-store --dump '$tree' | sha256sum > /dev/null"
  echo "== nix hash path (dump + sha256 in one process)"
  /usr/bin/time -f "%e s" nix --extra-experimental-features nix-command hash path "$tree" > /dev/null
  ls -l "$WORK/out.nar.zst" "$WORK/nix.nar.zst" | awk '{print $5, $9}'
fi
echo "== bench_refscan_bench 1024 MB, 1000 candidates"
"$BUILD/bench/bench_refscan_bench" 1024 1000

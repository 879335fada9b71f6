#!/usr/bin/env bash
# GC planning benchmark: fills a store with ITEMS items (~4 references each) through the trusted
# bulk loader, then measures planning (scan + mark, what `narcache gc --dry-run` does) against a
# bare full scan of the references table, in one process (bench_gc_bench measure), and the
# real `narcache gc --dry-run` end to end under /usr/bin/time.
# Usage: bench/gc.sh BUILD_DIR [ITEMS] [RUNS]     (defaults: build/default, 1000000, 3)
set -euo pipefail
build=${1:-build/default}
items=${2:-1000000}
runs=${3:-3}
bench=$(realpath "$build/bench/bench_gc_bench")
narcache=$(realpath "$build/cli/narcache")
work=$(mktemp -d /tmp/narcache-gc-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$bench" generate "$work/store" "$items"
du -sh "$work/store/db"
"$bench" measure "$work/store" "$runs"
echo "--- narcache gc --dry-run (wall clock, peak RSS):"
for _ in 1 2; do
  /usr/bin/time -f "%e s, %M KiB max RSS" "$narcache" gc --store "$work/store" --ttl 30d --dry-run
done

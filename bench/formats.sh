#!/usr/bin/env bash
# Formats benchmark: narcache vs Nix on the same >= 500 MB tree of ~20k files, in one run.
#   nar dump   vs nix-store --dump      (to /dev/null)
#   hash path  vs nix hash path
#   nar restore vs nix-store --restore
#   and, for the record, dump into and restore from a pipe
# Prints the best-of-N wall time of each, the speed ratio (Nix time / narcache time; > 1 means
# narcache is faster) and narcache's peak RSS on a small and on the big tree (memory must be flat
# in NAR size). With ROUNDS=N it then alternates N restores of each tool (narcache, then Nix),
# which is steadier than best-of-RUNS on a noisy VM, and prints best and median.
# Usage: [RESTORE_JOBS=N] [ROUNDS=N] bench/formats.sh BUILD_DIR [RUNS]
set -euo pipefail
build=${1:-build/default}
runs=${2:-3}
narcache=$(realpath "$build/cli/narcache")
# Work on tmpfs when there is one: the disk here makes file-creation timings noisy.
base=${BENCH_DIR:-$([[ -d /dev/shm && -w /dev/shm ]] && echo /dev/shm || echo /tmp)}
work=$(mktemp -d "$base/narcache-bench.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# Nix isolated from the host (see shared NIX-AS-JUDGE.md §1).
export HOME=$work/home XDG_CACHE_HOME=$work/cache XDG_CONFIG_HOME=$work/config NIX_CONF_DIR=$work/conf
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME" "$NIX_CONF_DIR"
printf 'experimental-features = nix-command\nsubstituters =\nbuild-users-group =\n' > "$NIX_CONF_DIR/nix.conf"

echo "generating tree in $work/tree ..." >&2
python3 - "$work/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
os.makedirs(root)
for d in range(200):
    dp = os.path.join(root, f"dir{d:03}")
    os.makedirs(dp)
    for f in range(100):
        size = rnd.randint(100, 16 * 1024)
        p = os.path.join(dp, f"file{f:03}")
        with open(p, "wb") as fh:
            fh.write(rnd.randbytes(size // 2) + b"x" * (size - size // 2))
        if f % 10 == 0:
            os.chmod(p, 0o755)
    os.symlink("file000", os.path.join(dp, "link"))
big = os.path.join(root, "big")
os.makedirs(big)
for i in range(150):
    with open(os.path.join(big, f"mib{i:03}"), "wb") as fh:
        fh.write(rnd.randbytes(1 << 20))
for i in range(2):
    with open(os.path.join(big, f"huge{i}"), "wb") as fh:
        for _ in range(100):
            fh.write(rnd.randbytes(1 << 20))
PY
mkdir -p "$work/small"; echo hello > "$work/small/f"
nar_size=$("$narcache" nar dump "$work/tree" | wc -c)
files=$(find "$work/tree" | wc -l)
echo "tree: $files entries, NAR $((nar_size / 1000000)) MB" >&2

# best_of CMD...: prints the best wall time in seconds over $runs runs. $before_each (if set)
# runs untimed before each run (restores remove their previous output there).
best_of() {
  local best=""
  for ((i = 0; i < runs; i++)); do
    local t0 t1
    ${before_each:-true}
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    best=$(python3 -c "t=$t1-$t0; b='$best'; print(min(t, float(b)) if b else t)")
  done
  echo "$best"
}
dump_ours() { "$narcache" nar dump "$work/tree" > /dev/null; }
dump_nix() { nix-store --dump "$work/tree" > /dev/null; }
hash_ours() { "$narcache" hash path "$work/tree" > /dev/null; }
hash_nix() { nix hash path "$work/tree" > /dev/null; }
"$narcache" nar dump "$work/tree" > "$work/tree.nar"
# Restore worker threads (nar restore --jobs); the default is the number of cores, at least 2.
jobs=${RESTORE_JOBS:-}
restore_ours() { "$narcache" nar restore ${jobs:+--jobs "$jobs"} "$work/r1" < "$work/tree.nar"; }
restore_nix() { nix-store --restore "$work/r2" < "$work/tree.nar"; }
clean_restores() { rm -rf "$work/r1" "$work/r2"; }
dump_pipe_ours() { "$narcache" nar dump "$work/tree" | wc -c > /dev/null; }
dump_pipe_nix() { nix-store --dump "$work/tree" | wc -c > /dev/null; }
restore_pipe_ours() { cat "$work/tree.nar" | "$narcache" nar restore ${jobs:+--jobs "$jobs"} "$work/r1"; }
restore_pipe_nix() { cat "$work/tree.nar" | nix-store --restore "$work/r2"; }

# Warm the page cache once.
dump_nix; dump_ours

row() {  # name ours nix target ("-" for none)
  python3 -c "
o, n, t = $2, $3, '$4'
print(f'| $1 | {o:.3f} s | {n:.3f} s | {n/o:.2f}x | ' + ('-' if t == '-' else f'>= {t}x') + ' |')"
}
echo
echo "| operation | narcache | Nix | speed ratio (Nix/narcache) | target |"
echo "|---|---|---|---|---|"
row "nar dump vs nix-store --dump" "$(best_of dump_ours)" "$(best_of dump_nix)" 1.0
row "hash path vs nix hash path" "$(best_of hash_ours)" "$(best_of hash_nix)" 1.3
# Removing the previous restore (about 0.35 s for this tree) is not part of either timing.
before_each=clean_restores
row "nar restore vs nix-store --restore" "$(best_of restore_ours)" "$(best_of restore_nix)" 2.0
# Through pipes, as in `nix-store --dump | ... | nix-store --restore` (no targets: for the record).
row "nar dump into a pipe (\\| wc -c)" "$(best_of dump_pipe_ours)" "$(best_of dump_pipe_nix)" -
row "nar restore from a pipe (cat \\|)" "$(best_of restore_pipe_ours)" "$(best_of restore_pipe_nix)" -
before_each=

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
echo
echo "peak RSS of narcache nar dump: small tree $(rss "$narcache" nar dump "$work/small") KiB," \
     "$((nar_size / 1000000)) MB tree $(rss "$narcache" nar dump "$work/tree") KiB"
"$narcache" nar dump "$work/small" > "$work/small.nar"
restore_rss() { rm -rf "$work/r3"; /usr/bin/time -f %M "$narcache" nar restore ${jobs:+--jobs "$jobs"} "$work/r3" < "$1" 2>&1 | tail -1; }
echo "peak RSS of narcache nar restore: small tree $(restore_rss "$work/small.nar") KiB," \
     "$((nar_size / 1000000)) MB tree $(restore_rss "$work/tree.nar") KiB"

if [[ -n "${ROUNDS:-}" ]]; then
  python3 - "$narcache" "$work" "$ROUNDS" "$jobs" <<'PY'
import os, shutil, statistics, subprocess, sys, time
narcache, work, rounds, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ours = [narcache, "nar", "restore"] + (["--jobs", jobs] if jobs else [])
times = {"narcache": [], "nix": []}
for _ in range(rounds):
    for name, cmd in (("narcache", ours), ("nix", ["nix-store", "--restore"])):
        dest = os.path.join(work, "rounds")
        shutil.rmtree(dest, ignore_errors=True)
        with open(os.path.join(work, "tree.nar"), "rb") as nar:
            t0 = time.perf_counter()
            subprocess.run(cmd + [dest], stdin=nar, check=True)
            times[name].append(time.perf_counter() - t0)
shutil.rmtree(os.path.join(work, "rounds"), ignore_errors=True)
o, n = times["narcache"], times["nix"]
print(f"\nnar restore, {rounds} alternating rounds: narcache best {min(o):.3f} s median "
      f"{statistics.median(o):.3f} s, Nix best {min(n):.3f} s median {statistics.median(n):.3f} s; "
      f"ratio best {min(n) / min(o):.2f}x, median {statistics.median(n) / statistics.median(o):.2f}x")
PY
fi

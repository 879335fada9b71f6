#!/usr/bin/env bash
# Serving benchmark: narcache serve vs nginx (Debian) serving the same data as a file cache.
#
#   bench/serve.sh [BUILD_DIR]        (default build/serve; needs nix-bin, nginx, wrk, curl)
#
# 1. Seeds a chroot Nix store with NARINFOS small paths and one BIG_MB MiB path, and ingests them
#    with `nix copy --to http://<narcache>` (timed) and `nix copy --to file://...?compression=zstd`
#    (timed, for comparison).
# 2. Exports the narcache store to a file cache (`narcache export`) and serves it with nginx.
# 3. wrk: narinfo requests/s and p99 at 16 and 64 connections (keep-alive), for narcache,
#    nginx, and narcache behind nginx (proxy_pass, with --nar-redirect-prefix); large-nar
#    throughput for each.
# 4. Prints the ratios and rewrites the "## Serving" section of docs/benchmarks.md.
# Everything stays on 127.0.0.1 and in a temp dir. DURATION (s per wrk run) defaults to 8.
set -euo pipefail

BUILD=${1:-build/serve}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NARCACHE=$(cd "$ROOT" && realpath "$BUILD/cli/narcache")
DURATION=${DURATION:-8}
NARINFOS=${NARINFOS:-200}
BIG_MB=${BIG_MB:-200}
W=$(mktemp -d /tmp/narcache-bench-serve.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
  [ -f "$W/proxy.pid" ] && kill "$(cat "$W/proxy.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$W"
}
trap cleanup EXIT

for tool in nix nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench/serve.sh: $tool is not installed" >&2; exit 1; }
done

# --- Nix, isolated (see docs NIX-AS-JUDGE) -----------------------------------------------------
mkdir -p "$W/home" "$W/conf"
export HOME=$W/home XDG_CACHE_HOME=$W/home/cache XDG_CONFIG_HOME=$W/home/config NIX_CONF_DIR=$W/conf
cat >"$W/conf/nix.conf" <<EOF
experimental-features = nix-command
substituters =
build-users-group =
narinfo-cache-negative-ttl = 0
narinfo-cache-positive-ttl = 0
EOF

echo "== seeding: $NARINFOS small paths + one $BIG_MB MiB path"
mkdir -p "$W/src"
for i in $(seq 1 "$NARINFOS"); do
  mkdir -p "$W/src/p$i"
  head -c $((1000 + i * 37)) /dev/urandom >"$W/src/p$i/data"
done
mkdir -p "$W/src/big"
head -c $((BIG_MB << 20)) /dev/urandom >"$W/src/big/data"
nix-store --store "$W/nix" --add "$W"/src/p* >"$W/small.paths"
BIG_PATH=$(nix-store --store "$W/nix" --add "$W/src/big")
ALL=$(cat "$W/small.paths"; echo "$BIG_PATH")

# --- narcache ------------------------------------------------------------------------------------
"$NARCACHE" store init --store "$W/store" >/dev/null
nix key generate-secret --key-name bench-1 >"$W/sk"
echo bench-token >"$W/token"
echo "machine 127.0.0.1 login x password bench-token" >"$W/netrc"

start_narcache() {  # start_narcache LOGFILE ARGS...; sets NC_PORT
  local log=$1
  shift
  "$NARCACHE" serve --store "$W/store" --listen 127.0.0.1:0 --secret-key "$W/sk" \
    --upload-token-file "$W/token" --log-level warn "$@" 2>"$log" &
  PIDS+=($!)
  NC_PID=$!
  for _ in $(seq 100); do
    NC_PORT=$(grep -o 'on http://127.0.0.1:[0-9]*' "$log" | head -1 | sed 's/.*://') && [ -n "$NC_PORT" ] && return
    sleep 0.05
  done
  echo "narcache serve did not start" >&2
  cat "$log" >&2
  exit 1
}
start_narcache "$W/serve.log"

now() { date +%s.%N; }
echo "== ingest"
t0=$(now)
# shellcheck disable=SC2086
nix copy --store "$W/nix" --option netrc-file "$W/netrc" --to "http://127.0.0.1:$NC_PORT?compression=zstd" $ALL 2>"$W/copy-http.log"
t1=$(now)
# shellcheck disable=SC2086
nix copy --store "$W/nix" --to "file://$W/filecache?compression=zstd" $ALL 2>"$W/copy-file.log"
t2=$(now)
INGEST_NC=$(echo "$t1 - $t0" | bc -l)
INGEST_FILE=$(echo "$t2 - $t1" | bc -l)
printf '   narcache (nix copy --to http://):     %.2f s\n' "$INGEST_NC"
printf '   file cache (nix copy --to file://):   %.2f s\n' "$INGEST_FILE"

# --- nginx serving the exported file cache, and nginx in front of narcache -------------------
"$NARCACHE" export --store "$W/store" "file://$W/export" >/dev/null
NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_narcache "$W/serve-redirect.log" --nar-redirect-prefix /_nar/
NC_REDIRECT_PORT=$NC_PORT
start_narcache "$W/serve2.log"

common_nginx() {
  cat <<EOF
worker_processes auto;
error_log $W/$1-error.log warn;
pid $W/$1.pid;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 30s;
  client_body_temp_path $W/$1-tmp;
  proxy_temp_path $W/$1-tmp;
  fastcgi_temp_path $W/$1-tmp;
  uwsgi_temp_path $W/$1-tmp;
  scgi_temp_path $W/$1-tmp;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar zst; }
EOF
}
{
  common_nginx nginx
  cat <<EOF
  server { listen 127.0.0.1:$NGINX_PORT; root $W/export; }
}
EOF
} >"$W/nginx.conf"
{
  common_nginx proxy
  cat <<EOF
  upstream narcache { server 127.0.0.1:$NC_REDIRECT_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
    location / {
      proxy_pass http://narcache;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location /_nar/ { internal; alias $W/store/nar/; }
  }
}
EOF
} >"$W/proxy.conf"
mkdir -p "$W/nginx-tmp" "$W/proxy-tmp"
nginx -c "$W/nginx.conf" -p "$W" -g 'user root;' 2>/dev/null || nginx -c "$W/nginx.conf" -p "$W"
nginx -c "$W/proxy.conf" -p "$W" -g 'user root;' 2>/dev/null || nginx -c "$W/proxy.conf" -p "$W"
sleep 0.3

# wrk script: cycle through every narinfo of the seeded paths.
{
  echo "paths = {"
  while read -r p; do echo "  \"/$(basename "$p" | cut -c1-32).narinfo\","; done <"$W/small.paths"
  echo "}"
  cat <<'EOF'
i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99) / 1000, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
EOF
} >"$W/narinfo.lua"

BIG_HASH=$(basename "$BIG_PATH" | cut -c1-32)
BIG_URL=$(curl -s "http://127.0.0.1:$NC_PORT/$BIG_HASH.narinfo" | sed -n 's/^URL: //p')
for port in "$NC_PORT" "$NGINX_PORT" "$PROXY_PORT"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/$BIG_URL")
  [ "$code" = 200 ] || { echo "GET $BIG_URL on port $port: $code" >&2; exit 1; }
  [ "$(curl -s "http://127.0.0.1:$port/$BIG_HASH.narinfo" | grep -c '^NarHash')" = 1 ] ||
    { echo "narinfo on port $port is broken" >&2; exit 1; }
done

narinfo_bench() {  # narinfo_bench PORT CONNECTIONS -> "rps p99ms"
  wrk -t2 -c"$2" -d"${DURATION}s" -s "$W/narinfo.lua" "http://127.0.0.1:$1" | awk '/^RESULT/ {print $2, $3, $4, $5}'
}
nar_bench() {  # nar_bench PORT -> MiB/s over 4 connections
  local out
  out=$(wrk -t2 -c4 -d"${DURATION}s" "http://127.0.0.1:$1/$BIG_URL")
  echo "$out" | awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else if (v ~ /KB/) {sub("KB","",v); v/=1024}; printf "%.0f\n", v}'
}

echo "== narinfo (wrk -t2, ${DURATION}s, $NARINFOS distinct narinfos)"
declare -A RPS P99
for c in 16 64; do
  for who in narcache nginx proxy; do
    case $who in narcache) port=$NC_PORT ;; nginx) port=$NGINX_PORT ;; proxy) port=$PROXY_PORT ;; esac
    read -r rps p99 non2xx errs < <(narinfo_bench "$port" "$c")
    RPS[$who$c]=$rps
    P99[$who$c]=$p99
    printf '   %-9s c=%-3s %10.0f req/s   p99 %7.2f ms   non-2xx %s  socket errors %s\n' "$who" "$c" "$rps" "$p99" "$non2xx" "$errs"
  done
done

echo "== large nar ($BIG_MB MiB, zstd; wrk -c4, ${DURATION}s)"
NAR_NC=$(nar_bench "$NC_PORT")
NAR_NGINX=$(nar_bench "$NGINX_PORT")
NAR_PROXY=$(nar_bench "$PROXY_PORT")
printf '   narcache %s MiB/s, nginx %s MiB/s, nginx+X-Accel-Redirect %s MiB/s\n' "$NAR_NC" "$NAR_NGINX" "$NAR_PROXY"

ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
R16=$(ratio "${RPS[narcache16]}" "${RPS[nginx16]}")
R64=$(ratio "${RPS[narcache64]}" "${RPS[nginx64]}")
RNAR=$(ratio "$NAR_NC" "$NAR_NGINX")
RPROXY=$(ratio "$NAR_PROXY" "$NAR_NGINX")
RINGEST=$(ratio "$INGEST_FILE" "$INGEST_NC")
echo "== ratios (narcache / nginx): narinfo c16 ${R16}x, c64 ${R64}x; nar ${RNAR}x; behind nginx nar ${RPROXY}x; ingest speed vs file:// ${RINGEST}x"

# --- docs/benchmarks.md, section "## Serving" --------------------------------------------------
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
SECTION=$(cat <<EOF
## Serving

\`bench/serve.sh\` ($(date -u +%Y-%m-%d), $(nproc) vCPUs, $CPU; wrk, narcache and nginx share the
machine; loopback). Same data for both: $NARINFOS small CA paths and one $BIG_MB MiB path (random
bytes, zstd), ingested with \`nix copy --to http://\` into narcache, then \`narcache export\`ed to a
file cache that nginx $(nginx -v 2>&1 | sed 's/.*\///') serves (sendfile, keep-alive, no access log). wrk cycles through
all $NARINFOS narinfos; each run ${DURATION} s. "proxy" is nginx in front of narcache
(\`proxy_pass\` with upstream keep-alive, nar bodies by \`--nar-redirect-prefix\` / X-Accel-Redirect).

| narinfo | req/s c=16 | p99 c=16 | req/s c=64 | p99 c=64 |
|---|---|---|---|---|
| narcache serve | ${RPS[narcache16]} | ${P99[narcache16]} ms | ${RPS[narcache64]} | ${P99[narcache64]} ms |
| nginx (file cache) | ${RPS[nginx16]} | ${P99[nginx16]} ms | ${RPS[nginx64]} | ${P99[nginx64]} ms |
| nginx → narcache | ${RPS[proxy16]} | ${P99[proxy16]} ms | ${RPS[proxy64]} | ${P99[proxy64]} ms |
| **ratio narcache/nginx** | **${R16}×** | | **${R64}×** | |

| large nar ($BIG_MB MiB, 4 connections) | MiB/s |
|---|---|
| narcache serve | $NAR_NC |
| nginx (file cache) | $NAR_NGINX |
| nginx → narcache (X-Accel-Redirect) | $NAR_PROXY |
| **ratio narcache/nginx** | **${RNAR}×** (behind nginx: ${RPROXY}×) |

| ingest ($NARINFOS + 1 paths) | seconds |
|---|---|
| \`nix copy --to http://narcache\` (verified, indexed, signed on the way out) | $(printf '%.2f' "$INGEST_NC") |
| \`nix copy --to file://…?compression=zstd\` | $(printf '%.2f' "$INGEST_FILE") |
| **speed ratio narcache/file** | **${RINGEST}×** |

$(grep -v '^<!--' "$ROOT/bench/serve-notes.md" 2>/dev/null)
EOF
)
python3 - "$ROOT/docs/benchmarks.md" "$SECTION" <<'EOF'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pattern = re.compile(r"^## Serving\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda m: section + ("\n" if m.end() < len(text) else ""), text, count=1)
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
EOF
echo "== wrote the Serving section of docs/benchmarks.md"

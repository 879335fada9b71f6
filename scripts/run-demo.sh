#!/usr/bin/env bash
# `make run`: creates STORE (if new), seeds it with a small demo closure made by the real Nix
# client (three store paths with references), and serves it on LISTEN with a signing key.
# Usage: run-demo.sh NARCACHE_BIN STORE LISTEN
set -euo pipefail
narcache=$(realpath "$1")
store=$2
listen=${3:-127.0.0.1:8080}
mkdir -p "$store"
store=$(realpath "$store")
keys=$store/keys
export NARCACHE_STORE=$store

if [[ ! -d $store/db ]]; then
  "$narcache" store init --store "$store" >/dev/null
fi
if [[ ! -f $keys/secret ]]; then
  mkdir -p "$keys"
  "$narcache" key generate --name "$(hostname)-narcache-1" --secret "$keys/secret" \
    --public "$keys/public" >/dev/null
fi
if [[ ! -f $keys/upload-token ]]; then
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$keys/upload-token"
  chmod 600 "$keys/upload-token"
fi

# Nix, isolated from the host: a chroot store and config in a temp dir.
work=$(mktemp -d /tmp/narcache-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export HOME=$work/home XDG_CACHE_HOME=$work/cache XDG_CONFIG_HOME=$work/config NIX_CONF_DIR=$work/conf
mkdir -p "$HOME" "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME" "$NIX_CONF_DIR"
printf 'experimental-features = nix-command\nsubstituters =\nbuild-users-group =\n' > "$NIX_CONF_DIR/nix.conf"
cat > "$work/demo.nix" <<'NIX'
let
  greeting = builtins.toFile "narcache-demo-greeting" "Hello from narcache!\n";
  library = builtins.toFile "narcache-demo-lib" "greeting=${greeting}\n";
in builtins.toFile "narcache-demo-app" "#!/bin/sh\n. ${library}\ncat $greeting\n"
NIX
top=$(nix eval --store "$work/nix" --raw -f "$work/demo.nix")
nix copy --store "$work/nix" --to "file://$work/cache?compression=zstd" "$top"
"$narcache" import --store "$store" "file://$work/cache" >/dev/null

pk=$(cat "$keys/public")
cat <<MSG
narcache demo
  store:        $store ($("$narcache" stats --store "$store" | tr '\n' ' '))
  public key:   $pk
  upload token: $keys/upload-token
Fetch the demo closure with signature checking on:
  nix copy --from http://$listen --to /tmp/narcache-demo-client \\
    --option require-sigs true --option trusted-public-keys '$pk' \\
    --extra-experimental-features nix-command $top
MSG
exec "$narcache" serve --store "$store" --listen "$listen" --secret-key "$keys/secret" \
  --upload-token-file "$keys/upload-token"

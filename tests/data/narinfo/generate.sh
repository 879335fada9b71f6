#!/bin/sh
# Regenerates the golden narinfos in this folder with the real Nix client (Debian nix-bin 2.8),
# isolated from the host as described in /work/shared/NIX-AS-JUDGE.md: a chroot store under a
# temp dir, HOME/XDG_*/NIX_CONF_DIR in the temp dir, no substituters. Run as root.
# Output: <hash>.narinfo files plus the public keys test-cache-1.pub and test-cache-2.pub.
# The secret keys are kept too (test-cache-1.sec, test-cache-2.sec) so tests can re-sign.
set -eu
out=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d)
trap 'chmod -R u+w "$t"; rm -rf "$t"' EXIT
mkdir -p "$t/home" "$t/cache" "$t/config" "$t/conf"
export HOME="$t/home" XDG_CACHE_HOME="$t/cache" XDG_CONFIG_HOME="$t/config" NIX_CONF_DIR="$t/conf"
export NIX_REMOTE=
cat > "$t/conf/nix.conf" <<CONF
experimental-features = nix-command
substituters =
build-users-group =
sandbox-paths = /bin /usr /lib /lib64
narinfo-cache-negative-ttl = 0
narinfo-cache-positive-ttl = 0
CONF
S="$t/store"

cat > "$t/x.nix" <<'NIX'
let
  c = builtins.toFile "c" "hello from c\n";
  b = builtins.toFile "b" "b refers to ${c}\n";
  mk = name: script: builtins.derivation {
    inherit name;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
    system = builtins.currentSystem;
  };
  chain-c = mk "chain-c" "echo leaf > $out";
  chain-b = mk "chain-b" "mkdir $out; echo ${chain-c} > $out/ref; ln -s ${chain-c} $out/link";
  chain-a = mk "chain-a" "mkdir $out; echo $out > $out/self; echo ${chain-b} > $out/ref; printf '#!/bin/sh\\n' > $out/run; chmod +x $out/run";
in { inherit b c chain-a chain-b chain-c; }
NIX

b=$(nix eval --store "$S" --raw -f "$t/x.nix" b)
c=$(nix eval --store "$S" --raw -f "$t/x.nix" c)
a=$(nix-build --store "$S" "$t/x.nix" -A chain-a --no-out-link)
cb=$(nix-build --store "$S" "$t/x.nix" -A chain-b --no-out-link)
cc=$(nix-build --store "$S" "$t/x.nix" -A chain-c --no-out-link)
mkdir -p "$t/src/sub"
echo "source file" > "$t/src/sub/file.txt"
printf '#!/bin/sh\necho hi\n' > "$t/src/run.sh"
chmod +x "$t/src/run.sh"
src=$(nix store add-path --store "$S" "$t/src" --name my-src)
echo "a flat file" > "$t/flat.txt"
flat=$(nix-store --store "$S" --add-fixed sha256 "$t/flat.txt")

nix key generate-secret --key-name test-cache-1 > "$t/sk1"
nix key convert-secret-to-public < "$t/sk1" > "$t/pk1"
nix key generate-secret --key-name test-cache-2 > "$t/sk2"
nix key convert-secret-to-public < "$t/sk2" > "$t/pk2"

nix copy --store "$S" --to "file://$t/zstd?compression=zstd&secret-key=$t/sk1" \
  "$a" "$b" "$c" "$src" "$flat"
# A second signature on one path.
nix store sign --store "file://$t/zstd" --key-file "$t/sk2" "$a"
# Another compression, unsigned.
nix copy --store "$S" --to "file://$t/none?compression=none" "$cc"
nix copy --store "$S" --to "file://$t/xz?compression=xz&secret-key=$t/sk2" "$src"

rm -f "$out"/*.narinfo "$out"/*.pub "$out"/*.sec
cp "$t/zstd/"*.narinfo "$out/"
h=$(basename "$cc" | cut -c1-32); cp "$t/none/$h.narinfo" "$out/$h-none.narinfo"
h=$(basename "$src" | cut -c1-32); cp "$t/xz/$h.narinfo" "$out/$h-xz.narinfo"
cp "$t/pk1" "$out/test-cache-1.pub"; cp "$t/pk2" "$out/test-cache-2.pub"
cp "$t/sk1" "$out/test-cache-1.sec"; cp "$t/sk2" "$out/test-cache-2.sec"
ls "$out"

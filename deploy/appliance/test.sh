#!/usr/bin/env bash
# Checks the appliance install without touching this machine:
#   1. install.sh into a scratch root twice: both runs succeed, the second changes nothing;
#   2. install.sh into a second scratch root: the same files, modes and contents;
#   3. the nftables rules pass `nft -c` (install.sh checks them when nft is installed);
#   4. the generated node.toml and node.toml.example pass `strongroom node check-config`, run
#      with the workspace's debug build (deploy/dev/test.sh builds it first; STRONGROOM_BINARY
#      names another build);
#   5. the unit passes `systemd-analyze verify` and scores 2.0 or lower in
#      `systemd-analyze security --offline=true` (skipped, saying so, without systemd-analyze).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MAX_EXPOSURE=2.0

say() { printf 'appliance-test: %s\n' "$*"; }
fail() {
    printf 'appliance-test: FAILED: %s\n' "$*" >&2
    exit 1
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# A stand-in for the release binary: install.sh only copies it (the real one is large). The
# configuration check below runs a real build.
BINARY=$WORK/strongroom
printf '#!/bin/sh\necho "strongroom (test stand-in)"\n' >"$BINARY"
chmod 0755 "$BINARY"

ARGS=(--binary "$BINARY" --node-id node-1 --cluster-id test-cluster --node-ip 10.0.0.11
    --peer node-2=10.0.0.12 --peer node-3=fd00::13 --hsm-net 10.0.5.0/24
    --api-from 192.168.10.0/24 --ssh-from 10.0.99.0/24)

# tree_hash DIR: one digest over every path, its type and mode, and every file's content.
tree_hash() {
    (
        cd "$1"
        find . -mindepth 1 -printf '%y %m %p\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

A=$WORK/root-a
B=$WORK/root-b

say "install into a scratch root"
bash "$HERE/install.sh" --root "$A" "${ARGS[@]}" >"$WORK/run1.log" 2>&1 ||
    { cat "$WORK/run1.log" >&2; fail "first install.sh run"; }
first=$(tree_hash "$A")

say "install again into the same root"
bash "$HERE/install.sh" --root "$A" "${ARGS[@]}" >"$WORK/run2.log" 2>&1 ||
    { cat "$WORK/run2.log" >&2; fail "second install.sh run"; }
second=$(tree_hash "$A")
[[ $first == "$second" ]] || fail "the second run changed the scratch root"
if grep -E '^install: (wrote|added)' "$WORK/run2.log"; then
    fail "the second run rewrote files (above)"
fi

say "install into a second scratch root"
bash "$HERE/install.sh" --root "$B" "${ARGS[@]}" >"$WORK/run3.log" 2>&1 ||
    { cat "$WORK/run3.log" >&2; fail "install.sh into the second root"; }
[[ $(tree_hash "$B") == "$first" ]] || {
    diff -r "$A" "$B" >&2 || true
    fail "two scratch roots differ"
}

for f in usr/local/bin/strongroom etc/strongroom/node.toml etc/strongroom/firmware-profile.toml \
    etc/systemd/system/strongroom-node.service etc/sysctl.d/90-strongroom.conf \
    etc/strongroom/nftables.conf etc/strongroom/etcd.env usr/lib/sysusers.d/strongroom.conf \
    etc/systemd/coredump.conf.d/90-strongroom.conf usr/local/share/strongroom/postgres-setup.sql; do
    [[ -f $A/$f ]] || fail "install.sh did not write /$f"
done
for d in etc/strongroom/creds var/lib/strongroom; do
    [[ $(stat -c %a "$A/$d") == 700 ]] || fail "/$d is not mode 0700"
done
grep -q 'skipped (scratch root' "$WORK/run1.log" || fail "install.sh did not report the skipped system steps"
if command -v nft >/dev/null 2>&1; then
    grep -q 'nftables rules pass nft -c' "$WORK/run1.log" || fail "nft -c was not run on the rules"
    say "nftables rules pass nft -c"
else
    say "nft not installed: nftables rules not syntax-checked"
fi
say "install.sh: two runs in one root and runs in two roots leave identical files ($first)"

# The generated configuration, checked by the node's own parser. STRONGROOM_* variables of this
# shell are left out, so the files are checked as written.
REAL_BINARY=${STRONGROOM_BINARY:-${CARGO_TARGET_DIR:-$REPO/target}/debug/strongroom}
[[ -x $REAL_BINARY ]] ||
    fail "no strongroom binary at $REAL_BINARY to check node.toml with: build it (cargo build -p strongroom) or set STRONGROOM_BINARY"
no_env=()
for v in $(compgen -e); do
    if [[ $v == STRONGROOM_* ]]; then no_env+=(-u "$v"); fi
done
for f in etc/strongroom/node.toml etc/strongroom/node.toml.example; do
    out=$(env "${no_env[@]}" "$REAL_BINARY" node check-config --config "$A/$f" 2>&1) || {
        printf '%s\n' "$out" >&2
        fail "/$f does not pass strongroom node check-config"
    }
    say "/$f: ${out#"$A/$f: "}"
done

UNIT=$HERE/strongroom-node.service
if ! command -v systemd-analyze >/dev/null 2>&1; then
    say "systemd-analyze not installed: unit not verified, exposure not measured"
    exit 0
fi

# verify checks that ExecStart= exists: point it at the binary in the scratch root.
VERIFY_UNIT=$WORK/strongroom-node.service
sed "s|^ExecStart=/usr/local/bin/strongroom|ExecStart=$A/usr/local/bin/strongroom|" "$UNIT" >"$VERIFY_UNIT"
systemd-analyze verify --man=no "$VERIFY_UNIT" || fail "systemd-analyze verify"

report=$(systemd-analyze security --offline=true "$UNIT" 2>&1) || {
    printf '%s\n' "$report" >&2
    fail "systemd-analyze security"
}
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
[[ -n $score ]] || {
    printf '%s\n' "$report" >&2
    fail "no exposure level in the systemd-analyze output"
}
if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
    printf '%s\n' "$report" | grep '✗' >&2 || true
    fail "strongroom-node.service exposure $score is above $MAX_EXPOSURE"
fi
say "strongroom-node.service: exposure $score (limit $MAX_EXPOSURE)"

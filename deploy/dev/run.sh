#!/usr/bin/env bash
# The development main command: brings up a local three-node cluster and signs.
#
#   1. installs what is missing (deploy/dev/setup.sh) and builds the `strongroom` binary;
#   2. creates the token `strongroom-dev-node-1` in .dev/softhsm/ with its own softhsm2.conf
#      and a random PIN in .dev/node-1.pin (mode 0600), unless it already exists, and shows a
#      secret sealed and unsealed through it (`strongroom keystore init` and `keystore demo`);
#   3. `strongroom bench sign`: starts three node processes on loopback (a SoftHSM token,
#      a PostgreSQL database and an etcd lease each, mTLS over QUIC between them), generates a
#      2-of-3 key through the API, fills the presignature pools and signs digests from them,
#      printing the latency of each online signing. The cluster is torn down at the end.
#
# Running it again reuses the dev token. To start over: rm -rf .dev
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }

bash deploy/dev/setup.sh

say "building strongroom"
cargo build -p strongroom --bin strongroom
BIN=$ROOT/target/debug/strongroom

DEV=$ROOT/.dev
HSM_DIR=$DEV/softhsm
LABEL=strongroom-dev-node-1
PIN_FILE=$DEV/node-1.pin
SO_PIN_FILE=$DEV/node-1.so-pin
MODULE=/usr/lib/softhsm/libsofthsm2.so

umask 077
mkdir -p "$HSM_DIR/tokens"

# A SoftHSM configuration of our own: the dev token never mixes with the system's tokens.
cat >"$HSM_DIR/softhsm2.conf" <<EOF
# SoftHSM configuration of the strongroom dev node (written by deploy/dev/run.sh)
directories.tokendir = $HSM_DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF=$HSM_DIR/softhsm2.conf

token_exists() {
    softhsm2-util --show-slots 2>/dev/null | grep -Eq "^[[:space:]]*Label:[[:space:]]+${LABEL}[[:space:]]*$"
}

if token_exists; then
    [[ -s $PIN_FILE ]] || {
        printf 'run: token %s exists but its PIN file %s is missing; start over with: rm -rf .dev\n' \
            "$LABEL" "$PIN_FILE" >&2
        exit 1
    }
    say "reusing SoftHSM token '$LABEL' ($HSM_DIR)"
else
    say "creating SoftHSM token '$LABEL' ($HSM_DIR)"
    # Random PINs, readable only by this user.
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$PIN_FILE"
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$SO_PIN_FILE"
    chmod 0600 "$PIN_FILE" "$SO_PIN_FILE"
    # softhsm2-util takes PINs only as arguments; acceptable for a throwaway dev token.
    softhsm2-util --init-token --free --label "$LABEL" \
        --pin "$(cat "$PIN_FILE")" --so-pin "$(cat "$SO_PIN_FILE")" >/dev/null
fi

export STRONGROOM_PKCS11_MODULE=$MODULE
export STRONGROOM_TOKEN_LABEL=$LABEL
export STRONGROOM_PIN_FILE=$PIN_FILE

say "strongroom keystore init"
"$BIN" keystore init

say "strongroom keystore demo --cluster-id dev --node-id node-1"
"$BIN" keystore demo --cluster-id dev --node-id node-1

say "strongroom bench sign --signatures 20 (a local 3-node cluster: key generation, pools, signing)"
"$BIN" bench sign --signatures 20

cat <<EOF

==> done. To use the dev token yourself:
    export SOFTHSM2_CONF=$SOFTHSM2_CONF
    export STRONGROOM_PKCS11_MODULE=$MODULE
    export STRONGROOM_TOKEN_LABEL=$LABEL
    export STRONGROOM_PIN_FILE=$PIN_FILE
    $BIN keystore status
EOF

#!/usr/bin/env bash
# The development main command: brings up the local three-node dev cluster and signs a PSBT.
#
#   1. installs what is missing (deploy/dev/setup.sh) and builds the `strongroom` binary;
#   2. `strongroom dev up`: the dev cluster under .dev/, in the background. The first time it
#      provisions it: three node processes on loopback, each with its own SoftHSM token,
#      PostgreSQL database and etcd lease, mTLS over QUIC between them, and each with the dev
#      policy (policies/examples/dev.toml). Later it starts the same cluster again;
#   3. `strongroom dev demo`: generates a 2-of-3 key named `demo` through the API if the
#      cluster has no ready key, submits a regtest PSBT spending a made-up output of the key,
#      waits until the nodes, each having checked it against its own policy, have signed it,
#      and prints the signed transaction.
#
# The cluster stays up: `source .dev/cluster.env`, then `strongroom keys|sign|approve ...`.
# `strongroom dev down` stops it and keeps its data. To start over: dev down, then rm -rf .dev
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }

bash deploy/dev/setup.sh

say "building strongroom"
cargo build -p strongroom --bin strongroom
BIN=$ROOT/target/debug/strongroom

say "strongroom dev up (the local 3-node dev cluster under .dev/)"
"$BIN" dev up

say "strongroom dev demo (a key, a PSBT through every node's policy, a signed transaction)"
"$BIN" dev demo

cat <<EOF

==> done. The dev cluster stays up. To use it yourself:
    export PATH=$ROOT/target/debug:\$PATH
    source .dev/cluster.env
    strongroom sign list
    strongroom dev down      # stops it; \`strongroom dev up\` starts it again
EOF

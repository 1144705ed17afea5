#!/usr/bin/env bash
# Installs a strongroom node on a bare-metal Debian appliance, or into a scratch root.
#
#   deploy/appliance/install.sh --node-id node-1 --cluster-id prod --node-ip 10.0.0.11 \
#       --peer node-2=10.0.0.12 --peer node-3=10.0.0.13 [options]
#
# What it does, each step safe to repeat (running it again with the same arguments changes
# nothing; files an operator edits, node.toml and the firmware profile, are written only once):
#   - the service user `strongroom` (sysusers.d entry, created with systemd-sysusers/useradd);
#   - directories /etc/strongroom (+ creds/), /var/lib/strongroom;
#   - the binary in /usr/local/bin, the node configuration (node.toml, and node.toml.example
#     always rewritten), the documented reference configuration, the firmware profile;
#   - the systemd unit strongroom-node.service and its network drop-in;
#   - the local PostgreSQL role and database `strongroom`;
#   - the etcd member configuration (drop-in for Debian's etcd.service);
#   - sysctl hardening, core dumps off, nftables rules (only the cluster QUIC, API and etcd
#     ports open, etcd and QUIC to the peers only);
# and prints what the operator must do next.
#
# With --root DIR everything is written under DIR and nothing that needs the real system
# runs (user creation, chown, psql, sysctl, nft -f, systemctl): each such step says it was
# skipped. This is how deploy/appliance/test.sh checks the script.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

usage() {
    cat <<'EOF'
usage: install.sh --node-id ID --cluster-id ID --node-ip IP [options]

required:
  --node-id ID          this node's id (as in its certificate spiffe://<cluster>/node/<id>)
  --cluster-id ID       the cluster id
  --node-ip IP          this node's address on the cluster network

options:
  --peer ID=IP          another member of the cluster (repeat for each peer)
  --api-from CIDR       who may reach the HTTPS API (repeat; default: anyone)
  --hsm-net CIDR        network of a network-attached HSM the node must reach (repeat)
  --ssh-from CIDR       also open SSH (tcp 22) from this network (repeat; default: closed)
  --quic-port PORT      cluster QUIC port (default 7443/udp)
  --api-port PORT       HTTPS API port (default 8443/tcp)
  --binary PATH         strongroom binary to install (default: target/release/strongroom)
  --root DIR            install into DIR instead of / (scratch root: system steps skipped)
  -h, --help            this text
EOF
}

die() {
    printf 'install: error: %s\n' "$*" >&2
    exit 1
}
say() { printf 'install: %s\n' "$*"; }
skipped() { printf 'install: skipped (scratch root %s): %s\n' "$ROOT" "$*"; }

ROOT=/
NODE_ID=
CLUSTER_ID=
NODE_IP=
PEERS=()
API_FROM=()
HSM_NETS=()
SSH_FROM=()
QUIC_PORT=7443
API_PORT=8443
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
BINARY=

while (($#)); do
    case $1 in
    --node-id) NODE_ID=${2:?--node-id needs a value}; shift 2 ;;
    --cluster-id) CLUSTER_ID=${2:?--cluster-id needs a value}; shift 2 ;;
    --node-ip) NODE_IP=${2:?--node-ip needs a value}; shift 2 ;;
    --peer) PEERS+=("${2:?--peer needs ID=IP}"); shift 2 ;;
    --api-from) API_FROM+=("${2:?--api-from needs a CIDR}"); shift 2 ;;
    --hsm-net) HSM_NETS+=("${2:?--hsm-net needs a CIDR}"); shift 2 ;;
    --ssh-from) SSH_FROM+=("${2:?--ssh-from needs a CIDR}"); shift 2 ;;
    --quic-port) QUIC_PORT=${2:?--quic-port needs a value}; shift 2 ;;
    --api-port) API_PORT=${2:?--api-port needs a value}; shift 2 ;;
    --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

# ---- arguments ---------------------------------------------------------------------------------
# Node and cluster ids as the node accepts them: 1-63 of a-z 0-9 -, no '-' at either end.
id_re='^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
id_rule="1-63 of a-z 0-9 -, not starting or ending with -"
[[ $NODE_ID =~ $id_re ]] || die "--node-id is required ($id_rule)"
[[ $CLUSTER_ID =~ $id_re ]] || die "--cluster-id is required ($id_rule)"
[[ -n $NODE_IP ]] || die "--node-ip is required (this node's address on the cluster network)"
for port in "$QUIC_PORT" "$API_PORT"; do
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "bad port '$port'"
    fi
done

is_ip6() { [[ $1 == *:* ]]; }
# An address as the host part of a URL or host:port (IPv6 in brackets).
url_host() { if is_ip6 "$1"; then printf '[%s]' "$1"; else printf '%s' "$1"; fi; }
check_addr() {
    [[ $1 =~ ^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$ ]] || die "'$1' is not an IP address or CIDR"
}
# A single address (the node's and its peers'), no prefix length.
check_ip() {
    [[ $1 =~ ^[0-9A-Fa-f.:]+$ ]] || die "'$1' is not an IP address"
}
check_ip "$NODE_IP"
PEER_IDS=()
PEER_IPS=()
for p in "${PEERS[@]}"; do
    [[ $p == *=* ]] || die "--peer '$p': expected ID=IP"
    pid=${p%%=*}
    pip=${p#*=}
    [[ $pid =~ $id_re ]] || die "--peer '$p': bad node id ($id_rule)"
    [[ $pid != "$NODE_ID" ]] || die "--peer '$p': that is this node"
    check_ip "$pip"
    PEER_IDS+=("$pid")
    PEER_IPS+=("$pip")
done
for a in "${API_FROM[@]}" "${HSM_NETS[@]}" "${SSH_FROM[@]}"; do check_addr "$a"; done

if [[ $ROOT == / ]]; then
    REAL=1
    R=
    [[ $(id -u) -eq 0 ]] || die "installing on this system needs root (or use --root DIR for a scratch root)"
else
    REAL=0
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    R=$ROOT
fi

if [[ -z $BINARY ]]; then
    BINARY=$REPO/target/release/strongroom
fi
[[ -f $BINARY ]] || die "no binary at $BINARY: build it (cargo build --release --locked -p strongroom) or pass --binary"

# ---- helpers -----------------------------------------------------------------------------------
# put MODE DEST: writes stdin to DEST (under the root) when its content or mode differs.
put() {
    local mode=$1 dest=$R$2 tmp
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$(dirname "$dest")/.install.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        chmod "$mode" "$dest"
    else
        mv -f "$tmp" "$dest"
        say "wrote $2"
    fi
}

# put_once MODE DEST: like put, but leaves an existing DEST alone (the operator edits it).
put_once() {
    if [[ -e $R$2 ]]; then
        cat >/dev/null
        say "kept $2 (already present)"
    else
        put "$@"
    fi
}

# dir MODE PATH [OWNER:GROUP]
dir() {
    mkdir -p "$R$2"
    chmod "$1" "$R$2"
    if [[ -n ${3:-} ]]; then
        if ((REAL)); then chown "$3" "$R$2"; else skipped "chown $3 $2"; fi
    fi
}

join_by() {
    local sep=$1
    shift
    local out='' x
    for x in "$@"; do out+=${out:+$sep}$x; done
    printf '%s' "$out"
}

# ---- user and directories ----------------------------------------------------------------------
put 0644 /usr/lib/sysusers.d/strongroom.conf <<'EOF'
# strongroom node service user (installed by deploy/appliance/install.sh)
u strongroom - "strongroom node" /var/lib/strongroom /usr/sbin/nologin
# Member of tss, the group of the TPM resource manager /dev/tpmrm0 (attestation quotes).
m strongroom tss
EOF
if ((REAL)); then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers /usr/lib/sysusers.d/strongroom.conf
    else
        id strongroom >/dev/null 2>&1 ||
            useradd --system --user-group --home-dir /var/lib/strongroom --no-create-home \
                --shell /usr/sbin/nologin --comment "strongroom node" strongroom
        getent group tss >/dev/null 2>&1 || groupadd --system tss
        id -nG strongroom | tr ' ' '\n' | grep -qx tss || usermod -aG tss strongroom
    fi
    say "user strongroom is in place (member of tss, for /dev/tpmrm0)"
else
    skipped "create the system user strongroom, member of tss (systemd-sysusers or useradd)"
fi

dir 0750 /etc/strongroom root:strongroom
dir 0700 /etc/strongroom/creds root:root
dir 0700 /var/lib/strongroom strongroom:strongroom

# ---- binary, docs, configuration, firmware profile ---------------------------------------------
put 0755 /usr/local/bin/strongroom <"$BINARY"
put 0644 /usr/local/share/doc/strongroom/appliance-install.md <"$REPO/docs/appliance-install.md"
put 0644 /usr/local/share/doc/strongroom/node.toml <"$REPO/node/runtime/examples/node.toml"
put 0644 /usr/local/share/strongroom/firmware-profile/appliance.toml <"$REPO/firmware-profile/appliance.toml"
put 0644 /usr/local/share/strongroom/firmware-profile/README.md <"$REPO/firmware-profile/README.md"
put_once 0640 /etc/strongroom/firmware-profile.toml <"$REPO/firmware-profile/appliance.toml"
put_once 0640 /etc/strongroom/policy.toml <"$HERE/policy.toml"
for example in "$REPO"/policies/examples/*.toml; do
    put 0644 "/usr/local/share/doc/strongroom/policy-$(basename "$example")" <"$example"
done

ETCD_ENDPOINTS=$(join_by ", " "\"http://127.0.0.1:$ETCD_CLIENT_PORT\"" "\"http://$(url_host "$NODE_IP"):$ETCD_CLIENT_PORT\"")
# Where systemd puts the credential hsm-pin of strongroom-node.service (LoadCredentialEncrypted=).
PIN_FILE=/run/credentials/strongroom-node.service/hsm-pin
node_toml() {
    cat <<EOF
# strongroom node configuration, written by deploy/appliance/install.sh from its arguments.
# Every field is documented in /usr/local/share/doc/strongroom/node.toml; a field can be
# overridden with STRONGROOM__<SECTION>__<FIELD>. After editing, check the file with
#   strongroom node check-config --config /etc/strongroom/node.toml

[node]
id = "$NODE_ID"
cluster_id = "$CLUSTER_ID"
# Bitcoin network: mainnet, testnet, signet or regtest.
network = "mainnet"
# Never true on an appliance.
dev_mode = false

[token]
# PKCS#11 module of the HSM: set the vendor's library here (docs/appliance-install.md).
module = "/usr/lib/pkcs11/vendor-pkcs11.so"
label = "strongroom-$NODE_ID"
# The PIN, decrypted by systemd from /etc/strongroom/creds/hsm-pin.cred (credential hsm-pin
# of strongroom-node.service); keep the PIN itself out of this file.
pin_file = "$PIN_FILE"

[transport]
# QUIC between nodes (UDP).
listen = "$(url_host "$NODE_IP"):$QUIC_PORT"
ca_cert = "/var/lib/strongroom/tls/cluster-ca.pem"
certificate = "/var/lib/strongroom/tls/node.pem"

# The other nodes of the cluster: node id = "address:port" of their QUIC transport.
[peers]
EOF
    local i
    for i in "${!PEER_IDS[@]}"; do
        printf '%s = "%s:%s"\n' "${PEER_IDS[$i]}" "$(url_host "${PEER_IPS[$i]}")" "$QUIC_PORT"
    done
    cat <<EOF

[api]
# HTTPS API (mTLS: clients present certificates from the cluster CA).
listen = "0.0.0.0:$API_PORT"
# Per client: sustained requests per second (0 = no limit) and burst.
rate_limit_per_second = 20.0
rate_limit_burst = 40

# Roles of each API client, by the client name in its certificate: submitter, approver,
# admin, auditor. A client not listed is refused. For example:
#   ops = ["admin", "submitter"]
[api.clients]

[database]
# Local database over the Unix socket, peer authentication as the service user.
url = "postgresql:///strongroom?host=/run/postgresql&user=strongroom"
max_connections = 16

[etcd]
endpoints = [$ETCD_ENDPOINTS]
lease_ttl_secs = 3

[primes]
source = "generate"

[pool]
target = 100
low_water = 50
max = 150
# 0 = one presign session per CPU core.
concurrency = 0

[signing]
interactive_fallback = true
timeout_secs = 30
max_in_flight = 256

[policy]
# This node's policy (relative to this file). The installed one denies everything until the
# operator writes the real one.
file = "policy.toml"

[attestation]
# The firmware profile (relative to this file): installed from firmware-profile/appliance.toml,
# filled in by the operator (docs/appliance-install.md, "Firmware profile"). The node refuses
# to start on a token outside it, and admits a peer only when the peer's evidence passes it.
profile = "firmware-profile.toml"
# Seconds between re-checks of every peer (and re-reads of the profile file).
recheck_secs = 60

[attestation.tpm]
# The TPM whose quotes over PCRs 0, 2, 4, 7 go into this node's evidence, signed by the
# attestation key enrolled at ak_handle (docs/appliance-install.md, "Enroll the TPM
# attestation key"): the kernel's resource manager, which the unit allows.
tcti = "device:/dev/tpmrm0"
ak_handle = 0x81010002
EOF
}
node_toml | put 0640 /etc/strongroom/node.toml.example
node_toml | put_once 0640 /etc/strongroom/node.toml
if ((REAL)); then
    chgrp strongroom /etc/strongroom/node.toml /etc/strongroom/node.toml.example /etc/strongroom/firmware-profile.toml /etc/strongroom/policy.toml
else
    skipped "chgrp strongroom on the files in /etc/strongroom"
fi

# ---- systemd unit, core dumps ------------------------------------------------------------------
put 0644 /etc/systemd/system/strongroom-node.service <"$HERE/strongroom-node.service"
allow=(localhost "$NODE_IP" "${PEER_IPS[@]}" "${HSM_NETS[@]}")
if ((${#API_FROM[@]})); then allow+=("${API_FROM[@]}"); else allow+=(any); fi
put 0644 /etc/systemd/system/strongroom-node.service.d/10-network.conf <<EOF
# Written by deploy/appliance/install.sh: the addresses the node may exchange packets with
# (itself, its peers, the HSM network, API clients). The firewall narrows this per port.
[Service]
IPAddressAllow=$(join_by " " "${allow[@]}")
EOF
put 0644 /etc/systemd/coredump.conf.d/90-strongroom.conf <"$HERE/coredump.conf"

# ---- PostgreSQL --------------------------------------------------------------------------------
put 0644 /usr/local/share/strongroom/postgres-setup.sql <<'EOF'
-- strongroom: the local role and database (peer authentication over the Unix socket).
-- Run as the postgres superuser: psql -v ON_ERROR_STOP=1 -f postgres-setup.sql
SELECT 'CREATE ROLE strongroom LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'strongroom')\gexec
SELECT 'CREATE DATABASE strongroom OWNER strongroom'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'strongroom')\gexec
EOF
if ((REAL)); then
    if command -v psql >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
        systemctl start postgresql.service
        runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -f /usr/local/share/strongroom/postgres-setup.sql
        say "PostgreSQL role and database strongroom are in place"
    else
        die "PostgreSQL is not installed: apt-get install postgresql, then run install.sh again"
    fi
else
    skipped "psql: create the PostgreSQL role and database strongroom"
fi

# ---- etcd member -------------------------------------------------------------------------------
members=("$NODE_ID=http://$(url_host "$NODE_IP"):$ETCD_PEER_PORT")
for i in "${!PEER_IDS[@]}"; do
    members+=("${PEER_IDS[$i]}=http://$(url_host "${PEER_IPS[$i]}"):$ETCD_PEER_PORT")
done
# shellcheck disable=SC2046 # word splitting of the sorted list is intended
initial_cluster=$(join_by "," $(printf '%s\n' "${members[@]}" | sort))
etcd_ip=$(url_host "$NODE_IP")
put 0644 /etc/strongroom/etcd.env <<EOF
# etcd member of strongroom cluster '$CLUSTER_ID' (written by deploy/appliance/install.sh).
# etcd holds membership leases and the leader election only, nothing secret; its ports are
# open to the cluster's nodes only (nftables).
ETCD_NAME=$NODE_ID
ETCD_DATA_DIR=/var/lib/etcd/strongroom
ETCD_LISTEN_PEER_URLS=http://$etcd_ip:$ETCD_PEER_PORT
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$etcd_ip:$ETCD_PEER_PORT
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:$ETCD_CLIENT_PORT,http://$etcd_ip:$ETCD_CLIENT_PORT
ETCD_ADVERTISE_CLIENT_URLS=http://$etcd_ip:$ETCD_CLIENT_PORT
ETCD_INITIAL_CLUSTER=$initial_cluster
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=strongroom-$CLUSTER_ID
EOF
put 0644 /etc/systemd/system/etcd.service.d/10-strongroom.conf <<'EOF'
# strongroom: this machine's etcd member (deploy/appliance/install.sh).
[Service]
EnvironmentFile=/etc/strongroom/etcd.env
EOF

# ---- sysctl ------------------------------------------------------------------------------------
put 0644 /etc/sysctl.d/90-strongroom.conf <"$HERE/sysctl.conf"
if ((REAL)); then
    sysctl -q -p /etc/sysctl.d/90-strongroom.conf || say "some sysctl keys are not available on this kernel (see above)"
else
    skipped "sysctl -p /etc/sysctl.d/90-strongroom.conf"
fi

# ---- nftables ----------------------------------------------------------------------------------
peers4=()
peers6=()
for ip in "$NODE_IP" "${PEER_IPS[@]}"; do
    if is_ip6 "$ip"; then peers6+=("$ip"); else peers4+=("$ip"); fi
done
api4=()
api6=()
for net in "${API_FROM[@]}"; do
    if is_ip6 "$net"; then api6+=("$net"); else api4+=("$net"); fi
done
ssh4=()
ssh6=()
for net in "${SSH_FROM[@]}"; do
    if is_ip6 "$net"; then ssh6+=("$net"); else ssh4+=("$net"); fi
done
nft_rules() {
    cat <<EOF
#!/usr/sbin/nft -f
# strongroom appliance firewall (written by deploy/appliance/install.sh). Inbound, only the
# cluster QUIC port and etcd (from the cluster's nodes) and the HTTPS API are open.
# Loading this file replaces the table, so it can be applied any number of times.
table inet strongroom
delete table inet strongroom
table inet strongroom {
EOF
    local set nets
    for set in peers4 peers6 api4 api6 ssh4 ssh6; do
        local -n arr=$set
        ((${#arr[@]})) || continue
        local type=ipv4_addr
        [[ $set == *6 ]] && type=ipv6_addr
        nets=$(join_by ", " "${arr[@]}")
        printf '    set %s {\n        type %s\n        flags interval\n        elements = { %s }\n    }\n' "$set" "$type" "$nets"
    done
    cat <<EOF
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iif "lo" accept
        # IPv6 neighbour discovery and path MTU; rate-limited IPv4 diagnostics.
        meta l4proto ipv6-icmp accept
        ip protocol icmp icmp type { echo-request, destination-unreachable, time-exceeded } limit rate 5/second accept
EOF
    local fam
    for fam in 4 6; do
        local ipkw=ip
        [[ $fam == 6 ]] && ipkw=ip6
        local -n peers=peers$fam
        if ((${#peers[@]})); then
            printf '        %s saddr @peers%s udp dport %s accept comment "cluster QUIC"\n' "$ipkw" "$fam" "$QUIC_PORT"
            printf '        %s saddr @peers%s tcp dport { %s, %s } accept comment "etcd client and peer"\n' "$ipkw" "$fam" "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT"
        fi
        local -n api=api$fam
        if ((${#api[@]})); then
            printf '        %s saddr @api%s tcp dport %s accept comment "HTTPS API"\n' "$ipkw" "$fam" "$API_PORT"
        fi
        local -n ssh=ssh$fam
        if ((${#ssh[@]})); then
            printf '        %s saddr @ssh%s tcp dport 22 accept comment "SSH (--ssh-from)"\n' "$ipkw" "$fam"
        fi
    done
    if ((${#API_FROM[@]} == 0)); then
        printf '        tcp dport %s accept comment "HTTPS API (clients authenticate with mTLS)"\n' "$API_PORT"
    fi
    cat <<'EOF'
        limit rate 10/minute log prefix "strongroom-drop: " counter
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
    }
}
EOF
}
nft_rules | put 0644 /etc/strongroom/nftables.conf
if command -v nft >/dev/null 2>&1; then
    nft -c -f "$R/etc/strongroom/nftables.conf"
    say "nftables rules pass nft -c"
else
    say "nft not installed: rules not syntax-checked (apt-get install nftables)"
fi
include='include "/etc/strongroom/nftables.conf"'
if [[ ! -f $R/etc/nftables.conf ]]; then
    put 0755 /etc/nftables.conf <<EOF
#!/usr/sbin/nft -f
flush ruleset
$include
EOF
elif ! grep -qxF "$include" "$R/etc/nftables.conf"; then
    printf '%s\n' "$include" >>"$R/etc/nftables.conf"
    say "added the strongroom rules to /etc/nftables.conf"
fi

# ---- activate ----------------------------------------------------------------------------------
if ((REAL)); then
    nft -f /etc/strongroom/nftables.conf
    systemctl enable nftables.service
    systemctl daemon-reload
    systemctl enable etcd.service strongroom-node.service
    say "enabled etcd.service and strongroom-node.service (not started: the token is not provisioned yet)"
else
    skipped "nft -f /etc/strongroom/nftables.conf, systemctl daemon-reload, systemctl enable etcd strongroom-node"
fi

# ---- configuration check -----------------------------------------------------------------------
# The installed binary validates both files (it does not need the token, the certificates or the
# PIN for this). The environment's STRONGROOM_* variables are left out: the unit sets none.
check_config() {
    local v no_env=()
    for v in $(compgen -e); do
        if [[ $v == STRONGROOM_* ]]; then no_env+=(-u "$v"); fi
    done
    env "${no_env[@]}" /usr/local/bin/strongroom node check-config --config "$1"
}
if ((REAL)); then
    command -v tpm2_quote >/dev/null 2>&1 ||
        say "warning: tpm2-tools is not installed; the node quotes with it: apt-get install tpm2-tools"
    check_config /etc/strongroom/node.toml.example >/dev/null ||
        die "the generated /etc/strongroom/node.toml.example does not pass strongroom node check-config (above): install.sh and the binary do not match"
    check_config /etc/strongroom/node.toml ||
        die "/etc/strongroom/node.toml does not pass strongroom node check-config (above): fix it (compare with node.toml.example; every field is documented in /usr/local/share/doc/strongroom/node.toml) and run install.sh again"
else
    skipped "strongroom node check-config on /etc/strongroom/node.toml and node.toml.example"
fi

cat <<EOF

install: done. Node '$NODE_ID' of cluster '$CLUSTER_ID'. What the operator does next
(docs/appliance-install.md, installed in /usr/local/share/doc/strongroom/):
  1. Install the HSM vendor's PKCS#11 module, set token.module in /etc/strongroom/node.toml,
     and initialise the token 'strongroom-$NODE_ID' with the vendor's tool.
  2. Store the token PIN as an encrypted credential:
       systemd-creds encrypt --with-key=tpm2 --name=hsm-pin <pin file> /etc/strongroom/creds/hsm-pin.cred
  3. strongroom keystore init   (sealing key and identity key on the token)
  4. Certificate ceremony: strongroom cluster csr on this node, strongroom cluster sign on the
     offline CA, then install the node certificate and the CA certificate where [transport] of
     node.toml says (/var/lib/strongroom/tls/node.pem and cluster-ca.pem).
  5. Enroll the TPM attestation key: strongroom tpm enroll (prints its digest for
     tpm.enrolled_aks). Fill in /etc/strongroom/firmware-profile.toml (binary.sha256, tpm.pcrs,
     tpm.enrolled_aks of every node), check this node against it with
     strongroom tpm status --profile /etc/strongroom/firmware-profile.toml, and write this
     node's signing policy in /etc/strongroom/policy.toml (the installed one denies everything;
     examples in /usr/local/share/doc/strongroom/policy-*.toml).
  6. List the API clients and their roles in [api.clients] of /etc/strongroom/node.toml, then
     check the file: strongroom node check-config --config /etc/strongroom/node.toml
  7. Start etcd on every member, then: systemctl start strongroom-node.service
EOF
if ((${#SSH_FROM[@]} == 0)); then
    printf '  Note: SSH is closed by the firewall once it is loaded; open sessions stay up. Use the console, or\n        run install.sh again with --ssh-from <admin network>.\n'
fi

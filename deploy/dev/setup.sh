#!/usr/bin/env bash
# Installs what building and testing strongroom needs on a Debian machine, and only what is
# missing: system packages through apt, cargo tools through `cargo install --locked`.
# Safe to run any number of times; when everything is present it only checks (about a second).
#
# Installing the postgresql and etcd-server packages never leaves a system service running:
# the tests and the dev scripts start their own servers on loopback with free ports.
set -euo pipefail

# Debian packages, each with the reason it is here.
PACKAGES=(
    build-essential   # cc/c++ for ring, GMP (rug), libFuzzer
    pkg-config
    m4                # GMP's build (gmp-mpfr-sys, under cggmp24's rug backend)
    shellcheck        # lint of the deploy scripts (deploy/dev/test.sh)
    protobuf-compiler # protoc, for etcd-client's generated gRPC code
    libprotobuf-dev   # protoc's well-known types (google/protobuf/*.proto), same build
    softhsm2          # the PKCS#11 token of development and tests
    postgresql        # initdb/pg_ctl/postgres, started per test by the harness
    etcd-server       # /usr/bin/etcd, started per test by the harness
    swtpm             # software TPM 2.0 of the attestation tests, one per node
    tpm2-tools        # tpm2_quote and friends: how a node quotes with its TPM
)

# Cargo subcommands: name of the subcommand and the crate that provides it.
CARGO_TOOLS=(
    "nextest:cargo-nextest"
    "deny:cargo-deny"
    "fuzz:cargo-fuzz"
)

started=$SECONDS
say() { printf 'setup: %s\n' "$*"; }
die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

# ---- Debian packages -----------------------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects Debian (bookworm or newer)"

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "missing packages (${missing[*]}) and neither root nor sudo: install them, then run again"
    fi
    say "installing Debian packages: ${missing[*]}"

    # Keep package scripts from starting services (Debian's policy-rc.d protocol: exit 101
    # means "do not start"). A policy that is already in place is left untouched.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# strongroom deploy/dev/setup.sh: no service starts during this install\nexit 101\n' |
            "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 0755 "$policy"
        own_policy=1
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
    fi

    apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" \
        install --no-install-recommends "${missing[@]}"

    if ((own_policy)); then
        "${SUDO[@]}" rm -f "$policy"
        trap - EXIT
    fi

    # Where a service manager runs, make sure the freshly installed servers neither run now
    # nor start at boot; a machine that already had them is left as it was.
    for pkg in "${missing[@]}"; do
        case $pkg in
        postgresql) svc=postgresql ;;
        etcd-server) svc=etcd ;;
        *) continue ;;
        esac
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
            "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi

# ---- Rust toolchain and cargo tools --------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs), then run again"

for component in rustfmt clippy; do
    sub=${component/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo $sub is missing and rustup is not installed"
        say "adding rustup component $component"
        rustup component add "$component"
    fi
done

for entry in "${CARGO_TOOLS[@]}"; do
    sub=${entry%%:*}
    crate=${entry#*:}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        say "installing $crate with cargo install --locked (builds from source: several minutes on 2 cores)"
        tool_started=$SECONDS
        cargo install --locked "$crate"
        say "installed $crate in $((SECONDS - tool_started))s"
    fi
done

# ---- Summary -------------------------------------------------------------------------------
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
softhsm_module=/usr/lib/softhsm/libsofthsm2.so
[[ -e $softhsm_module ]] || die "SoftHSM module not found at $softhsm_module (package softhsm2)"
[[ -x /usr/bin/etcd ]] || die "/usr/bin/etcd not found (package etcd-server)"
[[ -n $pg_bin && -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql (package postgresql)"

say "rustc:    $(rustc --version)"
say "softhsm:  $(softhsm2-util --version 2>/dev/null || echo '?') ($softhsm_module)"
say "postgres: $("$pg_bin/postgres" --version) ($pg_bin)"
say "etcd:     $(/usr/bin/etcd --version 2>/dev/null | head -n 1)"
say "protoc:   $(protoc --version)"
say "tools:    $(cargo nextest --version 2>/dev/null | head -n 1); $(cargo deny --version); $(cargo fuzz --version)"
say "ready in $((SECONDS - started))s"

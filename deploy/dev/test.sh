#!/usr/bin/env bash
# Runs every check and every test of strongroom, in the order CI runs them, stopping at the
# first failure: setup, formatting, shell lint, clippy, cargo-deny, the test suite (nextest),
# each fuzz target briefly, and the deployment checks (install scripts, systemd units).
#
# Environment:
#   STRONGROOM_FUZZ_SECONDS   seconds per fuzz target (default 5; 0 skips fuzzing)
#   STRONGROOM_NEXTEST_PROFILE  nextest profile (default ci, see .config/nextest.toml)
#   CARGO_BUILD_JOBS          parallel compile jobs (default 2)
#   CI                        when set, Cargo.lock must already match Cargo.toml (--locked)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-auto}
FUZZ_SECONDS=${STRONGROOM_FUZZ_SECONDS:-5}
NEXTEST_PROFILE=${STRONGROOM_NEXTEST_PROFILE:-ci}
LOCKED=()
[[ -n ${CI:-} ]] && LOCKED=(--locked)

total_started=$SECONDS
timings=()

# step <name> <command...>: announces, runs and times one step; the script ends on failure.
step() {
    local name=$1
    shift
    printf '\n==> %s\n' "$name"
    local started=$SECONDS rc=0
    # A subshell outside any `if`, so that `set -e` holds inside the step's functions.
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    local took=$((SECONDS - started))
    if ((rc != 0)); then
        printf '==> %s: FAILED after %ss (exit %s)\n' "$name" "$took" "$rc" >&2
        summary >&2
        exit "$rc"
    fi
    timings+=("$(printf '%-40s %5ss' "$name" "$took")")
    printf '==> %s: ok (%ss)\n' "$name" "$took"
}

summary() {
    printf '\n==> time per step\n'
    local line
    for line in "${timings[@]}"; do
        printf '    %s\n' "$line"
    done
    printf '    %-40s %5ss\n' total "$((SECONDS - total_started))"
}

notice() { printf '==> notice: %s\n' "$*"; }

# ---- steps ---------------------------------------------------------------------------------

fmt_check() {
    cargo fmt --all --check || {
        printf 'formatting differs: run cargo fmt --all\n' >&2
        return 1
    }
}

# Every shell script the project ships or runs.
shell_lint() {
    local scripts
    mapfile -t scripts < <(find deploy .ci -type f \( -name '*.sh' -o -name run \) | sort)
    shellcheck --severity=warning "${scripts[@]}"
}

clippy() { cargo clippy --workspace --all-targets "${LOCKED[@]}" -- -D warnings; }

deny_policies() { cargo deny check --hide-inclusion-graph licenses bans sources; }

# The RustSec database lives on GitHub. Fetch it when GitHub is reachable; otherwise use a copy
# already on this machine; otherwise say plainly that advisories were not checked.
deny_advisories() {
    local db_root=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
    if cargo deny fetch db >/dev/null 2>&1; then
        cargo deny check --hide-inclusion-graph advisories
    elif compgen -G "$db_root/*/crates" >/dev/null; then
        local db
        db=$(compgen -G "$db_root/*/crates" | head -n 1)
        local date
        date=$(git -C "${db%/crates}" log -1 --format=%cs 2>/dev/null || echo 'unknown date')
        notice "advisory database could not be updated; checking against the local copy of $date"
        cargo deny --offline check --hide-inclusion-graph advisories
    else
        notice "advisories NOT checked: the RustSec database (github.com/RustSec/advisory-db) cannot be fetched from here and no copy is present (run \`cargo deny fetch db\` where GitHub is reachable)"
    fi
}

tests() {
    # Integration tests run the real `strongroom` binary: build it first, with the same profile.
    cargo build --workspace --bins "${LOCKED[@]}"
    cargo nextest run --workspace "${LOCKED[@]}" --profile "$NEXTEST_PROFILE" --no-tests=warn
}

# Every cargo-fuzz target in the repository (`**/fuzz/fuzz_targets/*.rs`), each for a few
# seconds, without a sanitizer (stable toolchain; RUSTC_BOOTSTRAP lets cargo-fuzz pass its
# unstable flags). All fuzz crates share one target directory, so common dependencies build once.
fuzz() {
    if [[ $FUZZ_SECONDS == 0 ]]; then
        notice "fuzzing skipped (STRONGROOM_FUZZ_SECONDS=0)"
        return 0
    fi
    local targets
    mapfile -t targets < <(find . -path ./target -prune -o -path '*/fuzz/target' -prune -o \
        -path '*/fuzz/fuzz_targets/*.rs' -print | sort)
    if ((${#targets[@]} == 0)); then
        notice "no fuzz targets found"
        return 0
    fi
    local file fuzz_dir target
    for file in "${targets[@]}"; do
        fuzz_dir=$(dirname "$(dirname "$file")")
        target=$(basename "$file" .rs)
        printf -- '--- fuzz %s (%s), %ss\n' "$target" "$fuzz_dir" "$FUZZ_SECONDS"
        (
            cd "$fuzz_dir"
            RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . --target-dir "$ROOT/target/fuzz" \
                -s none "$target" -- -max_total_time="$FUZZ_SECONDS"
        )
    done
}

# Deployment files: each area under deploy/ (other than dev/) may carry its own test.sh, which
# checks its install script and verifies its systemd units without touching this machine.
# Unit files without such a script are verified directly when systemd-analyze is installed.
deploy_checks() {
    local scripts units script
    mapfile -t scripts < <(find deploy -mindepth 2 -maxdepth 2 -name test.sh \
        ! -path deploy/dev/test.sh | sort)
    for script in "${scripts[@]}"; do
        printf -- '--- %s\n' "$script"
        bash "$script"
    done
    if ((${#scripts[@]})); then
        return 0
    fi
    mapfile -t units < <(find deploy -type f \( -name '*.service' -o -name '*.socket' \
        -o -name '*.timer' -o -name '*.target' -o -name '*.path' \) 2>/dev/null | sort)
    if ((${#units[@]} == 0)); then
        notice "no deployment checks and no systemd unit files under deploy/: nothing to verify"
        return 0
    fi
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        notice "systemd-analyze not installed: ${#units[@]} unit file(s) not verified"
        return 0
    fi
    systemd-analyze verify --man=no "${units[@]}"
}

step "setup" bash deploy/dev/setup.sh
step "rustfmt" fmt_check
step "shellcheck" shell_lint
step "clippy" clippy
step "cargo-deny (licences, bans, sources)" deny_policies
step "cargo-deny (advisories)" deny_advisories
step "tests (nextest, profile $NEXTEST_PROFILE)" tests
step "fuzz (${FUZZ_SECONDS}s per target)" fuzz
step "deploy checks (install, systemd units)" deploy_checks
summary
printf '\n==> all checks passed\n'

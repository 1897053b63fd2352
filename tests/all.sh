#!/usr/bin/env bash
# The project's test command: installs what it needs, then runs every test.
#   1. format and lint   2. unit + integration tests (fixtures, loop-free, fake conductor)
#   3. the static musl release binary (static, size, --help/--version)
#   4. ira against the real Ironic on 127.0.0.1 (tests/ironic/run.sh), and a fleet of 5
#      agents against Ironic on MariaDB with images through Squid (tests/fleet/run.sh)
#   5. LLDP from a real lldpd across network namespaces (tests/lldp/run.sh)
#   6. ira's ramdisk in QEMU driven by the real Ironic (tests/e2e/run.sh), and its
#      inspection collectors and VLAN interfaces (tests/e2e/collectors.sh)
# Ends with one line "all: N passed, M failed" (tests and checks added up).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash tests/setup.sh || exit 1

passed=0; failed=0
stage() {  # stage <name> <cmd...>: runs a stage, counts it as one check
    local name=$1; shift
    echo "==== $name"
    local s=$SECONDS
    if "$@"; then
        echo "==== $name: ok ($((SECONDS - s)) s)"; passed=$((passed + 1))
    else
        echo "==== $name: FAILED ($((SECONDS - s)) s)"; failed=$((failed + 1))
    fi
}

stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings

# Unit and integration tests; their counts join the total.
echo "==== cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/ira-cargo-test.$$.log
test_rc=${PIPESTATUS[0]}
read -r tp tf < <(awk '/^test result:/ {for (i = 1; i <= NF; i++) {if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i}} END {print p + 0, f + 0}' /tmp/ira-cargo-test.$$.log)
rm -f /tmp/ira-cargo-test.$$.log
passed=$((passed + tp)); failed=$((failed + tf))
if [ "$test_rc" != 0 ] && [ "$tf" = 0 ]; then failed=$((failed + 1)); fi
echo "==== cargo test: $tp passed, $tf failed (exit $test_rc)"

release() {
    cargo build --release --target x86_64-unknown-linux-musl || return 1
    local bin=target/x86_64-unknown-linux-musl/release/ira size
    file "$bin"
    file "$bin" | grep -q 'static' || { echo "not statically linked"; return 1; }
    ldd "$bin" 2>&1 | grep -qE 'not a dynamic executable|statically linked' || { echo "ldd found libraries"; return 1; }
    size=$(stat -c %s "$bin")
    echo "binary size: $size bytes ($((size / 1024)) KiB)"
    [ "$size" -lt $((15 * 1024 * 1024)) ] || { echo "binary over 15 MiB"; return 1; }
    "$bin" --version && "$bin" --help >/dev/null
}
stage "static musl release binary" release

# counted <script> <summary prefixes>: runs a suite whose parts each end with a line
# "<prefix>: N passed, M failed" (and maybe " (T s)"); prefixes as a sed alternation.
counted() {
    local script=$1 prefix=$2 log rc p f
    log=$(mktemp)
    echo "==== $script"
    bash "$script" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    read -r p f < <(sed -n "s/^\($prefix\): \([0-9]*\) passed, \([0-9]*\) failed\( (.*)\)\{0,1\}$/\2 \3/p" "$log" |
        awk '{p += $1; f += $2} END {print p + 0, f + 0}')
    rm -f "$log"
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ "$rc" != 0 ] && [ "${f:-0}" = 0 ]; then failed=$((failed + 1)); fi
}
counted tests/ironic/run.sh 'ironic-e2e\|deploy-step\|lifecycle\|exec-installer\|mdns'
counted tests/fleet/run.sh fleet
counted tests/lldp/run.sh lldp
counted tests/e2e/run.sh vm-e2e
counted tests/e2e/collectors.sh collectors

echo
echo "all: $passed passed, $failed failed"
[ "$failed" = 0 ]

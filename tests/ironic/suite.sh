# The common start of the host suites under tests/ironic (sourced after lib.sh): the
# binary under test and the PASS/FAIL counting each suite ends with.
#
#   IRA_BIN   the binary to test (default: the newer of the musl release and debug builds)

if [ -z "${IRA_BIN:-}" ]; then
    IRA_BIN=$(ls -t "$REPO/target/x86_64-unknown-linux-musl/release/ira" "$REPO/target/debug/ira" \
        2>/dev/null | head -n1)
fi
[ -x "${IRA_BIN:-}" ] || { echo "no ira binary at ${IRA_BIN:-?} (build it first)" >&2; exit 1; }

PASSED=0
FAILED=0
pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $*"; FAILED=$((FAILED + 1)); }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
api() { "$IRONIC_VENV/bin/python" "$HERE/ironic_api.py" "$IRONIC_URL" "$@"; }

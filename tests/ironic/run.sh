#!/usr/bin/env bash
# Runs ira on this machine against the real Ironic (from PyPI, 127.0.0.1, sqlite, fake
# hardware): agent inspection, and a deploy driven up to the agent's write_image; then
# deploy_step.sh, lifecycle.sh (a whole node life with default automated cleaning),
# exec_installer.sh (the example executable hardware manager replacing write_image) and
# mdns.sh (the API found by Ironic's own mDNS announcement, in network namespaces).
# Ironic runs with its default automated cleaning. scenarios.py gives ira a device
# allow-list that matches no disk and --no-power-off.
#
#   IRA_BIN   the binary to test (default: target/x86_64-unknown-linux-musl/release/ira)
#   KEEP=1    keep the scratch dir (logs, Ironic database) after the run
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
IRA_BIN=${IRA_BIN:-$REPO/target/x86_64-unknown-linux-musl/release/ira}
[ -x "$IRA_BIN" ] || { echo "no ira binary at $IRA_BIN (build it first)" >&2; exit 1; }

ensure_ironic_venv || exit 1
STATE=$(mktemp -d /var/tmp/ira-ironic-e2e.XXXXXX)
cleanup() {
    ironic_down "$STATE"
    scratch_done "$STATE"
}
trap cleanup EXIT
ironic_up "$STATE" true || { rc=1; exit 1; }
"$IRONIC_VENV/bin/python" "$HERE/scenarios.py" --ironic-url "$IRONIC_URL" \
    --http-port "$HTTP_PORT" --http-root "$HTTP_ROOT" --state "$STATE" --ira "$IRA_BIN"
rc=$?
if [ $rc != 0 ]; then
    echo "---- tail of the conductor log ($STATE/ironic.log)"
    grep -E 'ERROR|WARNING|agent' "$STATE/ironic.log" | tail -n 40
    for f in "$STATE"/ira-*.log; do echo "---- tail of $f"; tail -n 40 "$f"; done
fi
IRA_BIN=$IRA_BIN "$HERE/deploy_step.sh" || rc=1
IRA_BIN=$IRA_BIN "$HERE/lifecycle.sh" || rc=1
IRA_BIN=$IRA_BIN "$HERE/exec_installer.sh" || rc=1
IRA_BIN=$IRA_BIN "$HERE/mdns.sh" || rc=1
exit $rc

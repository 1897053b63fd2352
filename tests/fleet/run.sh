#!/usr/bin/env bash
# A small fleet in the test suite: bench/fleet.sh with 5 nodes against a real Ironic on a
# real MariaDB, images through a real Squid from a signed-URL origin, and its checks: every
# node reaches manageable (inspection), available, active and available again; the origin
# sends the image once for the fleet; the agents follow the temp URL's redirect; a Range
# request is answered from the proxy's cache; no log of the agents (at debug level), the
# proxy, the origin or the database holds a URL signature, nor Ironic's log above DEBUG. No idle phase
# and no outage here (bench/fleet.sh measures those).
#
#   IRA_BIN   the binary to test (default: as bench/fleet.sh picks it)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
log=$(mktemp)
IDLE=0 OUTAGE=0 CHECK=1 AGENT_DEBUG=1 bash "$REPO/bench/fleet.sh" 5 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -c '^PASS fleet:' "$log")
failed=$(grep -c '^FAIL fleet:' "$log")
rm -f "$log"
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
echo "fleet: $passed passed, $failed failed"
[ "$failed" = 0 ]

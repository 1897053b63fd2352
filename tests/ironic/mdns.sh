#!/usr/bin/env bash
# mDNS discovery of the Ironic API against the real Ironic's own announcement: Ironic
# (from PyPI, `[conductor]enable_mdns`, python-zeroconf) runs in one network namespace on
# one end of a veth pair (10.77.0.1) and announces `baremetal._openstack._tcp.local.`;
# ira runs in a second namespace on the other end (10.77.0.2) with `ipa-api-url=mdns`
# and nothing else that names Ironic. Needs root (namespaces). Nothing of it touches the
# machine's own network: both namespaces are new and deleted at the end.
#
#   1. the agent finds the API by mDNS (`http://10.77.0.1:<port>` from the SRV record
#      and the TXT properties), inspects the node through it (`inspect wait` ->
#      `manageable`, the inventory stored) and, with fast track, looks the node up and
#      heartbeats: Ironic records the agent's URL on 10.77.0.2;
#   2. with `[conductor]enable_mdns` off nobody answers: an agent with `ipa-use-mdns`
#      serves without lookup after its one round, and one with `ipa-api-url=mdns` gives
#      up at its lookup timeout and exits non-zero, naming mdns.
#
#   IRA_BIN   the binary to test (default: the newer of the musl release and debug builds)
#   KEEP=1    keep the scratch dir
# Ends with "mdns: N passed, M failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
. "$HERE/suite.sh"
[ "$(id -u)" = 0 ] || { echo "mdns: needs root (network namespaces)" >&2; exit 1; }
IR_ADDR=10.77.0.1 AG_ADDR=10.77.0.2

# --- outside: the two namespaces, then this script again inside Ironic's -------------------
if [ "${1:-}" != --inside ]; then
    NS_IR=ira-mdns-ir-$$ NS_AG=ira-mdns-ag-$$
    cleanup_ns() { ip netns del "$NS_IR" 2>/dev/null; ip netns del "$NS_AG" 2>/dev/null; }
    trap cleanup_ns EXIT
    ip netns add "$NS_IR" && ip netns add "$NS_AG" || exit 1
    ip link add mdns-ir0 netns "$NS_IR" type veth peer name mdns-ag0 netns "$NS_AG" || exit 1
    ip -n "$NS_IR" addr add "$IR_ADDR/24" dev mdns-ir0
    ip -n "$NS_AG" addr add "$AG_ADDR/24" dev mdns-ag0
    for l in lo mdns-ir0; do ip -n "$NS_IR" link set "$l" up; done
    for l in lo mdns-ag0; do ip -n "$NS_AG" link set "$l" up; done
    ensure_ironic_venv || exit 1
    ip netns exec "$NS_IR" bash "$0" --inside "$NS_AG"
    exit $?
fi

# --- inside Ironic's namespace ----------------------------------------------------------------
NS_AG=$2
summary() { echo "mdns: $PASSED passed, $FAILED failed ($SECONDS s)"; }

STATE=$(mktemp -d /var/tmp/ira-mdns.XXXXXX)
cleanup() {
    stop_pid_file "$STATE/ira.pid"
    ironic_down "$STATE"
    ironic_down "$STATE/off"
    scratch_done "$STATE"
}
trap cleanup EXIT

# The agent's system root: the veth end as its one NIC (a veth has no `device` link),
# no disks; addresses and sockets are its namespace's own.
SYSROOT=$STATE/sysroot
mkdir -p "$SYSROOT/sys/block" "$SYSROOT/sys/class/net/mdns-ag0" "$SYSROOT/sys/devices/ira-test/net0"
ln -s /proc "$SYSROOT/proc"
ip -n "$NS_AG" -br link show mdns-ag0 | awk '{print $3}' > "$SYSROOT/sys/class/net/mdns-ag0/address"
echo 1 > "$SYSROOT/sys/class/net/mdns-ag0/carrier"
ln -s ../../../devices/ira-test/net0 "$SYSROOT/sys/class/net/mdns-ag0/device"
MAC=$(cat "$SYSROOT/sys/class/net/mdns-ag0/address")

# agent_start NAME CMDLINE: ira in the agent's namespace; log in $STATE/ira-NAME.log.
agent_start() {
    AGENT_LOG=$STATE/ira-$1.log
    printf '%s\n' "$2 $IRA_TEST_CMDLINE ipa-lookup-interval=0.2" > "$STATE/cmdline-$1"
    ip netns exec "$NS_AG" "$IRA_BIN" --cmdline-file "$STATE/cmdline-$1" --sysroot "$SYSROOT" \
        --device-allowlist /dev/ira-test-none --no-power-off --debug > "$AGENT_LOG" 2>&1 &
    echo $! > "$STATE/ira.pid"
}
# wait_log PATTERN SECONDS: until the agent's log matches.
wait_log() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        grep -qE "$1" "$AGENT_LOG" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

echo "== scenario: the agent finds Ironic by its own mDNS announcement"
export IRONIC_HOST=$IR_ADDR
export IRONIC_CONF_APPEND="[conductor]
enable_mdns = true
[mdns]
interfaces = $IR_ADDR
[deploy]
fast_track = true"
ironic_up "$STATE" false || { fail "mdns: Ironic started"; summary; exit 1; }
NODE=$(api create-node "ira-mdns-$$" "$MAC") || { fail "mdns: node enrolled"; summary; exit 1; }
api provision "$NODE" manage && api wait "$NODE" manageable 60 >/dev/null
api provision "$NODE" inspect && api wait "$NODE" "inspect wait" 60 >/dev/null
agent_start found "ipa-api-url=mdns ipa-inspection-collectors=default"
if wait_log 'Ironic API found by mDNS' 30; then
    FOUND=$(grep -m1 'Ironic API found by mDNS' "$AGENT_LOG")
    echo "     ${FOUND#*INFO }"
fi
check "mdns: the agent found the API at Ironic's URL ($IRONIC_URL)" \
    grep -qE "Ironic API found by mDNS url=$IRONIC_URL( |$)" "$AGENT_LOG"
if api wait "$NODE" manageable 60 >/dev/null 2>&1; then
    pass "mdns: inspected through the discovered URL: 'inspect wait' -> 'manageable'"
else
    fail "mdns: inspected through the discovered URL ($(api field "$NODE" provision_state))"
fi
check "mdns: Ironic stored the agent's inventory (its NIC's MAC)" \
    bash -c "api() { '$IRONIC_VENV/bin/python' '$HERE/ironic_api.py' '$IRONIC_URL' \"\$@\"; }
        api inventory '$NODE' | grep -qi '$MAC'"
if wait_log 'lookup succeeded' 60; then pass "mdns: lookup through the discovered URL (fast track)"
else fail "mdns: lookup through the discovered URL (fast track)"; fi
agent_url=
for _ in $(seq 1 100); do
    agent_url=$(api field "$NODE" driver_internal_info 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("agent_url", ""))' 2>/dev/null)
    [ -n "$agent_url" ] && break
    sleep 0.3
done
echo "     driver_internal_info.agent_url: ${agent_url:-none}"
check "mdns: Ironic took the agent's heartbeat with its URL on $AG_ADDR" \
    bash -c "case '$agent_url' in http*://$AG_ADDR:9999) true ;; *) false ;; esac"
stop_pid_file "$STATE/ira.pid"
api delete "$NODE" >/dev/null 2>&1
ironic_down "$STATE"

echo "== scenario: nobody announces the API"
IRONIC_CONF_APPEND="[deploy]
fast_track = true"
ironic_up "$STATE/off" false || { fail "mdns: Ironic restarted without mDNS"; summary; exit 1; }
agent_start use "ipa-use-mdns=1"
check "mdns: ipa-use-mdns without an answer: serves without lookup" \
    wait_log 'no Ironic API found by mDNS \(ipa-use-mdns\)' 30
check "mdns: ... and keeps serving its API" \
    bash -c "sleep 1; kill -0 $(cat "$STATE/ira.pid") && grep -q 'no Ironic API URL: serving without lookup' '$AGENT_LOG'"
stop_pid_file "$STATE/ira.pid"
agent_start explicit "ipa-api-url=mdns ipa-lookup-timeout=5"
pid=$(cat "$STATE/ira.pid")
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
wait "$pid" 2>/dev/null
code=$?
tail -n 1 "$AGENT_LOG" | sed 's/^/     /'
check "mdns: ipa-api-url=mdns without an answer ends at the lookup timeout (exit $code), naming mdns" \
    bash -c "[ $code != 0 ] && grep -q 'ipa-api-url=mdns: no Ironic API found within 5 s' '$AGENT_LOG'"
rm -f "$STATE/ira.pid"

if [ $FAILED != 0 ]; then
    for f in "$STATE"/ira-*.log; do echo "---- tail of $f"; tail -n 15 "$f"; done
    echo "---- conductor"; grep -iE 'mdns|zeroconf|ERROR' "$STATE/ironic.log" | tail -n 10
fi
summary
rc=$((FAILED != 0))
exit $rc

#!/usr/bin/env bash
# LLDP against a real speaker: lldpd (Debian's package) in one network namespace announces
# on one end of a veth pair; `ira inventory` with ipa-collect-lldp runs in a second
# namespace on the other end and must carry the chassis id, port id and system name
# lldpd announced, in IPA's [type, "hex"] shape. A second, silent veth pair proves the
# interfaces are listened to at once (one timeout, not one per interface) and that a
# silent one reports []. Needs root (namespaces, raw sockets).
#
# A veth has no `device` link, so IPA (and ira) would not list it as a NIC: the agent gets
# a system root whose sys/class/net shows the two veth ends as NICs with their real MACs;
# everything else (addresses, sockets, ethtool) is the agent namespace's own.
#
#   IRA_BIN   the binary to test (default: target/x86_64-unknown-linux-musl/release/ira)
# Ends with "lldp: N passed, M failed".
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/ironic/lib.sh
. "$REPO/tests/ironic/lib.sh"
IRA_BIN=${IRA_BIN:-$REPO/target/x86_64-unknown-linux-musl/release/ira}
[ -x "$IRA_BIN" ] || { echo "no ira binary at $IRA_BIN (build it first)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "lldp: needs root" >&2; exit 1; }
command -v lldpd >/dev/null || { echo "lldp: lldpd missing (run tests/setup.sh)" >&2; exit 1; }
ensure_ironic_venv || exit 1 # Ironic's own LLDP parser reads what the agent reports

SW=ira-lldp-sw-$$ AG=ira-lldp-ag-$$
TMP=$(mktemp -d)
chmod 755 "$TMP" # lldpd's unprivileged half must reach its control socket here
LLDPD_PID=
cleanup() {
    if [ -n "$LLDPD_PID" ]; then
        kill "$LLDPD_PID" 2>/dev/null
        wait "$LLDPD_PID" 2>/dev/null
    fi
    ip netns del "$SW" 2>/dev/null
    ip netns del "$AG" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

passed=0 failed=0
check() { # check <name> <command...>
    local name=$1; shift
    if "$@"; then
        echo "ok: $name"; passed=$((passed + 1))
    else
        echo "FAILED: $name"; failed=$((failed + 1))
    fi
}

ip netns add "$SW" && ip netns add "$AG" || exit 1
ip link add lldp-sw0 netns "$SW" type veth peer name lldp-ag0 netns "$AG" || exit 1
ip link add lldp-sw1 netns "$SW" type veth peer name lldp-ag1 netns "$AG" || exit 1
for l in lo lldp-sw0 lldp-sw1; do ip -n "$SW" link set "$l" up; done
for l in lo lldp-ag0 lldp-ag1; do ip -n "$AG" link set "$l" up; done
SW_MAC=$(ip -n "$SW" -br link show lldp-sw0 | awk '{print $3}')

# The agent's system root: the two veth ends as NICs, no disks.
ROOT=$TMP/root
mkdir -p "$ROOT/sys/block" "$ROOT/proc"
for i in 0 1; do
    d=$ROOT/sys/class/net/lldp-ag$i
    mkdir -p "$d" "$ROOT/sys/devices/ira-test/net$i"
    ip -n "$AG" -br link show "lldp-ag$i" | awk '{print $3}' >"$d/address"
    echo 1 >"$d/carrier"
    ln -s "../../../devices/ira-test/net$i" "$d/device"
done
AG0_MAC=$(cat "$ROOT/sys/class/net/lldp-ag0/address")

cat >"$TMP/lldpd.conf" <<'EOF'
configure system hostname ira-test-switch
configure lldp portidsubtype ifname
configure lldp tx-interval 1
EOF
# Only lldp-sw0 speaks; lldp-sw1 stays silent.
ip netns exec "$SW" lldpd -d -u "$TMP/lldpd.sock" -O "$TMP/lldpd.conf" -I lldp-sw0 \
    >"$TMP/lldpd.log" 2>&1 &
LLDPD_PID=$!

inventory() { # inventory <kernel command line> <output file>: seconds on stdout
    echo "$1" >"$TMP/cmdline"
    local s e
    s=$(date +%s.%N)
    ip netns exec "$AG" "$IRA_BIN" --sysroot "$ROOT" --device-allowlist /dev/ira-test-none \
        --cmdline-file "$TMP/cmdline" inventory >"$2" 2>"$2.log" || { cat "$2.log" >&2; return 1; }
    e=$(date +%s.%N)
    echo "$s $e" | awk '{printf "%.1f\n", $2 - $1}'
}

hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
tlv() { # tlv <inventory.json> <interface> <type>: the first TLV value of that type
    python3 - "$@" <<'EOF'
import json, sys
inv = json.load(open(sys.argv[1]))
iface = next(i for i in inv["interfaces"] if i["name"] == sys.argv[2])
print(next((v for t, v in iface["lldp"] or [] if t == int(sys.argv[3])), ""))
EOF
}
field() { # field <inventory.json> <interface> <key>: JSON of that key
    python3 -c 'import json, sys; inv = json.load(open(sys.argv[1])); print(json.dumps(next(i for i in inv["interfaces"] if i["name"] == sys.argv[2])[sys.argv[3]]))' "$@"
}

TIMEOUT=6
secs=$(inventory "ipa-collect-lldp=1 ipa-lldp-timeout=$TIMEOUT" "$TMP/inv.json") || secs=
echo "inventory with LLDP took ${secs:-?} s (timeout $TIMEOUT s)"
[ -s "$TMP/inv.json" ] && python3 -c 'import json, sys; [print(i["name"], json.dumps(i["lldp"])) for i in json.load(open(sys.argv[1]))["interfaces"]]' "$TMP/inv.json"

check "chassis id is the speaker's MAC (subtype 4)" \
    test "$(tlv "$TMP/inv.json" lldp-ag0 1)" = "04$(echo "$SW_MAC" | tr -d ':')"
check "port id is the speaker's interface name (subtype 5)" \
    test "$(tlv "$TMP/inv.json" lldp-ag0 2)" = "05$(hex lldp-sw0)"
check "system name is the one lldpd announced" \
    test "$(tlv "$TMP/inv.json" lldp-ag0 5)" = "$(hex ira-test-switch)"
check "the frame ends with the End TLV" \
    test "$(python3 -c 'import json, sys; print(json.dumps(next(i for i in json.load(open(sys.argv[1]))["interfaces"] if i["name"] == "lldp-ag0")["lldp"][-1]))' "$TMP/inv.json")" = '[0, ""]'
check "Ironic's parse-lldp hook decodes the agent's TLVs to lldpd's chassis, port and name" \
    "$IRONIC_VENV/bin/python" - "$TMP/inv.json" "$SW_MAC" <<'EOF' 2>/dev/null
import json, sys
from ironic.drivers.modules.inspector.hooks.parse_lldp import ParseLLDPHook
inv = json.load(open(sys.argv[1]))
tlvs = next(i for i in inv["interfaces"] if i["name"] == "lldp-ag0")["lldp"]
got = ParseLLDPHook()._parse_lldp_tlvs(tlvs, "ira-lldp-test")
want = {"switch_chassis_id": sys.argv[2], "switch_port_id": "lldp-sw0",
        "switch_system_name": "ira-test-switch"}
print("parsed by Ironic:", {k: got.get(k) for k in want})
sys.exit(0 if all(got.get(k) == v for k, v in want.items()) else 1)
EOF
check "a silent interface reports []" test "$(field "$TMP/inv.json" lldp-ag1 lldp)" = "[]"
check "both interfaces waited for at once (one timeout, under 2x)" \
    awk -v s="${secs:-999}" -v t="$TIMEOUT" 'BEGIN {exit !(s >= t - 0.5 && s < 2 * t - 1)}'
check "mac_address is the interface's (veth keeps no permanent MAC)" \
    test "$(field "$TMP/inv.json" lldp-ag0 mac_address)" = "\"$AG0_MAC\""

secs=$(inventory "" "$TMP/plain.json") || secs=
check "without ipa-collect-lldp lldp is null and nothing waits" \
    sh -c "test \"\$(python3 -c 'import json, sys; print(json.dumps([i[\"lldp\"] for i in json.load(open(sys.argv[1]))[\"interfaces\"]]))' $TMP/plain.json)\" = '[null, null]' && awk -v s='${secs:-999}' 'BEGIN {exit !(s < 3)}'"
check "lldpd still running (the frames came from it)" kill -0 "$LLDPD_PID"

echo "lldp: $passed passed, $failed failed"
[ "$failed" = 0 ]

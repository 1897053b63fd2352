#!/usr/bin/env bash
# The inspection collectors and VLAN interfaces on ira's own ramdisk in QEMU: the agent
# boots with ipa-inspection-collectors naming every optional collector and with
# ipa-enable-vlan-interfaces=<its MAC>.100, and posts its inspection data to a recorder on
# 127.0.0.1 (reached as 10.0.2.2 through QEMU's user-mode network). Checks, on the body:
# the VLAN interface eth0.100 was created (the ramdisk's kernel has 802.1Q, this machine's
# may not) and is in the inventory with the NIC's MAC; `dmi` decoded from the SMBIOS table
# QEMU built (SeaBIOS, the QEMU vCPU, one memory array and its device); `pci_devices`
# holds the virtio NIC; `numa_topology` has the VM's node 0 with its vCPUs; `error` is null.
# Every process is stopped by its PID and the scratch directory removed.
#
#   IRA_BIN  agent binary to pack (default: the musl release build)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/vm.sh
source "$REPO/tests/e2e/vm.sh"

MAC=52:54:00:c0:11:ec
TIMEOUT=${COLLECTORS_TIMEOUT:-240}
passed=0 failed=0
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }

VM_SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ira-collectors.XXXXXX")
REC_PID=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    vm_stop_all
    if [ -n "$REC_PID" ] && kill -0 "$REC_PID" 2>/dev/null; then
        kill "$REC_PID" 2>/dev/null
        wait "$REC_PID" 2>/dev/null
    fi
    rm -rf "$VM_SCRATCH"
}
trap cleanup EXIT

IRA_BIN=${IRA_BIN:-} bash "$REPO/images/build.sh" >/dev/null || { echo "images/build.sh failed" >&2; exit 1; }

# The recorder: stores the first inspection body and answers as Ironic does (202, uuid).
PORT=$(vm_free_port)
BODY=$VM_SCRATCH/inspection.json
python3 - "$PORT" "$BODY" <<'PY' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        with open(out + '.tmp', 'wb') as f:
            f.write(body)
        import os
        os.replace(out + '.tmp', out)
        self.send_response(202)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(json.dumps({'uuid': '0f6b4c3e-6a5e-4b8e-9d7b-3d1f4e2a9c10'}).encode())
    def log_message(self, *a):
        pass
http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()
PY
REC_PID=$!

VM_MAC=$MAC VM_APPEND="ipa-inspection-callback-url=http://10.0.2.2:$PORT/v1/continue_inspection \
ipa-inspection-collectors=default,pci-devices,numa-topology,dmi-decode,usb-devices,lldp \
ipa-enable-vlan-interfaces=$MAC.100" vm_boot collectors || { fail "VM boot"; exit 1; }

waited=0
while [ ! -s "$BODY" ] && [ $waited -lt "$TIMEOUT" ] && vm_alive collectors; do
    sleep 2
    waited=$((waited + 2))
done
if [ ! -s "$BODY" ]; then
    fail "no inspection body within ${TIMEOUT}s"
    tail -n 60 "$VM_DIR/console.log"
    echo "collectors: $passed passed, $((failed)) failed"
    exit 1
fi
pass "inspection body received after ${waited}s"

check() { # check NAME PYTHON-EXPRESSION (d = the body)
    if python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$BODY"; then
        pass "$1"
    else
        fail "$1"
    fi
}
check "error is null" "d['error'] is None"
check "collectors listed" "d['configuration']['collectors'] == ['default','pci-devices','numa-topology','dmi-decode','usb-devices','lldp']"
check "VLAN eth0.100 in the inventory with the NIC's MAC" \
    "any(i['name'].endswith('.100') and i['mac_address'] == '$MAC' for i in d['inventory']['interfaces'])"
check "dmi bios from SeaBIOS" "d['dmi']['bios']['Vendor'] == 'SeaBIOS' and d['dmi']['bios']['Handle'].startswith('Handle 0x')"
check "dmi cpu from QEMU" "len(d['dmi']['cpu']) >= 1 and d['dmi']['cpu'][0]['Manufacturer'] == 'QEMU' and d['dmi']['cpu'][0]['Type'] == 'Central Processor'"
check "dmi memory array and device" "d['dmi']['memory']['Number Of Devices'] >= 1 and d['dmi']['memory']['devices'][0]['Size'].endswith(('MB', 'GB'))"
check "pci_devices has the virtio NIC" "any(p['vendor_id'] == '1af4' and p['class'] == '020000' for p in d['pci_devices'])"
check "numa_topology node 0 with the vCPUs" "d['numa_topology']['ram'][0]['numa_node'] == 0 and sum(len(c['thread_siblings']) for c in d['numa_topology']['cpus']) == 2"
check "usb_devices is a list" "isinstance(d['usb_devices'], list)"
check "lldp_raw is an object" "isinstance(d['lldp_raw'], dict)"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: d[k] for k in ('dmi','numa_topology')}, indent=1)[:3000])" "$BODY"
grep -a -i "vlan" "$VM_DIR/console.log" | tail -n 5
echo "collectors: $passed passed, $failed failed"
[ "$failed" = 0 ]

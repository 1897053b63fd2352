#!/usr/bin/env bash
# The demo: a real local Ironic inspects and deploys a VM that boots ira's own ramdisk.
#
#   bash images/demo.sh          install what is missing, build, start Ironic and the
#                                image server, boot the ramdisk in QEMU, and walk a node
#                                through inspection, then a second one through a deploy of
#                                a sample image to `active` (the VM's disk is then compared
#                                with the image); prints every provision state with its
#                                time, and where the logs are. Ironic keeps running
#                                afterwards, so it can be explored.
#   bash images/demo.sh down     stop everything the demo started (by PID) and remove its
#                                state directory
#
# A second run reuses what the first built (cargo, the ramdisk cache, the Ironic venv).
# Everything listens on 127.0.0.1 only; VMs use QEMU user-mode networking.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
DEMO=${IRA_DEMO_DIR:-/var/tmp/ira-demo}
# shellcheck source=tests/ironic/lib.sh
. "$REPO/tests/ironic/lib.sh"
# shellcheck source=tests/e2e/vm.sh
. "$REPO/tests/e2e/vm.sh"
export VM_SCRATCH=$DEMO/vms

down() {
    local f
    for f in "$VM_SCRATCH"/*/qemu.pid; do
        [ -f "$f" ] && stop_pid_file "$f" && echo "stopped VM $(basename "$(dirname "$f")")"
    done
    ironic_down "$DEMO/ironic"
    rm -rf "$DEMO"
    echo "demo stopped; $DEMO removed"
}
if [ "${1:-}" = down ]; then
    down
    exit 0
fi
if [ -f "$DEMO/ironic/ironic.pid" ] && kill -0 "$(cat "$DEMO/ironic/ironic.pid")" 2>/dev/null; then
    echo "the demo is already running; stop it first: bash images/demo.sh down" >&2
    exit 1
fi

t0=$SECONDS
step() { printf '\n== [%4d s] %s\n' $((SECONDS - t0)) "$*"; }
api() { "$IRONIC_VENV/bin/python" "$REPO/tests/ironic/ironic_api.py" "$IRONIC_URL" "$@"; }
random_mac() { printf '52:54:00:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)); }
fail() {
    echo "demo failed: $*" >&2
    local d
    for d in "$VM_SCRATCH"/*/; do
        [ -f "$d/console.log" ] && { echo "---- tail of $d/console.log"; tail -n 30 "$d/console.log"; }
    done
    echo "---- conductor errors ($DEMO/ironic/ironic.log)"
    grep -a ERROR "$DEMO/ironic/ironic.log" 2>/dev/null | tail -n 10
    echo "logs kept in $DEMO; stop everything with: bash images/demo.sh down" >&2
    exit 1
}

step "installing what is missing (apt packages, Rust musl target)"
bash "$REPO/tests/setup.sh" || fail "setup"
step "building ira (static musl release binary)"
(cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl 2>&1 | tail -n 1) || fail "cargo build"
step "building the ramdisk (images/build.sh)"
bash "$HERE/build.sh" | tail -n 3 || fail "images/build.sh"
step "Ironic from PyPI in a cached venv"
ensure_ironic_venv || fail "Ironic venv"
mkdir -p "$DEMO"
ironic_up "$DEMO/ironic" false || fail "Ironic did not start"

# A sample whole-disk image: an MBR with one Linux partition, random data, zeros.
python3 - "$HTTP_ROOT/sample.raw" <<'EOF'
import os, sys
size = 64 << 20
img = bytearray(size)
entry = bytearray(16)
entry[4] = 0x83
entry[8:12] = (2048).to_bytes(4, "little")
entry[12:16] = (size // 512 - 2048).to_bytes(4, "little")
img[446:462] = entry
img[510:512] = b"\x55\xaa"
img[1 << 20:(1 << 20) + (16 << 20)] = os.urandom(16 << 20)
open(sys.argv[1], "wb").write(img)
EOF
SHA=$(sha256sum "$HTTP_ROOT/sample.raw" | cut -d' ' -f1)

step "inspection: a node in 'inspect wait', the ramdisk boots in a VM and reports its hardware"
MAC1=$(random_mac)
N1=$(api create-node ira-demo-inspect "$MAC1") || fail "node create"
api provision "$N1" manage && api wait "$N1" manageable 60 || fail "manage"
api provision "$N1" inspect && api wait "$N1" "inspect wait" 30 || fail "inspect"
VM_MAC=$MAC1 VM_APPEND="ipa-inspection-callback-url=$IRONIC_URL/v1/continue_inspection ira.fwd=$IRONIC_API_PORT BOOTIF=01-${MAC1//:/-}" \
    vm_boot inspect >/dev/null 2>&1 || fail "QEMU did not start"
echo "   VM 'inspect' booting (console: $VM_CONSOLE)"
api wait "$N1" manageable 180 || fail "inspection did not finish"
echo "   QEMU start -> manageable: $(vm_elapsed inspect) s"
api inventory "$N1" | python3 -c '
import json, sys
inv = json.load(sys.stdin).get("inventory", {})
print("   inventory stored by Ironic:")
for d in inv.get("disks", []):
    print("     disk %-13s %6d MiB  serial %-10s rotational %-5s tran %s"
          % (d["name"], d["size"] >> 20, d["serial"], d["rotational"], d["tran"]))
for i in inv.get("interfaces", []):
    print("     nic  %-13s %s  %s" % (i["name"], i["mac_address"], i["ipv4_address"]))
print("     cpu  %s x %s, memory %s MiB, boot %s" % (inv["cpu"]["count"], inv["cpu"]["model_name"],
      inv["memory"]["physical_mb"], inv["boot"]["current_boot_mode"]))'
vm_stop inspect

step "deploy: a node in 'wait call-back', the conductor drives the agent in a fresh VM"
MAC2=$(random_mac)
N2=$(api create-node ira-demo-deploy "$MAC2") || fail "node create"
api provision "$N2" manage && api wait "$N2" manageable 60 || fail "manage"
api provision "$N2" provide && api wait "$N2" available 60 || fail "provide"
api patch "$N2" /properties/root_device '{"serial": "ira-vd0"}'
# The guest reaches the image server through QEMU's gateway (10.0.2.2) as its HTTP proxy.
api patch "$N2" /driver_info/image_http_proxy "\"http://10.0.2.2:$HTTP_PORT\""
api set-image "$N2" "http://127.0.0.1:$HTTP_PORT/sample.raw" "$SHA"
api provision "$N2" active
api wait "$N2" "wait call-back" 60 || fail "deploy did not start"
PORT=$(vm_free_port)
VM_MAC=$MAC2 VM_HOSTPORT=$PORT \
    VM_APPEND="ipa-api-url=$IRONIC_URL ira.fwd=$IRONIC_API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$PORT" \
    vm_boot deploy >/dev/null 2>&1 || fail "QEMU did not start"
echo "   VM 'deploy' booting (console: $VM_CONSOLE)"
api wait "$N2" active 300
STATE=$(api field "$N2" provision_state | tr -d '"')
echo "   QEMU start -> $STATE: $(vm_elapsed deploy) s"
if [ "$STATE" != active ]; then
    echo "   last_error: $(api field "$N2" last_error)"
    fail "the deploy did not reach active"
fi
grep -aoE 'image written and verified.*' "$VM_DIR/console.log" | tail -n 1 | sed 's/^/   agent: /'
echo "   root uuid stored by the conductor: $(api field "$N2" driver_internal_info.root_uuid_or_disk_id)"
if cmp -s -n "$(stat -c %s "$HTTP_ROOT/sample.raw")" "$HTTP_ROOT/sample.raw" "$VM_DIR/vd0.img"; then
    echo "   the VM's disk $VM_DIR/vd0.img holds the image byte for byte"
else
    fail "the VM's disk does not hold the image"
fi

cat <<EOF

== done in $((SECONDS - t0)) s. Ironic keeps running (the agent powered the deploy VM off,
   as the conductor asked at the end of the deploy):
   Ironic API      $IRONIC_URL   (export OS_ENDPOINT=$IRONIC_URL OS_AUTH_TYPE=none;
                   $IRONIC_VENV/bin/baremetal node list)
   logs            $DEMO/ironic/ironic.log, $VM_SCRATCH/*/console.log (the agent logs there)
   stop it all     bash images/demo.sh down
EOF

#!/usr/bin/env bash
# The demo: a real local Ironic, in its default cleaning configuration, walks one node
# through its whole life on a VM that boots ira's own ramdisk.
#
#   bash images/demo.sh          install what is missing, build, start Ironic and the
#                                image server, and walk the node: enroll, manage,
#                                inspection, provide (automated cleaning: the agent runs
#                                erase_devices_metadata, then erase_devices on the VM's
#                                virtio, NVMe and SATA disks) -> available, deploy of a
#                                sample image -> active (the VM's disk is then compared
#                                with the image), undeploy (cleaning again) -> available;
#                                prints every provision state with its time and each
#                                disk's erase report, and where the logs are. Ironic
#                                keeps running afterwards, so it can be explored.
#   bash images/demo.sh down     stop everything the demo started (by PID) and remove its
#                                state directory
#
# Fake power cannot switch a VM on: each time a real node would boot the ramdisk
# (inspection, each cleaning, the deploy) the demo boots the VM, on the same disks.
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
# Ironic's defaults: [conductor]automated_clean = true, no step priority overrides.
ironic_up "$DEMO/ironic" true || fail "Ironic did not start"

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

MAC=$(random_mac)
DISK_SIZE=256M
# boot PHASE APPEND: the node's ramdisk boots for PHASE (same VM, same disks each time).
boot() {
    local port
    port=$(vm_free_port)
    [ -f "$VM_SCRATCH/node/console.log" ] && cp "$VM_SCRATCH/node/console.log" "$VM_SCRATCH/node/console-$LAST_PHASE.log"
    LAST_PHASE=$1
    VM_DISK_SIZE=$DISK_SIZE VM_MAC=$MAC VM_HOSTPORT=$port \
        VM_APPEND="$2 ira.fwd=$IRONIC_API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$port" \
        vm_boot node >/dev/null 2>&1 || fail "QEMU did not start"
    echo "   VM booting the ramdisk for $1 (console: $VM_CONSOLE)"
}
LAST_PHASE=none
# reach STATE TIMEOUT: waits for STATE, printing each state with its time.
reach() {
    local t=$SECONDS
    api wait "$N" "$1" "$2" || { echo "   last_error: $(api field "$N" last_error)"; fail "the node did not reach $1"; }
    if [ "$LAST_PHASE" = none ]; then
        echo "   -> $1 after $((SECONDS - t)) s"
    else
        echo "   -> $1 after $((SECONDS - t)) s ($(vm_elapsed node) s since QEMU started)"
    fi
}
# erase_reports: what the agent's log says of each disk after a cleaning.
erase_reports() {
    grep -aE 'step completed|disk erase report' "$VM_SCRATCH/node/console.log" |
        sed -E 's/^.*(step completed|disk erase report)/\1/' | cut -c1-200 | sed 's/^/   agent: /'
}
# marker: the previous tenant's data on every disk, for the erase to remove.
marker() {
    local d
    for d in vd0 nvme0 sata0; do marker_fill "$VM_SCRATCH/node/$d.img" 256; done
    echo "   the marker string fills every byte of the three disks ($(marker_count "$VM_SCRATCH/node/vd0.img") MiB on vd0)"
}
zero_check() {
    local d
    for d in vd0 nvme0 sata0; do
        all_zero "$VM_SCRATCH/node/$d.img" 256 || fail "$d.img is not all zeros after cleaning"
    done
    echo "   every byte of vd0.img, nvme0.img and sata0.img on the host is zero"
}

step "enroll and manage: a fake-hardware node with the VM's MAC, root device the virtio disk"
N=$(api create-node ira-demo "$MAC") || fail "node create"
echo "   node $N"
api patch "$N" /properties/root_device '{"serial": "ira-vd0"}'
# The guest reaches the image server through QEMU's gateway (10.0.2.2) as its HTTP proxy.
api patch "$N" /driver_info/image_http_proxy "\"http://10.0.2.2:$HTTP_PORT\""
api provision "$N" manage && reach manageable 60

step "inspect: the ramdisk boots and reports its hardware"
api provision "$N" inspect && api wait "$N" "inspect wait" 30 || fail "inspect"
boot inspect "ipa-inspection-callback-url=$IRONIC_URL/v1/continue_inspection BOOTIF=01-${MAC//:/-}"
reach manageable 180
vm_stop node
api inventory "$N" | python3 -c '
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

step "provide: automated cleaning (erase_devices_metadata, then erase_devices) -> available"
marker
api provision "$N" provide && api wait "$N" "clean wait" 60 || fail "provide"
boot provide "ipa-api-url=$IRONIC_URL"
reach available 240
vm_stop node
erase_reports
zero_check

step "deploy: the conductor drives the agent to write the sample image -> active"
api set-image "$N" "http://127.0.0.1:$HTTP_PORT/sample.raw" "$SHA"
api provision "$N" active && api wait "$N" "wait call-back" 60 || fail "deploy did not start"
boot deploy "ipa-api-url=$IRONIC_URL"
reach active 300
vm_stop node
grep -aoE 'image written and verified.*' "$VM_SCRATCH/node/console.log" | tail -n 1 | sed 's/^/   agent: /'
echo "   root uuid stored by the conductor: $(api field "$N" driver_internal_info.root_uuid_or_disk_id)"
if cmp -s -n "$(stat -c %s "$HTTP_ROOT/sample.raw")" "$HTTP_ROOT/sample.raw" "$VM_SCRATCH/node/vd0.img"; then
    echo "   the VM's disk $VM_SCRATCH/node/vd0.img holds the image byte for byte"
else
    fail "the VM's disk does not hold the image"
fi

step "undeploy: the tenant leaves, automated cleaning again -> available"
marker
api provision "$N" deleted && api wait "$N" "clean wait" 60 || fail "undeploy"
boot undeploy "ipa-api-url=$IRONIC_URL"
reach available 240
vm_stop node
cp "$VM_SCRATCH/node/console.log" "$VM_SCRATCH/node/console-undeploy.log"
erase_reports
zero_check

cat <<EOF

== done in $((SECONDS - t0)) s. Ironic keeps running, the node is 'available' again:
   Ironic API      $IRONIC_URL   (export OS_ENDPOINT=$IRONIC_URL OS_AUTH_TYPE=none;
                   $IRONIC_VENV/bin/baremetal node list)
   logs            $DEMO/ironic/ironic.log, $VM_SCRATCH/node/console-*.log (one per boot;
                   the agent logs there)
   stop it all     bash images/demo.sh down
EOF

#!/usr/bin/env bash
# The VM end-to-end suite: the real Ironic (from PyPI, 127.0.0.1, sqlite, fake hardware)
# drives ira inside its own ramdisk booted in QEMU (TCG unless KVM really works), with a
# virtio, an NVMe and a SATA disk, user-mode networking and the agent's port forwarded.
#
# Scenarios:
#   inspection  node in `inspect wait`; the VM boots with ipa-inspection-callback-url;
#               Ironic stores the inventory: the VM's three disks (names, sizes, serials,
#               rotational) and its NIC (MAC) must be in it; node -> manageable
#   deploy      node in `wait call-back`; the VM boots with ipa-api-url; the conductor
#               drives lookup, heartbeat (auto-TLS), get_deploy_steps and write_image
#               SCENARIO_DEPLOY_END tells how it must end (default: `deploy failed`,
#               with the agent's write_image error in last_error)
#
# Every process started here (Ironic, the image server, QEMU) is stopped by its PID, and
# the scratch directory is removed, also on failure (KEEP=1 keeps it). On a failure the
# tails of the VM console (which carries the agent's log) and of the conductor log are
# printed. Ends with `vm-e2e: N passed, M failed`.
#
#   VM_MEM (default 256)  guest RAM in MiB
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/ironic/lib.sh
. "$REPO/tests/ironic/lib.sh"
# shellcheck source=tests/e2e/vm.sh
. "$HERE/vm.sh"
API_PY=$REPO/tests/ironic/ironic_api.py
export VM_MEM=${VM_MEM:-256}

passed=0 failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); FAILED_ANY=1; }
check() { # check NAME COMMAND...
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}
api() { "$IRONIC_VENV/bin/python" "$API_PY" "$IRONIC_URL" "$@"; }
random_mac() { printf '52:54:00:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)); }

# --- build what is missing ----------------------------------------------------------------
if [ ! -x "$REPO/target/x86_64-unknown-linux-musl/release/ira" ]; then
    (cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl) || exit 1
fi
bash "$REPO/images/build.sh" >/dev/null || { echo "images/build.sh failed" >&2; exit 1; }
ensure_ironic_venv || exit 1

SCRATCH=$(mktemp -d /var/tmp/ira-vm-e2e.XXXXXX)
export VM_SCRATCH=$SCRATCH/vms
FAILED_ANY=""
show_logs() {
    local d
    for d in "$VM_SCRATCH"/*/; do
        [ -f "$d/console.log" ] || continue
        echo "---- tail of the VM console $d/console.log"
        tail -n 60 "$d/console.log"
    done
    echo "---- conductor log (errors, warnings, agent calls) $SCRATCH/ironic/ironic.log"
    grep -aE 'ERROR|WARNING|agent' "$SCRATCH/ironic/ironic.log" 2>/dev/null | tail -n 40
}
cleanup() {
    [ -n "$FAILED_ANY" ] && show_logs
    vm_stop_all
    ironic_down "$SCRATCH/ironic"
    if [ "${KEEP:-0}" = 1 ] || [ -n "$FAILED_ANY" ]; then
        log "scratch dir kept: $SCRATCH"
    else
        rm -rf "$SCRATCH"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ironic_up "$SCRATCH/ironic" false || { FAILED_ANY=1; exit 1; }

# --- inspection -----------------------------------------------------------------------------
scenario_inspection() {
    echo "== scenario: agent inspection in the VM"
    local mac uuid t
    mac=$(random_mac)
    uuid=$(api create-node "ira-vm-inspect-$$" "$mac") || { fail "inspection: node created"; return; }
    api provision "$uuid" manage && api wait "$uuid" manageable 60 || { fail "inspection: manageable"; return; }
    api provision "$uuid" inspect
    check "inspection: node waits in 'inspect wait'" api wait "$uuid" "inspect wait" 30
    VM_MAC=$mac VM_HOSTPORT=$(vm_free_port) \
        VM_APPEND="ipa-inspection-callback-url=$IRONIC_URL/v1/continue_inspection ira.fwd=$IRONIC_API_PORT BOOTIF=01-${mac//:/-}" \
        vm_boot inspect
    if api wait "$uuid" manageable 180; then
        pass "inspection: node reaches 'manageable' after the agent's callback"
        echo "     QEMU start -> manageable: $(vm_elapsed inspect) s"
    else
        fail "inspection: node reaches 'manageable' after the agent's callback"
    fi
    api inventory "$uuid" > "$SCRATCH/inspect-inventory.json"
    check "inspection: stored inventory lists the VM's disks and NIC" \
        python3 - "$SCRATCH/inspect-inventory.json" "$mac" "$VM_DISK_BYTES" <<'EOF'
import json, sys
stored = json.load(open(sys.argv[1])).get("inventory", {})
mac, size = sys.argv[2], int(sys.argv[3])
disks = {d["name"]: d for d in stored.get("disks", [])}
want = {"/dev/vda": ("ira-vd0", None), "/dev/nvme0n1": ("ira-nvme0", "nvme"),
        "/dev/sda": ("ira-sata0", "sata")}
problems = []
for name, (serial, tran) in want.items():
    d = disks.get(name)
    if d is None:
        problems.append(f"{name} missing (have {sorted(disks)})")
        continue
    if d["size"] != size:
        problems.append(f"{name} size {d['size']} != {size}")
    if d["serial"] != serial:
        problems.append(f"{name} serial {d['serial']!r} != {serial!r}")
    if tran and d["tran"] != tran:
        problems.append(f"{name} tran {d['tran']!r} != {tran!r}")
    if not isinstance(d["rotational"], bool):
        problems.append(f"{name} rotational {d['rotational']!r} is not a bool")
if len(disks) != 3:
    problems.append(f"{len(disks)} disks listed: {sorted(disks)}")
macs = [i["mac_address"] for i in stored.get("interfaces", [])]
if macs != [mac]:
    problems.append(f"interfaces {macs} != [{mac}]")
if stored.get("boot", {}).get("pxe_interface") != "01-" + mac.replace(":", "-"):
    problems.append(f"boot {stored.get('boot')}")
for p in problems:
    print("     " + p)
sys.exit(1 if problems else 0)
EOF
    vm_stop inspect
    api delete "$uuid" >/dev/null 2>&1 || true
}

# --- deploy up to write_image ------------------------------------------------------------
scenario_deploy() {
    echo "== scenario: deploy driven by the conductor in the VM"
    local mac uuid sha end=${SCENARIO_DEPLOY_END:-deploy failed} t_lookup t_hb
    head -c $((8 << 20)) /dev/urandom > "$HTTP_ROOT/img.raw"
    sha=$(sha256sum "$HTTP_ROOT/img.raw" | cut -d' ' -f1)
    mac=$(random_mac)
    uuid=$(api create-node "ira-vm-deploy-$$" "$mac") || { fail "deploy: node created"; return; }
    api provision "$uuid" manage && api wait "$uuid" manageable 60 &&
        api provision "$uuid" provide && api wait "$uuid" available 60 || { fail "deploy: available"; return; }
    api set-image "$uuid" "http://127.0.0.1:$HTTP_PORT/img.raw" "$sha"
    api provision "$uuid" active
    check "deploy: node waits in 'wait call-back'" api wait "$uuid" "wait call-back" 60
    local port
    port=$(vm_free_port)
    VM_MAC=$mac VM_HOSTPORT=$port \
        VM_APPEND="ipa-api-url=$IRONIC_URL ira.fwd=$IRONIC_API_PORT,$HTTP_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$port" \
        vm_boot deploy
    if t_lookup=$(vm_wait_console 'lookup succeeded' 120 deploy); then
        pass "deploy: the agent in the VM looked the node up"
        echo "     QEMU start -> lookup answered: $t_lookup s"
    else
        fail "deploy: the agent in the VM looked the node up"
    fi
    if t_hb=$(vm_wait_console 'first heartbeat accepted' 60 deploy); then
        pass "deploy: the conductor accepted the agent's heartbeat"
        echo "     QEMU start -> first heartbeat accepted: $t_hb s"
    else
        fail "deploy: the conductor accepted the agent's heartbeat"
    fi
    check "deploy: callback URL is https (auto-TLS)" \
        grep -aq "callback_url=https://127.0.0.1:$port" "$VM_DIR/console.log"
    if api wait "$uuid" "$end" 300; then
        pass "deploy: node ends in '$end'"
        echo "     QEMU start -> $end: $(vm_elapsed deploy) s"
    else
        fail "deploy: node ends in '$end'"
    fi
    check "deploy: the conductor fetched the deploy steps from the agent" \
        grep -aq 'command=deploy.get_deploy_steps' "$VM_DIR/console.log"
    check "deploy: the conductor ran write_image on the agent" \
        grep -aqE 'command=deploy.execute_deploy_step' "$VM_DIR/console.log"
    if [ "$end" = "deploy failed" ]; then
        local err
        err=$(api field "$uuid" last_error)
        echo "     last_error: $err"
        check "deploy: last_error carries the agent's write_image error" \
            grep -q 'write_image' <<<"$err"
    fi
    echo "     QEMU peak RSS: $(($(vm_rss_kib deploy) / 1024)) MiB (guest RAM $VM_MEM MiB)"
    vm_stop deploy
}

VM_DISK_BYTES=$((1 << 30))
scenario_inspection
scenario_deploy
echo "vm-e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# The VM end-to-end suite: the real Ironic (from PyPI, 127.0.0.1, sqlite, fake hardware,
# automated cleaning on as by default) drives ira inside its own ramdisk booted in QEMU
# (TCG unless KVM really works), with a virtio, an NVMe and a SATA disk, user-mode
# networking and the agent's port forwarded.
#
# Scenarios:
#   inspection  node in `inspect wait`; the VM boots with ipa-inspection-callback-url and
#               a BMC (OpenIPMI's ipmi_sim behind QEMU's ipmi-bmc-extern and a KCS
#               interface, with a LAN channel holding a known address and MAC);
#               Ironic stores the inventory: the VM's three disks (names, sizes, serials,
#               rotational), its NIC (MAC) and the BMC's address and MAC must be in it;
#               node -> manageable
#   lifecycle   Ironic in its default cleaning configuration (automated_clean = true, no
#               priority overrides): one node enrolled, `manage`, inspected, `provide`
#               (automated cleaning: erase_devices_metadata 99, then erase_devices 10) ->
#               available, deployed -> active, `undeploy` (cleaning again) -> available;
#               one VM per ramdisk boot, on the same three 256 MiB disk files. Before each
#               cleaning a marker string fills every disk file; afterwards every byte of
#               every file must be zero, the virtio and SATA disks (no ATA security on
#               QEMU's AHCI) overwritten, the NVMe disk erased by Format NVM. Prints each
#               phase's time and the agent's step times and per-disk erase reports
#   lifecycle_ro the same cleaning with the virtio disk attached read-only (VM_RO_DISK):
#               `clean failed` with the device and "read-only" in last_error and in ira's
#               own log inside the log archive the conductor stored; that disk keeps its
#               marker, the others are erased
#   deploy-*    node in `wait call-back` with a root device hint (the virtio disk's
#               serial); the VM boots with ipa-api-url; the conductor drives lookup,
#               heartbeat (auto-TLS), get_deploy_steps, write_image, get_partition_uuids,
#               install_bootloader and power off:
#               raw (1 GiB, DEPLOY_RAW_MIB), qcow2 (format from the bytes), zstd -> active
#               with the disk checked byte for byte; a checksum mismatch and a qcow2 with a
#               backing file -> `deploy failed` with the agent's error in last_error and
#               nothing bootable (or nothing at all) on the disk. These nodes set their
#               own automated_clean = false: they test the deploy, lifecycle tests cleaning
#   deploy_exec_installer  a ramdisk built with IRA_HWM_DIR=hardware-managers/exec (its
#               own IRA_OUT) carries the example executable hardware manager, which
#               outranks the generic write_image: the node (direct deploy) reaches
#               `active`, the disk file holds the gzip image's partition table and data
#               partition byte for byte, and partition 1 (ext4, read with debugfs) holds
#               ira-firstboot.json naming the node and the image
#   redfish_vmedia  (tests/e2e/bmc.sh) the node is a libvirt domain behind sushy-tools'
#               Redfish emulator; Ironic's redfish driver powers it on with the ISO it
#               built from the ramdisk inserted as virtual media, deploys it to `active`
#               (disk checked), ejects the CD, boots the disk, and powers it off
#   redfish_dhcpless  the same with the node's network_data (static 10.0.2.42): the
#               ISO is a config drive carrying it, the ramdisk configures the NIC from
#               it, the deploy reaches `active`, and no DHCP request may leave the VM
#   redfish_rescue  a redfish node deployed the same way (agent rescue interface), then
#               `baremetal node rescue --rescue-password`: the emulator boots the rescue
#               ISO Ironic built from rescue_kernel/rescue_ramdisk (ira's ramdisk) ->
#               `rescue`; the test logs in as `rescue` over SSH (a host port forwarded to
#               the domain's :22) and on its second serial port (ttyS1, a UNIX socket),
#               then `unrescue` -> `active`, booting the disk with the CD ejected
#   vmedia_network_data  (no BMC: the suite boots QEMU with a config-2 CD and an
#               ir-vfd-dev stick it made) static bond + VLAN from network_data.json,
#               parameters.txt, no DHCP
#   rescue      (not in the default list) the same rescue with the suite booting QEMU and
#               fake hardware; Ironic restarted with [agent]manage_agent_boot = false
#
# Every process started here (Ironic, the image server, QEMU, libvirtd, the Redfish
# emulator) is stopped by its PID, and the scratch directory is removed, also on failure
# (KEEP=1 keeps it). On a failure the tails of the VM console (which carries the agent's
# log) and of the conductor log are printed. Ends with `vm-e2e: N passed, M failed`.
#
#   VM_MEM (default 256)  guest RAM in MiB
#   E2E_SCENARIOS         the scenarios to run, in order (default: all but `rescue`)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/ironic/lib.sh
. "$REPO/tests/ironic/lib.sh"
# shellcheck source=tests/e2e/vm.sh
. "$HERE/vm.sh"
# shellcheck source=tests/e2e/bmc.sh
. "$HERE/bmc.sh"
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
bmc_ensure_venv || exit 1

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
    bmc_down "$SCRATCH/bmc"
    [ -z "${IPMI_SIM_PID:-}" ] || { kill "$IPMI_SIM_PID"; wait "$IPMI_SIM_PID"; } 2>/dev/null
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

# Ironic's default cleaning configuration: automated_clean = true, so every `provide`
# and every undeploy runs erase_devices_metadata (99) then erase_devices (10).
IRONIC_REDFISH=1 IRONIC_BIOS_BOOTLOADER=true ironic_up "$SCRATCH/ironic" true || { FAILED_ANY=1; exit 1; }

# --- inspection -----------------------------------------------------------------------------
# The BMC the inspection VM gets: ipmi_sim (Debian's openipmi) on 127.0.0.1, its LAN
# channel 1 answering Get LAN Configuration Parameters from bmc_lancontrol below.
BMC_IP=192.0.2.77 BMC_MAC=52:54:00:be:ef:77 IPMI_SIM_PID=
ipmi_sim_up() { # ipmi_sim_up DIR: starts ipmi_sim, sets IPMI_SIM_PID and IPMI_SIM_PORT
    local dir=$1 lan_port i
    mkdir -p "$dir/state"
    IPMI_SIM_PORT=$(vm_free_port) lan_port=$(vm_free_port)
    # ipmi_sim runs it as `bmc_lancontrol DEVICE get PARAM...` and reads `PARAM:VALUE`.
    cat >"$dir/bmc_lancontrol" <<LANCONTROL
#!/bin/sh
[ "\$2" = get ] || exit 0
shift 2
for p in "\$@"; do
    case \$p in
        ip_addr) v=$BMC_IP ;;
        ip_addr_src) v=static ;;
        mac_addr) v=$BMC_MAC ;;
        subnet_mask) v=255.255.255.0 ;;
        default_gw_ip_addr) v=192.0.2.1 ;;
        backup_gw_ip_addr) v=0.0.0.0 ;;
        default_gw_mac_addr | backup_gw_mac_addr) v=00:00:00:00:00:00 ;;
        *) echo "Invalid parameter: \$p"; exit 1 ;;
    esac
    echo "\$p:\$v"
done
LANCONTROL
    chmod 755 "$dir/bmc_lancontrol"
    cat >"$dir/lan.conf" <<LANCONF
name "ira-vm-bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $lan_port
    priv_limit admin
    allowed_auths_admin none md5
    guid a123456789abcdefa123456789abcdef
    lan_config_program "$dir/bmc_lancontrol lan0"
  endlan
  serial 15 127.0.0.1 $IPMI_SIM_PORT codec VM
LANCONF
    cat >"$dir/bmc.emu" <<'BMCEMU'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 50 0x0a
mc_enable 0x20
BMCEMU
    ipmi_sim -n -c "$dir/lan.conf" -f "$dir/bmc.emu" -s "$dir/state" >"$dir/ipmi_sim.log" 2>&1 &
    IPMI_SIM_PID=$!
    # Until it listens for the VM. Not by connecting: ipmi_sim takes any connection for
    # the VM, and exits a few seconds after it closes (openipmi 2.0.33).
    for i in $(seq 50); do
        [ -n "$(ss -Hltn "sport = :$IPMI_SIM_PORT")" ] && return 0
        kill -0 "$IPMI_SIM_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "ipmi_sim did not start: $(tail -n 5 "$dir/ipmi_sim.log")"
    return 1
}
ipmi_sim_down() {
    [ -n "$IPMI_SIM_PID" ] || return 0
    kill "$IPMI_SIM_PID" 2>/dev/null
    wait "$IPMI_SIM_PID" 2>/dev/null
    IPMI_SIM_PID=
}

scenario_inspection() {
    echo "== scenario: agent inspection in the VM"
    local mac uuid t
    ipmi_sim_up "$SCRATCH/ipmi" || { fail "inspection: ipmi_sim started"; return; }
    mac=$(random_mac)
    uuid=$(api create-node "ira-vm-inspect-$$" "$mac") || { fail "inspection: node created"; return; }
    api provision "$uuid" manage && api wait "$uuid" manageable 60 || { fail "inspection: manageable"; return; }
    api provision "$uuid" inspect
    check "inspection: node waits in 'inspect wait'" api wait "$uuid" "inspect wait" 30
    VM_MAC=$mac VM_HOSTPORT=$(vm_free_port) VM_IPMI=tcp:$IPMI_SIM_PORT \
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
    check "inspection: stored inventory has the emulated BMC's address and MAC" \
        python3 - "$SCRATCH/inspect-inventory.json" "$BMC_IP" "$BMC_MAC" <<'EOF'
import json, sys
stored = json.load(open(sys.argv[1])).get("inventory", {})
got = {k: stored.get(k) for k in ("bmc_address", "bmc_mac", "bmc_v6address")}
want = {"bmc_address": sys.argv[2], "bmc_mac": sys.argv[3], "bmc_v6address": "::/0"}
print(f"     BMC keys: {got}")
sys.exit(0 if got == want else 1)
EOF
    vm_stop inspect
    ipmi_sim_down
    api delete "$uuid" >/dev/null 2>&1 || true
}

# --- deploy up to write_image ------------------------------------------------------------
# --- deploy -------------------------------------------------------------------------------
# DEPLOY_PREPARE (a function called with the node's UUID before the deploy starts; it
# sees deploy_node's `mac`), DEPLOY_EXTRA (an argument to `provision active`) and
# DEPLOY_VM_APPEND (kernel parameters added last) adapt a scenario.
# deploy_node LABEL IMAGE DISK_FORMAT END [SHA256]: creates a node whose root device hint is
# the virtio disk's serial, deploys http://.../IMAGE (checksum SHA256, default the image's)
# in a fresh VM, and waits for END (`active` or `deploy failed`). Leaves NODE_UUID, the VM
# (stopped) and its disks for the caller's checks. Prints QEMU start -> END.
deploy_node() {
    local label=$1 image=$2 format=$3 end=$4 sha=${5:-} mac port rc=0
    [ -n "$sha" ] || sha=$(sha256sum "$HTTP_ROOT/$image" | cut -d' ' -f1)
    mac=$(random_mac)
    NODE_UUID=$(api create-node "ira-vm-$label-$$" "$mac") || { fail "$label: node created"; return 1; }
    api patch "$NODE_UUID" /properties/root_device '{"serial": "ira-vd0"}'
    # The guest reaches the host's image server through QEMU's gateway, used as an HTTP
    # proxy (Ironic passes it in image_info.proxies); the URL stays 127.0.0.1 for the
    # conductor's own check.
    api patch "$NODE_UUID" /driver_info/image_http_proxy "\"http://10.0.2.2:$HTTP_PORT\""
    # These scenarios test the deploy: `provide` goes straight to `available` without a
    # cleaning boot (the node's own automated_clean overrides the conductor's default).
    # The lifecycle scenarios test cleaning.
    api patch "$NODE_UUID" /automated_clean false
    api provision "$NODE_UUID" manage && api wait "$NODE_UUID" manageable 60 &&
        api provision "$NODE_UUID" provide && api wait "$NODE_UUID" available 60 ||
        { fail "$label: node available"; return 1; }
    api set-image "$NODE_UUID" "http://127.0.0.1:$HTTP_PORT/$image" "$sha" "$format"
    [ -n "${DEPLOY_PREPARE:-}" ] && "$DEPLOY_PREPARE" "$NODE_UUID"
    api provision "$NODE_UUID" active ${DEPLOY_EXTRA:+"$DEPLOY_EXTRA"}
    api wait "$NODE_UUID" "wait call-back" 60 >/dev/null 2>&1 || { fail "$label: node waits in 'wait call-back'"; return 1; }
    port=$(vm_free_port)
    VM_DISK_SIZE=2G VM_MAC=$mac VM_HOSTPORT=$port \
        VM_APPEND="ipa-api-url=$IRONIC_URL ira.fwd=$IRONIC_API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$port ipa-image-download-connection-retry-interval=1 ${DEPLOY_VM_APPEND:-}" \
        vm_boot "$label"
    if api wait "$NODE_UUID" "$end" 300; then
        pass "$label: node ends in '$end'"
        echo "     QEMU start -> $end: $(vm_elapsed "$label") s"
    else
        fail "$label: node ends in '$end'"
        echo "     last_error: $(api field "$NODE_UUID" last_error)"
        rc=1
    fi
    # The agent powers the VM off at the end of a deploy; a failed one keeps it running.
    vm_stop "$label"
    return $rc
}

# disk_holds_image DISK IMAGE: the written disk equals the image from the partition
# entries (LBA 2) to the image's old backup GPT, and its GPT is valid with the backup
# header moved to the disk's end (the agent rewrites LBA 0/1 when it moves it).
disk_holds_image() {
    local disk=$1 img=$2 size
    size=$(stat -c %s "$img")
    cmp -s -i 1024 -n $((size - 1024 - 33 * 512)) "$img" "$disk" &&
        sgdisk -v "$disk" 2>&1 | grep -q 'No problems found'
}

# make_gpt_image FILE MIB: a GPT disk image of MIB MiB: one Linux partition, half random
# and half zero runs (realistic content for compression and throughput).
make_gpt_image() {
    local f=$1 mib=$2
    rm -f "$f"
    truncate -s "${mib}M" "$f"
    sgdisk -o -n 1:2048:0 -t 1:8300 "$f" >/dev/null
    local half=$(((mib - 2) / 2)) i=0
    while [ $i -lt "$half" ]; do
        dd if=/dev/urandom of="$f" bs=1M seek=$((1 + 2 * i)) count=1 conv=notrunc status=none
        i=$((i + 1))
    done
}

scenario_deploy_raw() {
    echo "== scenario: whole-disk raw image (1 GiB) to 'active'"
    make_gpt_image "$HTTP_ROOT/img.raw" "${DEPLOY_RAW_MIB:-1024}"
    deploy_node deploy-raw img.raw raw active || return
    local con=$VM_SCRATCH/deploy-raw/console.log
    check "deploy-raw: lookup, then heartbeats with an https callback (auto-TLS)" \
        grep -aq "callback_url=https://127.0.0.1:" "$con"
    check "deploy-raw: the conductor fetched the deploy steps from the agent" \
        grep -aq 'command=deploy.get_deploy_steps' "$con"
    check "deploy-raw: the conductor ran write_image, get_partition_uuids, install_bootloader" \
        bash -c "grep -aq 'command=deploy.execute_deploy_step' '$con' &&
                 grep -aq 'command=standby.get_partition_uuids' '$con' &&
                 grep -aq 'command=image.install_bootloader' '$con'"
    check "deploy-raw: the disk holds the image byte for byte, backup GPT at the disk end" \
        disk_holds_image "$VM_SCRATCH/deploy-raw/vd0.img" "$HTTP_ROOT/img.raw"
    check "deploy-raw: the other disks were not touched" \
        bash -c "! grep -qa . <(head -c 4194304 '$VM_SCRATCH/deploy-raw/nvme0.img' | tr -d '\0')"
    local rd
    rd=$(api field "$NODE_UUID" driver_internal_info.root_uuid_or_disk_id)
    echo "     root_uuid_or_disk_id: $rd"
    check "deploy-raw: the conductor stored the disk signature as root uuid" \
        test "$rd" = '"0x00000000"'
    local rate
    rate=$(grep -aoE 'image written and verified.*seconds=[0-9.]+' "$con" | grep -oE '[0-9.]+$' | tail -1)
    [ -n "$rate" ] && echo "     agent: ${DEPLOY_RAW_MIB:-1024} MiB written and verified in $rate s"
    rm -f "$HTTP_ROOT/img.raw"
}

scenario_deploy_formats() {
    echo "== scenario: qcow2 and zstd-compressed raw images to 'active'"
    make_gpt_image "$SCRATCH/small.raw" 96
    qemu-img convert -q -c -f raw -O qcow2 "$SCRATCH/small.raw" "$HTTP_ROOT/img.qcow2"
    zstd -q -f -3 "$SCRATCH/small.raw" -o "$HTTP_ROOT/img.raw.zst"
    if deploy_node deploy-qcow2 img.qcow2 - active; then
        check "deploy-qcow2: format detected from the bytes; the disk holds the guest image" \
            disk_holds_image "$VM_SCRATCH/deploy-qcow2/vd0.img" "$SCRATCH/small.raw"
    fi
    if deploy_node deploy-zstd img.raw.zst raw active; then
        check "deploy-zstd: decompressed while streaming; the disk holds the image" \
            disk_holds_image "$VM_SCRATCH/deploy-zstd/vd0.img" "$SCRATCH/small.raw"
    fi
}

scenario_deploy_refused() {
    echo "== scenario: a checksum mismatch and a qcow2 with a backing file end in 'deploy failed'"
    make_gpt_image "$HTTP_ROOT/bad.raw" 16
    local wrong err
    wrong=$(printf 'not the image' | sha256sum | cut -d' ' -f1)
    if deploy_node deploy-mismatch bad.raw raw "deploy failed" "$wrong"; then
        err=$(api field "$NODE_UUID" last_error)
        echo "     last_error: $err"
        check "deploy-mismatch: last_error carries the agent's checksum error" \
            grep -qi 'checksum' <<<"$err"
        check "deploy-mismatch: nothing bootable on the disk (no GPT header at LBA 1)" \
            bash -c "! dd if='$VM_SCRATCH/deploy-mismatch/vd0.img' bs=512 skip=1 count=1 status=none | grep -aq 'EFI PART'"
    fi
    qemu-img create -q -f qcow2 -b "$SCRATCH/small.raw" -F raw "$HTTP_ROOT/backed.qcow2"
    if deploy_node deploy-backing backed.qcow2 qcow2 "deploy failed"; then
        err=$(api field "$NODE_UUID" last_error)
        echo "     last_error: $err"
        check "deploy-backing: last_error says the image failed the safety check" \
            grep -q 'Security' <<<"$err"
        check "deploy-backing: not a byte reached the disk" \
            bash -c "! grep -qa . <(head -c 4194304 '$VM_SCRATCH/deploy-backing/vd0.img' | tr -d '\0')"
    fi
}

# The example executable hardware manager (hardware-managers/exec/example-installer)
# baked into a ramdisk of its own (images/build.sh with IRA_HWM_DIR, a separate IRA_OUT:
# the default ramdisk stays as it is) replaces write_image: it streams the gzip image
# through the node's image proxy, verifies it, writes the disk the agent chose from the
# root device hint, and writes ira-firstboot.json to the image's partition 1.
scenario_deploy_exec_installer() {
    echo "== scenario: an executable hardware manager (the example installer) replaces write_image"
    local out=$SCRATCH/ramdisk-installer img=$SCRATCH/installer.raw stage=$SCRATCH/installer-boot
    if ! IRA_HWM_DIR=$REPO/hardware-managers/exec IRA_OUT=$out bash "$REPO/images/build.sh" \
        >"$SCRATCH/build-installer.log" 2>&1; then
        fail "exec-installer: ramdisk with the example installer built"
        tail -n 5 "$SCRATCH/build-installer.log"
        return
    fi
    check "exec-installer: the build baked the example into the ramdisk's managers directory" \
        bash -c "zstd -dc '$out/ira.initramfs' | cpio -t --quiet 2>/dev/null |
            grep -qx usr/lib/ira/hardware-managers.d/example-installer"
    # GPT: 1 = ext4 "boot" (16 MiB at 1 MiB), 2 = random (16 MiB at 17 MiB); served gzipped.
    mkdir -p "$stage/loader"
    printf 'image boot partition\n' >"$stage/loader/entry.conf"
    rm -f "$img"
    truncate -s 40M "$img"
    sgdisk -n 1:2048:+16M -t 1:8300 -c 1:boot -n 2:0:+16M -t 2:8300 -c 2:data "$img" >/dev/null
    mkfs.ext4 -q -F -L boot -d "$stage" "$SCRATCH/installer-boot.fs" 16M >/dev/null
    dd if="$SCRATCH/installer-boot.fs" of="$img" bs=1M seek=1 conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=1M seek=17 count=16 conv=notrunc status=none
    gzip -c -n "$img" >"$HTTP_ROOT/installer.raw.gz"
    VM_INITRD=$out/ira.initramfs deploy_node deploy-exec-installer installer.raw.gz raw active || return
    local disk=$VM_SCRATCH/deploy-exec-installer/vd0.img con=$VM_SCRATCH/deploy-exec-installer/console.log fb
    check "exec-installer: the agent found the example manager and ran its write_image" \
        bash -c "grep -aq 'executable hardware manager found.*example_installer' '$con' &&
            grep -aq 'manager exited manager=\"example_installer\" step=\"write_image\" end=Exited(0)' '$con' &&
            ! grep -aq 'image written and verified' '$con'"
    check "exec-installer: its progress lines are in the agent's log" \
        grep -aq 'progress=writing image installer.raw.gz to /dev/vda' "$con"
    check "exec-installer: the disk holds the image (partition entries, partition 2)" \
        bash -c "cmp -s -i 1024 -n 16384 '$img' '$disk' && cmp -s -i 17825792 -n 16777216 '$img' '$disk'"
    check "exec-installer: the disk's GPT is valid, backup header at the disk's end" \
        bash -c "sgdisk -v '$disk' 2>&1 | grep -q 'No problems found'"
    dd if="$disk" of="$SCRATCH/installer-check.fs" bs=1M skip=1 count=16 status=none
    fb=$(debugfs -R "cat /ira-firstboot.json" "$SCRATCH/installer-check.fs" 2>/dev/null)
    echo "     ira-firstboot.json: $fb"
    check "exec-installer: partition 1 holds ira-firstboot.json for this node and image" \
        python3 -c 'import json, sys
f = json.loads(sys.argv[1])
assert f["node_uuid"] == sys.argv[2] and f["image_id"] == "installer.raw.gz", f
assert f["installed_by"] == "example_installer 1.0" and f["install_device"] == "/dev/vda", f' "$fb" "$NODE_UUID"
    check "exec-installer: the image's own files on partition 1 are intact" \
        test "$(debugfs -R "cat /loader/entry.conf" "$SCRATCH/installer-check.fs" 2>/dev/null)" = "image boot partition"
    rm -rf "$out" "$HTTP_ROOT/installer.raw.gz"
}

# boot_written_disk LABEL LOADER_LABEL: powers the deployed VM on again without a kernel;
# OVMF must start the boot entry the agent wrote, from the written disk.
boot_written_disk() {
    local label=$1 entry=$2 t
    VM_FIRMWARE=uefi VM_DISK_BOOT=1 VM_DISK_SIZE=2G vm_boot "$label" || { fail "$label: VM powered on again"; return; }
    if t=$(vm_wait_console "starting Boot[0-9A-F]{4} \"$entry\"" 180 "$label"); then
        pass "$label: OVMF starts the agent's boot entry \"$entry\" from the written disk ($t s)"
        grep -aoE "starting Boot[0-9A-F]{4} \"$entry\".*" "$VM_SCRATCH/$label/console.log" | head -1 | sed 's/^/     /'
    else
        fail "$label: OVMF starts the agent's boot entry \"$entry\" from the written disk"
    fi
    vm_stop "$label"
}

# make_uefi_image FILE: a GPT disk image with a 64 MiB FAT32 ESP holding
# EFI/BOOT/BOOTX64.EFI (the ramdisk's kernel, an EFI application) and a Linux partition.
make_uefi_image() {
    local f=$1 esp=$SCRATCH/esp.img
    rm -f "$f" "$esp"
    truncate -s 96M "$f"
    sgdisk -o -n 1:2048:+64M -t 1:ef00 -n 2:0:0 -t 2:8300 "$f" >/dev/null
    mkfs.vfat -F 32 -n EFI -C "$esp" $((64 * 1024)) >/dev/null
    mmd -i "$esp" ::/EFI ::/EFI/BOOT
    mcopy -i "$esp" "$REPO/images/out/ira.kernel" ::/EFI/BOOT/BOOTX64.EFI
    dd if="$esp" of="$f" bs=1M seek=1 conv=notrunc status=none
}

scenario_deploy_uefi() {
    echo "== scenario: UEFI whole-disk image under OVMF; the VM then boots the written disk"
    make_uefi_image "$HTTP_ROOT/uefi.raw"
    VM_FIRMWARE=uefi deploy_node deploy-uefi uefi.raw raw active || return
    local con=$VM_SCRATCH/deploy-uefi/console.log
    check "deploy-uefi: the agent wrote a UEFI boot entry through efivarfs" \
        grep -aq 'boot entry created.*label=ironic1' "$con"
    check "deploy-uefi: the disk holds the image" \
        disk_holds_image "$VM_SCRATCH/deploy-uefi/vd0.img" "$HTTP_ROOT/uefi.raw"
    boot_written_disk deploy-uefi ironic1
}

# part_offset DISK N: byte offset of partition N (sfdisk --json).
part_field() {
    sfdisk --json "$1" | python3 -c "import json,sys; t=json.load(sys.stdin)['partitiontable']; p=[p for p in t['partitions'] if p['node'].endswith(str($2))][0]; print(p['$3'] * t.get('sectorsize', 512) if '$3' in ('start','size') else p['$3'])"
}

scenario_deploy_partition() {
    echo "== scenario: partition image with a config drive, UEFI under OVMF, to 'active'"
    local tree=$SCRATCH/rootfs
    rm -rf "$tree" && mkdir -p "$tree"/{etc,dev,proc,run,sys,tmp} "$tree"/boot/efi/EFI/BOOT
    printf '# ira e2e root\n' > "$tree/etc/fstab"
    echo ira-e2e > "$tree/etc/hostname"
    cp "$REPO/images/out/ira.kernel" "$tree/boot/efi/EFI/BOOT/BOOTX64.EFI"
    rm -f "$HTTP_ROOT/root.img"
    mkfs.ext4 -q -F -L ira-root -d "$tree" "$HTTP_ROOT/root.img" 64M
    : > "$HTTP_ROOT/vmlinuz"
    : > "$HTTP_ROOT/initrd"
    local fsuuid
    fsuuid=$(blkid -p -s UUID -o value "$HTTP_ROOT/root.img")
    DEPLOY_PREPARE=partition_fields DEPLOY_EXTRA='{"configdrive": {"meta_data": {"hostname": "ira-e2e"}}}' \
        VM_FIRMWARE=uefi deploy_node deploy-partition root.img raw active || return
    local disk=$VM_SCRATCH/deploy-partition/vd0.img table
    table=$(sfdisk --json "$disk")
    echo "$table" | python3 -c 'import json,sys; [print("     %s start=%s size=%s type=%s" % (p["node"], p["start"], p["size"], p["type"])) for p in json.load(sys.stdin)["partitiontable"]["partitions"]]'
    check "deploy-partition: GPT with ESP first, config drive, root last" python3 -c '
import json, sys
t = json.loads(sys.argv[1])["partitiontable"]
p = t["partitions"]
assert t["label"] == "gpt", t["label"]
assert len(p) == 3, p
assert p[0]["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", p[0]
assert p[2]["size"] * 512 == 1024 << 20, p[2]
' "$table"
    local root_off cd_off
    root_off=$(part_field "$disk" 3 start)
    cd_off=$(part_field "$disk" 2 start)
    # install_bootloader mounted the root read-write (fstab entry), so compare contents.
    dd if="$disk" of="$SCRATCH/root.part" bs=1M skip=$((root_off >> 20)) count=64 status=none
    check "deploy-partition: the root partition holds the image's filesystem" \
        bash -c "debugfs -R 'cat /etc/hostname' '$SCRATCH/root.part' 2>/dev/null | grep -qx ira-e2e"
    local fstab
    fstab=$(debugfs -R 'cat /etc/fstab' "$SCRATCH/root.part" 2>/dev/null)
    echo "     /etc/fstab now: $(tail -n 1 <<<"$fstab")"
    check "deploy-partition: the ESP was added to the image's fstab" \
        grep -qE '^UUID=[0-9A-F]{4}-[0-9A-F]{4}[[:space:]]+/boot/efi[[:space:]]+vfat' <<<"$fstab"
    dd if="$disk" of="$SCRATCH/cd.iso" bs=1M skip=$((cd_off >> 20)) count=1 status=none
    check "deploy-partition: the config drive partition carries the conductor's ISO (config-2)" \
        bash -c "blkid -p '$SCRATCH/cd.iso' | grep -q 'LABEL=\"config-2\"'"
    local rd
    rd=$(api field "$NODE_UUID" driver_internal_info.root_uuid_or_disk_id)
    echo "     root_uuid_or_disk_id: $rd (image filesystem UUID $fsuuid)"
    check "deploy-partition: root uuid is the root filesystem's UUID" test "$rd" = "\"$fsuuid\""
    check "deploy-partition: the image's EFI assets went to the ESP, registered natively" \
        grep -aq 'boot entry created' "$VM_SCRATCH/deploy-partition/console.log"
    boot_written_disk deploy-partition 'ironic1'
}

# partition_fields UUID: the instance_info of a partition image (deploy_node hook).
partition_fields() {
    local u=$1
    api patch "$u" /instance_info/image_type '"partition"'
    api patch "$u" /instance_info/root_gb 1
    api patch "$u" /instance_info/kernel "\"http://127.0.0.1:$HTTP_PORT/vmlinuz\""
    api patch "$u" /instance_info/ramdisk "\"http://127.0.0.1:$HTTP_PORT/initrd\""
}

# --- lifecycle: the whole life of a node under Ironic's default cleaning -------------------
# One node, one set of disk files (LIFE_MIB each) kept across its "boots": fake power
# cannot power a VM on, so every time a real node would boot the ramdisk (inspection,
# each cleaning, the deploy) a fresh VM with the same disks is started here, and
# stopped when the phase is over (the console of each boot is kept as console-PHASE.log).
LIFE_MIB=256

# life_boot NAME PHASE APPEND: boots the ramdisk on NAME's disks for PHASE.
life_boot() {
    local name=$1 phase=$2 append=$3 port
    port=$(vm_free_port)
    VM_DISK_SIZE=${LIFE_MIB}M VM_MAC=$LIFE_MAC VM_HOSTPORT=$port \
        VM_APPEND="$append ira.fwd=$IRONIC_API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$port" \
        vm_boot "$name"
    LIFE_CONSOLE=$VM_SCRATCH/$name/console-$phase.log
}
# life_end NAME PHASE: stops the VM (if the agent did not power it off) and keeps its console.
life_end() {
    vm_stop "$1"
    cp "$VM_SCRATCH/$1/console.log" "$VM_SCRATCH/$1/console-$2.log"
}
# life_ask TARGET: asks for the provision state change, noting the time.
life_ask() {
    LIFE_ASKED_US=$(_vm_now_us)
    api provision "$LIFE_NODE" "$1"
}
# life_phase NAME PHASE TARGET TIMEOUT: waits for TARGET, then prints how long it took
# from the request (life_ask) and from QEMU's start.
life_phase() {
    local name=$1 phase=$2 target=$3 timeout=$4
    if api wait "$LIFE_NODE" "$target" "$timeout"; then
        pass "$phase ends in '$target'"
        echo "     $phase -> $target: $(_vm_fmt $(($(_vm_now_us) - LIFE_ASKED_US))) s from the request," \
            "$(vm_elapsed "$name") s from QEMU start"
        return 0
    fi
    fail "$phase ends in '$target'"
    echo "     last_error: $(api field "$LIFE_NODE" last_error)"
    return 1
}
# erase_summary CONSOLE: the agent's clean steps with their durations and each disk's
# erase report, from the agent's log on the VM console.
erase_summary() {
    python3 - "$1" <<'PY'
import re, sys
from datetime import datetime
start = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r".*?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+\S+ (executing step|step completed) .*step=\"?(\w+)", line)
    if m:
        t = datetime.fromisoformat(m.group(1)[:26])
        if m.group(2) == "executing step":
            start[m.group(3)] = t
        elif m.group(3) in start:
            print(f"     agent: {m.group(3)} {(t - start.pop(m.group(3))).total_seconds():.2f} s")
    if "disk erase report" in line:
        f = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line.split("disk erase report", 1)[1]))
        f = {k: v.strip('"') for k, v in f.items()}
        if "skipped" in f:
            print(f"     erase report: {f.get('device')} skipped ({f['skipped']})")
        else:
            print(f"     erase report: {f.get('device')} serial {f.get('serial')} {f.get('method')}"
                  f" {int(f.get('bytes', 0)) >> 20} MiB in {f.get('seconds')} s,"
                  f" {f.get('verified_samples')} samples verified"
                  + (f" (fallback: {f['fallback']})" if "fallback" in f else ""))
PY
}
# disk_report CONSOLE DEVICE: DEVICE's last disk erase report line.
disk_report() {
    grep -a 'disk erase report' "$1" | grep -aE "device=\"?$2\"? " | tail -n 1
}
# report_method CONSOLE DEVICE: the method of DEVICE's last disk erase report.
report_method() {
    disk_report "$1" "$2" | grep -oE 'method="?[a-z_]+' | cut -d= -f2 | tr -d '"'
}
# disks_zero NAME: every disk file of VM NAME is all zeros.
disks_zero() {
    local d rc=0
    for d in vd0 nvme0 sata0; do
        if ! all_zero "$VM_SCRATCH/$1/$d.img" "$LIFE_MIB"; then
            echo "     $d.img: $(marker_count "$VM_SCRATCH/$1/$d.img") MiB still hold the marker"
            rc=1
        fi
    done
    return $rc
}
# plant_marker NAME: the tenant's data, the marker over every disk file of VM NAME.
plant_marker() {
    local d
    for d in vd0 nvme0 sata0; do marker_fill "$VM_SCRATCH/$1/$d.img" "$LIFE_MIB"; done
    test "$(marker_count "$VM_SCRATCH/$1/vd0.img")/$(marker_count "$VM_SCRATCH/$1/nvme0.img")/$(marker_count "$VM_SCRATCH/$1/sata0.img")" = "$LIFE_MIB/$LIFE_MIB/$LIFE_MIB"
}
# sata_identified CONSOLE: the agent read the SATA disk's IDENTIFY data (security word:
# not supported) and overwrote the disk for that reason.
sata_identified() {
    grep -a 'ATA security state' "$1" | grep -a 'device=/dev/sda' | grep -aq 'supported: false' &&
        disk_report "$1" /dev/sda | grep -q 'does not support the ATA security feature set'
}
# clean_checks NAME PHASE: what one automated cleaning must have done.
clean_checks() {
    local name=$1 phase=$2 con=$VM_SCRATCH/$1/console-$2.log
    erase_summary "$con"
    check "$phase: the agent ran erase_devices_metadata, then erase_devices" \
        test "$(grep -a 'step completed' "$con" | grep -oE 'step="?erase_devices(_metadata)?' | tr -d '"' | tr '\n' ' ')" = \
        "step=erase_devices_metadata step=erase_devices "
    check "$phase: the virtio disk was overwritten" test "$(report_method "$con" /dev/vda)" = overwrite
    # QEMU's controller offers no cryptographic erase: Format NVM with user-data erase.
    check "$phase: the NVMe disk was erased by Format NVM" test "$(report_method "$con" /dev/nvme0n1)" = nvme_format_user_data
    check "$phase: the SATA disk (no ATA security on QEMU's AHCI) was overwritten" \
        test "$(report_method "$con" /dev/sda)" = overwrite
    # An IDENTIFY DEVICE the SAT layer answers as aborted would give the same overwrite
    # with another reason: the reason must be the drive's own security word.
    check "$phase: IDENTIFY DEVICE answered on the SATA disk: no ATA security feature set" \
        sata_identified "$con"
    check "$phase: no disk file keeps the marker: every byte of the three disks is zero" disks_zero "$name"
    check "$phase: the node has no last_error and no clean_step left" \
        test "$(api field "$LIFE_NODE" last_error)/$(api field "$LIFE_NODE" clean_step)" = "null/{}"
}

scenario_lifecycle() {
    echo "== scenario: a node's whole life under Ironic's default cleaning (automated_clean = true)"
    local name=life
    check "lifecycle: the conductor runs with automated_clean = true" \
        grep -qx 'automated_clean = true' "$SCRATCH/ironic/ironic.conf"
    LIFE_MAC=$(random_mac)
    LIFE_NODE=$(api create-node "ira-vm-life-$$" "$LIFE_MAC") || { fail "lifecycle: node created"; return; }
    api patch "$LIFE_NODE" /properties/root_device '{"serial": "ira-vd0"}'
    api patch "$LIFE_NODE" /driver_info/image_http_proxy "\"http://10.0.2.2:$HTTP_PORT\""
    api provision "$LIFE_NODE" manage && api wait "$LIFE_NODE" manageable 60 ||
        { fail "lifecycle: manageable"; return; }

    life_ask inspect
    api wait "$LIFE_NODE" "inspect wait" 30 || { fail "lifecycle: inspect wait"; return; }
    life_boot $name inspect \
        "ipa-inspection-callback-url=$IRONIC_URL/v1/continue_inspection BOOTIF=01-${LIFE_MAC//:/-}"
    life_phase $name "lifecycle: inspect" manageable 180
    life_end $name inspect
    check "lifecycle: inspection stored the three disks" test "$(api inventory "$LIFE_NODE" |
        python3 -c 'import json,sys; print(sorted(d["name"] for d in json.load(sys.stdin)["inventory"]["disks"]))')" = \
        "['/dev/nvme0n1', '/dev/sda', '/dev/vda']"

    check "provide: the marker is on every byte of the three disks before cleaning" plant_marker $name
    life_ask provide
    api wait "$LIFE_NODE" "clean wait" 60 || { fail "provide: clean wait"; return; }
    life_boot $name provide "ipa-api-url=$IRONIC_URL"
    life_phase $name "lifecycle: provide" available 240 || { life_end $name provide; return; }
    life_end $name provide
    check "provide: the conductor planned deploy.erase_devices_metadata:99 deploy.erase_devices:10" \
        test "$(grep -a -m1 -oE "Executing automated cleaning on node $LIFE_NODE, remaining steps: .*" \
            "$SCRATCH/ironic/ironic.log" | python3 -c '
import ast, sys
steps = ast.literal_eval(sys.stdin.read().split("remaining steps: ", 1)[1])
print(" ".join("%s.%s:%s" % (s["interface"], s["step"], s["priority"]) for s in steps))')" = \
        "deploy.erase_devices_metadata:99 deploy.erase_devices:10"
    clean_checks $name provide

    make_gpt_image "$HTTP_ROOT/life.raw" 64
    api set-image "$LIFE_NODE" "http://127.0.0.1:$HTTP_PORT/life.raw" \
        "$(sha256sum "$HTTP_ROOT/life.raw" | cut -d' ' -f1)" raw
    life_ask active
    api wait "$LIFE_NODE" "wait call-back" 60 || { fail "deploy: wait call-back"; return; }
    life_boot $name deploy "ipa-api-url=$IRONIC_URL ipa-image-download-connection-retry-interval=1"
    life_phase $name "lifecycle: deploy" active 300 || { life_end $name deploy; return; }
    life_end $name deploy
    check "deploy: the virtio disk holds the image" disk_holds_image "$VM_SCRATCH/$name/vd0.img" "$HTTP_ROOT/life.raw"

    check "undeploy: the tenant's marker is on every byte of the three disks" plant_marker $name
    life_ask deleted
    api wait "$LIFE_NODE" "clean wait" 60 || { fail "undeploy: clean wait"; return; }
    life_boot $name undeploy "ipa-api-url=$IRONIC_URL"
    life_phase $name "lifecycle: undeploy" available 240 || { life_end $name undeploy; return; }
    life_end $name undeploy
    clean_checks $name undeploy
    api delete "$LIFE_NODE" >/dev/null 2>&1 || true
    rm -f "$HTTP_ROOT/life.raw"
}

# A disk that cannot be erased: the virtio disk attached read-only, Ironic's default
# agent_erase_skip_read_only = false. The other disks are erased all the same; the step
# fails naming the disk and the reason, and the conductor stores the agent's logs.
scenario_lifecycle_ro() {
    echo "== scenario: automated cleaning with a read-only disk ends in 'clean failed'"
    local name=life-ro
    LIFE_MAC=$(random_mac)
    LIFE_NODE=$(api create-node "ira-vm-life-ro-$$" "$LIFE_MAC") || { fail "clean-ro: node created"; return; }
    api provision "$LIFE_NODE" manage && api wait "$LIFE_NODE" manageable 60 ||
        { fail "clean-ro: manageable"; return; }
    # The disk files exist before the first boot, so the marker can go on first.
    mkdir -p "$VM_SCRATCH/$name"
    local d
    for d in vd0 nvme0 sata0; do truncate -s "${LIFE_MIB}M" "$VM_SCRATCH/$name/$d.img"; done
    check "clean-ro: the marker is on every byte of the three disks" plant_marker $name
    life_ask provide
    api wait "$LIFE_NODE" "clean wait" 60 || { fail "clean-ro: clean wait"; return; }
    VM_RO_DISK=vd0 life_boot $name provide "ipa-api-url=$IRONIC_URL"
    life_phase $name "clean-ro: provide" "clean failed" 240
    life_end $name provide
    local err con=$VM_SCRATCH/$name/console-provide.log
    erase_summary "$con"
    err=$(api field "$LIFE_NODE" last_error)
    echo "     last_error: $err"
    check "clean-ro: last_error names the read-only disk /dev/vda" grep -q '/dev/vda\b' <<<"$err"
    check "clean-ro: last_error gives the reason (read-only)" grep -qiE 'read.?only' <<<"$err"
    check "clean-ro: last_error is not a missing method" bash -c "! grep -qiE 'could not find method|not implemented' <<<'$err'"
    check "clean-ro: the node is in maintenance" test "$(api field "$LIFE_NODE" maintenance)" = true
    check "clean-ro: the read-only disk was not touched (marker in every MiB)" \
        test "$(marker_count "$VM_SCRATCH/$name/vd0.img")" = "$LIFE_MIB"
    check "clean-ro: the NVMe disk was still erased" all_zero "$VM_SCRATCH/$name/nvme0.img" "$LIFE_MIB"
    check "clean-ro: the SATA disk was still erased" all_zero "$VM_SCRATCH/$name/sata0.img" "$LIFE_MIB"
    # [agent]deploy_logs_collect = on_failure, local storage: the conductor asked the
    # agent for log.collect_system_logs and stored the tar.gz under the node's UUID.
    local archive
    archive=$(ls -t "$SCRATCH/ironic/deploy-logs/${LIFE_NODE}"*cleaning*.tar.gz 2>/dev/null | head -n 1)
    echo "     stored log archive: ${archive:-none}"
    if [ -n "$archive" ] && mkdir -p "$SCRATCH/ro-logs" && tar -xzf "$archive" -C "$SCRATCH/ro-logs"; then
        pass "clean-ro: the conductor stored the agent's log archive"
        check "clean-ro: ira's own log in the archive: the erase of /dev/vda failed, read-only" \
            bash -c "grep -a 'erase failed' '$SCRATCH/ro-logs/ira.log' | grep -a 'device=/dev/vda' | grep -qiE 'read.?only'"
        grep -a 'erase failed' "$SCRATCH/ro-logs/ira.log" | head -n 1 | cut -c1-300 | sed 's/^/     ira.log: /'
    else
        fail "clean-ro: the conductor stored the agent's log archive"
    fi
    api delete "$LIFE_NODE" >/dev/null 2>&1 || api patch "$LIFE_NODE" /maintenance false >/dev/null 2>&1
}

# --- Redfish BMC + virtual media -----------------------------------------------------------
# The node is a libvirt domain behind sushy-tools' Redfish emulator (tests/e2e/bmc.sh):
# Ironic's `redfish` hardware type powers it on and off, sets its boot device, and its
# `redfish-virtual-media` boot interface builds an ISO from the deploy kernel and ramdisk
# (kernel parameters in the ISO's isolinux.cfg) that the emulator inserts as a CD. No
# kernel is handed to QEMU: the VM's BIOS boots the CD.

# redfish_deploy LABEL [NETWORK_DATA]: starts the BMC (once), defines a domain, enrols it
# as a redfish node (network_data: JSON, optional), deploys a 64 MiB raw image and checks
# the virtual media path, the deploy, the power-off. Leaves NODE_UUID, VM_DIR, RF_ISO.
# BMC_GUEST_IP: the static guest address the agent's port is forwarded to; BMC_SSHPORT,
# BMC_SERIAL_SOCK: see bmc_define_vm; RF_RESCUE=1: the node rescues through the agent.
redfish_deploy() {
    local label=$1 netdata=${2:-} t0=$SECONDS mac port uuid con fields
    RF_ISO=
    if [ -z "${BMC_URL:-}" ]; then
        bmc_up "$SCRATCH/bmc" || { fail "$label: emulator and libvirtd up"; return 1; }
        echo "     libvirtd + sushy-emulator up: $((SECONDS - t0)) s"
        cp "$REPO/images/out/ira.kernel" "$HTTP_ROOT/ira.kernel"
        cp "$REPO/images/out/ira.initramfs" "$HTTP_ROOT/ira.initramfs"
    fi
    make_gpt_image "$HTTP_ROOT/rf.raw" 64
    mac=$(random_mac)
    port=$(vm_free_port)
    VM_DISK_SIZE=2G BMC_MAC=$mac BMC_HOSTPORT=$port bmc_define_vm "$label" || { fail "$label: domain defined"; return 1; }
    con=$VM_DIR/console.log
    fields=$(python3 - "$BMC_URL" "$BMC_SYSTEM_ID" "$HTTP_PORT" "$IRONIC_API_PORT" "$port" "$mac" "$netdata" "${RF_RESCUE:-0}" <<'EOF2'
import json, os, sys
bmc, system, http, api, port, mac, netdata, rescue = sys.argv[1:]
node = {
    "driver": "redfish", "boot_interface": "redfish-virtual-media",
    "management_interface": "redfish", "power_interface": "redfish",
    "deploy_interface": "direct", "inspect_interface": "agent", "network_interface": "noop",
    "properties": {"cpu_arch": "x86_64", "capabilities": "boot_mode:bios",
                   "root_device": {"serial": "ira-vd0"}},
    "driver_info": {
        "redfish_address": bmc, "redfish_system_id": system,
        "redfish_username": "admin", "redfish_password": "password",
        "deploy_kernel": f"http://127.0.0.1:{http}/ira.kernel",
        "deploy_ramdisk": f"http://127.0.0.1:{http}/ira.initramfs",
        "image_http_proxy": f"http://10.0.2.2:{http}",
        # Ironic appends ipa-api-url, boot_method=vmedia (and more) to these.
        "kernel_append_params": f"console=ttyS0 panic=-1 quiet ira.fwd={api} "
                                f"{os.environ['IRA_TEST_CMDLINE']} "
                                f"ipa-advertise-host=127.0.0.1 ipa-advertise-port={port} "
                                "ipa-image-download-connection-retry-interval=1",
    }}
if netdata:
    node["network_data"] = json.loads(netdata.replace("@MAC@", mac))
if rescue == "1":
    # The agent rescue interface; the rescue ISO is built from ira's own ramdisk (the
    # same kernel and initramfs as for deploying), whose rescue mode also starts a login
    # prompt on ttyS1 (ira.getty).
    node["rescue_interface"] = "agent"
    node["driver_info"]["rescue_kernel"] = node["driver_info"]["deploy_kernel"]
    node["driver_info"]["rescue_ramdisk"] = node["driver_info"]["deploy_ramdisk"]
    node["driver_info"]["kernel_append_params"] += " ira.getty=ttyS1"
print(json.dumps(node))
EOF2
)
    uuid=$(api create-node "ira-vm-$label-$$" "$mac" "$fields") || { fail "$label: node created"; return 1; }
    NODE_UUID=$uuid
    # This scenario tests the BMC and virtual media path of a deploy; cleaning has its own
    # scenarios (lifecycle), so `provide` skips the cleaning boot here.
    api patch "$uuid" /automated_clean false
    api provision "$uuid" manage && api wait "$uuid" manageable 60 &&
        api provision "$uuid" provide && api wait "$uuid" available 60 ||
        { fail "$label: node available (power state read through the emulator)"; return 1; }
    check "$label: Ironic reads the domain's power state through the emulator (off)" \
        test "$(api field "$uuid" power_state)" = '"power off"'
    api set-image "$uuid" "http://127.0.0.1:$HTTP_PORT/rf.raw" "$(sha256sum "$HTTP_ROOT/rf.raw" | cut -d' ' -f1)" raw
    local t1=$SECONDS deployed=1
    api provision "$uuid" active
    if api wait "$uuid" active 300; then
        pass "$label: node deployed to 'active' from the virtual media ramdisk"
        echo "     deploy -> active: $((SECONDS - t1)) s"
    else
        fail "$label: node deployed to 'active' from the virtual media ramdisk"
        echo "     last_error: $(api field "$uuid" last_error)"
        deployed=0
    fi
    # The emulator uploaded the ISO it was given into the libvirt pool: it is Ironic's.
    RF_ISO=$(find "$SCRATCH/bmc/pool" -name "boot-$uuid*" | head -n 1)
    check "$label: the emulator fetched Ironic's ISO (boot-$uuid) into libvirt's pool" test -n "$RF_ISO"
    if [ -n "$RF_ISO" ]; then
        isoinfo -R -i "$RF_ISO" -x /isolinux/isolinux.cfg > "$SCRATCH/isolinux.cfg" 2>/dev/null
        grep -m1 -E '^\s*append' "$SCRATCH/isolinux.cfg" | cut -c1-300 | sed 's/^\s*/     isolinux.cfg: /'
        check "$label: the ISO's isolinux.cfg carries Ironic's ramdisk parameters (ipa-api-url, boot_method=vmedia)" \
            bash -c "grep -q 'ipa-api-url=$IRONIC_URL' '$SCRATCH/isolinux.cfg' && grep -q 'boot_method=vmedia' '$SCRATCH/isolinux.cfg'"
    fi
    [ "$deployed" = 1 ] || return 1
    check "$label: the agent in the CD-booted ramdisk ran the conductor's deploy steps" \
        grep -aq 'command=deploy.execute_deploy_step' "$con"
    check "$label: after the deploy the CD is ejected (no cdrom in the domain)" \
        bash -c "! virsh -q -c '$BMC_LIBVIRT_URI' domblklist 'ira-$label' --details | grep -q cdrom"
    check "$label: after the deploy the BMC's boot device is the disk (Hdd)" \
        bash -c "curl -sf '$BMC_URL$BMC_SYSTEM_ID' | grep -q '\"BootSourceOverrideTarget\": \"Hdd\"'"
    check "$label: the domain runs (powered on by Ironic after the deploy)" \
        test "$(bmc_domstate "$label")" = running
    api power "$uuid" "power off"
    local i
    for i in $(seq 1 60); do [ "$(bmc_domstate "$label")" = "shut off" ] && break; sleep 0.5; done
    check "$label: Ironic's power off stops the domain" test "$(bmc_domstate "$label")" = "shut off"
    check "$label: the disk holds the image byte for byte" \
        disk_holds_image "$VM_DIR/vd0.img" "$HTTP_ROOT/rf.raw"
    rm -f "$HTTP_ROOT/rf.raw"
    echo "     $label scenario total: $((SECONDS - t0)) s"
}

scenario_redfish_vmedia() {
    echo "== scenario: Redfish BMC (sushy-tools + libvirt): virtual media boot, deploy to 'active', power off"
    redfish_deploy redfish-vmedia || return
    local n
    n=$(bmc_dhcp_requests redfish-vmedia)
    echo "     DHCP requests captured on the VM's NIC: $n"
    # The positive control of the capture the DHCP-less scenario relies on.
    check "redfish-vmedia: the NIC capture holds the ramdisk's DHCP requests" test "${n:-0}" -gt 0
}

# DHCP-less boot from virtual media (issue 11): the node's network_data (a static
# address in QEMU's 10.0.2.0/24, not the one its DHCP server hands out) goes into the ISO
# Ironic builds, which is then a config drive (label config-2,
# openstack/latest/network_data.json); the agent's port is forwarded to that address only.
# Passing needs a ramdisk that configures its NIC from network_data.json and runs no DHCP.
scenario_redfish_dhcpless() {
    echo "== scenario: Redfish virtual media, DHCP-less: static IPv4 from network_data on the ISO's config drive"
    local ip=10.0.2.42 nd
    nd='{"links": [{"id": "port0", "type": "phy", "ethernet_mac_address": "@MAC@"}],
         "networks": [{"id": "prov", "type": "ipv4", "link": "port0",
                       "ip_address": "'$ip'", "netmask": "255.255.255.0",
                       "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}],
                       "network_id": "prov"}],
         "services": [{"type": "dns", "address": "10.0.2.3"}]}'
    local ok=0
    BMC_GUEST_IP=$ip redfish_deploy redfish-dhcpless "$nd" || ok=1
    if [ -n "${RF_ISO:-}" ] && [ -f "$RF_ISO" ]; then
        check "redfish-dhcpless: Ironic's ISO is a config drive (volume label config-2)" \
            bash -c "isoinfo -d -i '$RF_ISO' | grep -q 'Volume id: config-2'"
        isoinfo -R -i "$RF_ISO" -x /openstack/latest/network_data.json > "$SCRATCH/network_data.json" 2>/dev/null
        check "redfish-dhcpless: the ISO carries openstack/latest/network_data.json with $ip" \
            grep -q "\"$ip\"" "$SCRATCH/network_data.json"
    fi
    local n
    n=$(bmc_dhcp_requests redfish-dhcpless)
    echo "     DHCP requests captured on the VM's NIC: $n"
    check "redfish-dhcpless: no DHCP request left the VM" test "${n:-1}" = 0
    return $ok
}

# --- DHCP-less boot from virtual media -------------------------------------------------------
# What Ironic's redfish-virtual-media boot hands the ramdisk, made here the way Ironic makes
# it (no BMC emulator in this scenario): a CD labelled config-2 with
# openstack/latest/network_data.json (a static address in QEMU's 10.0.2.0/24 on an
# active-backup bond of the NIC, a VLAN on the bond, DNS) and an agent config file under
# etc/ironic-python-agent.d/, and a USB stick labelled ir-vfd-dev whose parameters.txt holds
# the API URL. The kernel line says boot_method=vmedia and a wrong ipa-api-url, so only the
# URL from parameters.txt reaches Ironic. QEMU records the NIC's traffic (filter-dump): no
# DHCP request may leave the VM, and the deploy must still reach `active`.
vmedia_media() { # DEPLOY_PREPARE hook: builds the media for deploy_node's $mac
    local dir=${VMEDIA_DIR:?}
    rm -rf "$dir/cd" "$dir/fd.img"
    mkdir -p "$dir/cd/openstack/latest" "$dir/cd/etc/ironic-python-agent.d"
    cat >"$dir/cd/openstack/latest/network_data.json" <<EOF
{"links": [
  {"id": "nic0", "type": "phy", "ethernet_mac_address": "$mac"},
  {"id": "bond0", "type": "bond", "bond_links": ["nic0"], "bond_mode": "active-backup",
   "bond_miimon": 100, "ethernet_mac_address": "$mac"},
  {"id": "prov-vlan", "type": "vlan", "vlan_link": "bond0", "vlan_id": 101}],
 "networks": [
  {"id": "prov", "type": "ipv4", "link": "bond0", "ip_address": "10.0.2.15",
   "netmask": "255.255.255.0",
   "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}]},
  {"id": "storage", "type": "ipv4", "link": "prov-vlan", "ip_address": "192.0.2.15/24"}],
 "services": [{"type": "dns", "address": "10.0.2.3"}]}
EOF
    printf '[DEFAULT]\nlookup_interval = 1\n' >"$dir/cd/etc/ironic-python-agent.d/vmedia-test.conf"
    genisoimage -quiet -R -J -V config-2 -o "$dir/config-2.iso" "$dir/cd" || return 1
    mkfs.vfat -C -n ir-vfd-dev "$dir/fd.img" 1440 >/dev/null 2>&1 || return 1
    printf 'ipa-api-url=%s\n' "$IRONIC_URL" >"$dir/parameters.txt"
    mcopy -i "$dir/fd.img" "$dir/parameters.txt" :: || return 1
}

# pcap_summary FILE: prints "FRAMES DHCP TCP_FROM_STATIC" for an Ethernet pcap: all
# frames, UDP packets to or from ports 67/68/546/547 (DHCP, DHCPv6), TCP from 10.0.2.15.
pcap_summary() {
    python3 - "$1" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
off, total, dhcp, tcp = 24, 0, 0, 0
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    frame = data[off + 16 : off + 16 + incl]
    off += 16 + incl
    total += 1
    etype = struct.unpack_from(">H", frame, 12)[0] if len(frame) >= 14 else 0
    if etype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto, src, l4 = frame[23], frame[26:30], frame[14 + ihl :]
    elif etype == 0x86DD and len(frame) >= 54:
        proto, src, l4 = frame[20], b"", frame[54:]
    else:
        continue
    if proto == 17 and len(l4) >= 4:
        sport, dport = struct.unpack_from(">HH", l4, 0)
        if {sport, dport} & {67, 68, 546, 547}:
            dhcp += 1
    if proto == 6 and src == bytes([10, 0, 2, 15]):
        tcp += 1
print(total, dhcp, tcp)
EOF
}

scenario_vmedia_network_data() {
    echo "== scenario: virtual media with network_data.json (static address, bond, VLAN), no DHCP"
    VMEDIA_DIR=$SCRATCH/vmedia
    mkdir -p "$VMEDIA_DIR"
    local d=$VMEDIA_DIR con sum
    make_gpt_image "$HTTP_ROOT/vmedia.raw" 16
    DEPLOY_PREPARE=vmedia_media \
        DEPLOY_VM_APPEND="boot_method=vmedia ipa-api-url=http://127.0.0.1:9" \
        VM_QEMU_ARGS="-drive file=$d/config-2.iso,if=none,id=vmcd,media=cdrom,readonly=on -device ide-cd,drive=vmcd,bus=ahci0.1 -device qemu-xhci,id=xhci -drive file=$d/fd.img,if=none,id=vmfd,format=raw,readonly=on -device usb-storage,drive=vmfd,bus=xhci.0 -object filter-dump,id=vmdump,netdev=net0,file=$d/net.pcap" \
        deploy_node vmedia vmedia.raw raw active
    con=$VM_SCRATCH/vmedia/console.log
    check "vmedia: the ramdisk applied network_data.json and started no DHCP client" \
        bash -c "grep -aq 'network configured from network_data.json; no DHCP' '$con' && ! grep -aq 'dhcp started' '$con'"
    check "vmedia: static address on the bond, VLAN bond0.101 with its address, default route" \
        bash -c "grep -aqE 'bond0 +inet 10.0.2.15/24' '$con' && grep -aqE 'bond0.101(@bond0)? +inet 192.0.2.15/24' '$con' && grep -aq 'route: default via 10.0.2.2 dev bond0' '$con'"
    check "vmedia: the agent read parameters.txt and copied the configuration from the CD" \
        bash -c "grep -aq 'booted from virtual media parameters_txt=true' '$con' && grep -aq 'vmedia-test.conf' '$con'"
    sum=$(pcap_summary "$d/net.pcap")
    echo "     NIC traffic (frames, DHCP packets, TCP packets from 10.0.2.15): $sum"
    # shellcheck disable=SC2086 # three numbers
    check "vmedia: no DHCP packet left the VM; the agent's traffic came from the static address" \
        bash -c 'set -- $1; [ "$2" = 0 ] && [ "$3" -gt 0 ]' _ "$sum"
    rm -f "$HTTP_ROOT/vmedia.raw"
}

# --- rescue -----------------------------------------------------------------------------
# baremetal: the real client from the Ironic venv, no auth (the suite's Ironic is noauth).
baremetal() { "$IRONIC_VENV/bin/baremetal" --os-auth-type none --os-endpoint "$IRONIC_URL" "$@"; }

# ironic_reconfigure SED-SCRIPT: restarts the suite's Ironic (same database, same ports)
# with its configuration changed by SED-SCRIPT; an empty script restores the original.
ironic_reconfigure() {
    local state=$SCRATCH/ironic n
    [ -f "$state/ironic.conf.orig" ] || cp "$state/ironic.conf" "$state/ironic.conf.orig"
    sed -e "${1:-}" "$state/ironic.conf.orig" > "$state/ironic.conf"
    n=$(grep -c "Successfully started conductor" "$state/ironic.log")
    stop_pid_file "$state/ironic.pid"
    local confs=(--config-file "$state/ironic.conf")
    [ ! -f "$state/redfish.conf" ] || confs+=(--config-file "$state/redfish.conf")
    "$IRONIC_VENV/bin/ironic" "${confs[@]}" >> "$state/ironic.stdout" 2>&1 &
    echo $! > "$state/ironic.pid"
    for _ in $(seq 1 240); do
        if [ "$(grep -c "Successfully started conductor" "$state/ironic.log")" -gt "$n" ] &&
            curl -sf -H 'X-OpenStack-Ironic-API-Version: latest' "$IRONIC_URL/v1/drivers" |
            grep -q fake-hardware; then
            return 0
        fi
        sleep 0.25
    done
    log "ironic did not come back after reconfiguring"
    return 1
}

# serial_login SOCKET USER PASSWORD: logs in on a serial console (a QEMU UNIX socket) and
# runs a shell command there; the transcript goes to SOCKET.log.
serial_login() {
    python3 - "$@" <<'EOF'
import socket, sys, time
path, user, password = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.settimeout(0.3)
seen = b""
def until(pattern, timeout):
    global seen
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pattern in seen:
            return True
        try:
            seen += s.recv(4096)
        except socket.timeout:
            pass
    return pattern in seen
def send(text):
    s.sendall(text.encode() + b"\r")
ok = False
for _ in range(20):  # the prompt may have gone out before we connected
    send("")
    if until(b"login:", 3):
        send(user)
        ok = until(b"assword:", 20)
        break
if ok:
    send(password)
    time.sleep(2)
    send("echo RESCUE-$((6*7)) $(id -u)")
    ok = until(b"RESCUE-42 0", 30)
open(path + ".log", "wb").write(seen)
sys.exit(0 if ok else 1)
EOF
}

# rescue_ssh_checks LABEL PASS SSHPORT: the rescue ramdisk's SSH server (a host port
# forwarded to its :22) lets 'rescue' in with PASS and runs a command (uid 0, the
# ramdisk's os-release, the deployed disk visible), and refuses a wrong password.
rescue_ssh_checks() {
    local label=$1 pass=$2 t1 out
    local ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20
        -o PreferredAuthentications=password -o PubkeyAuthentication=no -o LogLevel=ERROR -p "$3")
    t1=$SECONDS
    out=$(timeout 120 sshpass -p "$pass" ssh "${ssh_opts[@]}" rescue@127.0.0.1 \
        'id -u; cat /etc/os-release; ls /sys/block' 2>&1)
    echo "$out" | sed -n 's/^PRETTY_NAME=/     logged in over SSH: /p'
    echo "     SSH login and command: $((SECONDS - t1)) s"
    grep -q "ira ramdisk" <<<"$out" || echo "$out" | tail -n 5 | sed 's/^/     ssh: /'
    check "$label: 'rescue' logs in over SSH and runs a command" \
        bash -c 'grep -qx 0 <<<"$1" && grep -q "ira ramdisk" <<<"$1" && grep -qx vda <<<"$1"' _ "$out"
    check "$label: a wrong password is refused over SSH" \
        bash -c '! timeout 60 sshpass -p wrong ssh "$@" rescue@127.0.0.1 true 2>/dev/null' _ "${ssh_opts[@]}"
}

# rescue_serial_check LABEL PASS SOCK: 'rescue' logs in with PASS on the serial console
# behind the UNIX socket SOCK (the ramdisk's getty on ttyS1) and runs a command.
rescue_serial_check() {
    local label=$1 t1=$SECONDS
    if serial_login "$3" rescue "$2"; then
        pass "$label: 'rescue' logs in on the serial console (ttyS1) and runs a command ($((SECONDS - t1)) s)"
    else
        fail "$label: 'rescue' logs in on the serial console (ttyS1) and runs a command"
        tail -c 600 "$3.log" | sed 's/^/     | /'
    fi
}

scenario_rescue() {
    echo "== scenario: rescue a deployed node; log in as 'rescue' over SSH and on the serial console; unrescue"
    local pass="ira-Rescue-$RANDOM" sshport port t0 t00 t mac uuid con out
    make_gpt_image "$HTTP_ROOT/rescue.raw" 16
    t0=$SECONDS t00=$SECONDS
    DEPLOY_PREPARE=rescue_interface deploy_node rescue rescue.raw raw active || return
    uuid=$NODE_UUID
    echo "     deploy: $((SECONDS - t0)) s"
    # The fake boot interface has no validate_rescue, which Ironic calls only when it
    # manages the agent's boot; this script boots the VM itself anyway.
    ironic_reconfigure 's/^\[agent\]$/[agent]\nmanage_agent_boot = false/' ||
        { fail "rescue: Ironic restarted without managed agent boot"; return; }
    mac=$(baremetal port list --node "$uuid" -f value -c Address | head -n 1)
    t0=$SECONDS
    if ! baremetal node rescue "$uuid" --rescue-password "$pass"; then
        fail "rescue: baremetal node rescue accepted"
        ironic_reconfigure ""
        return
    fi
    check "rescue: node waits in 'rescue wait'" api wait "$uuid" "rescue wait" 60
    port=$(vm_free_port)
    sshport=$(vm_free_port)
    VM_DISK_SIZE=2G VM_MAC=$mac VM_HOSTPORT=$port VM_NIC_OPTS=",hostfwd=tcp:127.0.0.1:$sshport-:22" \
        VM_QEMU_ARGS="-chardev socket,id=ser1,path=$VM_SCRATCH/rescue/ttyS1.sock,server=on,wait=off -device isa-serial,chardev=ser1" \
        VM_APPEND="ipa-api-url=$IRONIC_URL ira.fwd=$IRONIC_API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$port ira.getty=ttyS1" \
        vm_boot rescue
    con=$VM_SCRATCH/rescue/console.log
    if api wait "$uuid" rescue 240; then
        pass "rescue: node reaches 'rescue' after the agent's finalize_rescue"
        echo "     rescue requested -> rescue: $((SECONDS - t0)) s (QEMU start -> rescue: $(vm_elapsed rescue) s)"
    else
        fail "rescue: node reaches 'rescue' after the agent's finalize_rescue"
        echo "     last_error: $(api field "$uuid" last_error)"
    fi
    check "rescue: the conductor sent finalize_rescue; the agent exited and was not restarted" \
        bash -c "grep -aq 'command=rescue.finalize_rescue' '$con' && grep -aq 'after finalizing rescue; not restarting it' '$con'"
    check "rescue: the conductor removed the rescue password from the node" \
        test "$(api field "$uuid" instance_info.rescue_password)" = null
    if t=$(vm_wait_console 'rescue: started dropbear' 60 rescue); then
        echo "     QEMU start -> SSH server up: $t s"
        rescue_ssh_checks rescue "$pass" "$sshport"
    else
        fail "rescue: the SSH server started in the ramdisk"
    fi
    rescue_serial_check rescue "$pass" "$VM_SCRATCH/rescue/ttyS1.sock"
    t0=$SECONDS
    baremetal node unrescue "$uuid" || fail "rescue: baremetal node unrescue accepted"
    if api wait "$uuid" active 120; then
        pass "rescue: unrescue brings the node back to 'active' ($((SECONDS - t0)) s)"
    else
        fail "rescue: unrescue brings the node back to 'active'"
    fi
    vm_stop rescue
    ironic_reconfigure "" || fail "rescue: Ironic restarted with its first configuration"
    rm -f "$HTTP_ROOT/rescue.raw"
    echo "     rescue scenario total: $((SECONDS - t00)) s"
}

# Rescue on the Redfish BMC: a redfish node deployed to `active` (redfish_deploy, which
# leaves it powered off) is rescued with Ironic's agent rescue interface. Ironic's
# redfish-virtual-media boot builds the rescue ISO from driver_info rescue_kernel and
# rescue_ramdisk (ira's own kernel and initramfs) and the emulator boots the domain from
# it; no restart of Ironic and no QEMU started by this script. The domain forwards a host
# port to its :22 and has a second serial port (ttyS1) on a UNIX socket.
scenario_redfish_rescue() {
    echo "== scenario: Redfish virtual media rescue: deploy, rescue, log in as 'rescue' over SSH and on ttyS1, unrescue"
    local label=redfish-rescue pass="ira-Rescue-$RANDOM" sshport t0 t1 uuid con off out new
    sshport=$(vm_free_port)
    local sock=$VM_SCRATCH/$label/ttyS1.sock
    t0=$SECONDS
    RF_RESCUE=1 BMC_SSHPORT=$sshport BMC_SERIAL_SOCK=$sock redfish_deploy "$label" || return
    uuid=$NODE_UUID
    con=$VM_DIR/console.log
    # Ironic's redfish-virtual-media boot powers the node off (and ejects the CD) when it
    # cleans up the ramdisk's boot, which the agent rescue interface does right after
    # finalize_rescue: the rescued node would be off. Unless the node is fast-track-able
    # then (powered on, the agent's heartbeat recent): fast_track in the node's driver_info
    # (this node only) keeps the rescue ramdisk running. Unrescue powers off first, so the
    # CD is ejected then.
    baremetal node set "$uuid" --driver-info fast_track=true ||
        { fail "$label: driver_info fast_track set"; return 1; }
    # The console log is appended to across power cycles: the rescue boot's part starts here.
    off=$(stat -c %s "$con")
    t1=$SECONDS
    if ! baremetal node rescue "$uuid" --rescue-password "$pass"; then
        fail "$label: baremetal node rescue accepted"
        return 1
    fi
    if api wait "$uuid" rescue 300; then
        pass "$label: node reaches 'rescue' after the agent's finalize_rescue"
        echo "     rescue requested -> rescue: $((SECONDS - t1)) s"
    else
        fail "$label: node reaches 'rescue' after the agent's finalize_rescue"
        echo "     last_error: $(api field "$uuid" last_error)"
        return 1
    fi
    new=$SCRATCH/$label-rescue-console.log
    tail -c +"$((off + 1))" "$con" > "$new"
    check "$label: the domain booted the rescue ISO from virtual media (boot_method=vmedia)" \
        grep -aq 'booted from virtual media' "$new"
    check "$label: the conductor sent finalize_rescue; the agent exited and was not restarted" \
        bash -c "grep -aq 'command=rescue.finalize_rescue' '$new' && grep -aq 'after finalizing rescue; not restarting it' '$new'"
    check "$label: the conductor removed the rescue password from the node" \
        test "$(api field "$uuid" instance_info.rescue_password)" = null
    check "$label: the rescued domain runs (Ironic's power state: on), the rescue ISO in its CD drive" \
        bash -c "[ \"\$(virsh -q -c '$BMC_LIBVIRT_URI' domstate 'ira-$label' | head -n 1)\" = running ] &&
            [ '$(api field "$uuid" power_state)' = '\"power on\"' ] &&
            virsh -q -c '$BMC_LIBVIRT_URI' domblklist 'ira-$label' --details | grep -q cdrom"
    local i
    for i in $(seq 1 120); do
        tail -c +"$((off + 1))" "$con" | grep -aq 'rescue: started dropbear' && break
        sleep 0.5
    done
    if tail -c +"$((off + 1))" "$con" | grep -aq 'rescue: started dropbear'; then
        rescue_ssh_checks "$label" "$pass" "$sshport"
    else
        fail "$label: the SSH server started in the rescue ramdisk"
    fi
    rescue_serial_check "$label" "$pass" "$sock"
    t1=$SECONDS
    baremetal node unrescue "$uuid" || fail "$label: baremetal node unrescue accepted"
    if api wait "$uuid" active 180; then
        pass "$label: unrescue brings the node back to 'active' ($((SECONDS - t1)) s)"
    else
        fail "$label: unrescue brings the node back to 'active'"
        echo "     last_error: $(api field "$uuid" last_error)"
    fi
    check "$label: after unrescue the domain runs with no CD, booting the disk (Hdd)" \
        bash -c "[ \"\$(virsh -q -c '$BMC_LIBVIRT_URI' domstate 'ira-$label' | head -n 1)\" = running ] &&
            ! virsh -q -c '$BMC_LIBVIRT_URI' domblklist 'ira-$label' --details | grep -q cdrom &&
            curl -sf '$BMC_URL$BMC_SYSTEM_ID' | grep -q '\"BootSourceOverrideTarget\": \"Hdd\"'"
    api power "$uuid" "power off"
    echo "     $label scenario total (deploy, rescue, logins, unrescue): $((SECONDS - t0)) s"
}

# rescue_interface UUID: the node rescues through the agent (deploy_node hook).
rescue_interface() {
    api patch "$1" /rescue_interface '"agent"'
}

# The inspection VM's disks keep vm.sh's default size.
VM_DISK_BYTES=$((1 << 30))
# E2E_SCENARIOS picks scenarios (default: all but `rescue`, whose flow redfish_rescue
# runs on the Redfish BMC, in this order).
for sc in ${E2E_SCENARIOS:-inspection lifecycle lifecycle_ro deploy_raw deploy_formats deploy_refused deploy_exec_installer deploy_uefi deploy_partition redfish_vmedia redfish_dhcpless redfish_rescue vmedia_network_data}; do
    "scenario_$sc"
done
echo "vm-e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# The VM end-to-end suite: the real Ironic (from PyPI, 127.0.0.1, sqlite, fake hardware)
# drives ira inside its own ramdisk booted in QEMU (TCG unless KVM really works), with a
# virtio, an NVMe and a SATA disk, user-mode networking and the agent's port forwarded.
#
# Scenarios:
#   inspection  node in `inspect wait`; the VM boots with ipa-inspection-callback-url;
#               Ironic stores the inventory: the VM's three disks (names, sizes, serials,
#               rotational) and its NIC (MAC) must be in it; node -> manageable
#   deploy-*    node in `wait call-back` with a root device hint (the virtio disk's
#               serial); the VM boots with ipa-api-url; the conductor drives lookup,
#               heartbeat (auto-TLS), get_deploy_steps, write_image, get_partition_uuids,
#               install_bootloader and power off:
#               raw (1 GiB, DEPLOY_RAW_MIB), qcow2 (format from the bytes), zstd -> active
#               with the disk checked byte for byte; a checksum mismatch and a qcow2 with a
#               backing file -> `deploy failed` with the agent's error in last_error and
#               nothing bootable (or nothing at all) on the disk
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

IRONIC_BIOS_BOOTLOADER=true ironic_up "$SCRATCH/ironic" false || { FAILED_ANY=1; exit 1; }

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
# --- deploy -------------------------------------------------------------------------------
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
    api provision "$NODE_UUID" manage && api wait "$NODE_UUID" manageable 60 &&
        api provision "$NODE_UUID" provide && api wait "$NODE_UUID" available 60 ||
        { fail "$label: node available"; return 1; }
    api set-image "$NODE_UUID" "http://127.0.0.1:$HTTP_PORT/$image" "$sha" "$format"
    [ -n "${DEPLOY_PREPARE:-}" ] && "$DEPLOY_PREPARE" "$NODE_UUID"
    api provision "$NODE_UUID" active ${DEPLOY_EXTRA:+"$DEPLOY_EXTRA"}
    api wait "$NODE_UUID" "wait call-back" 60 >/dev/null 2>&1 || { fail "$label: node waits in 'wait call-back'"; return 1; }
    port=$(vm_free_port)
    VM_DISK_SIZE=2G VM_MAC=$mac VM_HOSTPORT=$port \
        VM_APPEND="ipa-api-url=$IRONIC_URL ira.fwd=$IRONIC_API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$port ipa-image-download-connection-retry-interval=1" \
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
    "$IRONIC_VENV/bin/ironic" --config-file "$state/ironic.conf" >> "$state/ironic.stdout" 2>&1 &
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

scenario_rescue() {
    echo "== scenario: rescue a deployed node; log in as 'rescue' over SSH and on the serial console; unrescue"
    local pass="ira-Rescue-$RANDOM" sshport port t0 t mac uuid con out
    local ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20
        -o PreferredAuthentications=password -o PubkeyAuthentication=no -o LogLevel=ERROR)
    make_gpt_image "$HTTP_ROOT/rescue.raw" 16
    t0=$SECONDS
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
    ssh_opts+=(-p "$sshport")
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
        t0=$SECONDS
        out=$(timeout 120 sshpass -p "$pass" ssh "${ssh_opts[@]}" rescue@127.0.0.1 \
            'id -u; cat /etc/os-release; ls /sys/block' 2>&1)
        echo "$out" | sed -n 's/^PRETTY_NAME=/     logged in over SSH: /p'
        echo "     SSH login and command: $((SECONDS - t0)) s"
        # (uid 0, the ramdisk's os-release, the deployed disk visible)
        check "rescue: 'rescue' logs in over SSH with the rescue password and runs a command" \
            bash -c 'grep -qx 0 <<<"$1" && grep -q "ira ramdisk" <<<"$1" && grep -qx vda <<<"$1"' _ "$out"
        check "rescue: a wrong password is refused over SSH" \
            bash -c '! timeout 60 sshpass -p wrong ssh "$@" rescue@127.0.0.1 true 2>/dev/null' _ "${ssh_opts[@]}"
    else
        fail "rescue: the SSH server started in the ramdisk"
    fi
    t0=$SECONDS
    if serial_login "$VM_SCRATCH/rescue/ttyS1.sock" rescue "$pass"; then
        pass "rescue: 'rescue' logs in on the serial console and runs a command ($((SECONDS - t0)) s)"
    else
        fail "rescue: 'rescue' logs in on the serial console and runs a command"
        tail -c 600 "$VM_SCRATCH/rescue/ttyS1.sock.log" | sed 's/^/     | /'
    fi
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
}

# rescue_interface UUID: the node rescues through the agent (deploy_node hook).
rescue_interface() {
    api patch "$1" /rescue_interface '"agent"'
}

# The inspection VM's disks keep vm.sh's default size.
VM_DISK_BYTES=$((1 << 30))
# E2E_SCENARIOS picks scenarios (default: all, in this order).
for sc in ${E2E_SCENARIOS:-inspection deploy_raw deploy_formats deploy_refused deploy_uefi deploy_partition rescue}; do
    "scenario_$sc"
done
echo "vm-e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# A node's whole life on ira, driven by the real Ironic (from PyPI) in its DEFAULT cleaning
# configuration: [conductor]automated_clean = true, no clean-step priority overrides and
# the [deploy] erase options left alone, so the conductor runs erase_devices_metadata (99)
# then erase_devices (10) with Ironic's defaults in driver_internal_info (1 overwrite
# pass, zeroize, 4 disks at a time, read-only devices not skipped).
#
#   enroll -> manage -> inspect -> provide (cleaning) -> available -> deploy -> active
#   -> undeploy (cleaning) -> available; then one disk made read-only -> manage ->
#   provide -> `clean failed` naming that disk.
#
# ira runs on this machine with --no-power-off and a device allow-list naming exactly two
# loop devices (256 MiB sparse files, filled with a marker string before cleaning). Power
# is fake-hardware, so the conductor's reboots and power-offs never reach the agent: every
# time a real node would boot the ramdisk (inspection, each cleaning, the deploy) a fresh
# ira process is started, and it is stopped (by PID) when the conductor would power the
# node off. The agent gets a --sysroot that is this machine's /sys, /proc, /dev and /run
# without sys/firmware/efi, so install_bootloader sees a BIOS machine and leaves this
# machine's boot variables alone (as deploy_step.sh does).
#
#   IRA_BIN   the binary to test (default: the newer of the musl release and debug builds)
#   KEEP=1    keep the scratch dir after the run
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
. "$HERE/suite.sh"
for tool in losetup blockdev sgdisk mkfs.ext4 cmp; do
    command -v $tool >/dev/null || { echo "$tool is required" >&2; exit 1; }
done


DISK_MB=256
ensure_ironic_venv || exit 1
STATE=$(mktemp -d /var/tmp/ira-lifecycle.XXXXXX)
LOOPS=()
cleanup() {
    stop_pid_file "$STATE/ira.pid"
    ironic_down "$STATE"
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    scratch_done "$STATE"
}
trap cleanup EXIT

# --- this machine as the agent's root, without EFI firmware -------------------------------
make_sysroot() {
    local root=$1 e
    mkdir -p "$root/sys/firmware"
    ln -s /proc "$root/proc"; ln -s /dev "$root/dev"; ln -s /run "$root/run"
    for e in /sys/*; do [ "${e##*/}" = firmware ] || ln -s "$e" "$root/sys/${e##*/}"; done
    for e in /sys/firmware/*; do
        case ${e##*/} in efi|'*') ;; *) ln -s "$e" "$root/sys/firmware/${e##*/}" ;; esac
    done
}

# --- the image: GPT, partition 1 = ext4 root (24 MiB at 1 MiB) -----------------------------
make_image() {
    local img=$1 stage=$STATE/stage
    mkdir -p "$stage/etc"
    printf 'lifecycle image\n' > "$stage/etc/hostname"
    truncate -s 32M "$img"
    sgdisk -n 1:2048:+24M -t 1:8300 -c 1:root "$img" >/dev/null 2>&1 || return 1
    mkfs.ext4 -q -F -L img-root -d "$stage" "$STATE/root.fs" 24M >/dev/null || return 1
    dd if="$STATE/root.fs" of="$img" bs=1M seek=1 conv=notrunc status=none
}

# The marker helpers (marker_fill, marker_count, all_zero) are lib.sh's.
fill_marker() { marker_fill "$1" "$DISK_MB"; }
# first_sector_zero DEV: the first 512 bytes of DEV are zero (the metadata wipe's mark).
first_sector_zero() {
    dd if="$1" bs=512 count=1 iflag=direct status=none | cmp -s -n 512 - /dev/zero
}

# --- the agent, one process per "boot" ------------------------------------------------------
BOOTS=0
agent_boot() {  # agent_boot NAME CMDLINE...: a fresh ira, as a ramdisk boot would start it
    local name=$1; shift
    BOOTS=$((BOOTS + 1))
    AGENT_LOG=$STATE/ira-$BOOTS-$name.log
    printf '%s\n' "$* ipa-debug=1 $IRA_TEST_CMDLINE" > "$STATE/cmdline-$BOOTS"
    "$IRA_BIN" --cmdline-file "$STATE/cmdline-$BOOTS" --sysroot "$SYSROOT" \
        --device-allowlist "$ALLOW" --no-power-off --listen-host 127.0.0.1 \
        --listen-port "$AGENT_PORT" --debug > "$AGENT_LOG" 2>&1 &
    echo $! > "$STATE/ira.pid"
}
agent_boot_lookup() {  # agent_boot_lookup NAME: a ramdisk that looks up and heartbeats
    AGENT_PORT=$(free_port)
    agent_boot "$1" "ipa-api-url=$IRONIC_URL ipa-advertise-host=127.0.0.1" \
        "ipa-advertise-port=$AGENT_PORT ipa-lookup-interval=0.2"
}
agent_off() { stop_pid_file "$STATE/ira.pid"; }
completed() { grep 'step completed' "$AGENT_LOG" | grep -c "step=\"$1\""; }
# phase NAME TARGET TIMEOUT: waits for the node to reach TARGET, timing it.
phase() {
    local name=$1 target=$2 timeout=$3 t0=$SECONDS
    if api wait "$NODE" "$target" "$timeout" 2>"$STATE/wait-$name.log"; then
        pass "lifecycle: $name ends in '$target' ($((SECONDS - t0)) s)"
        return 0
    fi
    fail "lifecycle: $name ends in '$target': $(tail -n1 "$STATE/wait-$name.log")"
    return 1
}

finish() {
    leaked=$(cat "$STATE"/ira-*.log | grep -cE "agent_token[\"']?[=:] *[\"']?[A-Za-z0-9_-]{32,}")
    check "lifecycle: agent never logged the token" test "$leaked" = 0
    if [ $FAILED != 0 ]; then
        echo "---- tail of the last agent log ($AGENT_LOG)"; tail -n 30 "$AGENT_LOG"
        echo "---- conductor errors"; grep -E ' (ERROR|WARNING) ' "$STATE/ironic.log" | tail -n 20
    fi
    api delete "$NODE" >/dev/null 2>&1
    echo "lifecycle: $PASSED passed, $FAILED failed ($SECONDS s)"
    rc=$((FAILED != 0))
    exit $rc
}
# fatal: the node is not where the next phase starts; report the rest as not run.
fatal() { agent_off; fail "lifecycle: the phases after $1 did not run"; finish; }

ironic_up "$STATE" true || { rc=1; exit 1; }
SYSROOT=$STATE/sysroot
make_sysroot "$SYSROOT"
make_image "$HTTP_ROOT/disk.img" || { rc=1; exit 1; }
IMG_BYTES=$(stat -c %s "$HTTP_ROOT/disk.img")
SHA=$(sha256sum "$HTTP_ROOT/disk.img" | cut -d' ' -f1)
for i in 0 1; do
    truncate -s "${DISK_MB}M" "$STATE/disk$i.img"
    LOOPS+=("$(losetup --find --show "$STATE/disk$i.img")") || { rc=1; exit 1; }
done
ALLOW="${LOOPS[0]},${LOOPS[1]}"
log "disks: ${LOOPS[*]}"

echo "== scenario: a node's whole life with automated cleaning in Ironic's default configuration"
check "lifecycle: the conductor runs with automated_clean = true" \
    grep -qx 'automated_clean = true' "$STATE/ironic.conf"
"$IRA_BIN" inventory --sysroot "$SYSROOT" --device-allowlist "$ALLOW" \
    > "$STATE/inventory.json" 2>"$STATE/inventory.log"
read -r MAC DISKS < <(python3 - "$STATE/inventory.json" <<'EOF'
import json, sys
inv = json.load(open(sys.argv[1]))
print(inv["interfaces"][0]["mac_address"], ",".join(d["name"] for d in inv["disks"]))
EOF
)
check "lifecycle: the agent lists exactly the two loop devices ($DISKS)" \
    test "$DISKS" = "$ALLOW"

NODE=$(api create-node "ira-lifecycle-$$" "$MAC") || { rc=1; exit 1; }
api provision "$NODE" manage && phase manage manageable 60 || { rc=1; exit 1; }

# --- inspection: unmanaged (fake boot), the agent posts to /v1/continue_inspection ---------
api provision "$NODE" inspect
api wait "$NODE" "inspect wait" 30 2>/dev/null
AGENT_PORT=$(free_port)
agent_boot inspect "ipa-inspection-callback-url=$IRONIC_URL/v1/continue_inspection" \
    "BOOTIF=01-${MAC//:/-}"
phase inspect manageable 90
agent_off
STORED=$(api inventory "$NODE" | python3 -c \
    'import json,sys; print(",".join(d["name"] for d in json.load(sys.stdin)["inventory"]["disks"]))')
check "lifecycle: inspection stored both loop devices ($STORED)" test "$STORED" = "$ALLOW"
api patch "$NODE" /properties/root_device "{\"name\": \"${LOOPS[0]}\"}"

# --- provide: automated cleaning, both steps, defaults -------------------------------------
for l in "${LOOPS[@]}"; do fill_marker "$l"; done
check "lifecycle: both disks carry the marker before cleaning" \
    test "$(marker_count "${LOOPS[0]}")/$(marker_count "${LOOPS[1]}")" = "$DISK_MB/$DISK_MB"
api provision "$NODE" provide
api wait "$NODE" "clean wait" 60 2>/dev/null
agent_boot_lookup clean-1
phase provide available 120 || fatal provide
CLEAN1_LOG=$AGENT_LOG
agent_off
check "lifecycle: after cleaning the node has no last_error and no clean_step left" \
    test "$(api field "$NODE" last_error)/$(api field "$NODE" clean_step)" = "null/{}"
check "lifecycle: the agent ran erase_devices_metadata then erase_devices" \
    test "$(completed erase_devices_metadata)/$(completed erase_devices)" = 1/1
ORDER=$(grep 'executing step' "$CLEAN1_LOG" | grep -m1 -oE 'step="[a-z_]+"')
check "lifecycle: erase_devices_metadata (99) ran first ($ORDER)" test "$ORDER" = 'step="erase_devices_metadata"'
# The conductor's own plan, as it logs it when cleaning starts: exactly the two default
# in-band steps, in priority order (nothing overridden, nothing out-of-band).
PLAN=$(grep -m1 -oE "Executing automated cleaning on node $NODE, remaining steps: .*" \
    "$STATE/ironic.log" | python3 -c '
import ast, sys
steps = ast.literal_eval(sys.stdin.read().split("remaining steps: ", 1)[1])
print(" ".join("%s.%s:%s" % (s["interface"], s["step"], s["priority"]) for s in steps))')
check "lifecycle: the conductor planned deploy.erase_devices_metadata:99 deploy.erase_devices:10 ($PLAN)" \
    test "$PLAN" = "deploy.erase_devices_metadata:99 deploy.erase_devices:10"
for l in "${LOOPS[@]}"; do
    check "lifecycle: the metadata wipe zeroed $l's first sector" first_sector_zero "$l"
done
DII=$(api field "$NODE" driver_internal_info | python3 -c '
import json, sys
d = json.load(sys.stdin)
keys = ("agent_erase_devices_iterations", "agent_erase_devices_zeroize", "disk_erasure_concurrency",
        "agent_erase_skip_read_only")
print(" ".join(f"{k}={json.dumps(d.get(k))}" for k in keys))')
check "lifecycle: the conductor sent its default erase options ($DII)" test "$DII" = \
    "agent_erase_devices_iterations=1 agent_erase_devices_zeroize=true disk_erasure_concurrency=4 agent_erase_skip_read_only=false"
for l in "${LOOPS[@]}"; do
    check "lifecycle: $l is all zeros after cleaning (no marker left: $(marker_count "$l") MiB)" \
        all_zero "$l" "$DISK_MB"
done

# --- deploy a whole-disk image to the first disk ------------------------------------------
api set-image "$NODE" "http://127.0.0.1:$HTTP_PORT/disk.img" "$SHA" raw
api provision "$NODE" active
api wait "$NODE" "wait call-back" 60 2>/dev/null
agent_boot_lookup deploy
phase deploy active 120 || fatal deploy
agent_off
# The agent moves the image's backup GPT to the end of the disk (as IPA does), which
# rewrites both GPT headers: the partition's bytes must be the image's, and the table valid.
check "lifecycle: the image's root partition is on the install device ${LOOPS[0]}" \
    bash -c "dd if=${LOOPS[0]} bs=1M skip=1 count=24 iflag=direct status=none |
        cmp -s - <(dd if=$HTTP_ROOT/disk.img bs=1M skip=1 count=24 status=none)"
PARTS=$(sgdisk -p "${LOOPS[0]}" 2>/dev/null | awk '$1 == 1 {print $2 "-" $NF}')
check "lifecycle: ${LOOPS[0]} has the image's GPT, partition 1 'root' at sector 2048 ($PARTS)" \
    test "$PARTS" = 2048-root
check "lifecycle: the other disk ${LOOPS[1]} stayed zero" all_zero "${LOOPS[1]}" "$DISK_MB"

# --- undeploy: cleaning again -------------------------------------------------------------
api provision "$NODE" deleted
api wait "$NODE" "clean wait" 60 2>/dev/null
agent_boot_lookup clean-2
phase undeploy available 120 || fatal undeploy
agent_off
check "lifecycle: undeploy cleaning ran both steps" \
    test "$(completed erase_devices_metadata)/$(completed erase_devices)" = 1/1
for l in "${LOOPS[@]}"; do check "lifecycle: $l is all zeros after undeploy" all_zero "$l" "$DISK_MB"; done

# --- a disk that cannot be erased: read-only, erase_skip_read_only = false -----------------
for l in "${LOOPS[@]}"; do fill_marker "$l"; done
blockdev --setro "${LOOPS[1]}"
api provision "$NODE" manage && api wait "$NODE" manageable 60 2>/dev/null
api provision "$NODE" provide
api wait "$NODE" "clean wait" 60 2>/dev/null
agent_boot_lookup clean-ro
phase "provide with a read-only disk" "clean failed" 120
agent_off
ERR=$(api field "$NODE" last_error)
echo "     last_error: $ERR"
has() { grep -qiE -- "$1" <<<"$ERR"; }
lacks() { ! has "$1"; }
check "lifecycle: last_error names the read-only disk ${LOOPS[1]}" has "${LOOPS[1]}\b"
check "lifecycle: last_error gives the reason (read-only)" has 'read.?only'
check "lifecycle: last_error is not a missing method" lacks 'could not find method|not implemented'
check "lifecycle: the writable disk ${LOOPS[0]} was still erased" all_zero "${LOOPS[0]}" "$DISK_MB"
check "lifecycle: the read-only disk ${LOOPS[1]} was not touched (marker in every MiB)" \
    test "$(marker_count "${LOOPS[1]}")" = "$DISK_MB"
blockdev --setrw "${LOOPS[1]}"

finish

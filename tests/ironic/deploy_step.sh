#!/usr/bin/env bash
# A user-requested in-band deploy step run by the real Ironic conductor: a node is
# deployed with `deploy_steps` asking for the example vendor's `example_write_files`
# (priority 75) and the generic `inject_files` (priority 74). ira runs on this machine;
# the install device is a loop device (the only device in its allow-list) and the image is
# a GPT disk with one ext4 root filesystem. Ironic runs with its default automated
# cleaning, so the agent first cleans the node (provide). After `write_image` the conductor runs both
# steps on the agent, which mount the instance root and write into it; the node goes to
# `active` and the files are read back from the loop device with debugfs.
#
# The example vendor manager only claims machines whose SMBIOS manufacturer is "Example
# Corp", so ira gets a --sysroot that is this machine's /sys, /proc, /dev and /run with
# sys/class/dmi/id replaced and sys/firmware/efi left out: the conductor asks for
# image.install_bootloader (UEFI node), and the agent then sees a BIOS-booted machine and
# leaves the boot variables alone, so nothing touches this machine's firmware.
#
#   IRA_BIN   the binary to test (default: the newer of the musl release and debug builds)
#   KEEP=1    keep the scratch dir after the run
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
. "$HERE/suite.sh"
for tool in losetup sgdisk mkfs.ext4 debugfs; do
    command -v $tool >/dev/null || { echo "$tool is required" >&2; exit 1; }
done


ensure_ironic_venv || exit 1
STATE=$(mktemp -d /var/tmp/ira-deploy-step.XXXXXX)
LOOP=
cleanup() {
    stop_pid_file "$STATE/ira.pid"
    ironic_down "$STATE"
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
    scratch_done "$STATE"
}
trap cleanup EXIT

# --- the sysroot: this machine, with an "Example Corp" SMBIOS identity -------------------
make_sysroot() {
    local root=$1 e
    mkdir -p "$root/sys/class/dmi/id" "$root/sys/firmware"
    ln -s /proc "$root/proc"; ln -s /dev "$root/dev"; ln -s /run "$root/run"
    for e in /sys/*; do
        case ${e##*/} in class|firmware) ;; *) ln -s "$e" "$root/sys/${e##*/}" ;; esac
    done
    for e in /sys/class/*; do [ "${e##*/}" = dmi ] || ln -s "$e" "$root/sys/class/${e##*/}"; done
    for e in /sys/firmware/*; do
        case ${e##*/} in dmi|efi|'*') ;; *) ln -s "$e" "$root/sys/firmware/${e##*/}" ;; esac
    done
    printf 'Example Corp\n' > "$root/sys/class/dmi/id/sys_vendor"
    printf 'Box 9000\n' > "$root/sys/class/dmi/id/product_name"
    printf 'EX-0001\n' > "$root/sys/class/dmi/id/product_serial"
    printf 'Example BIOS Inc\n' > "$root/sys/class/dmi/id/bios_vendor"
    printf '2.4.1\n' > "$root/sys/class/dmi/id/bios_version"
    printf '03/15/2024\n' > "$root/sys/class/dmi/id/bios_date"
}

# --- the image: GPT, partition 1 = ext4 root (48 MiB at 1 MiB) ---------------------------
make_image() {
    local img=$1 stage=$STATE/stage
    mkdir -p "$stage/etc"
    printf 'image\n' > "$stage/etc/hostname"
    printf 'original motd\n' > "$stage/etc/motd"
    truncate -s 64M "$img"
    sgdisk -n 1:2048:+48M -t 1:8300 -c 1:root "$img" >/dev/null 2>&1 || return 1
    mkfs.ext4 -q -F -L img-root -d "$stage" "$STATE/root.fs" 48M >/dev/null || return 1
    dd if="$STATE/root.fs" of="$img" bs=1M seek=1 conv=notrunc status=none
}

# ext_read: copies the written root filesystem off the loop device (direct I/O);
# ext_cat PATH / ext_mode PATH read a file and its permission bits from that copy.
ext_read() {
    dd if="$LOOP" of="$STATE/check.fs" bs=1M skip=1 count=48 iflag=direct status=none
}
ext_cat() {
    debugfs -R "cat $1" "$STATE/check.fs" 2>/dev/null
}
ext_mode() {
    debugfs -R "stat $1" "$STATE/check.fs" 2>/dev/null | grep -oE 'Mode: +[0-7]+' | grep -oE '[0-7]+$'
}

ironic_up "$STATE" true || { rc=1; exit 1; }
SYSROOT=$STATE/sysroot
make_sysroot "$SYSROOT"
make_image "$HTTP_ROOT/disk.img" || { rc=1; exit 1; }
SHA=$(sha256sum "$HTTP_ROOT/disk.img" | cut -d' ' -f1)
truncate -s 256M "$STATE/target.img"
LOOP=$(losetup --find --show --partscan "$STATE/target.img") || { rc=1; exit 1; }
log "install device: $LOOP"

echo "== scenario: user-requested in-band deploy steps (example_write_files, inject_files)"
"$IRA_BIN" inventory --sysroot "$SYSROOT" --device-allowlist "$LOOP" > "$STATE/inventory.json" 2>"$STATE/inventory.log"
read -r MAC VENDOR DISKS < <(python3 - "$STATE/inventory.json" <<'EOF'
import json, sys
inv = json.load(open(sys.argv[1]))
print(inv["interfaces"][0]["mac_address"], inv["system_vendor"]["manufacturer"].replace(" ", "_"),
      ",".join(d["name"] for d in inv["disks"]))
EOF
)
check "deploy-step: the agent sees 'Example Corp' and only the loop device" \
    test "$VENDOR $DISKS" = "Example_Corp $LOOP"

PORT=$(free_port)
printf '%s\n' "ipa-api-url=$IRONIC_URL ipa-advertise-host=127.0.0.1 ipa-advertise-port=$PORT ipa-lookup-interval=0.2 ipa-debug=1 $IRA_TEST_CMDLINE" \
    > "$STATE/cmdline"
NODE=$(api create-node "ira-deploy-step-$$" "$MAC") || { rc=1; exit 1; }
api patch "$NODE" /properties/root_device "{\"name\": \"$LOOP\"}"
api provision "$NODE" manage && api wait "$NODE" manageable 60 &&
    api provision "$NODE" provide && api wait "$NODE" "clean wait" 60 || { rc=1; exit 1; }
# Automated cleaning (Ironic's default) needs the ramdisk: a fresh agent, stopped once the
# conductor has powered the node off (fake power never stops it).
"$IRA_BIN" --cmdline-file "$STATE/cmdline" --sysroot "$SYSROOT" --device-allowlist "$LOOP" \
    --no-power-off --listen-host 127.0.0.1 --listen-port "$PORT" --debug \
    > "$STATE/ira-clean.log" 2>&1 &
echo $! > "$STATE/ira.pid"
api wait "$NODE" available 90
CLEANED=$?
stop_pid_file "$STATE/ira.pid"
CLEAN_RAN=$(grep 'step completed kind=clean' "$STATE/ira-clean.log" | grep -oE 'step="[a-z_]+"' | tr '\n' ' ')
check "deploy-step: automated cleaning ran on the agent ($CLEAN_RAN) and ends in 'available'" \
    test "$CLEANED/$CLEAN_RAN" = '0/step="erase_devices_metadata" step="erase_devices" '
[ $CLEANED = 0 ] || { rc=1; exit 1; }
api set-image "$NODE" "http://127.0.0.1:$HTTP_PORT/disk.img" "$SHA" raw
MOTD_B64=$(printf 'deployed by ira\n' | base64 -w0)
CONF_B64=$(printf 'injected=1\n' | base64 -w0)
STEPS=$(cat <<EOF
{"deploy_steps": [
  {"interface": "deploy", "step": "example_write_files", "priority": 75,
   "args": {"files": [
     {"path": "/etc/vendor/tool.conf", "content": "level=3\n", "mode": 384},
     {"path": "/etc/motd", "content": "$MOTD_B64", "encoding": "base64"}]}},
  {"interface": "deploy", "step": "inject_files", "priority": 74,
   "args": {"files": [
     {"path": "/etc/injected/app.conf", "content": "$CONF_B64", "mode": 416, "dirmode": 448}]}}
]}
EOF
)
api provision "$NODE" active "$STEPS" || { rc=1; exit 1; }
api wait "$NODE" "wait call-back" 60 >/dev/null 2>&1
check "deploy-step: node waits in 'wait call-back'" \
    test "$(api field "$NODE" provision_state)" = '"wait call-back"'

"$IRA_BIN" --cmdline-file "$STATE/cmdline" --sysroot "$SYSROOT" --device-allowlist "$LOOP" \
    --no-power-off --listen-host 127.0.0.1 --listen-port "$PORT" --debug \
    > "$STATE/ira.log" 2>&1 &
echo $! > "$STATE/ira.pid"
START=$SECONDS
if api wait "$NODE" active 180; then
    pass "deploy-step: node ends in 'active'"
    echo "     agent start -> active: $((SECONDS - START)) s"
else
    fail "deploy-step: node ends in 'active'"
    echo "     last_error: $(api field "$NODE" last_error)"
fi
completed() { grep 'step completed' "$STATE/ira.log" | grep -q "$1"; }
RAN=yes
for step in write_image example_write_files inject_files; do completed "$step" || RAN="no $step"; done
check "deploy-step: the conductor ran write_image, example_write_files and inject_files on the agent" \
    test "$RAN" = yes
ext_read
TOOL="$(ext_cat /etc/vendor/tool.conf)|$(ext_mode /etc/vendor/tool.conf)"
MOTD=$(ext_cat /etc/motd)
APP="$(ext_cat /etc/injected/app.conf)|$(ext_mode /etc/injected/app.conf)|$(ext_mode /etc/injected)"
check "deploy-step: the vendor step wrote /etc/vendor/tool.conf with mode 0600 ($TOOL)" \
    test "$TOOL" = "level=3|0600"
check "deploy-step: the vendor step replaced /etc/motd from base64 ($MOTD)" \
    test "$MOTD" = "deployed by ira"
check "deploy-step: inject_files wrote /etc/injected/app.conf, 0640 in a new 0700 directory ($APP)" \
    test "$APP" = "injected=1|0640|0700"
check "deploy-step: the image's other files are intact" test "$(ext_cat /etc/hostname)" = image
check "deploy-step: no instance mount is left behind" \
    bash -c "! grep -q ira-instance- /proc/self/mountinfo"
leaked=$(grep -cE "agent_token[\"']?[=:] *[\"']?[A-Za-z0-9_-]{32,}" "$STATE/ira.log")
check "deploy-step: agent never logged the token" test "$leaked" = 0
stop_pid_file "$STATE/ira.pid"
if [ $FAILED != 0 ]; then
    echo "---- tail of the agent log"; tail -n 40 "$STATE/ira.log"
    echo "---- conductor errors"; grep -E 'ERROR|WARNING' "$STATE/ironic.log" | tail -n 20
fi
api delete "$NODE" >/dev/null 2>&1
echo "deploy-step: $PASSED passed, $FAILED failed"
rc=$((FAILED != 0))
exit $rc

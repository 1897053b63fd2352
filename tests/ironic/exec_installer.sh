#!/usr/bin/env bash
# The example executable hardware manager (hardware-managers/exec/example-installer)
# replacing write_image in a `direct` deploy driven by the real Ironic conductor. ira runs
# on this machine with --hardware-managers-dir hardware-managers/exec; the install device
# is a loop device (the only device in its allow-list, named by a root device hint). The
# image is a gzip-compressed GPT disk: partition 1 an ext4 "boot" filesystem, partition
# 2 random bytes. Ironic runs without automated cleaning (this tests the deploy; the
# lifecycle test cleans).
#
#   1. deploy -> `active`: the manager's write_image ran (not the generic one), the
#      agent's log carries its progress lines and its stderr, the loop
#      device holds the image (partition table and partition 2 byte for byte) and
#      partition 1 holds the image's files plus ira-firstboot.json naming the node, the
#      image and the manager;
#   2. undeploy, then a deploy with a wrong checksum -> `deploy failed` with the
#      script's own message in last_error; nothing bootable is left on the disk and the
#      agent keeps serving;
#   3. a deploy from an HTTPS image server whose certificate only the agent's `cafile`
#      (its config file) trusts -> `active`: ira hands its TLS settings to the step;
#      then the script run by hand against the same server: without the CA it fails on
#      the certificate, with IRA_INSECURE=1 it installs, and with busybox's wget alone
#      (which verifies no certificate) it refuses the URL before writing anything.
#
# As in lifecycle.sh, every ramdisk "boot" is a fresh ira process, stopped by its PID; the
# sysroot is this machine's /sys, /proc, /dev and /run without sys/firmware/efi (so
# install_bootloader leaves this machine's boot variables alone).
#
#   IRA_BIN   the binary to test (default: the newer of the musl release and debug builds)
#   KEEP=1    keep the scratch dir after the run
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
. "$HERE/suite.sh"
for tool in losetup sgdisk mkfs.ext4 debugfs gzip cmp curl openssl busybox; do
    command -v $tool >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
HWM_DIR=$REPO/hardware-managers/exec

# abort WHAT: a step the scenarios need failed; counted, summarised, and the run ends.
abort() {
    fail "exec-installer: $1"
    echo "exec-installer: $PASSED passed, $FAILED failed"
    rc=1
    exit 1
}

ensure_ironic_venv || exit 1
STATE=$(mktemp -d /var/tmp/ira-exec-installer.XXXXXX)
LOOP=
cleanup() {
    stop_pid_file "$STATE/ira.pid"
    stop_pid_file "$STATE/https.pid"
    ironic_down "$STATE"
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
    scratch_done "$STATE"
}
trap cleanup EXIT

make_sysroot() {
    local root=$1 e
    mkdir -p "$root/sys/firmware"
    ln -s /proc "$root/proc"; ln -s /dev "$root/dev"; ln -s /run "$root/run"
    for e in /sys/*; do [ "${e##*/}" = firmware ] || ln -s "$e" "$root/sys/${e##*/}"; done
    for e in /sys/firmware/*; do
        case ${e##*/} in efi|'*') ;; *) ln -s "$e" "$root/sys/firmware/${e##*/}" ;; esac
    done
}

# --- the image: GPT; 1 = ext4 "boot" (16 MiB at 1 MiB), 2 = random (16 MiB at 17 MiB) ------
P1_MIB=16 P2_MIB=16
make_image() {
    local img=$1 stage=$STATE/stage
    mkdir -p "$stage/loader"
    printf 'image boot partition\n' > "$stage/loader/entry.conf"
    truncate -s 40M "$img"
    sgdisk -n 1:2048:+${P1_MIB}M -t 1:8300 -c 1:boot -n 2:0:+${P2_MIB}M -t 2:8300 -c 2:data \
        "$img" >/dev/null 2>&1 || return 1
    mkfs.ext4 -q -F -L boot -d "$stage" "$STATE/boot.fs" ${P1_MIB}M >/dev/null || return 1
    dd if="$STATE/boot.fs" of="$img" bs=1M seek=1 conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=1M seek=$((1 + P1_MIB)) count=$P2_MIB conv=notrunc status=none
}
# The disk holds the image where the agent keeps it as written: the partition entries
# (LBA 2-33; the agent rewrites the headers when it moves the backup GPT to the disk's
# end) and partition 2. Partition 1 changed: it got the first-boot file.
disk_holds_image() {
    cmp -s -i 1024 -n $((32 * 512)) "$IMAGE" "$LOOP" &&
        cmp -s -i $(((1 + P1_MIB) << 20)) -n $((P2_MIB << 20)) "$IMAGE" "$LOOP"
}
boot_fs() {  # copies partition 1 off the loop device (direct I/O) for debugfs
    dd if="$LOOP" of="$STATE/check.fs" bs=1M skip=1 count=$P1_MIB iflag=direct status=none
}
boot_cat() { debugfs -R "cat $1" "$STATE/check.fs" 2>/dev/null; }

# --- the agent, one process per "boot" ------------------------------------------------------
BOOTS=0
AGENT_ARGS=()
agent_boot() {
    BOOTS=$((BOOTS + 1))
    AGENT_LOG=$STATE/ira-$BOOTS.log
    AGENT_PORT=$(free_port)
    printf '%s\n' "ipa-api-url=$IRONIC_URL ipa-advertise-host=127.0.0.1 ipa-advertise-port=$AGENT_PORT ipa-lookup-interval=0.2 ipa-debug=1 ipa-disk-wait-attempts=1" \
        > "$STATE/cmdline"
    "$IRA_BIN" --cmdline-file "$STATE/cmdline" --sysroot "$SYSROOT" --device-allowlist "$LOOP" \
        --hardware-managers-dir "$HWM_DIR" --no-power-off --listen-host 127.0.0.1 \
        --listen-port "$AGENT_PORT" --debug "${AGENT_ARGS[@]}" > "$AGENT_LOG" 2>&1 &
    echo $! > "$STATE/ira.pid"
}
# deploy_to END TIMEOUT: provision active, a fresh agent, wait for END.
deploy_to() {
    api provision "$NODE" active || return 1
    api wait "$NODE" "wait call-back" 60 >/dev/null 2>&1 || return 1
    agent_boot
    local t0=$SECONDS
    api wait "$NODE" "$1" "$2" 2>"$STATE/wait.log" || { tail -n 1 "$STATE/wait.log"; return 1; }
    echo "     agent start -> $1: $((SECONDS - t0)) s"
}

# A self-signed certificate for 127.0.0.1: the HTTPS image server's, and the only CA the
# conductor (webserver_verify_ca) and the agent (cafile) trust for it.
TLS_CERT=$STATE/tls-cert.pem TLS_KEY=$STATE/tls-key.pem
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$TLS_KEY" -out "$TLS_CERT" \
    >"$STATE/openssl.log" 2>&1 || abort "test certificate made"
export IRONIC_WEBSERVER_VERIFY_CA=$TLS_CERT
ironic_up "$STATE" false || abort "Ironic started"
HTTPS_PORT=$(free_port)
python3 "$HERE/imgserver.py" "$HTTPS_PORT" "$HTTP_ROOT" "$TLS_CERT" "$TLS_KEY" \
    > "$STATE/https.log" 2>&1 &
echo $! > "$STATE/https.pid"
SYSROOT=$STATE/sysroot
make_sysroot "$SYSROOT"
IMAGE=$STATE/disk.img
make_image "$IMAGE" || abort "test image made"
gzip -c -n "$IMAGE" > "$HTTP_ROOT/disk.img.gz"
SHA=$(sha256sum "$HTTP_ROOT/disk.img.gz" | cut -d' ' -f1)
truncate -s 128M "$STATE/target.img"
LOOP=$(losetup --find --show "$STATE/target.img") || abort "loop device attached"
log "install device: $LOOP"

echo "== scenario: the example installer (an executable hardware manager) replaces write_image"
"$IRA_BIN" inventory --sysroot "$SYSROOT" --device-allowlist "$LOOP" > "$STATE/inventory.json" 2>"$STATE/inventory.log"
MAC=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["interfaces"][0]["mac_address"])' "$STATE/inventory.json")
NODE=$(api create-node "ira-exec-installer-$$" "$MAC") || abort "node enrolled"
api patch "$NODE" /properties/root_device "{\"name\": \"$LOOP\"}"
if ! { api provision "$NODE" manage && api wait "$NODE" manageable 60 &&
    api provision "$NODE" provide && api wait "$NODE" available 60; }; then
    abort "node 'available'"
fi
api set-image "$NODE" "http://127.0.0.1:$HTTP_PORT/disk.img.gz" "$SHA" raw

if deploy_to active 120; then
    pass "exec-installer: node deployed to 'active'"
else
    fail "exec-installer: node deployed to 'active' ($(api field "$NODE" last_error))"
fi
check "exec-installer: the agent found the example manager (support 3, deploy.write_image)" \
    grep -qE 'executable hardware manager found.*manager="?example_installer.*support=3.*deploy\.write_image' "$AGENT_LOG"
check "exec-installer: write_image ran the manager, not the generic image writer" \
    bash -c "grep -q 'manager exited manager=\"example_installer\" step=\"write_image\" end=Exited(0)' '$AGENT_LOG' &&
        ! grep -q 'image written and verified' '$AGENT_LOG'"
check "exec-installer: the manager's progress is in the agent's log" \
    grep -qE 'progress.*writing image disk\.img\.gz to '"$LOOP" "$AGENT_LOG"
check "exec-installer: the manager's stderr is in the agent's log" \
    grep -q 'image disk.img.gz written to .*(gzip, sha256 verified)' "$AGENT_LOG"
check "exec-installer: the loop device holds the image (partition entries, partition 2)" disk_holds_image
PARTS=$(sgdisk -p "$LOOP" 2>/dev/null | awk '$1 ~ /^[12]$/ {printf "%s-%s ", $2, $NF}')
check "exec-installer: GPT valid with the image's partitions ($PARTS)" \
    bash -c "test '$PARTS' = '2048-boot 34816-data ' && sgdisk -v '$LOOP' 2>&1 | grep -q 'No problems found'"
boot_fs
FIRSTBOOT=$(boot_cat /ira-firstboot.json)
echo "     ira-firstboot.json: $FIRSTBOOT"
check "exec-installer: ira-firstboot.json names the node, the image, its checksum and the manager" \
    python3 - "$FIRSTBOOT" "$NODE" "$SHA" <<'EOF'
import json, sys
f = json.loads(sys.argv[1])
assert f["node_uuid"] == sys.argv[2], f
assert f["image_id"] == "disk.img.gz", f
assert f["image_checksum"] == "sha256:" + sys.argv[3], f
assert f["installed_by"] == "example_installer 1.0", f
EOF
check "exec-installer: the image's own files on partition 1 are intact" \
    test "$(boot_cat /loader/entry.conf)" = "image boot partition"
check "exec-installer: no mount or loop device of the manager is left behind" \
    bash -c "! grep -q example-installer /proc/self/mountinfo && test \"\$(losetup -j '$LOOP')\" = ''"
stop_pid_file "$STATE/ira.pid"

echo "== scenario: a wrong checksum fails the manager's write_image"
if ! { api provision "$NODE" deleted && api wait "$NODE" available 60; }; then abort "node undeployed"; fi
api set-image "$NODE" "http://127.0.0.1:$HTTP_PORT/disk.img.gz" "$(printf 'not it' | sha256sum | cut -d' ' -f1)" raw
deploy_to "deploy failed" 120
ERR=$(api field "$NODE" last_error)
echo "     last_error: $ERR"
check "exec-installer: last_error carries the manager's name, exit status and own message" \
    grep -qE 'example_installer: write_image failed \(exit 1\): image disk\.img\.gz: checksum mismatch: expected sha256' <<<"$ERR"
check "exec-installer: nothing bootable is left: the first MiB of $LOOP is zero" \
    bash -c "dd if='$LOOP' bs=1M count=1 iflag=direct status=none | cmp -s -n 1048576 - /dev/zero"
check "exec-installer: the agent keeps serving after the failed step" \
    bash -c "kill -0 $(cat "$STATE/ira.pid") &&
        curl -skf --max-time 5 https://127.0.0.1:$AGENT_PORT/v1 >/dev/null"
stop_pid_file "$STATE/ira.pid"

echo "== scenario: an HTTPS image server trusted through the agent's cafile"
if ! { api provision "$NODE" deleted && api wait "$NODE" available 60; }; then abort "node undeployed"; fi
dd if=/dev/zero of="$LOOP" bs=1M count=48 oflag=direct conv=fsync status=none
HTTPS_URL=https://127.0.0.1:$HTTPS_PORT/disk.img.gz
api set-image "$NODE" "$HTTPS_URL" "$SHA" raw
printf '[DEFAULT]\ncafile = %s\n' "$TLS_CERT" > "$STATE/ira.conf"
AGENT_ARGS=(--config-file "$STATE/ira.conf")
if deploy_to active 120; then
    pass "exec-installer: deployed to 'active' from the HTTPS server (the agent's cafile)"
else
    fail "exec-installer: deployed to 'active' from the HTTPS server ($(api field "$NODE" last_error))"
fi
AGENT_ARGS=()
check "exec-installer: the HTTPS server sent the image" grep -q '"GET /disk.img.gz HTTP/1.1" 200' "$STATE/https.log"
check "exec-installer: the loop device holds the image fetched over HTTPS" disk_holds_image
stop_pid_file "$STATE/ira.pid"

# install_by_hand PATH [VAR=VALUE...]: the example's write_image of the HTTPS image, run
# without the agent (its environment as protocol 1 sets it); stdout in $STATE/hand.out.
install_by_hand() {
    local path=$1
    shift
    env -i PATH="$path" IRA_PROTOCOL=1 IRA_STEP_KIND=deploy IRA_STEP=write_image \
        IRA_INSTALL_DEVICE="$LOOP" IRA_ARG_IMAGE_INFO_ID=disk.img.gz \
        IRA_ARG_IMAGE_INFO_URLS_0="$HTTPS_URL" IRA_ARG_IMAGE_INFO_OS_HASH_ALGO=sha256 \
        IRA_ARG_IMAGE_INFO_OS_HASH_VALUE="$SHA" "$@" \
        "$HWM_DIR/example-installer" step </dev/null >"$STATE/hand.out" 2>"$STATE/hand.err"
}
first_mib() { dd if="$LOOP" bs=1M count=1 iflag=direct status=none | sha256sum; }
BUSYBOX_BIN=$STATE/busybox-bin
mkdir -p "$BUSYBOX_BIN" && busybox --install -s "$BUSYBOX_BIN"
BEFORE=$(first_mib)
install_by_hand "$BUSYBOX_BIN"
hand_rc=$?
echo "     busybox only: exit $hand_rc: $(tail -n 1 "$STATE/hand.out")"
check "exec-installer: with busybox's wget alone an https URL is refused (exit 1, its reason)" \
    bash -c "test $hand_rc = 1 && grep -q 'needs curl or GNU wget to verify' '$STATE/hand.out'"
check "exec-installer: the refused run wrote nothing" test "$(first_mib)" = "$BEFORE"
install_by_hand "$PATH"
hand_rc=$?
echo "     no CA: exit $hand_rc: $(tail -n 1 "$STATE/hand.out")"
check "exec-installer: without the agent's CA the download fails on the certificate" \
    bash -c "test $hand_rc = 1 && grep -q 'download failed.*certificate' '$STATE/hand.out'"
install_by_hand "$PATH" IRA_INSECURE=1
hand_rc=$?
check "exec-installer: with IRA_INSECURE=1 (ipa-insecure) the same URL installs" \
    bash -c "test $hand_rc = 0 && grep -q '\"checksum\": \"sha256:$SHA\"' '$STATE/hand.out'"
check "exec-installer: ... and the loop device holds the image" disk_holds_image

leaked=$(cat "$STATE"/ira-*.log | grep -cE "agent_token[\"']?[=:] *[\"']?[A-Za-z0-9_-]{32,}")
check "exec-installer: agent never logged the token" test "$leaked" = 0
if [ $FAILED != 0 ]; then
    echo "---- tail of the agent log ($AGENT_LOG)"; tail -n 40 "$AGENT_LOG"
    echo "---- conductor errors"; grep -E ' (ERROR|WARNING) ' "$STATE/ironic.log" | tail -n 20
fi
api delete "$NODE" >/dev/null 2>&1
echo "exec-installer: $PASSED passed, $FAILED failed ($SECONDS s)"
rc=$((FAILED != 0))
exit $rc

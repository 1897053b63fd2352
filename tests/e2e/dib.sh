#!/usr/bin/env bash
# End-to-end test of the diskimage-builder element dib-elements/ira-agent: builds a real
# DIB ramdisk with it (the way operators build IPA ramdisks) and boots it in QEMU.
#
#   disk-image-create -o ira-ramdisk ironic-ramdisk-base ira-agent debian-minimal
#
# The build runs in a cached venv (diskimage-builder and ironic-python-agent-builder from
# PyPI, pinned) and lands in ${IRA_CACHE:-/var/tmp/ira-cache}/dib/out; it is reused while
# the element's files, the agent binary and the build settings hash the same. The image
# is unpacked and checked: the binary, enabled units, default target, resolv.conf, no
# IPA, and the rescue tooling run in a chroot of it. The boot checks, from the serial
# console and from a tiny fake Ironic API on 127.0.0.1 (the guest reaches it as
# 10.0.2.2): systemd ran, the network came online, the ira-agent unit
# started, the agent logged to the console, looked the node up with the VM's MAC,
# heartbeated with the callback URL and the token of the lookup, answers on that URL,
# and the unit never restarted. Prints timings from QEMU start, the ramdisk size, the
# wall time, then `dib: N passed, M failed`. Every process it starts is stopped by its
# PID (DIB by its process group) and every temporary file removed, also on failure or
# Ctrl-C; only the cache stays (with the last build's log and the last boot's console).
#
# Needs root (DIB's chroot, debootstrap), Debian/Ubuntu (apt installs what is missing),
# network access to the Debian mirror and to PyPI on the first run.
#
# Environment (optional):
#   IRA_BIN              agent binary (default: the musl release build, built when missing)
#   IRA_CACHE            cache root (default /var/tmp/ira-cache; this test uses dib/ in it)
#   DIB_TEST_MEM         guest RAM in MiB (default 2048)
#   DIB_TEST_TIMEOUT     seconds allowed for each boot stage (default 240)
#   DIB_TEST_REBUILD     1 = build even when the cached ramdisk matches
#   DIB_TEST_ELEMENTS    elements (default "ironic-ramdisk-base ira-agent debian-minimal")
#   DIB_TEST_HWM_DIR     the element's IRA_HWM_DIR (default hardware-managers/exec: the
#                        example installer, checked in the image and registered at boot;
#                        empty: none)
#   DIB_RELEASE          Debian release (default bookworm)
#   DIB_DISTRIBUTION_MIRROR, DIB_DEBIAN_SECURITY_MIRROR   Debian mirrors (default
#                        deb.debian.org over http)
#   VM_ACCEL, ...        see tests/e2e/vm.sh
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/vm.sh
source "$REPO/tests/e2e/vm.sh"

WALL_START=$SECONDS
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
CACHE=$IRA_CACHE/dib
OUT=$CACHE/out
NAME=ira-ramdisk
BIN=${IRA_BIN:-$REPO/target/x86_64-unknown-linux-musl/release/ira}
MEM=${DIB_TEST_MEM:-2048}
TIMEOUT=${DIB_TEST_TIMEOUT:-240}
ELEMENTS=${DIB_TEST_ELEMENTS:-ironic-ramdisk-base ira-agent debian-minimal}
# The element's IRA_HWM_DIR: executable hardware managers baked into the image (set to
# nothing for none).
HWM_DIR=${DIB_TEST_HWM_DIR-$REPO/hardware-managers/exec}
# Versions this test was proven with; a new release is a deliberate change here.
PIP_PINS=(diskimage-builder==3.43.0 ironic-python-agent-builder==7.4.0)
export DIB_RELEASE=${DIB_RELEASE:-bookworm}
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-http://deb.debian.org/debian}
export DIB_DEBIAN_SECURITY_MIRROR=${DIB_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
MAC=52:54:00:d1:b0:01
NODE_UUID=9f4c2a5e-7d1b-4c3e-8a6f-2b5d0e1c7a93
# 43 characters, like the tokens Ironic generates.
TOKEN=dibTestToken0123456789abcdefghijklmnopqrstu

passed=0 failed=0
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
log() { printf '%s dib: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

SCRATCH=$(mktemp -d /tmp/ira-dib.XXXXXX)
# shellcheck disable=SC2034 # read by vm.sh
VM_SCRATCH=$SCRATCH/vm
API_PID="" DIB_PID="" DIB_TMP_BEFORE="" BUILD_STARTED=0

# DIB builds in /tmp/dib_build.* and /tmp/dib_image.* (a tmpfs, bind mounts, and an
# image file on a loop device). It removes them itself; after a kill it may not: detach,
# unmount and remove the ones this run made.
dib_tmp_dirs() { find /tmp -maxdepth 1 \( -name 'dib_build.*' -o -name 'dib_image.*' \) 2>/dev/null | sort; }
remove_dib_leftovers() {
    local d m dev file
    for d in $(comm -13 <(echo "$DIB_TMP_BEFORE") <(dib_tmp_dirs)); do
        # deepest mount first
        awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null; done
        losetup -n -l -O NAME,BACK-FILE 2>/dev/null | while read -r dev file; do
            case $file in "$d"/*) losetup -d "$dev" 2>/dev/null ;; esac
        done
        rm -rf --one-file-system "$d"
        log "removed DIB leftover $d"
    done
}
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ -n "$DIB_PID" ] && kill -0 "$DIB_PID" 2>/dev/null; then
        log "stopping disk-image-create (process group $DIB_PID)"
        kill -TERM -- "-$DIB_PID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$DIB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$DIB_PID" 2>/dev/null
        wait "$DIB_PID" 2>/dev/null
    fi
    [ "$BUILD_STARTED" = 1 ] && remove_dib_leftovers
    vm_stop_all
    # The last boot's console stays next to the last build's log, for a look afterwards.
    [ -s "$VM_SCRATCH/dib/console.log" ] && cp "$VM_SCRATCH/dib/console.log" "$CACHE/last-boot.log"
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
        kill "$API_PID" 2>/dev/null
        wait "$API_PID" 2>/dev/null
    fi
    rm -rf "$SCRATCH" "$OUT/.new"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

finish() {
    echo "dib: wall time $((SECONDS - WALL_START)) s ($BUILD_MODE)"
    echo "dib: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}
BUILD_MODE="no build"

# --- prerequisites ---------------------------------------------------------------------------
# The project's one install step, with what DIB needs beyond it.
if ! bash "$REPO/tests/setup.sh" debootstrap:debootstrap; then
    fail "tests/setup.sh"
    finish
fi
if [ "$(id -u)" != 0 ]; then
    fail "DIB needs root (chroot, mounts)"
    finish
fi
if [ ! -x "$BIN" ]; then
    if [ -n "${IRA_BIN:-}" ]; then fail "IRA_BIN=$BIN is not executable"; finish; fi
    log "building $BIN"
    (cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl) || { fail "cargo build"; finish; }
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
# One run at a time per cache: the build output and the venv are shared.
flock -n 9 || { log "waiting for another run to release $CACHE/.lock"; flock 9; }
# The binary is copied first: a cargo build elsewhere must not change it between the
# hash, the build and the checks.
install -m 0755 "$BIN" "$SCRATCH/ira"
BIN_SRC=$BIN
BIN=$SCRATCH/ira

# The cached venv: diskimage-builder, and ironic-python-agent-builder for its elements
# (ironic-ramdisk-base). A marker names the pins it was made with.
VENV=$CACHE/venv
if [ "$(cat "$VENV/.ira-pins" 2>/dev/null)" != "${PIP_PINS[*]}" ]; then
    log "creating $VENV (${PIP_PINS[*]})"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "${PIP_PINS[@]}"; } >"$SCRATCH/pip.log" 2>&1; then
        tail -n 20 "$SCRATCH/pip.log"
        rm -rf "$VENV"
        fail "venv with ${PIP_PINS[*]}"
        finish
    fi
    echo "${PIP_PINS[*]}" > "$VENV/.ira-pins"
fi
IPAB_ELEMENTS=$VENV/share/ironic-python-agent-builder/dib
[ -d "$IPAB_ELEMENTS/ironic-ramdisk-base" ] || { fail "no ironic-ramdisk-base in $IPAB_ELEMENTS"; finish; }

# DIB calls sudo everywhere; as root without sudo, a pass-through stands in.
mkdir -p "$SCRATCH/bin"
if ! command -v sudo >/dev/null; then
    cat > "$SCRATCH/bin/sudo" <<'EOF'
#!/bin/bash
# sudo stand-in for root: drops sudo's own options, runs the command.
while [ $# -gt 0 ]; do
    case $1 in
        -u | -g | -C | -D | -h | -p | -r | -t | -U) shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
EOF
    chmod +x "$SCRATCH/bin/sudo"
fi

# --- build (or reuse) ---------------------------------------------------------------------
# What the ramdisk is made of: the element's files, the binary, the pins, the settings.
build_key() {
    {
        # (its READMEs are not in the image)
        (cd "$REPO/dib-elements" && find ira-agent -type f ! -name 'README*' | LC_ALL=C sort | xargs sha256sum)
        sha256sum < "$BIN"
        [ -z "$HWM_DIR" ] || (cd "$HWM_DIR" && find . -type f | LC_ALL=C sort | xargs sha256sum)
        echo "${PIP_PINS[*]}|$HWM_DIR|$ELEMENTS|$DIB_RELEASE|$DIB_DISTRIBUTION_MIRROR|$DIB_DEBIAN_SECURITY_MIRROR"
    } | sha256sum | cut -c1-16
}
KEY=$(build_key)
if [ "${DIB_TEST_REBUILD:-0}" != 1 ] && [ "$(cat "$OUT/$NAME.key" 2>/dev/null)" = "$KEY" ] &&
    [ -s "$OUT/$NAME.kernel" ] && [ -s "$OUT/$NAME.initramfs" ]; then
    BUILD_MODE="warm: cached ramdisk $KEY reused"
    pass "ramdisk reused from the cache (element and binary unchanged, key $KEY)"
else
    BUILD_MODE="cold: ramdisk built"
    log "building $OUT/$NAME (key $KEY): $ELEMENTS"
    rm -rf "$OUT/.new"
    mkdir -p "$OUT/.new" "$CACHE/image-cache"
    DIB_TMP_BEFORE=$(dib_tmp_dirs)
    BUILD_STARTED=1
    build_start=$SECONDS
    # TMPDIR must not reach the chroot (package scripts would use a host path there).
    # setsid: the build gets its own process group, so cleanup can stop all of it.
    # shellcheck disable=SC2086 # ELEMENTS is a list
    (
        cd "$OUT/.new" &&
            exec env -u TMPDIR \
                PATH="$SCRATCH/bin:$VENV/bin:$PATH" \
                ELEMENTS_PATH="$REPO/dib-elements:$IPAB_ELEMENTS" \
                DIB_IMAGE_CACHE="$CACHE/image-cache" \
                IRA_BIN="$BIN" IRA_HWM_DIR="$HWM_DIR" \
                setsid -w disk-image-create -o "$NAME" $ELEMENTS
    ) > "$CACHE/last-build.log" 2>&1 &
    DIB_PID=$!
    wait "$DIB_PID"
    rc=$?
    DIB_PID=""
    BUILD_S=$((SECONDS - build_start))
    remove_dib_leftovers
    if [ "$rc" != 0 ] || [ ! -s "$OUT/.new/$NAME.initramfs" ] || [ ! -s "$OUT/.new/$NAME.kernel" ]; then
        tail -n 40 "$CACHE/last-build.log"
        fail "disk-image-create failed (exit $rc, ${BUILD_S} s; log: $CACHE/last-build.log)"
        finish
    fi
    for f in kernel initramfs; do mv "$OUT/.new/$NAME.$f" "$OUT/$NAME.$f"; done
    # The uncompressed size, for the RAM it needs (the kernel unpacks it into a tmpfs).
    gzip -dc "$OUT/$NAME.initramfs" | wc -c > "$OUT/$NAME.unpacked"
    echo "$KEY" > "$OUT/$NAME.key"
    rm -rf "$OUT/.new"
    pass "disk-image-create $ELEMENTS: built in ${BUILD_S} s"
    echo "      agent: $BIN_SRC ($("$BIN" --version 2>/dev/null))"
fi
INITRD_BYTES=$(stat -c %s "$OUT/$NAME.initramfs")
KERNEL_BYTES=$(stat -c %s "$OUT/$NAME.kernel")
UNPACKED_BYTES=$(cat "$OUT/$NAME.unpacked" 2>/dev/null || echo 0)
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

# --- what the element put into the image ----------------------------------------------------
# The parts of the initramfs these checks need, unpacked into the scratch directory
# (programs, libraries, /etc, /dev; not the kernel modules, two thirds of it): files,
# enabled units, and the rescue tooling run in a chroot of it (it only writes there).
ROOT=$SCRATCH/root
mkdir -p "$ROOT"
inspect_start=$SECONDS
if ! (cd "$ROOT" && gzip -dc "$OUT/$NAME.initramfs" | cpio -idm --quiet --no-absolute-filenames \
    bin sbin lib lib64 home dev 'dev/*' etc 'etc/*' 'usr/bin/*' 'usr/sbin/*' \
    'usr/lib/x86_64-linux-gnu/*' 'usr/lib64/*' 'usr/local/*' 'usr/lib/ira/*' 'opt/*' 2>/dev/null); then
    fail "cannot unpack $OUT/$NAME.initramfs"
    finish
fi
if cmp -s "$ROOT/usr/local/bin/ira" "$BIN"; then
    pass "/usr/local/bin/ira is the agent binary ($(stat -c %s "$BIN") bytes)"
else
    fail "/usr/local/bin/ira differs from $BIN_SRC (as hashed) or is missing"
fi
# The managers directory holds every executable of IRA_HWM_DIR, byte for byte, mode 0755.
HWM_NAMES=()
if [ -n "$HWM_DIR" ]; then
    hwm_bad=()
    for f in "$HWM_DIR"/*; do
        [ -f "$f" ] && [ -x "$f" ] || continue
        HWM_NAMES+=("${f##*/}")
        g=$ROOT/usr/lib/ira/hardware-managers.d/${f##*/}
        { cmp -s "$f" "$g" && [ "$(stat -c %a "$g")" = 755 ]; } || hwm_bad+=("${f##*/}")
    done
    if [ ${#HWM_NAMES[@]} -gt 0 ] && [ ${#hwm_bad[@]} = 0 ]; then
        pass "/usr/lib/ira/hardware-managers.d holds IRA_HWM_DIR's managers (${HWM_NAMES[*]}, mode 0755)"
    else
        fail "/usr/lib/ira/hardware-managers.d: missing or different: ${hwm_bad[*]:-no executable in $HWM_DIR}"
    fi
fi
enabled=() not_enabled=()
for u in multi-user.target.wants/ira-agent.service multi-user.target.wants/ira-agent-rescue-user.path \
    multi-user.target.wants/ira-agent-network-data.service \
    multi-user.target.wants/systemd-networkd.service network-online.target.wants/systemd-networkd-wait-online.service; do
    if [ -L "$ROOT/etc/systemd/system/$u" ]; then enabled+=("${u#*/}"); else not_enabled+=("$u"); fi
done
if [ ${#not_enabled[@]} = 0 ]; then pass "enabled: ${enabled[*]}"; else fail "not enabled: ${not_enabled[*]}"; fi
if [ "$(readlink "$ROOT/etc/systemd/system/default.target")" = /lib/systemd/system/multi-user.target ] ||
    [ "$(readlink "$ROOT/etc/systemd/system/default.target")" = /usr/lib/systemd/system/multi-user.target ]; then
    pass "default target: multi-user.target"
else
    fail "default target: $(readlink "$ROOT/etc/systemd/system/default.target")"
fi
case $(readlink "$ROOT/etc/resolv.conf") in
    */run/systemd/resolve/*) pass "/etc/resolv.conf -> $(readlink "$ROOT/etc/resolv.conf") (DNS from DHCP)" ;;
    *) fail "/etc/resolv.conf is not systemd-resolved's: $(ls -l "$ROOT/etc/resolv.conf" 2>&1)" ;;
esac
ipa=$(cd "$ROOT" && ls -d opt/ironic-python-agent usr/local/bin/ironic-python-agent 2>/dev/null)
if [ -z "$ipa" ]; then pass "no IPA in the image"; else fail "IPA in the image: $ipa"; fi
# Rescue: the agent writes a crypt(3) hash; the tooling must make a sudo user of it.
# shellcheck disable=SC2016 # a literal crypt(3) hash
RESCUE_HASH='$6$iraTestSalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ./0123456789abcdefghijkl'
mkdir -p "$ROOT/etc/ipa-rescue-config"
printf '%s\n' "$RESCUE_HASH" > "$ROOT/etc/ipa-rescue-config/ipa-rescue-password"
if out=$(chroot "$ROOT" /usr/local/sbin/ira-agent-rescue-user 2>&1) &&
    [ "$(awk -F: '$1 == "rescue" {print $2}' "$ROOT/etc/shadow")" = "$RESCUE_HASH" ] &&
    grep -q '^sudo:.*\brescue\b' "$ROOT/etc/group" &&
    grep -qx 'rescue ALL=(ALL) NOPASSWD: ALL' "$ROOT/etc/sudoers.d/ira-agent-rescue"; then
    pass "rescue tooling: user rescue with the agent's password hash, in group sudo ($out)"
else
    fail "rescue tooling: $out"
fi
rm -rf "$ROOT"
T_INSPECT=$((SECONDS - inspect_start))

# --- fake Ironic API ------------------------------------------------------------------------
# Version discovery, a lookup that knows the VM's MAC (200 with node and token), heartbeats
# accepted (202); every request recorded with its arrival time and, for heartbeats, body.
cat > "$SCRATCH/fake_api.py" <<'EOF'
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, record, mac, uuid, token = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
VERSION = {"id": "v1", "status": "CURRENT", "version": "1.115", "min_version": "1.1"}
ROOT = {"name": "OpenStack Ironic API", "versions": [VERSION], "default_version": VERSION}
LOOKUP = {"node": {"uuid": uuid, "properties": {}, "instance_info": {},
                   "driver_internal_info": {}},
          "config": {"heartbeat_timeout": 300, "agent_token": token,
                     "agent_token_required": True, "agent_md5_checksum_enable": False,
                     "permitted_image_formats": ["raw", "qcow2"],
                     "tls_min_version": "1.2"}}
NOT_FOUND = {"error_message": json.dumps({"faultcode": "Client",
             "faultstring": "Node could not be found.", "debuginfo": None})}

class Handler(BaseHTTPRequestHandler):
    def answer(self, code, doc):
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(code)
        if doc is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        entry = {"t": time.time(), "method": self.command, "path": self.path,
                 "version": self.headers.get("X-OpenStack-Ironic-API-Version")}
        try:
            entry["body"] = json.loads(body) if body else None
        except ValueError:
            entry["body"] = "<not json>"
        with open(record, "a") as f:
            f.write(json.dumps(entry) + "\n")
        path = self.path.split("?")[0]
        if path == "/":
            self.answer(200, ROOT)
        elif path == "/v1/lookup" and mac in self.path.lower():
            self.answer(200, LOOKUP)
        elif self.command == "POST" and path == "/v1/heartbeat/" + uuid:
            self.answer(202, None)
        else:
            self.answer(404, NOT_FOUND)

    do_GET = do_HEAD = do_POST = handle_one

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
EOF
API_PORT=$(vm_free_port)
API_LOG=$SCRATCH/api.jsonl
: > "$API_LOG"
python3 "$SCRATCH/fake_api.py" "$API_PORT" "$API_LOG" "$MAC" "$NODE_UUID" "$TOKEN" \
    > "$SCRATCH/fake_api.out" 2>&1 &
API_PID=$!
for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$API_PORT/" && break
    sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$API_PORT/" || { fail "fake API did not start"; finish; }
: > "$API_LOG" # forget the readiness probes

# --- boot -----------------------------------------------------------------------------------
# Booted as PXE firmware would: the bzImage, BOOTIF naming the boot NIC, the ipa-* kernel
# parameters Ironic appends. The guest reaches the host's 127.0.0.1 as 10.0.2.2; the
# conductor side reaches the agent through QEMU's forward of 127.0.0.1:VM_HOSTPORT.
VM_HOSTPORT=$(vm_free_port)
bootif=01-${MAC//:/-}
VM_MEM=$MEM VM_MAC=$MAC VM_QUIET=1 VM_KERNEL=$OUT/$NAME.kernel VM_INITRD=$OUT/$NAME.initramfs \
    VM_APPEND="systemd.show_status=1 BOOTIF=$bootif ipa-api-url=http://10.0.2.2:$API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$VM_HOSTPORT ${VM_APPEND:-}" \
    vm_boot dib || { fail "vm_boot"; finish; }
CONSOLE=$VM_CONSOLE

clean_console() { tr -d '\r' < "$CONSOLE" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }
first_line() { clean_console | grep -a -m 1 -E -- "$1"; }
declare -A T=()
# The waits run in this shell, not in $(...): a TERM to the script then stops them at once.
wait_for() { # wait_for REGEX KEY: records in T[KEY] the seconds since QEMU start of the first match
    vm_wait_console "$1" "$TIMEOUT" > "$SCRATCH/t" || return 1
    T[$2]=$(cat "$SCRATCH/t")
}

if wait_for 'Welcome to ' systemd; then
    pass "kernel booted the initramfs, systemd runs: $(first_line 'Welcome to ' | sed 's/.*Welcome to //')"
else
    fail "systemd did not start within ${TIMEOUT}s"
    grep -a -m 3 -i 'initramfs\|panic\|Kernel' "$CONSOLE" | sed 's/^/        | /'
    tail -n 20 "$CONSOLE" | sed 's/^/        | /'
    finish
fi
if wait_for 'Reached target .*[Nn]etwork is [Oo]nline|Reached target .*network-online' online; then
    pass "network online (systemd-networkd, DHCP)"
else
    fail "network-online.target not reached"
fi
# (the raw console: systemd highlights the unit name with colour codes)
if wait_for 'Started .{0,16}ira-agent\.service' unit; then
    pass "systemd started ira-agent.service"
else
    fail "ira-agent.service did not start"
    clean_console | grep -a -i 'ira' | tail -n 10 | sed 's/^/        | /'
fi
if wait_for 'configuration loaded' agent_log; then
    pass "ira logs to the console: $(first_line 'configuration loaded' | cut -c1-150)"
else
    fail "no log line of ira on the console"
    clean_console | grep -a -E 'ira\[[0-9]+\]' | head -n 3 | sed 's/^/        | /'
fi
# The example installer (DIB_TEST_HWM_DIR's default) answered describe and was registered.
if [ -n "$HWM_DIR" ] && [ -x "$HWM_DIR/example-installer" ]; then
    if wait_for 'executable hardware manager found.*example_installer' hwm; then
        pass "ira registered the baked-in manager: $(first_line 'executable hardware manager found' | sed 's/.*INFO //' | cut -c1-160)"
    else
        fail "no 'executable hardware manager found' line for example_installer on the console"
        clean_console | grep -a -E 'hardware manager|hardware-managers' | head -n 5 | sed 's/^/        | /'
    fi
fi

api_first() { # api_first METHOD PATH-PREFIX: "epoch path version" of the first such request
    python3 - "$API_LOG" "$1" "$2" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["method"] == sys.argv[2] and r["path"].startswith(sys.argv[3]):
        print(r["t"], r["path"], r["version"])
        break
EOF
}
since_start() { # since_start EPOCH-SECONDS: seconds after QEMU started
    python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) - int(sys.argv[2]) / 1e6))' "$1" "$VM_START_US"
}
wait_api() { # wait_api METHOD PATH-PREFIX: sets REQ to the first matching request, waiting for it
    local deadline=$((SECONDS + TIMEOUT))
    REQ=""
    while [ $SECONDS -lt $deadline ] && vm_alive; do
        REQ=$(api_first "$1" "$2")
        [ -n "$REQ" ] && return 0
        sleep 0.1
    done
    return 1
}
if wait_api GET /v1/lookup; then
    read -r t path version <<<"$REQ"
    T[lookup]=$(since_start "$t")
    root=$(api_first GET /)
    [ -n "$root" ] && T[discovery]=$(since_start "${root%% *}")
    case ${path,,} in
        *"$MAC"*) pass "ira looked the node up: GET $path (API version $version)" ;;
        *) fail "lookup without the VM's MAC $MAC: GET $path" ;;
    esac
else
    fail "no GET /v1/lookup reached the fake API"
fi
if wait_api POST "/v1/heartbeat/$NODE_UUID"; then
    T[heartbeat]=$(since_start "${REQ%% *}")
    # The callback URL and token of the first heartbeat (the token is not printed).
    read -r cb tok_ok < <(python3 - "$API_LOG" "$NODE_UUID" "$TOKEN" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["method"] == "POST" and r["path"] == "/v1/heartbeat/" + sys.argv[2]:
        b = r["body"] if isinstance(r["body"], dict) else {}
        print(b.get("callback_url"), b.get("agent_token") == sys.argv[3])
        break
EOF
    )
    case $cb in
        "http://127.0.0.1:$VM_HOSTPORT" | "https://127.0.0.1:$VM_HOSTPORT") pass "heartbeat with callback URL $cb" ;;
        *) fail "heartbeat callback URL $cb, expected http(s)://127.0.0.1:$VM_HOSTPORT" ;;
    esac
    if [ "$tok_ok" = True ]; then pass "heartbeat carries the token of the lookup"; else fail "heartbeat without the lookup's token"; fi
    # The agent's API, through QEMU's port forward (auto-TLS: self-signed, hence -k).
    code=$(curl -sk -o "$SCRATCH/agent_root.json" -w '%{http_code}' --max-time 20 "$cb/")
    if [ "$code" = 200 ] && grep -q '"versions"' "$SCRATCH/agent_root.json"; then
        pass "the agent answers on its callback URL: GET $cb/ -> 200"
    else
        fail "GET $cb/ -> $code"
    fi
else
    fail "no heartbeat reached the fake API"
fi
# systemd's status lines on the console: a restart shows as Stopped and a second Started.
starts=$(clean_console | grep -a -c -E 'Started ira-agent\.service')
if [ "$starts" -gt 1 ] || clean_console | grep -a -q -E '(Stopped|Failed to start) ira-agent\.service'; then
    fail "the unit stopped or restarted ($starts starts):"
    clean_console | grep -a -E 'ira-agent\.service|ira\[[0-9]+\]' | head -n 6 | sed 's/^/        | /'
else
    pass "ira-agent.service kept running (no exit, no restart)"
fi

# --- report ---------------------------------------------------------------------------------
rss=$(vm_rss_kib dib)
echo
echo "ramdisk ($OUT):"
echo "  initramfs   $INITRD_BYTES bytes ($(mib "$INITRD_BYTES"), gzip; $(mib "$UNPACKED_BYTES") unpacked)"
echo "  kernel      $KERNEL_BYTES bytes ($(mib "$KERNEL_BYTES"))"
echo "timings, seconds after QEMU started ($(vm_accel), ${MEM} MiB):"
printf '  %-30s %7s\n' "systemd welcome" "${T[systemd]:--}" \
    "network-online.target" "${T[online]:--}" \
    "ira-agent.service started" "${T[unit]:--}" \
    "ira's first log line" "${T[agent_log]:--}" \
    "GET / (version discovery)" "${T[discovery]:--}" \
    "first GET /v1/lookup" "${T[lookup]:--}" \
    "first heartbeat" "${T[heartbeat]:--}"
echo "  (image inspection before the boot: ${T_INSPECT} s)"
echo "  QEMU peak RSS $((${rss:-0} / 1024)) MiB; host load average: $(cut -d' ' -f1-3 /proc/loadavg)"
finish

#!/usr/bin/env bash
# Smoke test of the ira ramdisk in QEMU (TCG unless KVM really works).
#
# Builds images/out if needed, starts a tiny fake Ironic API on 127.0.0.1 that records
# every request, boots the ramdisk with it as ipa-api-url (reached through the guest's
# ira.fwd forwarder, so guest and host use the same URL), then checks from the console
# and the fake's record: the kernel booted, drivers and disks came up, the NIC got a DHCP
# lease, ira started and logged, and (when the agent has a lookup client) ira looked the
# node up with the VM's MAC. Prints timings from QEMU start, then
# `smoke: N passed, M failed`. Every process it starts is stopped by PID and its scratch
# directory removed, also on failure or Ctrl-C.
#
# Environment (optional):
#   SMOKE_MEM      guest RAM in MiB (default 256)
#   SMOKE_TIMEOUT  seconds allowed for each boot stage (default 90)
#   SMOKE_LOOKUP   auto | 1 | 0: expect a lookup (auto: when the agent binary contains the
#                  lookup route, i.e. its lookup client is built in)
#   IRA_BIN        agent binary to pack (default: the musl release build), see images/build.sh
#   VM_ACCEL, VM_QUIET, VM_KERNEL, ...  see tests/e2e/vm.sh
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/e2e/vm.sh
source "$REPO/tests/e2e/vm.sh"

SMOKE_MEM=${SMOKE_MEM:-256}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-90}
SMOKE_LOOKUP=${SMOKE_LOOKUP:-auto}
BIN=${IRA_BIN:-$REPO/target/x86_64-unknown-linux-musl/release/ira}
OUT=$REPO/images/out
MAC=52:54:00:5a:0e:01

passed=0 failed=0
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
info() { echo "      $*"; }

VM_SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ira-smoke.XXXXXX")
API_PID=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    vm_stop_all
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
        kill "$API_PID" 2>/dev/null
        wait "$API_PID" 2>/dev/null
    fi
    rm -rf "$VM_SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

finish() {
    echo "smoke: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}

# --- image ----------------------------------------------------------------------------------
needs_build() {
    [ -f "$OUT/ira.kernel" ] && [ -f "$OUT/ira.initramfs" ] || return 0
    [ -x "$BIN" ] || return 0
    local f
    for f in "$REPO"/images/{build.sh,init,udhcpc.script} "$BIN"; do
        [ "$f" -nt "$OUT/ira.initramfs" ] && return 0
    done
    grep -qF "ira         $BIN " "$OUT/ira.txt" 2>/dev/null || return 0
    return 1
}
if needs_build; then
    echo "building the ramdisk (images/build.sh)"
    if ! IRA_BIN=${IRA_BIN:-} bash "$REPO/images/build.sh"; then
        fail "images/build.sh"
        finish
    fi
fi
pass "ramdisk present: $(grep -h '^initramfs' "$OUT/ira.txt" | sed 's/  */ /g')"

case $SMOKE_LOOKUP in
    auto) if grep -aq '/v1/lookup' "$BIN"; then SMOKE_LOOKUP=1; else SMOKE_LOOKUP=0; fi ;;
    0 | 1) ;;
    *) echo "SMOKE_LOOKUP must be auto, 0 or 1" >&2; exit 2 ;;
esac

# --- fake Ironic API ------------------------------------------------------------------------
# Answers the root document (version discovery) and 404 to lookups (node not known),
# like Ironic for a MAC it has no port for; records each request with its arrival time.
cat > "$VM_SCRATCH/fake_api.py" <<'EOF'
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, record = int(sys.argv[1]), sys.argv[2]
ROOT = {"name": "OpenStack Ironic API", "versions": [{"id": "v1", "status": "CURRENT",
        "version": "1.115", "min_version": "1.1"}],
        "default_version": {"id": "v1", "status": "CURRENT", "version": "1.115",
                            "min_version": "1.1"}}
NOT_FOUND = {"error_message": json.dumps({"faultcode": "Client",
             "faultstring": "Node could not be found.", "debuginfo": None})}

class Handler(BaseHTTPRequestHandler):
    def answer(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_one(self):
        with open(record, "a") as f:
            f.write(json.dumps({"t": time.time(), "method": self.command, "path": self.path,
                                "version": self.headers.get("X-OpenStack-Ironic-API-Version")}) + "\n")
        if self.path == "/":
            self.answer(200, ROOT)
        else:
            self.answer(404, NOT_FOUND)

    do_GET = do_HEAD = do_POST = handle_one

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
EOF
API_PORT=$(vm_free_port)
API_LOG=$VM_SCRATCH/api.jsonl
: > "$API_LOG"
python3 "$VM_SCRATCH/fake_api.py" "$API_PORT" "$API_LOG" > "$VM_SCRATCH/fake_api.out" 2>&1 &
API_PID=$!
for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$API_PORT/" && break
    sleep 0.1
done
: > "$API_LOG" # forget the readiness probe
curl -s -o /dev/null "http://127.0.0.1:$API_PORT/" || { fail "fake API did not start"; finish; }
: > "$API_LOG"

# --- boot -----------------------------------------------------------------------------------
VM_HOSTPORT=$(vm_free_port)
VM_MEM=$SMOKE_MEM VM_MAC=$MAC \
    VM_APPEND="ipa-api-url=http://127.0.0.1:$API_PORT ira.fwd=$API_PORT ipa-advertise-host=127.0.0.1 ipa-advertise-port=$VM_HOSTPORT ${VM_APPEND:-}" \
    vm_boot smoke || { fail "vm_boot"; finish; }
CONSOLE=$VM_CONSOLE

first_line() { # first_line REGEX: the first console line matching, without CR and colours
    grep -a -m 1 -E -- "$1" "$CONSOLE" | tr -d '\r' | sed 's/\x1b\[[0-9;]*m//g'
}
uptime_of() { # uptime_of REGEX: the guest uptime printed on the first init line matching
    first_line "$1" | sed -n 's/.*ira-init: \[\([0-9.]*\)\].*/\1/p'
}
declare -A T=()
wait_for() { # wait_for KEY REGEX: records the host time of the first matching console line
    local t
    t=$(vm_wait_console "$2" "$SMOKE_TIMEOUT") || return 1
    T[$1]=$t
}

if wait_for init 'ira-init: \[[0-9.]+\] init started'; then
    pass "kernel booted and ran /init ($(first_line 'init started' | sed 's/.*init started; //'))"
else
    fail "kernel did not reach /init"
    tail -n 30 "$CONSOLE"
    finish
fi

if wait_for lease 'ira-init: \[[0-9.]+\] dhcp [a-z0-9]+: lease [0-9.]+/'; then
    pass "DHCP lease: $(first_line ': lease ' | sed 's/.*dhcp //')"
else
    fail "no DHCP lease"
fi

if wait_for drivers 'ira-init: \[[0-9.]+\] drivers loaded'; then
    line=$(first_line 'drivers loaded')
    missing=""
    for d in vda nvme0n1 sda; do
        case " ${line##*disks:} " in *" $d "*) ;; *) missing="$missing $d" ;; esac
    done
    if [ -z "$missing" ]; then
        pass "drivers and disks: ${line#*] }"
    else
        fail "disks missing:$missing (${line#*] })"
    fi
else
    fail "drivers were not loaded"
fi

agent_lines() { # ira's own console lines: after the first start, neither init's nor the kernel's
    tr -d '\r' <"$CONSOLE" | sed 's/\x1b\[[0-9;]*m//g' |
        awk '/ira-init: \[[0-9.]+\] started ira/ {on = 1; next}
             on && !/^ira-init: / && !/^\[ *[0-9]+\.[0-9]+\]/ && NF'
}
if wait_for ira 'ira-init: \[[0-9.]+\] started ira'; then
    pass "init started ira"
    deadline=$((SECONDS + SMOKE_TIMEOUT))
    while [ -z "$(agent_lines | head -n 1)" ] && [ $SECONDS -lt $deadline ] && vm_alive; do sleep 0.05; done
    if [ -n "$(agent_lines | head -n 1)" ]; then
        T[ira_log]=$(vm_elapsed)
        pass "ira logged to the console:"
        agent_lines | head -n 3 | sed 's/^/        | /'
    else
        fail "ira printed nothing on the console"
    fi
else
    fail "ira was not started"
fi

api_first() { # api_first PATH-PREFIX: arrival time of the first such request (epoch s)
    python3 - "$API_LOG" "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["path"].startswith(sys.argv[2]):
        print(r["t"], r["path"], r["version"])
        break
EOF
}
since_start() { # since_start EPOCH-SECONDS: seconds after QEMU started
    python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) - int(sys.argv[2]) / 1e6))' "$1" "$VM_START_US"
}
if [ "$SMOKE_LOOKUP" = 1 ]; then
    deadline=$((SECONDS + SMOKE_TIMEOUT))
    first=""
    while [ $SECONDS -lt $deadline ] && vm_alive; do
        first=$(api_first /v1/lookup)
        [ -n "$first" ] && break
        sleep 0.1
    done
    if [ -n "$first" ]; then
        read -r t path version <<<"$first"
        T[lookup]=$(since_start "$t")
        case $path in
            *"${MAC}"*) pass "ira looked the node up: GET $path (API version $version)" ;;
            *) fail "lookup without the VM's MAC $MAC: GET $path" ;;
        esac
        root=$(api_first /)
        [ -n "$root" ] && T[discovery]=$(since_start "${root%% *}")
    else
        fail "no GET /v1/lookup reached the fake API within ${SMOKE_TIMEOUT}s"
    fi
    if grep -aq 'ira exited' "$CONSOLE"; then
        fail "ira exited: $(first_line 'ira exited' | sed 's/.*] //')"
    else
        pass "ira kept running"
    fi
else
    info "lookup not checked: $BIN has no lookup client yet (SMOKE_LOOKUP=1 forces it)"
fi

# --- report ---------------------------------------------------------------------------------
mem=$(first_line 'memory: total' | sed 's/.*memory: //')
rss=$(vm_rss_kib smoke)
echo
echo "timings, seconds after QEMU started ($(vm_accel), ${SMOKE_MEM} MiB; guest uptime in brackets):"
printf '  %-28s %6s  [%s]\n' "/init runs" "${T[init]:--}" "$(uptime_of 'init started')"
printf '  %-28s %6s  [%s]\n' "DHCP lease" "${T[lease]:--}" "$(uptime_of ': lease ')"
printf '  %-28s %6s  [%s]\n' "drivers loaded" "${T[drivers]:--}" "$(uptime_of 'drivers loaded')"
printf '  %-28s %6s  [%s]\n' "ira started" "${T[ira]:--}" "$(uptime_of 'started ira')"
printf '  %-28s %6s\n' "ira's first log line" "${T[ira_log]:--}"
[ "$SMOKE_LOOKUP" = 1 ] && printf '  %-28s %6s\n' "GET / (version discovery)" "${T[discovery]:--}"
[ "$SMOKE_LOOKUP" = 1 ] && printf '  %-28s %6s\n' "first GET /v1/lookup" "${T[lookup]:--}"
echo "  guest memory at ira start: ${mem:-?}; QEMU peak RSS $((${rss:-0} / 1024)) MiB"
echo "  host load average: $(cut -d' ' -f1-3 /proc/loadavg)"
finish

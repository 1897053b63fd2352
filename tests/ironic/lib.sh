# Shared helpers for the tests that run the real Ironic (from PyPI) on 127.0.0.1.
# Source it; every process started here is recorded by PID and stopped by that PID.
#
#   IRA_CACHE        where the Ironic venv is kept between runs (default /var/tmp/ira-cache)
#   IRONIC_VERSION   pip requirement (default ironic==39.0.0)

IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
IRONIC_VERSION=${IRONIC_VERSION:-ironic==39.0.0}
IRONIC_VENV=$IRA_CACHE/ironic-venv
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Appended to every test agent's kernel command line. The test disks (loop devices, VM
# disk files) are smaller than the 4 GiB an install device needs, so the agent's start-up
# wait for one (disk_wait_attempts: 10 x 3 s by default, as IPA) would only cost 27 s per
# start: one look is enough.
IRA_TEST_CMDLINE="ipa-disk-wait-attempts=1"
export IRA_TEST_CMDLINE

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs Ironic and its client into a cached venv (about 40 s the first time).
ensure_ironic_venv() {
    mkdir -p "$IRA_CACHE"
    (
        flock 9
        if [ ! -x "$IRONIC_VENV/bin/ironic" ] || [ ! -x "$IRONIC_VENV/bin/baremetal" ]; then
            log "installing $IRONIC_VERSION into $IRONIC_VENV"
            rm -rf "$IRONIC_VENV"
            python3 -m venv "$IRONIC_VENV"
            "$IRONIC_VENV/bin/pip" install -q "$IRONIC_VERSION" python-ironicclient
        fi
        # Ironic's MySQL/MariaDB driver (the fleet tests run Ironic on MariaDB).
        if ! "$IRONIC_VENV/bin/python" -c 'import pymysql' 2>/dev/null; then
            log "installing PyMySQL into $IRONIC_VENV"
            "$IRONIC_VENV/bin/pip" install -q PyMySQL
        fi
        "$IRONIC_VENV/bin/python" -c 'import pymysql' ||
            { log "PyMySQL does not import in $IRONIC_VENV"; exit 1; }
    ) 9>"$IRA_CACHE/.ironic-venv.lock"
}

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Stops the process whose PID is in file $1 (TERM, then KILL after 10 s).
stop_pid_file() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
}

# ironic_up STATE AUTOMATED_CLEAN: config, schema, image server and Ironic in STATE.
# IRONIC_BIOS_BOOTLOADER=true sets [agent]enable_bios_bootloader_install (default false).
# IRONIC_REDFISH=1 also loads redfish.conf.in (the `redfish` hardware type, virtual media).
# IRONIC_WEBSERVER_VERIFY_CA=FILE: the CA bundle for HTTPS image URLs.
# IRONIC_HOST=ADDR: the address the API listens on and announces (default 127.0.0.1).
# IRONIC_CONF_APPEND=TEXT: sections appended to ironic.conf (oslo.config merges a
# repeated section into the first).
# Exports IRONIC_URL, IRONIC_API_PORT, HTTP_PORT, HTTP_ROOT.
ironic_up() {
    local state=$1 clean=${2:-false}
    mkdir -p "$state"/{tmp,locks,deploy-logs,http}
    IRONIC_API_PORT=$(free_port)
    HTTP_PORT=$(free_port)
    HTTP_ROOT=$state/http
    IRONIC_URL=http://${IRONIC_HOST:-127.0.0.1}:$IRONIC_API_PORT
    export IRONIC_API_PORT HTTP_PORT HTTP_ROOT IRONIC_URL
    sed -e "s|@STATE@|$state|g" -e "s|@API_PORT@|$IRONIC_API_PORT|g" \
        -e "s|@HTTP_PORT@|$HTTP_PORT|g" -e "s|@HTTP_ROOT@|$HTTP_ROOT|g" \
        -e "s|@AUTOMATED_CLEAN@|$clean|g" \
        -e "s|@BIOS_BOOTLOADER@|${IRONIC_BIOS_BOOTLOADER:-false}|g" \
        -e "s|^host_ip = 127.0.0.1\$|host_ip = ${IRONIC_HOST:-127.0.0.1}|" \
        -e "s|^endpoint_override = http://127.0.0.1:|endpoint_override = http://${IRONIC_HOST:-127.0.0.1}:|" \
        "$LIB_DIR/ironic.conf.in" > "$state/ironic.conf"
    [ -z "${IRONIC_CONF_APPEND:-}" ] || printf '\n%s\n' "$IRONIC_CONF_APPEND" >> "$state/ironic.conf"
    # The CA bundle the conductor checks HTTPS image URLs with (Ironic's default: the
    # system's).
    [ -z "${IRONIC_WEBSERVER_VERIFY_CA:-}" ] ||
        sed -i "/^\[DEFAULT\]\$/a webserver_verify_ca = $IRONIC_WEBSERVER_VERIFY_CA" "$state/ironic.conf"
    "$IRONIC_VENV/bin/ironic-dbsync" --config-file "$state/ironic.conf" create_schema \
        > "$state/dbsync.log" 2>&1 || { cat "$state/dbsync.log" >&2; return 1; }
    python3 "$LIB_DIR/imgserver.py" "$HTTP_PORT" "$HTTP_ROOT" > "$state/http.log" 2>&1 &
    echo $! > "$state/http.pid"
    local start=$SECONDS confs=(--config-file "$state/ironic.conf")
    if [ "${IRONIC_REDFISH:-0}" = 1 ]; then
        # A configured default the redfish type does not support (fake boot, management,
        # power) stops the conductor; unset, each type takes its first enabled interface,
        # which for fake-hardware is the same fake one.
        sed -i -E '/^default_(boot|management|power)_interface = fake$/d' "$state/ironic.conf"
        sed -e "s|@STATE@|$state|g" "$LIB_DIR/redfish.conf.in" > "$state/redfish.conf"
        confs+=(--config-file "$state/redfish.conf")
    fi
    "$IRONIC_VENV/bin/ironic" "${confs[@]}" > "$state/ironic.stdout" 2>&1 &
    echo $! > "$state/ironic.pid"
    # Ready = the conductor logged its start (a crashing worker is restarted forever while
    # the API answers) and the API lists the fake driver.
    for _ in $(seq 1 240); do
        if grep -q "Successfully started conductor" "$state/ironic.log" 2>/dev/null &&
            curl -sf -H 'X-OpenStack-Ironic-API-Version: latest' "$IRONIC_URL/v1/drivers" |
            grep -q fake-hardware; then
            log "ironic ready on $IRONIC_URL after $((SECONDS - start)) s (state $state)"
            return 0
        fi
        kill -0 "$(cat "$state/ironic.pid")" 2>/dev/null || break
        sleep 0.25
    done
    log "ironic did not become ready; tail of its log:"
    tail -n 30 "$state/ironic.log" "$state/ironic.stdout" >&2 2>/dev/null
    return 1
}

# ironic_down STATE: stops Ironic and the image server started by ironic_up.
# scratch_done STATE: removes a suite's scratch dir, or keeps it (and says where) with
# KEEP=1 or when the suite failed (rc unset or not 0).
scratch_done() {
    if [ "${KEEP:-0}" = 1 ] || [ "${rc:-1}" != 0 ]; then
        log "scratch dir kept: $1"
    else
        rm -rf "$1"
    fi
}

ironic_down() {
    stop_pid_file "$1/ironic.pid"
    stop_pid_file "$1/http.pid"
}

# --- disks filled with a marker, checked after an erase ------------------------------------
# The tenant data the cleaning tests plant: a known string repeated over the whole disk.
# DISK is a block device (read and written with direct I/O, past its page cache) or a
# disk file of a VM that is not running.
IRA_MARKER=${IRA_MARKER:-IRA-LIFECYCLE-MARKER-0123456789abcdef}
_dd_direct() { [ -b "$1" ] && echo "$2=direct"; }

# marker_fill DISK MIB: the marker over the first MIB MiB of DISK.
marker_fill() {
    # shellcheck disable=SC2046 # no flag for a file
    yes "$IRA_MARKER" | head -c "$(($2 << 20))" |
        dd of="$1" bs=1M $(_dd_direct "$1" oflag) iflag=fullblock conv=notrunc status=none
}
# marker_count DISK: how many 1 MiB blocks of DISK still hold the marker.
marker_count() {
    # shellcheck disable=SC2046
    dd if="$1" bs=1M $(_dd_direct "$1" iflag) status=none | python3 -c '
import sys
m, n = sys.argv[1].encode(), 0
while chunk := sys.stdin.buffer.read(1 << 20):
    n += m in chunk
print(n)' "$IRA_MARKER"
}
# all_zero DISK MIB: every byte of the first MIB MiB of DISK is zero.
all_zero() {
    # shellcheck disable=SC2046
    dd if="$1" bs=1M count="$2" $(_dd_direct "$1" iflag) status=none |
        cmp -s -n "$(($2 << 20))" - /dev/zero
}

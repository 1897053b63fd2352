# shellcheck shell=bash
# A real Redfish BMC for the VM end-to-end tests: sushy-tools' emulator (from PyPI) with
# its libvirt driver, in front of a private libvirtd (Debian's libvirt-daemon) that runs
# the VM in QEMU. Source this file (bash), do not run it.
#
#   source tests/e2e/bmc.sh
#   bmc_ensure_venv                       # sushy-tools into $IRA_CACHE/sushy-venv (cached)
#   bmc_up "$STATE"                       # libvirtd + a storage pool + sushy-emulator
#   BMC_MAC=... BMC_HOSTPORT=... bmc_define_vm node1   # defines (not starts) the domain
#   ... Ironic's redfish driver: redfish_address=$BMC_URL redfish_system_id=$BMC_SYSTEM_ID
#   bmc_down "$STATE"                     # every domain destroyed, then both daemons stopped
#
# Why a session daemon of an unprivileged user: root's libvirtd keeps its state in fixed
# system paths (/run/libvirt, /var/lib/libvirt, /etc/libvirt) shared with a system
# service; an unprivileged libvirtd keeps all of it under its XDG directories, here inside
# $STATE, listens on a socket there, and runs QEMU as that user. The user is `nobody`
# (exists on every Debian system; nothing is added to the machine). Both daemons are
# started with setpriv (which execs them, so $! is the daemon's PID) and stopped by that
# PID; each VM's QEMU is stopped through libvirt, and by its PID should libvirt be gone.
#
# Settings:
#   IRA_CACHE            venv cache (default /var/tmp/ira-cache)
#   SUSHY_TOOLS_VERSION  pip requirement (default sushy-tools==2.2.0)
#   BMC_USER             the user running libvirtd, QEMU and the emulator (default nobody)
#
# The VM (bmc_define_vm) has vm.sh's devices: a virtio-blk (serial ira-vd0), an NVMe
# (ira-nvme0) and a SATA disk on the q35 AHCI controller (ira-sata0), sparse files of
# VM_DISK_SIZE (default 1G); a virtio NIC on QEMU's user network with 127.0.0.1:BMC_HOSTPORT
# forwarded to the guest's :9999; the serial console appended to $VM_DIR/console.log
# across power cycles; every frame on the NIC captured to $VM_DIR/net.pcap. TCG (domain
# type 'qemu'): KVM does not work on these machines.
# libvirt 9.0 has no NVMe disk bus and its user interface forwards ports only with passt
# (whose guest addressing differs from QEMU's 10.0.2.0/24 that the ramdisk relies on),
# so the NVMe disk and the NIC are passed as QEMU arguments (<qemu:commandline>), in root
# complex slots that libvirt leaves free (0x1a, 0x1b).

IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
SUSHY_TOOLS_VERSION=${SUSHY_TOOLS_VERSION:-sushy-tools==2.2.0}
SUSHY_VENV=$IRA_CACHE/sushy-venv
BMC_USER=${BMC_USER:-nobody}

_bmc_log() { printf '%s bmc: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs sushy-tools into a cached venv of Debian's python3, which sees Debian's
# python3-libvirt (the binding built for the installed libvirt; tests/setup.sh installs it).
bmc_ensure_venv() {
    mkdir -p "$IRA_CACHE"
    (
        flock 9
        if [ ! -x "$SUSHY_VENV/bin/sushy-emulator" ] || ! "$SUSHY_VENV/bin/python" -c 'import libvirt' 2>/dev/null; then
            _bmc_log "installing $SUSHY_TOOLS_VERSION into $SUSHY_VENV"
            rm -rf "$SUSHY_VENV"
            /usr/bin/python3 -m venv --system-site-packages "$SUSHY_VENV" &&
                "$SUSHY_VENV/bin/pip" install -q "$SUSHY_TOOLS_VERSION"
        fi
    ) 9>"$IRA_CACHE/.sushy-venv.lock"
}

# _bmc_as STATE CMD...: runs CMD as BMC_USER with a clean environment whose HOME and XDG
# directories lie in STATE. It execs: run it in the background (`_bmc_as ... &`) and $! is
# the daemon's own PID.
_bmc_as() {
    local s=$1
    shift
    exec setpriv --reuid="$BMC_USER" --regid="$(id -gn "$BMC_USER")" --clear-groups \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$s/home" TMPDIR="$s/tmp" \
        XDG_RUNTIME_DIR="$s/run" XDG_CONFIG_HOME="$s/home/.config" \
        XDG_CACHE_HOME="$s/home/.cache" XDG_DATA_HOME="$s/home/.local/share" "$@"
}

# virsh against the private daemon.
bmc_virsh() { virsh -q -c "$BMC_LIBVIRT_URI" "$@"; }

# bmc_up STATE: starts libvirtd and sushy-emulator for STATE (made, owned by BMC_USER).
# Sets BMC_LIBVIRT_URI, BMC_URL (the emulator's Redfish root, http://127.0.0.1:PORT).
bmc_up() {
    local s=$1 port
    BMC_STATE=$s
    mkdir -p "$s"/{home,run,tmp,pool,sushy-state}
    chown -R "$BMC_USER:$(id -gn "$BMC_USER")" "$s"
    # BMC_USER must pass through the suite's scratch directory (mktemp makes it 0700).
    chmod o+x "$(dirname "$s")"
    cat > "$s/libvirtd.conf" <<EOF
unix_sock_dir = "$s/run"
log_outputs = "3:file:$s/libvirtd.log"
EOF
    BMC_LIBVIRT_URI="qemu:///session?socket=$s/run/libvirt-sock"
    _bmc_as "$s" /usr/sbin/libvirtd -f "$s/libvirtd.conf" -p "$s/run/libvirtd.pid" \
        > "$s/libvirtd.stdout" 2>&1 &
    echo $! > "$s/libvirtd.pid"
    local start=$SECONDS
    for _ in $(seq 1 120); do
        [ -S "$s/run/libvirt-sock" ] && virsh -c "$BMC_LIBVIRT_URI" version >/dev/null 2>&1 && break
        kill -0 "$(cat "$s/libvirtd.pid")" 2>/dev/null || break
        sleep 0.25
    done
    if ! virsh -c "$BMC_LIBVIRT_URI" version >/dev/null 2>&1; then
        _bmc_log "libvirtd did not come up; its log:"
        tail -n 20 "$s/libvirtd.log" "$s/libvirtd.stdout" >&2 2>/dev/null
        return 1
    fi
    _bmc_log "libvirtd (pid $(cat "$s/libvirtd.pid"), user $BMC_USER) answers on $BMC_LIBVIRT_URI after $((SECONDS - start)) s"
    # The emulator uploads every inserted virtual media image into the pool named default.
    if ! bmc_virsh pool-define-as default dir --target "$s/pool" >/dev/null ||
        ! bmc_virsh pool-start default >/dev/null; then
        _bmc_log "storage pool not created"
        return 1
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    cat > "$s/sushy.conf" <<EOF
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = $port
SUSHY_EMULATOR_LIBVIRT_URI = '$BMC_LIBVIRT_URI'
SUSHY_EMULATOR_STATE_DIR = '$s/sushy-state'
SUSHY_EMULATOR_STORAGE_POOL = 'default'
SUSHY_EMULATOR_BOOT_LOADER_MAP = {'Legacy': {'x86_64': None}, 'UEFI': {'x86_64': '/usr/share/OVMF/OVMF_CODE_4M.fd'}}
EOF
    chmod 644 "$s/sushy.conf"
    _bmc_as "$s" "$SUSHY_VENV/bin/sushy-emulator" --config "$s/sushy.conf" \
        > "$s/sushy.log" 2>&1 &
    echo $! > "$s/sushy.pid"
    BMC_URL=http://127.0.0.1:$port
    for _ in $(seq 1 120); do
        curl -sf "$BMC_URL/redfish/v1/Systems" >/dev/null 2>&1 && break
        kill -0 "$(cat "$s/sushy.pid")" 2>/dev/null || break
        sleep 0.25
    done
    if ! curl -sf "$BMC_URL/redfish/v1/Systems" >/dev/null; then
        _bmc_log "sushy-emulator did not come up; its log:"
        tail -n 20 "$s/sushy.log" >&2
        return 1
    fi
    _bmc_log "sushy-emulator (pid $(cat "$s/sushy.pid")) serves $BMC_URL/redfish/v1 after $((SECONDS - start)) s"
    export BMC_LIBVIRT_URI BMC_URL
}

# bmc_define_vm NAME: defines a powered-off domain NAME (files in $VM_SCRATCH/NAME).
# BMC_MAC: NIC MAC (required); BMC_HOSTPORT: host port forwarded to :9999 (required);
# BMC_MEM (default 256 MiB), VM_DISK_SIZE, BMC_GUEST_IP (the guest address the port is
# forwarded to; default QEMU's first DHCP address, 10.0.2.15), BMC_SSHPORT (optional: a
# host port forwarded to the guest's :22, rescue mode's SSH server), BMC_SERIAL_SOCK
# (optional: a second serial port, the guest's ttyS1, on this UNIX socket, where QEMU
# listens; for a login on a serial console). Every frame on the NIC
# (both directions, all power cycles) is captured to $VM_DIR/net.pcap (QEMU's
# filter-dump, through a FIFO and a reader stopped by bmc_down). Sets BMC_SYSTEM_ID (Redfish system path), VM_DIR, BMC_DOMAIN_UUID.
bmc_define_vm() {
    local name=${1:?bmc_define_vm NAME} mac=${BMC_MAC:?} hostport=${BMC_HOSTPORT:?}
    local dir=$VM_SCRATCH/$name size=${VM_DISK_SIZE:-1G} d
    local fwd="hostfwd=tcp:127.0.0.1:$hostport-${BMC_GUEST_IP:-}:9999" ttys1=""
    [ -z "${BMC_SSHPORT:-}" ] || fwd+=",hostfwd=tcp:127.0.0.1:$BMC_SSHPORT-${BMC_GUEST_IP:-}:22"
    [ -z "${BMC_SERIAL_SOCK:-}" ] || ttys1="<serial type='unix'>
      <source mode='bind' path='$BMC_SERIAL_SOCK'/>
      <target port='1'/>
    </serial>"
    mkdir -p "$dir"
    for d in vd0 nvme0 sata0; do
        [ -f "$dir/$d.img" ] || truncate -s "$size" "$dir/$d.img"
    done
    : > "$dir/console.log"
    # QEMU truncates a filter-dump file at every start (every power-on): it writes into a
    # FIFO instead, which a reader of ours appends to net.pcap across power cycles. The
    # reader holds the FIFO open for writing too, so it never sees end-of-file and QEMU's
    # open never blocks.
    rm -f "$dir/net.fifo" && mkfifo "$dir/net.fifo"
    python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        out.write(os.read(fd, 65536))
' "$dir/net.fifo" "$dir/net.pcap" < /dev/null > /dev/null 2>&1 &
    echo $! > "$BMC_STATE/capture-$name.pid"
    chown -R "$BMC_USER:$(id -gn "$BMC_USER")" "$dir"
    # QEMU runs as BMC_USER and opens the disk files there.
    chmod o+x "$VM_SCRATCH" "$(dirname "$VM_SCRATCH")"
    cat > "$dir/domain.xml" <<EOF
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>ira-$name</name>
  <memory unit='MiB'>${BMC_MEM:-256}</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$dir/vd0.img'/>
      <target dev='vda' bus='virtio'/>
      <serial>ira-vd0</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$dir/sata0.img'/>
      <target dev='sda' bus='sata'/>
      <serial>ira-sata0</serial>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='sata' index='0'/>
    <controller type='usb' model='none'/>
    <serial type='file'>
      <source path='$dir/console.log' append='on'/>
      <target port='0'/>
    </serial>
    $ttys1
    <console type='file'>
      <source path='$dir/console.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-drive'/>
    <qemu:arg value='file=$dir/nvme0.img,if=none,id=nvme0,format=raw'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='nvme,drive=nvme0,serial=ira-nvme0,bus=pcie.0,addr=0x1a'/>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=net0,$fwd'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=net0,mac=$mac,bus=pcie.0,addr=0x1b'/>
    <qemu:arg value='-object'/>
    <qemu:arg value='filter-dump,id=dump0,netdev=net0,file=$dir/net.fifo'/>
  </qemu:commandline>
</domain>
EOF
    bmc_virsh define "$dir/domain.xml" >/dev/null || return 1
    BMC_DOMAIN_UUID=$(bmc_virsh domuuid "ira-$name")
    # shellcheck disable=SC2034 # for the caller
    BMC_SYSTEM_ID=/redfish/v1/Systems/$BMC_DOMAIN_UUID
    # shellcheck disable=SC2034 # for the caller
    VM_DIR=$dir
    _bmc_log "defined ira-$name ($BMC_DOMAIN_UUID): mac $mac, ${fwd//hostfwd=tcp:/}, console $dir/console.log${BMC_SERIAL_SOCK:+, ttyS1 on $BMC_SERIAL_SOCK}"
}

# bmc_dhcp_requests NAME: prints how many DHCPv4 requests (UDP to port 67) the VM sent,
# read from its capture; fails when there is no capture.
bmc_dhcp_requests() {
    python3 - "$VM_SCRATCH/${1:?}/net.pcap" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
off, count = 0, 0
while off + 16 <= len(data):
    if data[off:off + 4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
        off += 24  # each QEMU start writes a new file header
        continue
    incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
    frame = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        continue
    ihl = (frame[14] & 0x0F) * 4
    if struct.unpack(">H", frame[14 + ihl + 2:14 + ihl + 4])[0] == 67:
        count += 1
print(count)
EOF
}

# bmc_domstate NAME: prints libvirt's state of domain ira-NAME (running, shut off, ...).
bmc_domstate() { bmc_virsh domstate "ira-${1:?}" 2>/dev/null | head -n 1; }

# bmc_qemu_pid NAME: prints the PID of the running domain's QEMU (libvirt's pid file).
bmc_qemu_pid() { cat "$BMC_STATE/run/libvirt/qemu/run/ira-${1:?}.pid" 2>/dev/null; }

_bmc_stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null
}

# bmc_down STATE: destroys every domain of the private libvirtd, then stops the emulator
# and libvirtd by their PIDs. A QEMU that outlived libvirt is stopped by its pid file.
bmc_down() {
    local s=$1 dom f pids=()
    [ -f "$s/libvirtd.pid" ] || [ -f "$s/sushy.pid" ] || return 0
    # QEMU's PIDs first: libvirt removes its pid files when it destroys a domain.
    for f in "$s"/run/libvirt/qemu/run/*.pid; do
        [ -f "$f" ] && pids+=("$(cat "$f")")
    done
    if [ -n "${BMC_LIBVIRT_URI:-}" ] && [ -f "$s/libvirtd.pid" ] && kill -0 "$(cat "$s/libvirtd.pid")" 2>/dev/null; then
        for dom in $(virsh -q -c "$BMC_LIBVIRT_URI" list --name 2>/dev/null); do
            virsh -q -c "$BMC_LIBVIRT_URI" destroy "$dom" >/dev/null 2>&1
        done
    fi
    [ -f "$s/sushy.pid" ] && _bmc_stop_pid "$(cat "$s/sushy.pid")"
    [ -f "$s/libvirtd.pid" ] && _bmc_stop_pid "$(cat "$s/libvirtd.pid")"
    for f in "${pids[@]}"; do _bmc_stop_pid "$f"; done
    for f in "$s"/capture-*.pid; do
        [ -f "$f" ] && _bmc_stop_pid "$(cat "$f")" && rm -f "$f"
    done
    rm -f "$s/sushy.pid" "$s/libvirtd.pid"
}

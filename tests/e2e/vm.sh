# Boot helpers for the VM end-to-end tests: source this file (bash), do not run it.
#
#   source tests/e2e/vm.sh
#   VM_SCRATCH=$(mktemp -d)           # every file of every VM lands in $VM_SCRATCH/<name>/
#   trap vm_stop_all EXIT             # or: vm_install_trap [command run before]
#   VM_APPEND="ipa-api-url=http://127.0.0.1:6385 ira.fwd=6385" vm_boot node1
#   vm_wait_console 'started ira' 60  # prints seconds since QEMU started
#   vm_stop
#
# vm_boot runs QEMU in the background and records its PID; every VM is stopped by that
# PID only. Call vm_boot in the current shell (not inside $(...)), so the variables it
# sets (VM_NAME VM_DIR VM_CONSOLE VM_PID VM_PORT VM_START_US, all about the VM just
# booted) and the list of started VMs stay visible to vm_stop_all.
#
# Settings read by vm_boot (environment or shell variables):
#   VM_SCRATCH    scratch directory (required)
#   VM_MEM        guest RAM in MiB (default 256)
#   VM_SMP        vCPUs (default 2)
#   VM_MAC        NIC MAC (default 52:54:00:12:34:56)
#   VM_HOSTPORT   host port (on 127.0.0.1) forwarded to guest :9999 (default: a free one
#                 for each VM; the port used is in VM_PORT and `vm_hostport NAME`)
#   VM_APPEND     extra kernel parameters (ipa-*, ira.*)
#   VM_QUIET      1 = kernel parameter `quiet` (default 1)
#   VM_BOOT       pvh | bzimage (default pvh): pvh boots images/out/ira.vmlinux, the same
#                 kernel uncompressed, through its PVH entry (saves the bzImage's XZ
#                 decompression: ~3 s under TCG); bzimage boots images/out/ira.kernel
#                 exactly as a PXE/iPXE firmware would load it
#   VM_KERNEL / VM_INITRD   override the kernel file / images/out/ira.initramfs
#   VM_FIRMWARE   bios | uefi (default bios): uefi boots the bzImage through OVMF
#                 (VM_OVMF_CODE / VM_OVMF_VARS, default /usr/share/OVMF/OVMF_{CODE,VARS}_4M.fd;
#                 the VARS copy lives in the VM's directory), so the guest sees EFI
#                 variables; OVMF adds several seconds under TCG
#   VM_DISK_SIZE  size of each sparse scratch disk (default 1G); existing disk files of
#                 the same VM name are kept, so a second boot sees what the first wrote
#   VM_ACCEL      kvm | tcg (default: kvm only with kvm_intel/kvm_amd, else tcg)
#   VM_CPU        TCG CPU model (default max); qemu64 hashes ~3x faster under TCG because
#                 emulated AVX2 and SHA code is slower than scalar code
#   VM_DISK_BOOT  1: no -kernel; the firmware boots what is on the disks (post-deploy)
#   VM_RO_DISK    disks attached read-only (readonly=on), space-separated among vd0
#                 nvme0 sata0; the guest's kernel then flags them read-only (ro = 1).
#                 Only vd0 works with every QEMU: ide-hd refuses a read-only drive
#   VM_QEMU_ARGS  extra QEMU arguments, split on spaces
#   VM_IPMI       a BMC on a KCS system interface: 1 = QEMU's own ipmi-bmc-sim (it has no
#                 LAN channel); tcp:PORT = ipmi-bmc-extern talking to an external BMC
#                 simulator (OpenIPMI's ipmi_sim) listening on 127.0.0.1:PORT
#   VM_NIC_OPTS   extra options of the user-mode NIC, e.g. more port forwards
#                 (",hostfwd=tcp:127.0.0.1:2222-:22")
#
# Guest devices: virtio-net NIC (user networking, netdev id net0, guest 10.0.2.15,
# host = 10.0.2.2; `-object filter-dump,id=d0,netdev=net0,file=F` in VM_QEMU_ARGS
# records its traffic),
# virtio-blk disk (serial ira-vd0), NVMe disk (serial ira-nvme0), SATA disk on an AHCI
# controller (serial ira-sata0), serial console to $VM_DIR/console.log.

VM_REPO=${VM_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# IRA_TEST_CMDLINE (appended to every test VM's kernel command line) and the Ironic helpers.
# shellcheck source=tests/ironic/lib.sh
. "$VM_REPO/tests/ironic/lib.sh"
VM_STARTED=()
declare -A VM_PIDS=() # name -> QEMU PID, kept in memory too: cleanup must not depend on files

_vm_log() { printf '%s vm: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Prints kvm when hardware virtualisation is usable, else tcg. A /dev/kvm from another
# module (kvm_pvm, nested PVM) cannot boot a stock kernel: QEMU aborts with -cpu host.
vm_accel() {
    if [ -n "${VM_ACCEL:-}" ]; then
        echo "$VM_ACCEL"
    elif [ -r /dev/kvm ] && [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
        echo kvm
    else
        echo tcg
    fi
}

# Prints a TCP port that is free on 127.0.0.1 right now.
vm_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Microseconds since the epoch, without a fork.
_vm_now_us() {
    local t=$EPOCHREALTIME
    echo "${t/./}"
}

# _vm_fmt MICROSECONDS: prints seconds with two decimals.
_vm_fmt() {
    local us=$1
    printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000))
}

# _vm_dir [NAME]: the state directory of NAME (default: the last VM booted).
_vm_dir() {
    local name=${1:-${VM_NAME:-}}
    [ -n "$name" ] || { _vm_log "no VM name"; return 1; }
    [ -n "${VM_SCRATCH:-}" ] || { _vm_log "VM_SCRATCH is not set"; return 1; }
    echo "$VM_SCRATCH/$name"
}

# vm_boot NAME: starts QEMU in the background; returns at once.
vm_boot() {
    local name=${1:?vm_boot NAME}
    [ -n "${VM_SCRATCH:-}" ] || { _vm_log "VM_SCRATCH is not set"; return 1; }
    local dir=$VM_SCRATCH/$name
    local kernel=${VM_KERNEL:-} firmware=${VM_FIRMWARE:-bios} fw=()
    if [ -z "$kernel" ]; then
        kernel=$VM_REPO/images/out/ira.kernel
        # (OVMF boots the bzImage's EFI stub; the PVH entry is for SeaBIOS only)
        if [ "${VM_BOOT:-pvh}" = pvh ] && [ "$firmware" = bios ] && [ -f "$VM_REPO/images/out/ira.vmlinux" ]; then
            kernel=$VM_REPO/images/out/ira.vmlinux
        fi
    fi
    local initrd=${VM_INITRD:-$VM_REPO/images/out/ira.initramfs}
    local mem=${VM_MEM:-256} smp=${VM_SMP:-2} mac=${VM_MAC:-52:54:00:12:34:56}
    local size=${VM_DISK_SIZE:-1G} accel append machine cpu
    mkdir -p "$dir"
    if [ ! -f "$kernel" ] || [ ! -f "$initrd" ]; then
        _vm_log "no $kernel or $initrd (run images/build.sh)"
        return 1
    fi
    if [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; then
        _vm_log "VM $name is already running"
        return 1
    fi
    accel=$(vm_accel)
    case $accel in
        kvm) machine=q35,accel=kvm cpu=host ;;
        # VM_CPU: under TCG, emulated AVX2/SHA code hashes 3x slower than scalar code.
        tcg) machine=q35,accel=tcg cpu=${VM_CPU:-max} ;;
        *) _vm_log "VM_ACCEL must be kvm or tcg"; return 1 ;;
    esac
    case $firmware in
        bios) ;;
        uefi)
            local code=${VM_OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
            local vars=${VM_OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
            if [ ! -f "$code" ] || [ ! -f "$vars" ]; then
                _vm_log "no OVMF ($code, $vars): apt-get install ovmf"
                return 1
            fi
            [ -f "$dir/efivars.fd" ] || cp "$vars" "$dir/efivars.fd"
            fw=(-drive "if=pflash,format=raw,readonly=on,file=$code"
                -drive "if=pflash,format=raw,file=$dir/efivars.fd")
            ;;
        *) _vm_log "VM_FIRMWARE must be bios or uefi"; return 1 ;;
    esac
    local hostport=${VM_HOSTPORT:-}
    [ -n "$hostport" ] || hostport=$(vm_free_port)
    append="console=ttyS0 panic=-1 $IRA_TEST_CMDLINE"
    [ "${VM_QUIET:-1}" = 1 ] && append="$append quiet"
    append="$append ${VM_APPEND:-}"
    local d
    declare -A ro=()
    for d in vd0 nvme0 sata0; do
        [ -f "$dir/$d.img" ] || truncate -s "$size" "$dir/$d.img"
        ro[$d]=""
    done
    for d in ${VM_RO_DISK:-}; do
        [ -n "${ro[$d]+set}" ] || { _vm_log "VM_RO_DISK: no disk $d (vd0 nvme0 sata0)"; return 1; }
        ro[$d]=",readonly=on"
    done
    : > "$dir/console.log"
    # shellcheck disable=SC2206 # VM_QEMU_ARGS is split on purpose
    local extra=(${VM_QEMU_ARGS:-})
    case ${VM_IPMI:-} in
        '' | 0) ;;
        1) extra+=(-device ipmi-bmc-sim,id=bmc0 -device isa-ipmi-kcs,bmc=bmc0) ;;
        tcp:*)
            extra+=(-chardev "socket,id=ipmi0,host=127.0.0.1,port=${VM_IPMI#tcp:},reconnect=1"
                -device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0) ;;
        *) _vm_log "VM_IPMI must be 1 or tcp:PORT"; return 1 ;;
    esac
    VM_START_US=$(_vm_now_us)
    # VM_DISK_BOOT=1: no kernel; the firmware boots from the disks (after a deploy).
    local direct=(-kernel "$kernel" -initrd "$initrd" -append "$append")
    [ "${VM_DISK_BOOT:-0}" = 1 ] && direct=()
    qemu-system-x86_64 \
        -name "ira-$name" -nodefaults -machine "$machine" -cpu "$cpu" -smp "$smp" -m "$mem" "${fw[@]}" \
        "${direct[@]}" \
        -nic "user,id=net0,model=virtio-net-pci,mac=$mac,hostfwd=tcp:127.0.0.1:$hostport-:9999${VM_NIC_OPTS:-}" \
        -drive "file=$dir/vd0.img,if=none,id=vd0,format=raw${ro[vd0]}" \
        -device virtio-blk-pci,drive=vd0,serial=ira-vd0 \
        -drive "file=$dir/nvme0.img,if=none,id=nvme0,format=raw${ro[nvme0]}" \
        -device nvme,drive=nvme0,serial=ira-nvme0 \
        -drive "file=$dir/sata0.img,if=none,id=sata0,format=raw${ro[sata0]}" \
        -device ahci,id=ahci0 -device ide-hd,drive=sata0,bus=ahci0.0,serial=ira-sata0 \
        -display none -vga none -monitor none -serial "file:$dir/console.log" -no-reboot \
        "${extra[@]}" \
        < /dev/null > "$dir/qemu.log" 2>&1 &
    VM_PID=$!
    echo "$VM_PID" > "$dir/qemu.pid"
    echo "$VM_START_US" > "$dir/start_us"
    echo "$hostport" > "$dir/hostport"
    # shellcheck disable=SC2034 # for the caller
    VM_NAME=$name VM_DIR=$dir VM_CONSOLE=$dir/console.log VM_PORT=$hostport
    VM_STARTED+=("$name")
    VM_PIDS[$name]=$VM_PID
    _vm_log "booted $name: pid $VM_PID, $accel, ${kernel##*/}, ${mem} MiB, mac $mac, 127.0.0.1:$hostport -> :9999${VM_RO_DISK:+, read-only: $VM_RO_DISK}, console $VM_CONSOLE"
}

# vm_alive [NAME]: true while the VM's QEMU runs.
vm_alive() {
    local dir
    dir=$(_vm_dir "${1:-}") || return 1
    [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null
}

# vm_hostport [NAME]: prints the host port forwarded to the VM's :9999.
vm_hostport() {
    local dir
    dir=$(_vm_dir "${1:-}") || return 1
    cat "$dir/hostport"
}

# vm_elapsed [NAME]: prints seconds since the VM's QEMU was started.
vm_elapsed() {
    local dir start
    dir=$(_vm_dir "${1:-}") || return 1
    start=$(cat "$dir/start_us")
    _vm_fmt $(($(_vm_now_us) - start))
}

# vm_wait_console REGEX TIMEOUT [NAME]: waits until a console line matches the extended
# REGEX; prints the seconds since QEMU started. Fails after TIMEOUT seconds, or at once
# when QEMU has exited.
vm_wait_console() {
    local re=${1:?regex} timeout=${2:?timeout} dir start deadline now
    dir=$(_vm_dir "${3:-}") || return 1
    start=$(cat "$dir/start_us")
    deadline=$(($(_vm_now_us) + timeout * 1000000))
    while :; do
        if grep -aqE -- "$re" "$dir/console.log" 2>/dev/null; then
            _vm_fmt $(($(_vm_now_us) - start))
            echo
            return 0
        fi
        if ! vm_alive "${3:-}"; then
            # One last look: the line may have been written just before QEMU exited.
            grep -aqE -- "$re" "$dir/console.log" 2>/dev/null && { vm_elapsed "${3:-}"; echo; return 0; }
            _vm_log "QEMU of ${3:-$VM_NAME} is not running (waiting for /$re/)"
            return 1
        fi
        now=$(_vm_now_us)
        [ "$now" -lt "$deadline" ] || { _vm_log "timeout after ${timeout}s waiting for /$re/"; return 1; }
        sleep 0.05
    done
}

# vm_rss_kib [NAME]: prints the peak resident size (VmHWM) of the VM's QEMU in KiB.
vm_rss_kib() {
    local dir
    dir=$(_vm_dir "${1:-}") || return 1
    awk '/^VmHWM:/ {print $2}' "/proc/$(cat "$dir/qemu.pid")/status" 2>/dev/null
}

# vm_stop [NAME]: stops the VM's QEMU by its recorded PID (TERM, then KILL after 5 s).
vm_stop() {
    local name=${1:-${VM_NAME:-}} dir pid
    [ -n "$name" ] || { _vm_log "no VM name"; return 1; }
    dir=${VM_SCRATCH:+$VM_SCRATCH/$name}
    pid=${VM_PIDS[$name]:-}
    if [ -z "$pid" ] && [ -n "$dir" ] && [ -f "$dir/qemu.pid" ]; then pid=$(cat "$dir/qemu.pid"); fi
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    unset "VM_PIDS[$name]"
    [ -z "$dir" ] || rm -f "$dir/qemu.pid"
    return 0
}

# vm_stop_all: stops every VM this shell booted (for EXIT traps; never fails).
vm_stop_all() {
    local name
    for name in "${VM_STARTED[@]}" "${!VM_PIDS[@]}"; do vm_stop "$name" || true; done
    VM_STARTED=()
declare -A VM_PIDS=() # name -> QEMU PID, kept in memory too: cleanup must not depend on files
}

# vm_install_trap [COMMAND]: on exit, Ctrl-C or TERM stop every VM booted from this
# shell, then run COMMAND (if any; e.g. removing the scratch directory).
vm_install_trap() {
    local cmd=${1:-}
    # shellcheck disable=SC2064 # expand COMMAND now
    trap "vm_stop_all${cmd:+; $cmd}" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

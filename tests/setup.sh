#!/usr/bin/env bash
# The one install step of the project (tests, demo, benchmarks): leaves this Debian machine
# with every tool they call, whatever state it started in, then checks each tool and fails
# naming the first one missing. A second run finds everything and installs nothing.
# Needs root for apt (or every tool already present). Arguments add tool:package pairs a
# caller needs beyond the common set (tests/e2e/dib.sh: debootstrap:debootstrap).
#
# Why one apt transaction and a check afterwards: a machine may come with other versions
# of some packages (a backported qemu-utils, for one), and installing a missing package
# beside them can make apt remove another to keep versions consistent. Asking for the
# whole set at once lets apt resolve one consistent set; the check proves it did.
set -euo pipefail

# tool -> Debian package. Every command the tests, images/, bench/ and the demo call.
TOOLS=(
    cc:build-essential make:make perl:perl musl-gcc:musl-tools
    python3:python3 curl:curl file:file cpio:cpio depmod:kmod dpkg-deb:dpkg
    qemu-img:qemu-utils qemu-system-x86_64:qemu-system-x86
    zstd:zstd xz:xz-utils gzip:gzip openssl:openssl genisoimage:genisoimage
    sfdisk:fdisk sgdisk:gdisk mkfs.fat:dosfstools mkfs.vfat:dosfstools fsck.fat:dosfstools
    mcopy:mtools mmd:mtools mtype:mtools
    mkfs.ext4:e2fsprogs debugfs:e2fsprogs
    losetup:mount mount:mount umount:mount blkid:util-linux blockdev:util-linux
    partx:util-linux wipefs:util-linux mkswap:util-linux flock:util-linux
    setsid:util-linux ip:iproute2 /usr/bin/time:time hyperfine:hyperfine
    timeout:coreutils sha256sum:coreutils truncate:coreutils chroot:coreutils cmp:diffutils
    lldpd:lldpd ipmi_sim:openipmi
    readelf:binutils sshpass:sshpass ssh:openssh-client ssh-keygen:openssh-client
    /usr/sbin/dmidecode:dmidecode strace:strace
    shred:coreutils dd:coreutils blkdiscard:util-linux
    mkfifo:coreutils od:coreutils sha512sum:coreutils xzcat:xz-utils
    mariadbd:mariadb-server mariadb-install-db:mariadb-server mariadb:mariadb-client
    squid:squid busybox:busybox-static
)
TOOLS+=("$@")
# The Redfish BMC of the VM suite: libvirt's daemons and client, its Python binding (for
# the emulator's venv), and what Ironic needs to build a virtual media ISO from the deploy
# kernel and ramdisk (isolinux, ldlinux.c32, mkisofs/xorriso). Installed without
# Recommends: libvirt-daemon recommends the system service packages, and this machine must
# not gain a system libvirtd; the suite starts its own, by PID.
NORECS=(libvirtd:libvirt-daemon virsh:libvirt-clients
    /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so:libvirt-daemon-driver-qemu
    /usr/lib/python3/dist-packages/libvirt.py:python3-libvirt /usr/bin/python3:python3
    /usr/lib/ISOLINUX/isolinux.bin:isolinux /usr/lib/syslinux/modules/bios/ldlinux.c32:syslinux-common
    xorriso:xorriso isoinfo:genisoimage setpriv:util-linux)
# Files (not commands) the VM suite needs: OVMF firmware for the UEFI scenarios.
FILES=(/usr/share/OVMF/OVMF_CODE_4M.fd:ovmf /usr/share/OVMF/OVMF_VARS_4M.fd:ovmf)

have() { case $1 in /*) [ -e "$1" ] ;; *) command -v "$1" >/dev/null 2>&1 ;; esac; }

missing() {  # prints "tool:package" for every tool or file not there
    local pair
    for pair in "${TOOLS[@]}" "${FILES[@]}" "${NORECS[@]}"; do
        have "${pair%%:*}" || echo "$pair"
    done
    # python3 must be able to make the cached venvs (Ironic, IPA for the benchmarks).
    python3 -c 'import venv, ensurepip' 2>/dev/null || echo "python3-venv:python3-venv"
}

# QEMU's system emulator and qemu-img must come from one release (a newer qemu-utils
# Breaks older qemu-system-common): keep a consistent installed pair, else pin both to the
# system emulator's candidate, downgrading a stray newer qemu-utils if need be.
qemu_pins() {
    local sys utils
    sys=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' qemu-system-x86 2>/dev/null | sed -n 's/^ii *//p')
    utils=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' qemu-utils 2>/dev/null | sed -n 's/^ii *//p')
    if [ -n "$sys" ] && [ "$sys" = "$utils" ]; then
        echo "qemu-system-x86 qemu-utils"
        return
    fi
    sys=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    if [ -z "$sys" ] || [ "$sys" = "(none)" ]; then
        echo "qemu-system-x86 qemu-utils"
    else
        echo "qemu-system-x86=$sys qemu-utils=$sys"
    fi
}

gaps=$(missing)
if [ -n "$gaps" ]; then
    echo "setup: missing: $(echo "$gaps" | cut -d: -f1 | tr '\n' ' ')"
    [ "$(id -u)" = 0 ] || { echo "setup: run as root to install them" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    pkgs=$(printf '%s\n' "${TOOLS[@]}" "${FILES[@]}" | cut -d: -f2 | grep -v '^qemu-' | sort -u)
    # Daemons in the set (lldpd, openipmi, mariadb, squid) must not start as system services: on the host they
    # would speak on its real NICs. The tests start them themselves, by PID, in network
    # namespaces. A policy-rc.d answering 101 keeps the package scripts from starting them.
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    # shellcheck disable=SC2046 # word splitting of the package list is wanted
    install_rc=0
    apt-get install -y -qq --allow-downgrades python3-venv $(qemu_pins) $pkgs >/dev/null ||
        install_rc=$?
    # shellcheck disable=SC2046
    [ "$install_rc" != 0 ] || apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${NORECS[@]}" | cut -d: -f2 | sort -u) >/dev/null || install_rc=$?
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$install_rc" = 0 ] || exit "$install_rc"
fi
gaps=$(missing)
if [ -n "$gaps" ]; then
    echo "setup: still missing after install (tool:package): $(echo "$gaps" | tr '\n' ' ')" >&2
    exit 1
fi
# Present is not enough: a tool that cannot run (a library removed under it) fails here.
for check in "qemu-img --version" "qemu-system-x86_64 --version" "sfdisk --version" \
    "sgdisk --version" "mkfs.fat --help" "mcopy --version" "genisoimage --version" \
    "zstd --version" "debugfs -V" "losetup --version" "hyperfine --version" "lldpd -v" \
    "virsh --version" "libvirtd --version" "xorriso -version" \
    "ip -j link show lo" "ip netns list" "sshpass -V" "ssh -V" "readelf --version" \
    "/usr/sbin/dmidecode --version" "shred --version" "blkdiscard --version" \
    "mariadbd --version" "mariadb --version" "squid -v" "busybox true"; do
    $check >/dev/null 2>&1 || { echo "setup: '$check' does not run" >&2; exit 1; }
done
/usr/bin/python3 -c 'import libvirt, venv, ensurepip' || { echo "setup: Debian's python3 cannot import libvirt (python3-libvirt) or make venvs" >&2; exit 1; }

# chronyd (the real NTP server tests/ntp.rs asks) comes unpacked from Debian's package, not
# installed: an installed chrony starts a service that would steer this machine's clock.
CHRONY_DIR=${IRA_CHRONY_DIR:-/var/cache/ira-tests/chrony}
if ! "$CHRONY_DIR/usr/sbin/chronyd" --version >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "setup: run as root to fetch chrony" >&2; exit 1; }
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq chrony 2>/dev/null)
    mkdir -p "$CHRONY_DIR"
    dpkg-deb -x "$tmp"/chrony_*.deb "$CHRONY_DIR"
    rm -rf "$tmp"
fi
"$CHRONY_DIR/usr/sbin/chronyd" --version >/dev/null 2>&1 ||
    { echo "setup: chronyd from Debian's chrony package does not run" >&2; exit 1; }

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done
rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    { echo "setup: the musl target did not install" >&2; exit 1; }
echo "setup: every tool present ($(qemu-img --version | head -n 1))"

#!/usr/bin/env bash
# Builds the ira ramdisk: images/out/ira.kernel + images/out/ira.initramfs (and
# images/out/ira.vmlinux, the same kernel uncompressed, which test VMs boot faster).
#
# The kernel and its modules come from Debian's linux-image-amd64 dependency, userspace is
# busybox-static, the CA bundle comes from ca-certificates, and rescue mode's SSH server is
# dropbear-bin with the shared libraries it needs (libc6, libcrypt1, ...). The .debs are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into a cache; nothing is installed on
# the build host. A second run reuses the cache and only repacks (a few seconds).
#
# Environment (all optional):
#   IRA_BIN         the static agent binary (default target/x86_64-unknown-linux-musl/release/ira,
#                   built with cargo when missing); any program busybox can run works as a
#                   stand-in (a `#!/bin/sh` script too)
#   IRA_CACHE       download and unpack cache (default /var/tmp/ira-cache; we use ramdisk/ in it)
#   IRA_OUT         output directory (default images/out)
#   IRA_COMPRESS    zstd | xz | gzip | none (default zstd when the zstd tool exists, else xz)
#   IRA_LEVEL       compression level (default: zstd 9, xz 9, gzip 9; zstd 19 saves 10 %
#                   of the size for 15x the time; boot time does not change)
#   IRA_KO_COMPRESS xz | none: compress module files except PLAIN_MODULES (default xz).
#                   The ramdisk's files stay in RAM (a tmpfs of at most half of it), so
#                   this is what lets the ramdisk boot in 128 MiB.
#   IRA_HWM_DIR     a directory of executable hardware managers (README "Extending ira"):
#                   every executable regular file directly in it is installed, mode 0755,
#                   into the ramdisk's managers directory /usr/lib/ira/hardware-managers.d
#                   (e.g. IRA_HWM_DIR=hardware-managers/exec for the example installer)
#   IRA_EXTRA_ROOT  a directory copied over the ramdisk root last (config files, CAs, tools)
#   IRA_KERNEL_PKG  kernel package (default: what linux-image-amd64 depends on)
#
# Host tools: apt-get, dpkg-deb, cpio, depmod (kmod), readelf (binutils), xz, and the
# chosen compressor.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
CACHE=$IRA_CACHE/ramdisk
OUT=${IRA_OUT:-$HERE/out}
DEFAULT_BIN=$REPO/target/x86_64-unknown-linux-musl/release/ira
IRA_BIN=${IRA_BIN:-}
IRA_EXTRA_ROOT=${IRA_EXTRA_ROOT:-}
IRA_HWM_DIR=${IRA_HWM_DIR:-}
# Where the agent looks for executable hardware managers (its hardware_managers_dir default).
HWM_TARGET=usr/lib/ira/hardware-managers.d
if [ -z "${IRA_COMPRESS:-}" ]; then
    if command -v zstd >/dev/null; then IRA_COMPRESS=zstd; else IRA_COMPRESS=xz; fi
fi

# --- modules ------------------------------------------------------------------------------
# Hardware drivers: shipped with their dependency closure and loaded by the ramdisk's
# coldplug (modalias), i.e. only when the hardware is present.
HW_MODULES=(
    # virtio (QEMU/KVM guests)
    virtio_pci virtio_net virtio_blk virtio_scsi virtio_rng
    # NVMe, SATA/AHCI, legacy IDE-mode SATA, SCSI disks, CD/DVD drives (virtual media)
    nvme ahci ata_piix sd_mod sr_mod
    # server RAID/HBA controllers
    megaraid_sas mpt3sas
    # USB storage
    xhci_pci ehci_pci usb_storage uas
    # wired NICs
    e1000 e1000e igb ixgbe i40e ice bnxt_en tg3 mlx5_core
    # BMC access (the agent reads the BMC address through /dev/ipmi0)
    ipmi_si ipmi_devintf
)
# Loaded explicitly at boot: nothing would trigger them before the agent needs them.
BOOT_MODULES=(loop dm_mod md_mod raid0 raid1 raid10)
# Shipped for the kernel to load on demand (mount, md personality, crypto requests).
DEMAND_MODULES=(
    raid456 efivarfs vfat nls_cp437 nls_ascii nls_iso8859_1 nls_utf8 isofs ext4 xfs
    crc32c_generic crc32c_intel
    # bonds and VLANs of a virtual-media network_data.json (ira network-data), and VLAN
    # interfaces (enable_vlan_interfaces)
    bonding 8021q
)
# Without these the test VM (virtio NIC, virtio/NVMe/AHCI disks) cannot work.
REQUIRED_MODULES=(virtio_pci virtio_net virtio_blk nvme ahci sd_mod loop dm_mod md_mod)
# Kept uncompressed (with their dependencies): what virtual machines load at every boot.
# Busybox modprobe unpacks an .ko.xz in user space, which takes seconds under QEMU TCG;
# on real hardware the other drivers unpack in milliseconds.
PLAIN_MODULES=("${REQUIRED_MODULES[@]}" "${BOOT_MODULES[@]}" virtio_scsi virtio_rng e1000 e1000e)

log() { echo "build: $*" >&2; }
die() { echo "build: ERROR: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg-deb cpio depmod readelf; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
case $IRA_COMPRESS in
    zstd) command -v zstd >/dev/null || die "zstd not found"; COMPRESS=(zstd -q "-${IRA_LEVEL:-9}" -T0 --check -c) ;;
    # The kernel's XZ decoder wants CRC32 checks.
    xz) COMPRESS=(xz "-${IRA_LEVEL:-9}" --check=crc32 -T1 -c) ;;
    gzip) COMPRESS=(gzip "-${IRA_LEVEL:-9}" -n -c) ;;
    none) COMPRESS=(cat) ;;
    *) die "IRA_COMPRESS must be zstd, xz, gzip or none" ;;
esac

# --- the agent binary -----------------------------------------------------------------------
if [ -z "$IRA_BIN" ]; then
    IRA_BIN=$DEFAULT_BIN
    if [ ! -x "$IRA_BIN" ]; then
        log "building $IRA_BIN"
        (cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl) ||
            die "cargo build of the static agent failed"
    fi
fi
[ -x "$IRA_BIN" ] || die "IRA_BIN=$IRA_BIN is not an executable file"
if head -c 4 "$IRA_BIN" | grep -q 'ELF' && command -v file >/dev/null; then
    file -L "$IRA_BIN" | grep -qE 'static(-pie)? linked|statically linked' ||
        die "$IRA_BIN is not statically linked (the ramdisk has no libc)"
fi

mkdir -p "$CACHE/debs" "$OUT"
exec 9>"$CACHE/.lock"
flock 9 # one build at a time per cache

# --- downloads (cached) ------------------------------------------------------------------
KPKG=${IRA_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}')}
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 (run apt-get update)"
KVER=${KPKG#linux-image-}

fetch_deb() { # fetch_deb PACKAGE: prints the cached .deb, downloading it once
    local pkg=$1 deb
    deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
    if [ -z "$deb" ]; then
        log "downloading $pkg"
        (cd "$CACHE/debs" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
        deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
    fi
    [ -n "$deb" ] || die "no .deb for $pkg"
    echo "$deb"
}
unpack_deb() { # unpack_deb DEB DIR: unpacks once (DIR/.done marks a complete unpack)
    if [ ! -e "$2/.done" ]; then
        rm -rf "$2"
        dpkg-deb -x "$1" "$2"
        touch "$2/.done"
    fi
}

KDEB=$(fetch_deb "$KPKG")
BBDEB=$(fetch_deb busybox-static)
CADEB=$(fetch_deb ca-certificates)
KROOT=$CACHE/kernel-$KVER
BBROOT=$CACHE/busybox
CAROOT=$CACHE/ca-certificates
unpack_deb "$KDEB" "$KROOT"
unpack_deb "$BBDEB" "$BBROOT"
unpack_deb "$CADEB" "$CAROOT"
MODDIR=$KROOT/lib/modules/$KVER
# The .deb carries no modules.dep (made at install time).
[ -s "$MODDIR/modules.dep" ] || depmod -b "$KROOT" "$KVER"
# The uncompressed kernel (an ELF with a PVH entry note) for test VMs: QEMU boots it
# directly, skipping the bzImage's XZ decompressor, which takes seconds under TCG.
VMLINUX=$KROOT/vmlinux
if [ ! -s "$VMLINUX" ]; then
    off=$(LC_ALL=C grep -m 1 -abo $'\xfd7zXZ' "$KROOT/boot/vmlinuz-$KVER" | cut -d: -f1)
    # (xz stops at the end of its stream; a pipe from tail would fail with SIGPIPE)
    if [ -n "$off" ] && xz -dc --single-stream > "$VMLINUX.tmp" 2>/dev/null \
        < <(tail -c +$((off + 1)) "$KROOT/boot/vmlinuz-$KVER") &&
        [ "$(head -c 4 "$VMLINUX.tmp")" = $'\x7fELF' ]; then
        mv "$VMLINUX.tmp" "$VMLINUX"
    else
        rm -f "$VMLINUX.tmp"
        log "could not extract vmlinux (not XZ?); VMs will boot the bzImage"
    fi
fi
BB=$BBROOT/bin/busybox
[ -x "$BB" ] || die "busybox-static has no bin/busybox"
# Rescue mode's SSH server: Debian's dropbear, dynamically linked, so it comes with the
# shared libraries it needs (found by walking DT_NEEDED with readelf) from these packages.
SSH_PKGS=(dropbear-bin libc6 libcrypt1 libtomcrypt1 libtommath1 libgmp10 zlib1g)
SSHROOT=$CACHE/ssh
mkdir -p "$SSHROOT"
for p in "${SSH_PKGS[@]}"; do unpack_deb "$(fetch_deb "$p")" "$SSHROOT/$p"; done
DROPBEAR=$SSHROOT/dropbear-bin/usr/sbin/dropbear
[ -x "$DROPBEAR" ] || die "dropbear-bin has no usr/sbin/dropbear"

# --- root tree ------------------------------------------------------------------------------
STAGE=$(mktemp -d "$CACHE/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,mnt,var,etc/ira,etc/udhcpc,etc/ssl/certs,etc/modprobe.d,lib/modules/"$KVER"}
ln -s ../run "$ROOT/var/run"
ln -s ../tmp "$ROOT/var/tmp"
install -m 0755 "$BB" "$ROOT/bin/busybox"
# Applet links made here, not at boot: fewer writes before the agent starts.
"$BB" --list-full | while read -r applet; do
    case $applet in bin/busybox | linuxrc) continue ;; esac
    dir=${applet%/*}
    [ -e "$ROOT/$applet" ] && continue
    case $dir in
        bin | sbin) ln -s ../bin/busybox "$ROOT/$applet" ;;
        usr/bin | usr/sbin) ln -s ../../bin/busybox "$ROOT/$applet" ;;
        *) die "unexpected applet path $applet" ;;
    esac
done
install -m 0755 "$HERE/init" "$ROOT/init"
install -m 0755 "$HERE/udhcpc.script" "$ROOT/etc/udhcpc/default.script"
install -m 0755 "$IRA_BIN" "$ROOT/usr/bin/ira"
cat "$CAROOT"/usr/share/ca-certificates/mozilla/*.crt > "$ROOT/etc/ssl/certs/ca-certificates.crt"
ln -s certs/ca-certificates.crt "$ROOT/etc/ssl/cert.pem"

printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"
# root has no password: nobody logs in unless rescue mode adds the `rescue` user.
printf 'root:*:::::::\n' > "$ROOT/etc/shadow"
chmod 0600 "$ROOT/etc/shadow"
printf '/bin/sh\n' > "$ROOT/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\n' > "$ROOT/etc/nsswitch.conf"
printf 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n' > "$ROOT/etc/profile"

# --- rescue: dropbear and its libraries ------------------------------------------------------
LIBDIR=$ROOT/lib/x86_64-linux-gnu
mkdir -p "$LIBDIR" "$ROOT/lib64" "$ROOT/etc/dropbear"
install -m 0755 "$DROPBEAR" "$ROOT/usr/sbin/dropbear"
declare -A LIBDONE=()
add_libs() { # add_libs ELF: copies the shared libraries ELF needs, and theirs
    local lib f
    for lib in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
        [ -n "${LIBDONE[$lib]:-}" ] && continue
        # Only the multiarch directories: their links are relative, so -L stays in the cache.
        f=$(find "$SSHROOT"/*/lib/x86_64-linux-gnu "$SSHROOT"/*/usr/lib/x86_64-linux-gnu \
            -maxdepth 1 -name "$lib" 2>/dev/null | head -n 1)
        [ -n "$f" ] || die "$lib (needed by ${1##*/}) is in none of: ${SSH_PKGS[*]}"
        LIBDONE[$lib]=1
        cp -L "$f" "$LIBDIR/$lib"
        add_libs "$LIBDIR/$lib"
    done
}
add_libs "$ROOT/usr/sbin/dropbear"
[ -n "${LIBDONE[ld-linux-x86-64.so.2]:-}" ] || die "dropbear's libraries lack the dynamic loader"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$ROOT/lib64/ld-linux-x86-64.so.2"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
: > "$ROOT/etc/resolv.conf"
# mdev as the hotplug daemon: it loads the driver for every device that appears later
# (the virtio devices behind virtio_pci, disks behind an HBA, USB sticks).
# shellcheck disable=SC2016 # literal for mdev
printf '$MODALIAS=.* 0:0 660 @modprobe -q -b "$MODALIAS"\n' > "$ROOT/etc/mdev.conf"
GITREV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat > "$ROOT/etc/os-release" <<EOF
NAME="ira ramdisk"
ID=ira
PRETTY_NAME="ira ramdisk ($GITREV, Debian kernel $KVER)"
VERSION_ID=$GITREV
EOF

# --- modules ------------------------------------------------------------------------------
modname() { # modname PATH: sets M to the module name of a .ko path (no forks: 8000 calls)
    M=${1##*/}
    M=${M%%.ko*}
    M=${M//-/_}
}
declare -A DEPLINE=() BUILTIN=()
while IFS= read -r line; do
    modname "${line%%:*}"
    DEPLINE[$M]=$line
done < "$MODDIR/modules.dep"
while IFS= read -r f; do
    modname "$f"
    BUILTIN[$M]=1
done < "$MODDIR/modules.builtin"

declare -A FILES=() PLAIN=()
shipped=() skipped=()
add_module() { # add_module NAME: the module file and its dependency closure
    local m f line
    m=${1//-/_}
    if [ -n "${BUILTIN[$m]:-}" ]; then return 0; fi
    line=${DEPLINE[$m]:-}
    if [ -z "$line" ]; then
        skipped+=("$m")
        return 0
    fi
    shipped+=("$m")
    for f in ${line%%:*} ${line#*:}; do FILES[$f]=1; done
}
for m in "${HW_MODULES[@]}" "${BOOT_MODULES[@]}" "${DEMAND_MODULES[@]}"; do add_module "$m"; done
for m in "${PLAIN_MODULES[@]}"; do
    line=${DEPLINE[${m//-/_}]:-}
    for f in ${line%%:*} ${line#*:}; do PLAIN[$f]=1; done
done
for m in "${REQUIRED_MODULES[@]}"; do
    m=${m//-/_}
    [ -n "${BUILTIN[$m]:-}" ] || [ -n "${DEPLINE[$m]:-}" ] || die "required module $m is not in $KPKG"
done
[ ${#skipped[@]} -eq 0 ] || log "not in $KPKG, skipped: ${skipped[*]}"
KO_COMPRESS=${IRA_KO_COMPRESS:-xz}
case $KO_COMPRESS in xz | none) ;; *) die "IRA_KO_COMPRESS must be xz or none" ;; esac
KOXZ=$CACHE/ko-xz-$KVER # compressed modules, made once per kernel
for f in "${!FILES[@]}"; do
    mkdir -p "$ROOT/lib/modules/$KVER/${f%/*}"
    if [ "$KO_COMPRESS" = none ] || [ -n "${PLAIN[$f]:-}" ]; then
        cp "$MODDIR/$f" "$ROOT/lib/modules/$KVER/$f"
    else
        # The kernel checks the signature appended to the uncompressed module, so
        # compressing the whole file keeps Secure Boot working. (This busybox's modprobe
        # unpacks xz, not gzip.)
        if [ ! -s "$KOXZ/$f.xz" ]; then
            mkdir -p "$KOXZ/${f%/*}"
            xz -9 --check=crc32 -c "$MODDIR/$f" > "$KOXZ/$f.xz.tmp" && mv "$KOXZ/$f.xz.tmp" "$KOXZ/$f.xz"
        fi
        cp "$KOXZ/$f.xz" "$ROOT/lib/modules/$KVER/$f.xz"
    fi
done
cp "$MODDIR"/modules.{order,builtin,builtin.modinfo} "$ROOT/lib/modules/$KVER/"
depmod -b "$ROOT" "$KVER"
printf '%s\n' "${BOOT_MODULES[@]}" > "$ROOT/etc/ira/modules.boot"

# --- executable hardware managers ----------------------------------------------------------
HWM_NAMES=()
if [ -n "$IRA_HWM_DIR" ]; then
    [ -d "$IRA_HWM_DIR" ] || die "IRA_HWM_DIR=$IRA_HWM_DIR is not a directory"
    mkdir -p "$ROOT/$HWM_TARGET"
    for f in "$IRA_HWM_DIR"/*; do
        # Only what the agent would run: executable regular files (not README, not dirs).
        if [ ! -f "$f" ] || [ ! -x "$f" ]; then continue; fi
        install -m 0755 "$f" "$ROOT/$HWM_TARGET/${f##*/}"
        HWM_NAMES+=("${f##*/}")
    done
    [ ${#HWM_NAMES[@]} -gt 0 ] || die "IRA_HWM_DIR=$IRA_HWM_DIR holds no executable file"
    log "hardware managers in /$HWM_TARGET: ${HWM_NAMES[*]}"
fi

if [ -n "$IRA_EXTRA_ROOT" ]; then
    [ -d "$IRA_EXTRA_ROOT" ] || die "IRA_EXTRA_ROOT=$IRA_EXTRA_ROOT is not a directory"
    cp -a "$IRA_EXTRA_ROOT"/. "$ROOT"/
fi

# --- pack -----------------------------------------------------------------------------------
# Sorted names and one fixed mtime: the same inputs give the same archive.
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) > "$STAGE/initramfs.cpio"
"${COMPRESS[@]}" "$STAGE/initramfs.cpio" > "$STAGE/ira.initramfs"
mv "$STAGE/ira.initramfs" "$OUT/ira.initramfs"
cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/ira.kernel.tmp" && mv "$OUT/ira.kernel.tmp" "$OUT/ira.kernel"
rm -f "$OUT/ira.vmlinux"
if [ -s "$VMLINUX" ]; then cp "$VMLINUX" "$OUT/ira.vmlinux.tmp" && mv "$OUT/ira.vmlinux.tmp" "$OUT/ira.vmlinux"; fi

raw=$(stat -c %s "$STAGE/initramfs.cpio")
packed=$(stat -c %s "$OUT/ira.initramfs")
kernel=$(stat -c %s "$OUT/ira.kernel")
modsize=$(du -sb "$ROOT/lib/modules" | cut -f1)
binsize=$(stat -c %s "$ROOT/usr/bin/ira")
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
{
    echo "kernel        $KPKG ($(mib "$kernel"), $kernel B)"
    echo "initramfs     $IRA_COMPRESS $(mib "$packed") ($packed B), uncompressed $(mib "$raw") ($raw B)"
    echo "  modules     ${#shipped[@]} requested, ${#FILES[@]} .ko files with dependencies, $(mib "$modsize")"
    echo "  ira         $IRA_BIN ($(mib "$binsize"))"
    echo "  busybox     $(basename "$BBDEB")"
    [ ${#HWM_NAMES[@]} -eq 0 ] || echo "  managers    /$HWM_TARGET: ${HWM_NAMES[*]} (from $IRA_HWM_DIR)"
    echo "  ssh         $(basename "$(fetch_deb dropbear-bin)") + ${#LIBDONE[@]} libraries, $(mib "$(cat "$DROPBEAR" "$LIBDIR"/* | wc -c)") (rescue mode only)"
    echo "  git         $GITREV"
} | tee "$OUT/ira.txt"
echo "output        $OUT/ira.kernel $OUT/ira.initramfs$([ -s "$OUT/ira.vmlinux" ] && echo " (+ ira.vmlinux for test VMs)")"

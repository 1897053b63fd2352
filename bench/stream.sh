#!/usr/bin/env bash
# Deploy benchmark, everything in one run (as root: losetup):
#   ROUNDS=3 SIZE_MIB=2048 bash bench/stream.sh
# Per round, on a loop device with --direct-io=on over a file under $WORK (/var/tmp):
#   stages alone: dd of the image onto the device (O_DIRECT + fsync), openssl dgst
#     -sha256/-sha512 of the image from page cache, curl of the image from the same HTTP
#     server (python3 -m http.server on 127.0.0.1);
#   raw image, sha256 and sha512: ira's pipeline (examples/stream_image.rs, static musl
#     release build: the agent's write_image path, decode stage from
#     ira::deploy::format_gate::stage_for), the same with mimalloc (MIMALLOC_ARENA_EAGER_COMMIT=0),
#     and IPA's own streaming code from PyPI (shared/bench-baselines/ipa_stream_driver.py);
#   the whole write_image deploy step through the agent's HTTP API (API=1): the ira binary
#     started --standalone with the loop device as its only allowed disk, then
#     deploy.get_deploy_steps and deploy.execute_deploy_step write_image (raw, sha256) as
#     the conductor sends them, polled to completion (bench/write_image_api.py); its
#     in-process figure is the step alone, beside ira_sha256 (the pipeline alone);
#   qcow2 (QCOW2=1): the image as `qemu-img convert -c -O qcow2` and as a plain qcow2,
#     streamed by ira over HTTP (disk_format qcow2, sha256 of the qcow2 file), beside
#     `qemu-img convert -f qcow2 -t none -W -O raw <local qcow2> <device>` + `sync <device>`.
# The tables (bench/stream_summary.py, which also reprints a kept results file): per run,
# wall time, peak RSS, CPU and ratios per round; then CPU-seconds per GiB of image for ira's
# raw sha256, raw sha512 and qcow2 paths beside the sum of their stages alone (dd, curl,
# openssl dgst; for qcow2 curl and openssl of the qcow2 file and qemu-img convert).
# Before every write the device is filled with a 0xA5 pattern; after it, the device is read
# back with O_DIRECT and compared with the raw image: a run that skips or garbles a range
# stops the benchmark. Each figure is whole-process wall time and peak RSS (/usr/bin/time);
# ratios compare runs of the same round (machines of this kind drift by +-25 % over minutes).
# Knobs: BIN / BIN_MI / IRA_BIN (prebuilt stream_image / stream_image_mimalloc / ira; built
#   if BIN is unset), NICE=-5 (niceness of every measured process), MIMALLOC=0, QCOW2=0,
#   IPA=0, API=0, IRA_ARGS="--writers 2". A quick check of the script itself:
#   ROUNDS=1 SIZE_MIB=64 QCOW2=0 MIMALLOC=0 IPA=0 BIN=target/debug/examples/stream_image
#   IRA_BIN=target/debug/ira bash bench/stream.sh (debug builds: figures meaningless).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash tests/setup.sh
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
WORK=${WORK:-/var/tmp/ira-bench}
ROUNDS=${ROUNDS:-3}
SIZE_MIB=${SIZE_MIB:-2048}
NICE=${NICE:-0}
QCOW2=${QCOW2:-1}
MIMALLOC=${MIMALLOC:-1}
IPA=${IPA:-1}
API=${API:-1}
IRA_ARGS=${IRA_ARGS:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SHARED=${SHARED:-$REPO/../shared}
DRIVER=$SHARED/bench-baselines/ipa_stream_driver.py
case "$WORK" in /var/tmp/*) ;; *) echo "WORK must lie under /var/tmp" >&2; exit 1 ;; esac

if [ -z "${BIN:-}" ]; then
    cargo build -q --release --target x86_64-unknown-linux-musl \
        --example stream_image --example stream_image_mimalloc --bin ira
    BIN=$TARGET_DIR/x86_64-unknown-linux-musl/release/examples/stream_image
    BIN_MI=$TARGET_DIR/x86_64-unknown-linux-musl/release/examples/stream_image_mimalloc
    IRA_BIN=${IRA_BIN:-$TARGET_DIR/x86_64-unknown-linux-musl/release/ira}
fi
[ "$MIMALLOC" = 1 ] && [ -z "${BIN_MI:-}" ] && { echo "set BIN_MI or MIMALLOC=0" >&2; exit 1; }
[ "$API" = 1 ] && [ -z "${IRA_BIN:-}" ] && { echo "set IRA_BIN or API=0" >&2; exit 1; }
IPA_PY=$IRA_CACHE/ipa-venv/bin/python
if [ "$IPA" = 1 ]; then IPA_PY=$(IRA_CACHE=$IRA_CACHE bash bench/ipa-venv.sh); fi
mkdir -p "$WORK"
# An MBR with one partition over the data: the whole write_image step refuses a disk image
# without a partition table, and an MBR (unlike a GPT, whose backup header the step moves
# to the end of the device) leaves the device byte for byte equal to the image.
IMG=$WORK/mixed-mbr-$SIZE_MIB.img
if [ ! -f "$IMG" ]; then
    # Random runs and zero runs of 64 KiB to 8 MiB, about half each.
    python3 - "$IMG" "$SIZE_MIB" <<'PY'
import os, random, sys
path, size = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(42)
with open(path + ".tmp", "wb") as f:
    left, data = size, True
    while left:
        n = min(left, rng.randrange(64 << 10, 8 << 20))
        f.write(os.urandom(n) if data else bytes(n))
        left -= n
        data = not data
PY
    echo 'label: dos
start=2048, type=83' | sfdisk -q "$IMG.tmp" >/dev/null
    mv "$IMG.tmp" "$IMG"
fi
QC=$WORK/mixed-mbr-$SIZE_MIB.c.qcow2
QP=$WORK/mixed-mbr-$SIZE_MIB.qcow2
if [ "$QCOW2" = 1 ]; then
    [ -f "$QP" ] || { qemu-img convert -f raw -O qcow2 "$IMG" "$QP.tmp" && mv "$QP.tmp" "$QP"; }
    [ -f "$QC" ] || { qemu-img convert -c -f raw -O qcow2 "$IMG" "$QC.tmp" && mv "$QC.tmp" "$QC"; }
    QC256=$(openssl dgst -sha256 -r "$QC" | cut -d' ' -f1)
    QP256=$(openssl dgst -sha256 -r "$QP" | cut -d' ' -f1)
fi
SHA256=$(openssl dgst -sha256 -r "$IMG" | cut -d' ' -f1)
SHA512=$(openssl dgst -sha512 -r "$IMG" | cut -d' ' -f1)
PATTERN=$WORK/pattern-64M
[ -f "$PATTERN" ] || head -c $((64 << 20)) /dev/zero | tr '\000' '\245' >"$PATTERN"

BACKING=$WORK/loop-backing.img
rm -f "$BACKING"
truncate -s $((SIZE_MIB + 64))M "$BACKING"
LOOP=$(losetup --find --show --direct-io=on "$BACKING")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$WORK" "$PORT" >/dev/null 2>&1 &
HTTP_PID=$!
RESULTS=$WORK/stream-results-$(date -u +%Y%m%dT%H%M%SZ).txt # kept: one line per run
: >"$RESULTS"
cleanup() {
    kill "$HTTP_PID" 2>/dev/null || true
    losetup -d "$LOOP" 2>/dev/null || true
    rm -f "$BACKING" "$RESULTS.t" "$RESULTS.e" "$RESULTS.o" "$WORK/write-image-api.cmdline"
}
trap cleanup EXIT
URL=http://127.0.0.1:$PORT/$(basename "$IMG")
QC_URL=http://127.0.0.1:$PORT/$(basename "$QC")
QP_URL=http://127.0.0.1:$PORT/$(basename "$QP")
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "$URL" && break; sleep 0.1; done
DEV_MIB=$(($(blockdev --getsize64 "$LOOP") >> 20))

warm() { # this machine reclaims cold page cache within minutes: read the sources again
    cat "$IMG" >/dev/null
    [ "$QCOW2" != 1 ] || cat "$QC" "$QP" >/dev/null
}
scramble() { # the whole device holds 0xA5 bytes, durably, before a write is measured
    local off
    for ((off = 0; off < DEV_MIB; off += 64)); do
        dd if="$PATTERN" of="$LOOP" bs=4M seek=$((off / 4)) oflag=direct status=none
    done
    sync "$LOOP"
    warm
}
same() { # the device's first SIZE_MIB MiB, read past any cache, equal the image
    dd if="$LOOP" bs=4M count=$((SIZE_MIB / 4)) iflag=direct status=none | cmp -s - "$IMG"
}
verify() { # name
    if ! same; then
        echo "== $1 left a device that differs from the image: the benchmark is void" >&2
        exit 1
    fi
    VERIFIED=$((VERIFIED + 1))
}
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
write() { # round name command...: a measured write between scramble and verify
    scramble
    measure "$@"
    verify "$2"
}
# Commands run under nice and time, so no shell functions: arrays.
IPA_CMD=(env IPA_BENCH_SAFE_ROOT="$WORK/" "$IPA_PY" "$DRIVER")
MI=(env MIMALLOC_ARENA_EAGER_COMMIT=0 "${BIN_MI:-}")
# The local qcow2 onto the device as fast as qemu-img goes (-t none -W), then durable.
# shellcheck disable=SC2016
QEMU_IMG=(sh -c 'qemu-img convert -f qcow2 -t none -W -O raw "$1" "$2" && sync "$2"' qemu_img)

VERIFIED=0
scramble # the check itself must be able to fail: a scrambled device differs from the image
if same; then echo "== the verification cannot tell a scrambled device from the image" >&2; exit 1; fi
echo "== $(date -u '+%F %T') UTC; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== image $SIZE_MIB MiB ($(basename "$IMG")), loop $LOOP (dio) over $BACKING, $ROUNDS rounds, nice $NICE, ira args '${IRA_ARGS}'"
[ "$QCOW2" = 1 ] && echo "== qcow2: $(basename "$QC") $(($(stat -c %s "$QC") >> 20)) MiB, $(basename "$QP") $(($(stat -c %s "$QP") >> 20)) MiB; $(qemu-img --version | head -n1)"
for r in $(seq "$ROUNDS"); do
    write "$r" dd_oflag_direct_fsync dd if="$IMG" of="$LOOP" bs=4M oflag=direct conv=fsync
    warm
    measure "$r" openssl_sha256 openssl dgst -sha256 "$IMG"
    measure "$r" openssl_sha512 openssl dgst -sha512 "$IMG"
    measure "$r" curl curl -sf -o /dev/null "$URL"
    # shellcheck disable=SC2086
    write "$r" ira_sha256 "$BIN" "$URL" "$LOOP" sha256 "$SHA256" $IRA_ARGS
    # shellcheck disable=SC2086
    write "$r" ira_sha512 "$BIN" "$URL" "$LOOP" sha512 "$SHA512" $IRA_ARGS
    if [ "$MIMALLOC" = 1 ]; then
        # shellcheck disable=SC2086
        write "$r" ira_mimalloc_sha256 "${MI[@]}" "$URL" "$LOOP" sha256 "$SHA256" $IRA_ARGS
        # shellcheck disable=SC2086
        write "$r" ira_mimalloc_sha512 "${MI[@]}" "$URL" "$LOOP" sha512 "$SHA512" $IRA_ARGS
    fi
    if [ "$API" = 1 ]; then
        write "$r" ira_api_write_image python3 "$REPO/bench/write_image_api.py" \
            "$IRA_BIN" "$LOOP" "$URL" "$SHA256" "$WORK"
    fi
    if [ "$IPA" = 1 ]; then
        write "$r" ipa_sha256 "${IPA_CMD[@]}" "$URL" "$SHA256" "$LOOP" --no-post
        write "$r" ipa_sha512 "${IPA_CMD[@]}" "$URL" "$SHA512" "$LOOP" --no-post
    fi
    if [ "$QCOW2" = 1 ]; then
        warm
        measure "$r" curl_qcow2c curl -sf -o /dev/null "$QC_URL"
        measure "$r" openssl_sha256_qcow2c openssl dgst -sha256 "$QC"
        # shellcheck disable=SC2086
        write "$r" ira_qcow2c "$BIN" "$QC_URL" "$LOOP" sha256 "$QC256" --disk-format qcow2 $IRA_ARGS
        # shellcheck disable=SC2086
        [ "$MIMALLOC" = 1 ] &&
            write "$r" ira_mimalloc_qcow2c "${MI[@]}" "$QC_URL" "$LOOP" sha256 "$QC256" --disk-format qcow2 $IRA_ARGS
        write "$r" qemu_img_qcow2c "${QEMU_IMG[@]}" "$QC" "$LOOP"
        # shellcheck disable=SC2086
        write "$r" ira_qcow2 "$BIN" "$QP_URL" "$LOOP" sha256 "$QP256" --disk-format qcow2 $IRA_ARGS
        measure "$r" curl_qcow2 curl -sf -o /dev/null "$QP_URL"
        measure "$r" openssl_sha256_qcow2 openssl dgst -sha256 "$QP"
        write "$r" qemu_img_qcow2 "${QEMU_IMG[@]}" "$QP" "$LOOP"
    fi
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg); $VERIFIED writes verified byte for byte against the image; runs in $RESULTS"

python3 "$REPO/bench/stream_summary.py" "$RESULTS" "$SIZE_MIB"

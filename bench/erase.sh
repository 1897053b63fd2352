#!/usr/bin/env bash
# Erase benchmark: ira's erase steps beside dd, shred, blkdiscard and IPA's own shred, all in
# the same run, on loop devices with --direct-io=on over files.
#   ROUNDS=3 NICE=-5 BIN=.../release/examples/erase_device bash bench/erase.sh
# Per round, every run a whole process (/usr/bin/time: wall, peak RSS, CPU), each on devices
# first filled with 0xA5 bytes (durably), so every run starts from written blocks:
#   one device over a file under $WORK (/var/tmp):
#     dd_1x / dd_2x: dd if=/dev/zero of=DEV bs=4M oflag=direct conv=fsync, once / twice
#       (twice = the bytes the overwrite writes: one random pass and one zero pass);
#     ira_overwrite: erase_devices as the agent runs it (examples/erase_device.rs: the
#       registry and the generic manager; IPA's defaults, one random pass and a zero pass,
#       verified), the zero pass by WRITE ZEROES, which a loop device turns into fallocate;
#     ira_overwrite_written: the same overwrite with --no-write-zeroes: both passes written;
#     shred: shred -n 1 -z DEV (what IPA runs); ipa_shred: IPA's own
#       GenericHardwareManager._shred_block_device (bench/ipa_erase_driver.py, IPA=1);
#     ira_express: erase_devices_express (discard on a loop device) beside blkdiscard DEV;
#     ira_metadata: erase_devices_metadata;
#     dd_2x_shm / ira_overwrite_written_shm: the same pair on a device over tmpfs ($SHM), where
#       the "disk" is memory and a slow generator would show;
#     dd and ira alternate which goes first from round to round;
#   two devices, one after the other (serial) and both at once (parallel), for dd (the
#     floor: one dd per device) and ira (erase_devices with disk_erasure_concurrency 1 and
#     2), on three pairs of backing files: "same" (both under $WORK, one host disk),
#     "mixed" (one under $WORK, one on tmpfs under $SHM) and "shm" (both on tmpfs).
# After every run that ends in zeros, the whole device is read back with O_DIRECT and must be
# all zeros; at start the script checks that this check fails on a filled device.
# Ratios are per round (a run over its rival of the same round), then median (min-max).
# Knobs: BIN (prebuilt erase_device; else a static musl release build), ROUNDS (3), SIZE_MIB
#   (1024; a multiple of 64), NICE (niceness of every measured run; 0), IPA (1), WORK
#   (/var/tmp/ira-bench), SHM (/dev/shm/ira-bench-erase), IRA_CACHE (/var/tmp/ira-cache: the
#   IPA venv). Uses 2 x SIZE_MIB of disk under WORK and of RAM under SHM while it runs.
#   A quick check of the script: ROUNDS=1 SIZE_MIB=64 IPA=0
#   BIN=target/debug/examples/erase_device bash bench/erase.sh (figures meaningless).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash tests/setup.sh >/dev/null
for t in shred blkdiscard dd losetup blockdev cmp /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "erase.sh: $t missing after tests/setup.sh" >&2; exit 1; }
done
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
WORK=${WORK:-/var/tmp/ira-bench}
SHM=${SHM:-/dev/shm/ira-bench-erase}
ROUNDS=${ROUNDS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
NICE=${NICE:-0}
IPA=${IPA:-1}
case "$WORK" in /var/tmp/*) ;; *) echo "WORK must lie under /var/tmp" >&2; exit 1 ;; esac
case "$SHM" in /dev/shm/*) ;; *) echo "SHM must lie under /dev/shm" >&2; exit 1 ;; esac
[ $((SIZE_MIB % 64)) = 0 ] || { echo "SIZE_MIB must be a multiple of 64" >&2; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
if [ -z "${BIN:-}" ]; then
    cargo build -q --release --target x86_64-unknown-linux-musl --example erase_device
    BIN=$TARGET_DIR/x86_64-unknown-linux-musl/release/examples/erase_device
fi
IPA_PY=
if [ "$IPA" = 1 ]; then IPA_PY=$(IRA_CACHE=$IRA_CACHE bash bench/ipa-venv.sh); fi
mkdir -p "$WORK" "$SHM"
PATTERN=$WORK/pattern-64M
[ -f "$PATTERN" ] || head -c $((64 << 20)) /dev/zero | tr '\000' '\245' >"$PATTERN"

LOOPS=()
cleanup() {
    local l
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    rm -f "$WORK"/erase-[ab].img "$RESULTS.t" "$RESULTS.e" "$RESULTS.o"
    rm -rf "$SHM"
}
RESULTS=$WORK/erase-results-$(date -u +%Y%m%dT%H%M%SZ).txt # kept: one line per run
: >"$RESULTS"
trap cleanup EXIT
attach() { # variable backing-file: a loop device with direct I/O over a new file
    rm -f "$2"
    truncate -s "${SIZE_MIB}M" "$2"
    local l
    l=$(losetup --find --show --direct-io=on "$2")
    LOOPS+=("$l")
    printf -v "$1" %s "$l"
    if [ "$(cat "/sys/block/${l#/dev/}/loop/dio")" != 1 ]; then
        echo "== $l over $2 has no direct I/O: the benchmark would measure the page cache" >&2
        exit 1
    fi
}
attach LA "$WORK/erase-a.img"
attach LB "$WORK/erase-b.img"
attach LS1 "$SHM/erase-s1.img"
attach LS2 "$SHM/erase-s2.img"
COUNT=$((SIZE_MIB / 4)) # dd blocks of 4 MiB

fill() { # devices...: every byte 0xA5, durably
    local d off
    for d in "$@"; do
        for ((off = 0; off < SIZE_MIB; off += 64)); do
            dd if="$PATTERN" of="$d" bs=4M seek=$((off / 4)) oflag=direct status=none
        done
        sync "$d"
    done
}
zeroed() { # device: all SIZE_MIB MiB read back past any cache are zero
    dd if="$1" bs=4M count="$COUNT" iflag=direct status=none |
        cmp -s -n $((SIZE_MIB << 20)) - /dev/zero
}
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
VERIFIED=0
erase() { # "devices" round name command...: fill, measure, then every device must read zero
    local devs=$1 d
    shift
    # shellcheck disable=SC2086 # the device list splits on purpose
    fill $devs
    measure "$@"
    for d in $devs; do
        if ! zeroed "$d"; then
            echo "== $2 left data on $d: the benchmark is void" >&2
            exit 1
        fi
        VERIFIED=$((VERIFIED + 1))
    done
}
# Commands run under nice and time, so no shell functions: scripts.
# shellcheck disable=SC2016
DD_SERIAL=(bash -c 'n=$1; shift; for d; do dd if=/dev/zero of="$d" bs=4M count="$n" oflag=direct conv=fsync status=none || exit 1; done' dd_serial "$COUNT")
# shellcheck disable=SC2016
DD_PARALLEL=(bash -c 'n=$1; shift; for d; do dd if=/dev/zero of="$d" bs=4M count="$n" oflag=direct conv=fsync status=none & done; for j in $(jobs -p); do wait "$j" || exit 1; done' dd_parallel "$COUNT")
# The bytes of the overwrite (a random pass and a zero pass), each pass durable.
# shellcheck disable=SC2016
DD_2X=(bash -c 'for p in 1 2; do dd if=/dev/zero of="$2" bs=4M count="$1" oflag=direct conv=fsync status=none || exit 1; done' dd_2x "$COUNT")
IPA_CMD=(env IPA_BENCH_SAFE_ROOTS="$WORK/" "$IPA_PY" "$REPO/bench/ipa_erase_driver.py")

fill "$LA" # the check itself must be able to fail
if zeroed "$LA"; then echo "== the zero check cannot tell a filled device from an erased one" >&2; exit 1; fi
echo "== $(date -u '+%F %T') UTC; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $SIZE_MIB MiB per device, $ROUNDS rounds, nice $NICE; $(shred --version | head -n1); $(blkdiscard --version)"
echo "== $LA over $WORK/erase-a.img, $LB over $WORK/erase-b.img ($(df --output=source "$WORK" | tail -n1)); $LS1, $LS2 over $SHM (tmpfs); all --direct-io=on"
for r in $(seq "$ROUNDS"); do
    echo "== round $r: $(date -u '+%T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
    # The floor and ira alternate which goes first, so a drift within a round (the host
    # disk's cache filling, another tenant's burst) does not always land on the same side.
    floor_runs() {
        erase "$LA" "$r" dd_1x dd if=/dev/zero of="$LA" bs=4M count="$COUNT" oflag=direct conv=fsync
        erase "$LA" "$r" dd_2x "${DD_2X[@]}" "$LA"
        erase "$LS1" "$r" dd_2x_shm "${DD_2X[@]}" "$LS1"
    }
    ira_runs() {
        erase "$LA" "$r" ira_overwrite "$BIN" erase_devices "$LA"
        erase "$LA" "$r" ira_overwrite_written "$BIN" erase_devices "$LA" --no-write-zeroes
        erase "$LS1" "$r" ira_overwrite_written_shm "$BIN" erase_devices "$LS1" --no-write-zeroes
    }
    if [ $((r % 2)) = 1 ]; then floor_runs; ira_runs; else ira_runs; floor_runs; fi
    erase "$LA" "$r" shred shred -n 1 -z "$LA"
    [ "$IPA" != 1 ] || erase "$LA" "$r" ipa_shred "${IPA_CMD[@]}" "$LA"
    erase "$LA" "$r" ira_express "$BIN" express "$LA"
    erase "$LA" "$r" blkdiscard blkdiscard "$LA"
    fill "$LA"
    measure "$r" ira_metadata "$BIN" metadata "$LA"
    for pair in "same $LA $LB" "mixed $LA $LS1" "shm $LS1 $LS2"; do
        read -r p d1 d2 <<<"$pair"
        erase "$d1 $d2" "$r" "dd_serial_$p" "${DD_SERIAL[@]}" "$d1" "$d2"
        erase "$d1 $d2" "$r" "dd_parallel_$p" "${DD_PARALLEL[@]}" "$d1" "$d2"
        erase "$d1 $d2" "$r" "ira_serial_$p" "$BIN" erase_devices "$d1" "$d2" --concurrency 1
        erase "$d1 $d2" "$r" "ira_parallel_$p" "$BIN" erase_devices "$d1" "$d2" --concurrency 2
    done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg); $VERIFIED device reads after an erase were all zeros; runs in $RESULTS"

python3 - "$RESULTS" "$SIZE_MIB" <<'PY'
import collections, json, statistics, sys
size = int(sys.argv[2]) << 20
by = collections.defaultdict(dict)
cpu = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, name, sec, rss, usr, sys_, js = line.split()
    by[name][r] = (float(sec), int(rss), json.loads(js) if js != "-" else None)
    cpu[name].append(float(usr) + float(sys_))

# Bytes each run writes as data (WRITE ZEROES and discard are not data writes).
data = {"dd_1x": size, "dd_2x": 2 * size, "ira_overwrite": size, "ira_overwrite_written": 2 * size,
        "dd_2x_shm": 2 * size, "ira_overwrite_written_shm": 2 * size, "shred": 2 * size, "ipa_shred": 2 * size}
for p in ("same", "mixed", "shm"):
    data.update({f"dd_serial_{p}": 2 * size, f"dd_parallel_{p}": 2 * size,
                 f"ira_serial_{p}": 2 * size, f"ira_parallel_{p}": 2 * size})

def t(name, r):
    return by[name][r][0]

def ratio(name, other, f=t):
    rs = sorted(f(name, r) / t(other, r) for r in by[name] if r in by.get(other, {}))
    if not rs:
        return "-"
    return f"{statistics.median(rs):.2f}x ({rs[0]:.2f}-{rs[-1]:.2f})"

def random_pass(name, r):  # seconds of the first pass, as the agent logged it
    return by[name][r][2]["passes"][0]["seconds"]

print(f"\n{'run':22} {'median s':>8} {'min-max s':>11} {'data MB/s':>9} {'RSS MiB':>7} {'CPU s':>5}  method")
for name, runs in by.items():
    secs = [s for s, _, _ in runs.values()]
    med = statistics.median(secs)
    rss = statistics.median(m for _, m, _ in runs.values()) / 1024
    rate = f"{data[name] / med / 1e6:9.0f}" if name in data else f"{'':9}"
    js = next(iter(runs.values()))[2]
    how = ",".join(sorted(set(js["methods"]))) if js and "methods" in js else ""
    if js and js.get("passes"):
        how += " (" + "+".join(sorted({p["kind"] for p in js["passes"]})) + ")"
    print(f"{name:22} {med:8.2f} {min(secs):5.2f}-{max(secs):<5.2f} {rate} {rss:7.1f} {statistics.median(cpu[name]):5.2f}  {how}")

print("\nratios per round, median (min-max):")
rows = [
    ("ira_overwrite_written", "dd_2x", "overwrite, both passes written, / dd writing the same bytes (aim <= 1.05x)"),
    ("ira_overwrite_written_shm", "dd_2x_shm", "the same on tmpfs (memory: here the generator would show if it were the floor)"),
    ("ira_overwrite", "dd_1x", "overwrite as the agent runs it (zero pass by WRITE ZEROES) / dd of one pass"),
    ("shred", "ira_overwrite_written", "shred -n 1 -z / ira, both passes written"),
    ("ipa_shred", "ira_overwrite_written", "IPA's _shred_block_device / ira, both passes written"),
    ("ipa_shred", "shred", "IPA / the shred it runs"),
    ("ira_express", "blkdiscard", "erase_devices_express / blkdiscard"),
]
for p in ("same", "mixed", "shm"):
    rows.append((f"dd_parallel_{p}", f"dd_serial_{p}", f"dd, two disks ({p}): parallel / serial"))
    rows.append((f"ira_parallel_{p}", f"ira_serial_{p}", f"ira, two disks ({p}): parallel / serial (aim <= 0.6x where independent)"))
for a, b, what in rows:
    if a in by and b in by:
        print(f"  {ratio(a, b):22} {what}")
if "ira_overwrite_written" in by:
    print(f"  {ratio('ira_overwrite_written', 'dd_1x', random_pass):22} ira's random pass alone (as logged) / dd of one pass")
if "ipa_shred" in by:
    ira = statistics.median(m for _, m, _ in by["ira_overwrite"].values()) / 1024
    ipa = statistics.median(m for _, m, _ in by["ipa_shred"].values()) / 1024
    print(f"  peak RSS: ira {ira:.1f} MiB, IPA {ipa:.1f} MiB (the larger of python and its shred child)")
print("data MB/s = bytes written as data (WRITE ZEROES and discard not counted) / median wall time; "
      "RSS = median of the runs' peaks; CPU s = median user + system time of the process and its children")
PY

#!/usr/bin/env bash
# Streaming benchmark, in one run: ira's image pipeline (examples/stream_image.rs, static
# musl release build) beside each stage measured alone and beside IPA's own streaming code.
#   ROUNDS=3 SIZE_MIB=2048 bash bench/stream.sh        (as root: losetup)
#   IRA_ARGS="--writers 2" adds pipeline options to the ira runs.
#   EXTRA="name|/path/to/stream_image|--args ..." (';'-separated) adds variants measured in
#   the same rounds, e.g. a build with --features openssl-sha512 or the mimalloc example.
# Stages alone: dd to the loop device (O_DIRECT + fsync), openssl dgst sha256/sha512 of the
# image from page cache, curl of the image from the same HTTP server. Target: a loop device
# with --direct-io=on over a sparse file under $WORK (IPA's driver refuses anything else).
# Every figure is whole-process wall time and peak RSS from /usr/bin/time; ratios compare
# each run with the slowest stage of its own round (machines of this kind drift ±25 %).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
WORK=${WORK:-/var/tmp/ira-bench}
ROUNDS=${ROUNDS:-3}
SIZE_MIB=${SIZE_MIB:-2048}
IRA_ARGS=${IRA_ARGS:-}
EXTRA=${EXTRA:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SHARED=${SHARED:-$REPO/../shared}
DRIVER=$SHARED/bench-baselines/ipa_stream_driver.py

if [ -z "${BIN:-}" ]; then # BIN=path measures a prebuilt binary instead
    cargo build -q --release --target x86_64-unknown-linux-musl --example stream_image
    BIN=$TARGET_DIR/x86_64-unknown-linux-musl/release/examples/stream_image
fi
if [ ! -x "$IRA_CACHE/ipa-venv/bin/python" ] ||
    ! "$IRA_CACHE/ipa-venv/bin/python" -c 'import ironic_python_agent' 2>/dev/null; then
    python3 -m venv "$IRA_CACHE/ipa-venv"
    "$IRA_CACHE/ipa-venv/bin/pip" install -q ironic-python-agent
fi
mkdir -p "$WORK"
IMG=$WORK/mixed-$SIZE_MIB.img
if [ ! -f "$IMG" ]; then
    # Random runs and zero runs of 64 KiB to 8 MiB, about half each, and an MBR-like start.
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
os.replace(path + ".tmp", path)
PY
fi
SHA256=$(openssl dgst -sha256 -r "$IMG" | cut -d' ' -f1)
SHA512=$(openssl dgst -sha512 -r "$IMG" | cut -d' ' -f1)
BACKING=$WORK/loop-backing.img
rm -f "$BACKING"
truncate -s $((SIZE_MIB + 64))M "$BACKING"
LOOP=$(losetup --find --show --direct-io=on "$BACKING")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$WORK" "$PORT" >/dev/null 2>&1 &
HTTP_PID=$!
RESULTS=$(mktemp)
cleanup() {
    kill "$HTTP_PID" 2>/dev/null || true
    losetup -d "$LOOP" 2>/dev/null || true
    rm -f "$BACKING" "$RESULTS" "$RESULTS.t" "$RESULTS.e"
}
trap cleanup EXIT
URL=http://127.0.0.1:$PORT/$(basename "$IMG")
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "$URL" && break; sleep 0.1; done

measure() { # round name command...
    local round=$1 name=$2
    shift 2
    if /usr/bin/time -f '%e %M' -o "$RESULTS.t" "$@" >/dev/null 2>"$RESULTS.e"; then
        echo "$round $name $(cat "$RESULTS.t")" >>"$RESULTS"
    else
        echo "== $name failed:" >&2
        cat "$RESULTS.e" >&2
        exit 1
    fi
}

echo "== $(nproc) CPUs, image $SIZE_MIB MiB, loop $LOOP (dio), $ROUNDS rounds, ira args: '${IRA_ARGS}'"
for r in $(seq "$ROUNDS"); do
    cat "$IMG" >/dev/null # the machine reclaims cold page cache: read it again each round
    measure "$r" "dd_oflag_direct_fsync" dd if="$IMG" of="$LOOP" bs=4M oflag=direct conv=fsync
    measure "$r" "openssl_sha256" openssl dgst -sha256 "$IMG"
    measure "$r" "openssl_sha512" openssl dgst -sha512 "$IMG"
    measure "$r" "curl" curl -sf -o /dev/null "$URL"
    # shellcheck disable=SC2086
    measure "$r" "ira_sha256" "$BIN" "$URL" "$LOOP" sha256 "$SHA256" $IRA_ARGS
    cmp -n $((SIZE_MIB << 20)) "$IMG" "$LOOP" || { echo "ira wrote a wrong image" >&2; exit 1; }
    # shellcheck disable=SC2086
    measure "$r" "ira_sha512" "$BIN" "$URL" "$LOOP" sha512 "$SHA512" $IRA_ARGS
    IFS=';' read -ra variants <<<"$EXTRA"
    for v in "${variants[@]}"; do
        IFS='|' read -r vname vbin vargs <<<"$v"
        # shellcheck disable=SC2086
        measure "$r" "ira_${vname}_sha256" "$vbin" "$URL" "$LOOP" sha256 "$SHA256" $vargs
        # shellcheck disable=SC2086
        measure "$r" "ira_${vname}_sha512" "$vbin" "$URL" "$LOOP" sha512 "$SHA512" $vargs
    done
    measure "$r" "ipa_sha256" env IPA_BENCH_SAFE_ROOT="$WORK/" "$IRA_CACHE/ipa-venv/bin/python" "$DRIVER" "$URL" "$SHA256" "$LOOP" --no-post
    measure "$r" "ipa_sha512" env IPA_BENCH_SAFE_ROOT="$WORK/" "$IRA_CACHE/ipa-venv/bin/python" "$DRIVER" "$URL" "$SHA512" "$LOOP" --no-post
done

python3 - "$RESULTS" "$SIZE_MIB" <<'PY'
import collections, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
mb = (int(sys.argv[2]) << 20) / 1e6
by = collections.defaultdict(dict)
for r, name, sec, rss in rows:
    by[name][r] = (float(sec), int(rss))
def floor(r, algo):
    return max(by[n][r][0] for n in ("dd_oflag_direct_fsync", f"openssl_{algo}", "curl"))
print(f"{'run':24} {'median s':>9} {'range s':>13} {'MB/s':>6} {'peak RSS':>9}  time / slowest stage of its round")
for name, runs in by.items():
    secs = [s for s, _ in runs.values()]
    rss = max(m for _, m in runs.values())
    med = statistics.median(secs)
    ratio = ""
    algo = "sha512" if name.endswith("sha512") else "sha256"
    if name.startswith(("ira", "ipa")):
        rs = sorted(s / floor(r, algo) for r, (s, _) in runs.items())
        ratio = f"{statistics.median(rs):.2f}x ({rs[0]:.2f}-{rs[-1]:.2f}) vs max(dd, openssl {algo}, curl)"
    print(f"{name:24} {med:9.2f} {min(secs):6.2f}-{max(secs):<6.2f} {mb / med:6.0f} {rss / 1024:7.1f}MB  {ratio}")
PY

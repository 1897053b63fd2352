#!/usr/bin/env bash
# Fleet simulation: one real Ironic (from PyPI; API + conductor, the single `ironic`
# service) on a real MariaDB, N host-run ira agents, images from an object-store-like
# origin (signed Swift temp URL -> 302 -> presigned S3 URL) behind a real Squid that the
# agents use as the nodes' `image_http_proxy`. Every node goes through inspection, idle
# agents (fast track: heartbeats in `manageable`, then the API down for OUTAGE seconds),
# provide (cleaning), deploy to active and undeploy (cleaning) back to available, all
# nodes at once.
# tests/fleet/fleet.py plays the machines and measures; this script sets up, checks the
# logs and prints the report.
#
#   bash bench/fleet.sh N
#
#   IRA_BIN   agent binary (default: the newer of the musl release and debug builds)
#   IDLE      seconds of idle heartbeats measured (fast track, agents running in
#             `manageable`; default 120; 0: no idle phase)
#   OUTAGE    seconds the API is down (default 60; 0: no outage)
#   AFTER     seconds watched after the outage (default 60)
#   ERASE     metadata (default: [deploy]erase_devices_priority=0, cleaning wipes metadata
#             only) or full (Ironic's default erase_devices: 1 random pass + zeros)
#   DISK_MB   each node's loop device (default 24, sparse)
#   CHECK=1   exit 1 unless every node reached every target, the origin sent the image
#             once, node 0's cut download resumed with Range through the proxy and no
#             log holds a URL signature (tests/fleet/run.sh sets it)
#   AGENT_DEBUG=1  agents log at debug level (ipa-debug=1)
#   KEEP=1    keep the scratch dir; OUT=file also writes the JSON result there
# Run as root (loop devices). Nothing but the loop devices made here is written to.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$REPO/tests/ironic/lib.sh"
. "$REPO/tests/fleet/services.sh"
N=${1:?usage: fleet.sh N}
IDLE=${IDLE:-120}
OUTAGE=${OUTAGE:-60}
AFTER=${AFTER:-60}
ERASE=${ERASE:-metadata}
DISK_MB=${DISK_MB:-24}
if [ -z "${IRA_BIN:-}" ]; then
    IRA_BIN=$(ls -t "$REPO/target/x86_64-unknown-linux-musl/release/ira" "$REPO/target/debug/ira" \
        2>/dev/null | head -n1)
fi
[ -x "${IRA_BIN:-}" ] || { echo "no ira binary (build it first or set IRA_BIN)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices)" >&2; exit 1; }
for tool in mariadbd squid losetup sgdisk mkfs.ext4 curl; do
    command -v $tool >/dev/null || { echo "$tool missing: run tests/setup.sh" >&2; exit 1; }
done
ensure_ironic_venv || exit 1

STATE=$(mktemp -d /var/tmp/ira-fleet.XXXXXX)
LOOPS=()
rc=1
cleanup() {
    ironic_down "$STATE"
    stop_pid_file "$STATE/origin.pid"
    squid_down "$STATE"
    mariadb_down "$STATE"
    for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
    rm -f "$STATE"/disks/*.img
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then log "scratch dir kept: $STATE"; else rm -rf "$STATE"; fi
}
trap cleanup EXIT
T_START=$SECONDS

# --- the image: GPT, partition 1 = ext4 root (8 MiB at 1 MiB) -------------------------------
mkdir -p "$STATE/images" "$STATE/stage/etc" "$STATE/disks"
printf 'fleet image\n' > "$STATE/stage/etc/hostname"
IMG=$STATE/images/fleet.img
truncate -s 16M "$IMG"
sgdisk -n 1:2048:+8M -t 1:8300 -c 1:root "$IMG" >/dev/null 2>&1 || exit 1
mkfs.ext4 -q -F -L fleet-root -d "$STATE/stage" "$STATE/root.fs" 8M >/dev/null || exit 1
dd if="$STATE/root.fs" of="$IMG" bs=1M seek=1 conv=notrunc status=none
SHA=$(sha256sum "$IMG" | cut -d' ' -f1)
# The same bytes under another name for node 0: the origin cuts its first download short.
cp "$IMG" "$STATE/images/resume.img"

# --- loop devices, one per node -------------------------------------------------------------
for i in $(seq 0 $((N - 1))); do
    truncate -s "${DISK_MB}M" "$STATE/disks/$i.img"
    l=$(losetup --find --show "$STATE/disks/$i.img") || { log "losetup failed at node $i"; exit 1; }
    LOOPS+=("$l")
done
printf '%s\n' "${LOOPS[@]}" > "$STATE/loops"
log "$N loop devices: ${LOOPS[0]} .. ${LOOPS[$((N - 1))]}"

# --- database, proxy, origin, Ironic ----------------------------------------------------------
mariadb_up "$STATE" || exit 1
ORIGIN_PORT=$(free_port)
SECRET=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
python3 "$REPO/tests/fleet/origin.py" "$ORIGIN_PORT" "$STATE/images" "$STATE/origin.jsonl" \
    "$SECRET" --cut resume.img 6000000 > "$STATE/origin.stdout" 2>&1 &
echo $! > "$STATE/origin.pid"
squid_up "$STATE" "$ORIGIN_PORT" || exit 1
IMAGE_URL=$(python3 -c "
import sys; sys.path.insert(0, '$REPO/tests/fleet'); import origin
print(origin.swift_url('http://127.0.0.1:$ORIGIN_PORT', '$SECRET', 'fleet.img'))")
RESUME_URL=$(python3 -c "
import sys; sys.path.insert(0, '$REPO/tests/fleet'); import origin
print(origin.swift_url('http://127.0.0.1:$ORIGIN_PORT', '$SECRET', 'resume.img'))")
# The secrets a log must never show: every signature.
python3 -c "
import sys; sys.path.insert(0, '$REPO/tests/fleet'); import origin
for name in ('fleet.img', 'resume.img'):
    print(origin.signature('$SECRET', 'swift', name)); print(origin.signature('$SECRET', 's3', name))" \
    > "$STATE/signatures"

ironic_conf() {  # the tests' Ironic config, on MariaDB, with the fleet's erase setting
    mkdir -p "$STATE"/{tmp,locks,deploy-logs,http}
    IRONIC_API_PORT=$(free_port)
    IRONIC_URL=http://127.0.0.1:$IRONIC_API_PORT
    HTTP_PORT=$ORIGIN_PORT
    sed -e "s|@STATE@|$STATE|g" -e "s|@API_PORT@|$IRONIC_API_PORT|g" \
        -e "s|@HTTP_PORT@|$HTTP_PORT|g" -e "s|@HTTP_ROOT@|$STATE/http|g" \
        -e "s|@AUTOMATED_CLEAN@|true|g" -e "s|@BIOS_BOOTLOADER@|false|g" \
        "$REPO/tests/ironic/ironic.conf.in" > "$STATE/ironic.conf"
    python3 - "$STATE/ironic.conf" "$DB_URL" "$ERASE" <<'PY'
import sys
path, db, erase = sys.argv[1:]
text = open(path).read()
lines = [f"connection = {db}" if l.startswith("connection = sqlite") else l
         for l in text.splitlines()]
text = "\n".join(lines) + "\n"
if erase == "metadata":
    text = text.replace("[deploy]\n", "[deploy]\nerase_devices_priority = 0\n", 1)
# A fleet's conductor: the API answers many agents at once.
text = text.replace("[database]\n", "[database]\nmax_pool_size = 20\nmax_overflow = 40\n", 1)
# Ironic refuses (503) more than 50 cleanings at once by default; the fleet cleans all.
text = text.replace("[conductor]\n", "[conductor]\nmax_concurrent_clean = 1000\n"
                    "max_concurrent_deploy = 1000\n", 1)
open(path, "w").write(text)
PY
}
ironic_conf
"$IRONIC_VENV/bin/ironic-dbsync" --config-file "$STATE/ironic.conf" create_schema \
    > "$STATE/dbsync.log" 2>&1 || { cat "$STATE/dbsync.log" >&2; exit 1; }
"$IRONIC_VENV/bin/ironic" --config-file "$STATE/ironic.conf" > "$STATE/ironic.stdout" 2>&1 &
echo $! > "$STATE/ironic.pid"
for _ in $(seq 1 240); do
    grep -q "Successfully started conductor" "$STATE/ironic.log" 2>/dev/null &&
        curl -sf -H 'X-OpenStack-Ironic-API-Version: latest' "$IRONIC_URL/v1/drivers" |
        grep -q fake-hardware && break
    sleep 0.25
done
curl -sf "$IRONIC_URL/v1/drivers" >/dev/null || { log "ironic did not start"; tail -n 30 "$STATE/ironic.log"; exit 1; }
log "ironic ready on $IRONIC_URL (MariaDB); setup took $((SECONDS - T_START)) s"

# --- the run -----------------------------------------------------------------------------------
RESULT=$STATE/result.json
"$IRONIC_VENV/bin/python" "$REPO/tests/fleet/fleet.py" --ironic-url "$IRONIC_URL" \
    --state "$STATE" --venv "$IRONIC_VENV" --ira "$IRA_BIN" --n "$N" --loops "$STATE/loops" \
    --image-url "$IMAGE_URL" --resume-url "$RESUME_URL" --sha256 "$SHA" --proxy "$PROXY_URL" --idle "$IDLE" \
    --outage "$OUTAGE" --after "$AFTER" --out "$RESULT" ${AGENT_DEBUG:+--debug}
fleet_rc=$?

# --- Range through the proxy: a resumed download asks for the rest of the image ------------------
# After the fleet, the image is in Squid's cache: a request for a range of it (what ira
# sends when a body is cut short) is answered 206 from the cache, without the origin.
S3_URL=$(python3 -c "
import sys; sys.path.insert(0, '$REPO/tests/fleet'); import origin
print('http://127.0.0.1:$ORIGIN_PORT' + origin.S3 + 'fleet.img?' + origin.s3_query('$SECRET', 'fleet.img'))")
gets_before=$(grep -cE '"method": "GET", "path": "/s3/images/fleet.img", "status": 20[06]' "$STATE/origin.jsonl")
RANGE_CODE=$(curl -s -o "$STATE/range.part" -w '%{http_code}' -x "$PROXY_URL" -r 5000000- "$S3_URL")
gets_after=$(grep -cE '"method": "GET", "path": "/s3/images/fleet.img", "status": 20[06]' "$STATE/origin.jsonl")
if [ "$RANGE_CODE" = 206 ] && cmp -s "$STATE/range.part" <(tail -c +5000001 "$IMG") &&
    [ "$gets_after" = "$gets_before" ]; then RANGE_OK=1; else RANGE_OK=0; fi
log "Range 5000000- through the proxy: HTTP $RANGE_CODE, origin GETs $gets_before -> $gets_after, ok: $RANGE_OK"
rm -f "$STATE/range.part"
echo "{\"code\": \"$RANGE_CODE\", \"ok\": $RANGE_OK}" > "$STATE/range.json"

# --- what the origin and the proxy saw, and the logs ------------------------------------------
python3 - "$STATE" "$RESULT" "$N" <<'PY'
import json, os, sys
state, result_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = json.load(open(result_path)) if os.path.exists(result_path) else {"flows": {}}
origin = [json.loads(l) for l in open(f"{state}/origin.jsonl")]
img = [r for r in origin if r["path"] == "/s3/images/fleet.img"]
resume = [r for r in origin if r["path"] == "/s3/images/resume.img" and r["method"] == "GET"]
# Node 0's image: the first download was cut; ira asked for the rest with Range.
res["resume"] = {"gets": [(r["status"], r["bytes"], r["range"]) for r in resume],
                 "resumed": any(r["status"] == 206 and (r["range"] or "").startswith("bytes=")
                                for r in resume)}
res["origin"] = {
    "image_gets": sum(1 for r in img if r["method"] == "GET" and r["status"] in (200, 206)),
    "image_bytes": sum(r["bytes"] for r in img),
    "image_heads": sum(1 for r in img if r["method"] == "HEAD"),
    "redirects": sum(1 for r in origin if r["status"] == 302),
    "refused": sum(1 for r in origin if r["status"] >= 400),
}
squid = [l.split() for l in open(f"{state}/squid/access.log")]
codes = {}
for f in squid:
    if len(f) > 6 and "/s3/images/fleet.img" in f[6]:
        codes[f[3]] = codes.get(f[3], 0) + 1
res["proxy"] = {"image_requests": codes,
                "temp_url_redirects": sum(1 for f in squid if len(f) > 6 and "/swift/" in f[6]
                                          and f[3].endswith("/302"))}
res["range_from_cache"] = json.load(open(f"{state}/range.json"))
secrets = open(f"{state}/signatures").read().split()
leaks = {}
# Every log of the run: agents, Ironic, Squid, the origin, MariaDB (not the machines'
# roots, the disks, the image or the database files).
for top, dirs, files in os.walk(state):
    dirs[:] = [d for d in dirs if d not in ("roots", "disks", "images", "data", "stage")]
    for name in files:
        path = os.path.join(top, name)
        if name in ("signatures", "result.json") or not os.path.isfile(path) \
                or os.path.islink(path):
            continue
        data = open(path, "rb").read()
        rel = os.path.relpath(path, state)
        if rel == "ironic.log":
            # The conductor itself logs instance_info (image URL included) at DEBUG, which
            # this test Ironic runs at: counted apart, it is not the agent's to fix.
            debug = [l for l in data.splitlines() if b" DEBUG " in l]
            res["ironic_debug_lines_with_signature"] = sum(
                1 for l in debug if any(s.encode() in l for s in secrets))
            data = b"\n".join(l for l in data.splitlines() if b" DEBUG " not in l)
        hits = sum(data.count(s.encode()) for s in secrets)
        if hits:
            leaks[rel] = hits
res["signature_leaks"] = leaks
json.dump(res, open(result_path, "w"), indent=1)
PY
[ -n "${OUT:-}" ] && cp "$RESULT" "$OUT"
python3 "$REPO/tests/fleet/report.py" "$RESULT"

if [ "${CHECK:-0}" = 1 ]; then
    python3 - "$RESULT" "$N" <<'PY' || fleet_rc=1
import json, sys
res, n = json.load(open(sys.argv[1])), int(sys.argv[2])
bad = []
for name, target in (("inspect", "manageable"), ("provide", "available"), ("deploy", "active"),
                     ("undeploy", "available")):
    got = res["flows"].get(name, {}).get("reached", 0)
    print(("PASS" if got == n else "FAIL") + f" fleet: {got}/{n} nodes reached {target} ({name})")
    bad += [name] if got != n else []
o = res["origin"]["image_gets"]
print(("PASS" if o == 1 else "FAIL") + f" fleet: the origin sent the image {o} time(s) for {n} deploys")
bad += ["origin"] if o != 1 else []
r = res["proxy"]["temp_url_redirects"]
print(("PASS" if r >= n else "FAIL") + f" fleet: the agents followed the temp URL's redirect ({r} for {n} nodes)")
bad += ["redirects"] if r < n else []
rs = res["resume"]
print(("PASS" if rs["resumed"] else "FAIL") + f" fleet: a download cut short resumed with Range through the proxy {rs['gets']}")
bad += ["resume"] if not rs["resumed"] else []
rc_ = res["range_from_cache"]
print(("PASS" if rc_["ok"] else "FAIL") + f" fleet: a Range request through the proxy is served from its cache ({rc_['code']})")
bad += ["range"] if not rc_["ok"] else []
leaks = res["signature_leaks"]
print(("PASS" if not leaks else "FAIL") + f" fleet: no log holds a URL signature {leaks or ''}")
bad += ["leaks"] if leaks else []
sys.exit(1 if bad else 0)
PY
fi
rc=$fleet_rc
log "fleet of $N done in $((SECONDS - T_START)) s (rc $rc)"
exit $rc

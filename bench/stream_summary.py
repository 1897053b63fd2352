#!/usr/bin/env python3
"""The tables of bench/stream.sh, from its results file (one line per measured run).

Usage: stream_summary.py RESULTS SIZE_MIB

Also runs alone on a kept results file ($WORK/stream-results-*.txt), so figures of an
older run can be printed again with this version's tables.

Table 1: per run, median wall time, MB/s, peak RSS, in-process time, CPU; ratios per round.
Table 2: CPU-seconds (user + system of the whole process) per GiB of raw image, ira's
pipeline beside the stages it is made of, each run alone: a figure that does not move with
the machine's load the way wall time does. Raw: dd + curl + openssl dgst of the algorithm.
qcow2: curl and openssl dgst -sha256 of the qcow2 file plus qemu-img convert of the local
file (it reads, decodes and writes). The HTTP server's CPU is in neither.
"""
import collections, json, statistics, sys
mb = (int(sys.argv[2]) << 20) / 1e6
by = collections.defaultdict(dict)
cpu = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, name, sec, rss, usr, sys_, js = line.split()
    inner = None
    if js != "-":
        j = json.loads(js)
        inner = j.get("seconds", j.get("stream_s", 0) + j.get("fsync_s", 0))
    by[name][r] = (float(sec), int(rss), inner)
    cpu[name].append(float(usr) + float(sys_))

def t(name, r):
    return by[name][r][0]

def floor(r, algo):
    return max(t(n, r) for n in ("dd_oflag_direct_fsync", f"openssl_{algo}", "curl"))

def ratio(runs, other):  # per-round ratio: run time / other(round)
    rs = sorted(s / other(r) for r, (s, _, _) in runs.items() if other(r))
    return f"{statistics.median(rs):.2f}x ({rs[0]:.2f}-{rs[-1]:.2f})"

def compare(name):
    runs = by[name]
    algo = "sha512" if name.endswith("sha512") else "sha256"
    out = []
    if name.startswith(("ira", "ipa")) and "qcow2" not in name:
        out.append(f"{ratio(runs, lambda r: floor(r, algo))} of floor max(dd, openssl {algo}, curl)")
    if name == "ira_api_write_image":
        out.append(f"{ratio(runs, lambda r: t('ira_sha256', r))} of ira_sha256 (the pipeline alone)")
    if name.startswith("ipa"):
        out.append(f"ira is {ratio({r: (by['ira_' + algo][r][0], 0, 0) for r in runs}, lambda r: runs[r][0])} of IPA's time")
    if name.startswith("ira_mimalloc"):
        base = "ira_" + name[len("ira_mimalloc_"):]
        out.append(f"{ratio(runs, lambda r: t(base, r))} of {base}")
    if name.startswith("ira") and "qcow2" in name:
        q = "qemu_img_" + name.split("_")[-1]
        out.append(f"{ratio(runs, lambda r: t(q, r))} of {q}")
    return "; ".join(out)

print(f"\n{'run':22} {'median s':>8} {'min-max s':>11} {'MB/s':>5} {'RSS MiB':>7} {'in-proc s':>9} {'CPU s':>5}  ratios per round: median (min-max)")
for name, runs in by.items():
    secs = [s for s, _, _ in runs.values()]
    rss = statistics.median(m for _, m, _ in runs.values()) / 1024
    inner = [i for _, _, i in runs.values() if i is not None]
    med = statistics.median(secs)
    ins = f"{statistics.median(inner):9.2f}" if inner else f"{'':9}"
    rate = f"{'':5}" if name.endswith(("_qcow2c", "_qcow2")) and not name.startswith(("ira", "qemu")) else f"{mb / med:5.0f}"
    print(f"{name:22} {med:8.2f} {min(secs):5.2f}-{max(secs):<5.2f} {rate} {rss:7.1f} {ins} {statistics.median(cpu[name]):5.2f}  {compare(name)}")
print(f"\nfloor per round (slowest stage alone): sha256 "
      + ", ".join(f"{floor(r, 'sha256'):.2f}" for r in sorted(by['curl']))
      + " s; sha512 " + ", ".join(f"{floor(r, 'sha512'):.2f}" for r in sorted(by['curl'])) + " s")
print("MB/s = image bytes (raw size, also for qcow2) / median wall time; RSS = median of the runs' peaks; "
      "in-proc = the write timed inside the process (ira: pipeline; ira_api_write_image: the step, "
      "first POST to last poll; IPA: method + fsync); "
      "CPU s = median user + system time of the process")
gib = int(sys.argv[2]) / 1024


def cpu_med(name):
    return statistics.median(cpu[name]) if cpu.get(name) else None


STAGES = [
    ("raw, sha256", "ira_sha256", ["dd_oflag_direct_fsync", "curl", "openssl_sha256"]),
    ("raw, sha512", "ira_sha512", ["dd_oflag_direct_fsync", "curl", "openssl_sha512"]),
    ("raw, sha256, mimalloc", "ira_mimalloc_sha256", ["dd_oflag_direct_fsync", "curl", "openssl_sha256"]),
    ("raw, sha512, mimalloc", "ira_mimalloc_sha512", ["dd_oflag_direct_fsync", "curl", "openssl_sha512"]),
    ("qcow2c, sha256", "ira_qcow2c", ["curl_qcow2c", "openssl_sha256_qcow2c", "qemu_img_qcow2c"]),
    ("qcow2c, sha256, mimalloc", "ira_mimalloc_qcow2c", ["curl_qcow2c", "openssl_sha256_qcow2c", "qemu_img_qcow2c"]),
    ("qcow2, sha256", "ira_qcow2", ["curl_qcow2", "openssl_sha256_qcow2", "qemu_img_qcow2"]),
]
rows = []
for label, ira, parts in STAGES:
    mine = cpu_med(ira)
    alone = [cpu_med(p) for p in parts]
    if mine is None or any(a is None for a in alone):
        continue
    total = sum(alone)
    stages = " + ".join(f"{p} {a / gib:.2f}" for p, a in zip(parts, alone))
    rows.append(f"{label:25} {mine / gib:9.2f} {total / gib:9.2f} {mine / total:6.2f}x  {stages}")
if rows:
    print(f"\nCPU-seconds per GiB of raw image (user + system, median of rounds)")
    print(f"{'path':25} {'ira':>9} {'stages':>9} {'ratio':>7}  stages alone")
    print("\n".join(rows))

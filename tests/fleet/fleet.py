#!/usr/bin/env python3
"""Drives a fleet of host-run ira agents through one real Ironic, all nodes at once.

Each node is a fake-hardware node with its own agent "machine": a system root of its own
(this machine's /proc, /dev, /run and /sys, but a NIC `fleet0` with the node's MAC and a
DMI identity with the node's serial), one loop device as its only allowed disk and
--no-power-off. Power is fake, so this script plays the machines: when a node enters a
state where a ramdisk would boot (`inspect wait`, `clean wait`, `wait call-back`) it
starts a fresh ira for it, and when the node reaches a state where the conductor has
powered it off (manageable, available, active, or a failure) it stops that agent, by PID.

Flows, each for every node at once: inspect -> (idle agents: Ironic restarted with fast
track, a manual cleaning leaves every agent running and heartbeating in `manageable`;
then an API outage) -> provide (automated cleaning) -> deploy -> undeploy (cleaning).
Per flow it records the Ironic processes' CPU seconds (/proc/<pid>/stat), the API
requests the agents made (lookup, heartbeat, continue_inspection, from Ironic's log of
requests), each node's time to the target state and the agents' summed RSS. The
result is one JSON document (--out).
"""

import argparse
import atexit
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ironic"))
from ironic_api import Ironic  # noqa: E402

WAIT_STATES = {"inspect wait", "clean wait", "wait call-back"}
# The conductor is done with the ramdisk (it powered the node off, or gave up).
OFF_STATES = {"enroll", "manageable", "available", "active", "inspect failed",
              "clean failed", "deploy failed", "error"}
TICK = os.sysconf("SC_CLK_TCK")
AGENT_PATHS = ("/v1/lookup", "/v1/heartbeat/", "/v1/continue_inspection")


def log(msg):
    print(time.strftime("%H:%M:%S ") + msg, file=sys.stderr, flush=True)


# --- the Ironic processes: CPU from /proc --------------------------------------------------

def proc_tree(root_pid):
    """PIDs of root_pid and all its descendants."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids):
    """utime + stime of the live processes in pids."""
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
    return total


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class IronicProcess:
    """The running `ironic` service (API + conductor); restartable for the outage."""

    def __init__(self, state, venv):
        self.state, self.venv = state, venv
        self.pidfile = os.path.join(state, "ironic.pid")
        self.cpu_before_restarts = 0.0

    def pid(self):
        with open(self.pidfile) as f:
            return int(f.read())

    def cpu(self):
        return self.cpu_before_restarts + cpu_seconds(proc_tree(self.pid()))

    def stop(self):
        pid = self.pid()
        self.cpu_before_restarts += cpu_seconds(proc_tree(pid))
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.25)
        os.kill(pid, signal.SIGKILL)

    def set_fast_track(self, on):
        path = os.path.join(self.state, "ironic.conf")
        text = open(path).read()
        text = re.sub(r"(?m)^fast_track = \w+$", f"fast_track = {str(on).lower()}", text)
        open(path, "w").write(text)

    def start(self, url):
        out = open(os.path.join(self.state, "ironic.stdout"), "a")
        p = subprocess.Popen([os.path.join(self.venv, "bin", "ironic"), "--config-file",
                              os.path.join(self.state, "ironic.conf")],
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        with open(self.pidfile, "w") as f:
            f.write(str(p.pid))
        for _ in range(480):
            try:
                with urllib.request.urlopen(url + "/v1/drivers", timeout=5) as r:
                    if b"fake-hardware" in r.read():
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        raise RuntimeError("ironic did not come back")


# --- requests the API saw ----------------------------------------------------------------

# Ironic's own request log (logger ironic.api): `2026-12-06 04:22:53.888 13756 INFO
# ironic.api [req-...] 127.0.0.1 - POST /v1/nodes - 201 (61.78ms)`.
ACCESS = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ INFO ironic\.api \[[^\]]*\] '
                    r'\S+ - (GET|POST|PUT|PATCH|DELETE|HEAD) (\S+) - (\d+) \(')


def requests_in(log_path, start_offset, end_offset=None):
    """(time, method, path, status) of each API request logged between the offsets."""
    out = []
    with open(log_path, "rb") as f:
        f.seek(start_offset)
        data = f.read() if end_offset is None else f.read(end_offset - start_offset)
    for line in data.decode(errors="replace").splitlines():
        m = ACCESS.match(line)
        if m:
            t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
            t += float("0." + m.group(1)[20:])
            out.append((t, m.group(2), m.group(3).split("?")[0], int(m.group(4))))
    return out


def classify(reqs):
    counts = {"lookup": 0, "heartbeat": 0, "continue_inspection": 0, "other": 0}
    for _, _, path, _ in reqs:
        if path.startswith("/v1/lookup"):
            counts["lookup"] += 1
        elif path.startswith("/v1/heartbeat/"):
            counts["heartbeat"] += 1
        elif path.startswith("/v1/continue_inspection"):
            counts["continue_inspection"] += 1
        else:
            counts["other"] += 1
    return counts


# --- the machines --------------------------------------------------------------------------

def make_root(root, index, mac):
    """This machine's system root with the node's own NIC and DMI identity."""
    os.makedirs(os.path.join(root, "sys", "class", "net", "fleet0"), exist_ok=True)
    for name in ("proc", "dev", "run"):
        if not os.path.lexists(os.path.join(root, name)):
            os.symlink("/" + name, os.path.join(root, name))
    for e in os.listdir("/sys"):
        dst = os.path.join(root, "sys", e)
        if e in ("class", "firmware") or os.path.lexists(dst):
            continue
        os.symlink(f"/sys/{e}", dst)
    # No EFI: install_bootloader must not touch this machine's boot variables.
    os.makedirs(os.path.join(root, "sys", "firmware"), exist_ok=True)
    for e in os.listdir("/sys/firmware"):
        dst = os.path.join(root, "sys", "firmware", e)
        if e != "efi" and not os.path.lexists(dst):
            os.symlink(f"/sys/firmware/{e}", dst)
    for e in os.listdir("/sys/class"):
        dst = os.path.join(root, "sys", "class", e)
        if e not in ("net", "dmi") and not os.path.lexists(dst):
            os.symlink(f"/sys/class/{e}", dst)
    nic = os.path.join(root, "sys", "class", "net", "fleet0")
    for name, value in (("address", mac), ("carrier", "1"), ("operstate", "up"),
                        ("type", "1"), ("speed", "10000")):
        with open(os.path.join(nic, name), "w") as f:
            f.write(value + "\n")
    if not os.path.lexists(os.path.join(nic, "device")):
        os.symlink(f"/sys/devices/pci0000:00/0000:00:{index % 32:02x}.0", os.path.join(nic, "device"))
    dmi = os.path.join(root, "sys", "class", "dmi", "id")
    os.makedirs(dmi, exist_ok=True)
    for name, value in (("sys_vendor", "Fleet Simulation"), ("product_name", "ira fleet node"),
                        ("product_serial", f"FLEET-{index:05d}"), ("product_sku", "fleet"),
                        ("bios_vendor", "Fleet"), ("bios_version", "1.0"),
                        ("bios_date", "12/06/2026")):
        with open(os.path.join(dmi, name), "w") as f:
            f.write(value + "\n")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Machine:
    def __init__(self, index, state, loop):
        self.index = index
        self.mac = "52:54:%02x:%02x:%02x:%02x" % (0xf1, (index >> 16) & 0xff, (index >> 8) & 0xff,
                                                   index & 0xff)
        self.name = f"fleet-{index:03d}"
        self.root = os.path.join(state, "roots", self.name)
        self.loop = loop
        self.uuid = None
        self.proc = None
        self.boots = 0
        self.crashes = 0
        make_root(self.root, index, self.mac)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def boot(self, fleet, mode):
        self.boots += 1
        port = free_port()
        if mode == "inspect":
            # The simulated NIC gets no address: no DHCP wait before inspecting.
            params = [f"ipa-inspection-callback-url={fleet.url}/v1/continue_inspection",
                      f"BOOTIF=01-{self.mac.replace(':', '-')}",
                      "ipa-inspection-dhcp-wait-timeout=0"]
        else:
            params = [f"ipa-api-url={fleet.url}", "ipa-advertise-host=127.0.0.1",
                      f"ipa-advertise-port={port}"]
        # Loop devices are under the 4 GiB an install device needs: one look at start.
        params += ["ipa-disk-wait-attempts=1"]
        if fleet.debug:
            params.append("ipa-debug=1")
        cmdline = os.path.join(self.root, f"cmdline-{self.boots}")
        with open(cmdline, "w") as f:
            f.write(" ".join(params) + "\n")
        out = open(os.path.join(fleet.logs, f"{self.name}-{self.boots}-{mode}.log"), "w")
        self.proc = subprocess.Popen(
            [fleet.ira, "--cmdline-file", cmdline, "--sysroot", self.root,
             "--device-allowlist", self.loop, "--no-power-off", "--listen-host", "127.0.0.1",
             "--listen-port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()

    def off(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Fleet:
    def __init__(self, args):
        self.url = args.ironic_url
        self.api = Ironic(self.url)
        self.ira = args.ira
        self.debug = args.debug
        self.logs = os.path.join(args.state, "agents")
        os.makedirs(self.logs, exist_ok=True)
        loops = open(args.loops).read().split()
        self.machines = [Machine(i, args.state, loops[i]) for i in range(args.n)]
        self.by_uuid = {}
        self.states = {}
        self.polled_at = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.rss_peak_kib = 0
        self.agents_peak = 0
        self.paused = threading.Event()
        # While set, agents keep running in a powered-off state (fast track).
        self.keep = threading.Event()

    def nodes(self):
        r = self.api.call("GET", "/v1/nodes?fields=uuid,provision_state&limit=1000")
        return {n["uuid"]: n["provision_state"] for n in r["nodes"]}

    def supervise(self):
        """Plays the machines' power: boots an agent where a ramdisk would run."""
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.2)
                continue
            polled = time.monotonic()
            try:
                states = self.nodes()
            except (OSError, RuntimeError, urllib.error.URLError):
                time.sleep(0.5)
                continue
            with self.lock:
                self.states = states
                self.polled_at = polled
                self.act(states)
            rss = sum(rss_kib(m.proc.pid) for m in self.machines if m.running())
            self.rss_peak_kib = max(self.rss_peak_kib, rss)
            self.agents_peak = max(self.agents_peak, sum(m.running() for m in self.machines))
            time.sleep(0.5)

    def act(self, states):
        """Boots or stops agents for the node states just read (under the lock)."""
        for uuid, st in states.items():
            m = self.by_uuid.get(uuid)
            if m is None:
                continue
            if self.stop.is_set():
                break
            if st in WAIT_STATES and not m.running():
                if m.proc is not None:
                    m.crashes += 1
                    log(f"{m.name}: agent exited with {m.proc.returncode} in {st}")
                m.boot(self, "inspect" if st == "inspect wait" else "lookup")
            elif st in OFF_STATES and m.proc is not None and not self.keep.is_set():
                m.off()

    def wait_all(self, target, timeout, t0):
        """Waits until every node is in target (or failed); returns {uuid: seconds}."""
        done, deadline = {}, time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                states = dict(self.states)
                fresh = self.polled_at > t0
            if not fresh:
                time.sleep(0.2)
                continue
            for m in self.machines:
                st = states.get(m.uuid)
                if m.uuid not in done and (st == target or (st or "").endswith("failed")):
                    done[m.uuid] = (time.monotonic() - t0, st)
            if len(done) == len(self.machines):
                break
            time.sleep(0.2)
        return done

    def all_off(self):
        """Every agent stopped (the player goes on)."""
        with self.lock:
            for m in self.machines:
                m.off()

    def shutdown(self):
        """The player first, so it boots nothing after this, then every agent."""
        self.stop.set()
        self.all_off()


def parallel(fn, items, workers=8):
    """Runs fn over items on a few threads (the API calls of the flows' starts)."""
    items, errors = list(items), []
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if not items:
                    return
                it = items.pop()
            try:
                fn(it)
            except Exception as e:  # report, do not hang the run
                with lock:
                    errors.append(f"{getattr(it, 'name', it)}: {e}")

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(errors[:5]))


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ironic-url", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--ira", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--loops", required=True, help="file listing one loop device per node")
    ap.add_argument("--image-url", required=True)
    ap.add_argument("--resume-url", help="node 0's image (same bytes; its first download is cut)")
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--idle", type=float, default=0, help="seconds of idle heartbeats measured")
    ap.add_argument("--outage", type=float, default=0, help="seconds the API is down")
    ap.add_argument("--after", type=float, default=60, help="seconds watched after the outage")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    fleet = Fleet(args)
    # Whatever happens, no agent outlives the run (each is stopped by its PID).
    atexit.register(fleet.shutdown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ironic = IronicProcess(args.state, args.venv)
    api_log = os.path.join(args.state, "ironic.log")
    result = {"n": args.n, "flows": {}, "nodes_failed": {}}

    log(f"creating {args.n} nodes")
    t0 = time.monotonic()

    def create(m):
        m.uuid = fleet.api.create_node(m.name, m.mac, driver_info={
            "image_http_proxy": args.proxy, "deploy_kernel": "http://127.0.0.1/none",
            "deploy_ramdisk": "http://127.0.0.1/none"})
        fleet.api.call("PATCH", f"/v1/nodes/{m.uuid}", [
            {"op": "add", "path": "/properties/root_device", "value": {"name": m.loop}}])
        fleet.api.provision(m.uuid, "manage")

    parallel(create, fleet.machines)
    fleet.by_uuid = {m.uuid: m for m in fleet.machines}
    sup = threading.Thread(target=fleet.supervise, daemon=True)
    sup.start()
    fleet.wait_all("manageable", 120, t0)
    result["create_s"] = round(time.monotonic() - t0, 1)

    def flow(name, start_fn, target):
        log(f"flow {name}: {args.n} nodes")
        fleet.rss_peak_kib = 0
        fleet.agents_peak = 0
        off0 = os.path.getsize(api_log)
        cpu0 = ironic.cpu()
        t = time.monotonic()
        parallel(start_fn, fleet.machines)
        done = fleet.wait_all(target, args.timeout, t)
        wall = time.monotonic() - t
        cpu1 = ironic.cpu()
        reqs = requests_in(api_log, off0)
        counts = classify(reqs)
        times = [s for s, st in done.values() if st == target]
        failed = {fleet.by_uuid[u].name: st for u, (_, st) in done.items() if st != target}
        missing = [m.name for m in fleet.machines if m.uuid not in done]
        if failed or missing:
            result["nodes_failed"][name] = {"failed": failed, "timed_out": missing}
            for u, (_, st) in list(done.items())[:3]:
                if st != target:
                    log(f"{fleet.by_uuid[u].name}: {st}: {fleet.api.node(u).get('last_error')}")
        agent_reqs = sum(counts[k] for k in ("lookup", "heartbeat", "continue_inspection"))
        result["flows"][name] = {
            "target": target, "reached": len(times), "wall_s": round(wall, 1),
            "ironic_cpu_s": round(cpu1 - cpu0, 2),
            "ironic_cpu_s_per_node": round((cpu1 - cpu0) / args.n, 3),
            "agent_requests": counts,
            "agent_requests_per_node": round(agent_reqs / args.n, 2),
            "time_to_target_s": {"p50": pct(times, 50), "p95": pct(times, 95),
                                 "p99": pct(times, 99), "max": pct(times, 100)},
            "per_minute": round(len(times) / (max(times) / 60), 1) if times else 0,
            "agents_rss_peak_mib": round(fleet.rss_peak_kib / 1024, 1),
            "agents_peak": fleet.agents_peak,
        }
        log(f"flow {name}: {json.dumps(result['flows'][name])}")
        # Let the last agents be stopped before the next flow starts.
        time.sleep(1.5)

    flow("inspect", lambda m: fleet.api.provision(m.uuid, "inspect"), "manageable")

    if args.idle > 0 or args.outage > 0:
        # Idle agents: Ironic restarted with [deploy]fast_track = true, a manual cleaning
        # (erase_devices_metadata) boots every ramdisk, and afterwards the conductor leaves
        # the nodes powered on in `manageable`, their agents heartbeating: what an idle
        # fleet of running agents costs. (A `hold` step would park the nodes in `clean
        # hold`, but this Ironic drops it from manual clean steps once the ramdisk's steps
        # are known.)
        fleet.paused.set()
        ironic.stop()
        ironic.set_fast_track(True)
        ironic.start(args.ironic_url)
        fleet.paused.clear()
        fleet.keep.set()
        log("idle: fast-track cleaning, waiting for every node back in manageable")
        t = time.monotonic()
        parallel(lambda m: fleet.api.provision(m.uuid, "clean", clean_steps=[
            {"interface": "deploy", "step": "erase_devices_metadata"}]), fleet.machines)
        time.sleep(3)
        held = fleet.wait_all("manageable", args.timeout, t)
        result["idle_reached"] = sum(1 for _, st in held.values() if st == "manageable")
        time.sleep(5)
        if args.idle > 0:
            # Nothing changes state now: the machines' player stops polling the API, so
            # only the agents' heartbeats reach Ironic.
            fleet.paused.set()
            time.sleep(1)
            off0 = os.path.getsize(api_log)
            cpu0 = ironic.cpu()
            time.sleep(args.idle)
            cpu1 = ironic.cpu()
            fleet.paused.clear()
            counts = classify(requests_in(api_log, off0))
            result["idle"] = {
                "seconds": args.idle, "agents": sum(m.running() for m in fleet.machines),
                "ironic_cpu_s": round(cpu1 - cpu0, 2),
                "ironic_cpu_s_per_node_hour": round((cpu1 - cpu0) / args.n * 3600 / args.idle, 2),
                "agent_requests": counts,
                "heartbeats_per_node_hour": round(counts["heartbeat"] / args.n * 3600 / args.idle, 1),
                "agents_rss_mib": round(sum(rss_kib(m.proc.pid) for m in fleet.machines
                                            if m.running()) / 1024, 1),
            }
            log(f"idle: {json.dumps(result['idle'])}")
        if args.outage > 0:
            fleet.paused.set()
            log(f"outage: Ironic stopped for {args.outage:.0f} s")
            ironic.stop()
            t_down = time.time()
            time.sleep(args.outage)
            off0 = os.path.getsize(api_log)
            ironic.start(args.ironic_url)
            t_up = time.time()
            log(f"outage: Ironic back after {t_up - t_down:.0f} s; watching {args.after:.0f} s")
            fleet.paused.clear()
            time.sleep(args.after)
            reqs = [r for r in requests_in(api_log, off0) if r[2].startswith(AGENT_PATHS)]
            hist = {}
            for t_req, _, path, status in reqs:
                sec = int(t_req - t_up)
                hist[sec] = hist.get(sec, 0) + 1
            first_ok = {}
            for t_req, _, path, status in reqs:
                if path.startswith("/v1/heartbeat/") and status == 202:
                    first_ok.setdefault(path, t_req - t_up)
            result["outage"] = {
                "down_s": round(t_up - t_down, 1), "watched_s": args.after,
                "per_second": [hist.get(s, 0) for s in range(-5, int(args.after))],
                "per_second_from": -5,
                "max_per_second": max(hist.values()) if hist else 0,
                "agents_back": len(first_ok),
                "back_within_s": round(max(first_ok.values()), 1) if first_ok else None,
            }
            log(f"outage: {json.dumps(result['outage'])}")
        # Back to the ordinary configuration; the nodes are powered off.
        fleet.paused.set()
        ironic.stop()
        fleet.keep.clear()
        fleet.all_off()
        ironic.set_fast_track(False)
        ironic.start(args.ironic_url)
        fleet.paused.clear()
        time.sleep(1)

    flow("provide", lambda m: fleet.api.provision(m.uuid, "provide"), "available")

    def deploy(m):
        url = args.resume_url if m.index == 0 and args.resume_url else args.image_url
        fleet.api.set_image(m.uuid, url, args.sha256, "raw")
        fleet.api.provision(m.uuid, "active")

    flow("deploy", deploy, "active")
    flow("undeploy", lambda m: fleet.api.provision(m.uuid, "deleted"), "available")

    fleet.stop.set()
    sup.join(5)
    fleet.all_off()
    result["agent_boots"] = sum(m.boots for m in fleet.machines)
    result["agent_crashes"] = sum(m.crashes for m in fleet.machines)
    result["nodes"] = {m.name: m.uuid for m in fleet.machines}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    ok = not result["nodes_failed"]
    log("fleet: " + ("every node reached every target" if ok else
                     f"failures: {json.dumps(result['nodes_failed'])[:400]}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

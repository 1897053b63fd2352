#!/usr/bin/env python3
"""Start-up benchmark: ira against IPA's own API server, measured in the same run.

Figures (median, min-max over N runs, after one warm-up):
  ira  exec -> API answering GET /v1/status   (--standalone: no lookup, serves at once)
  ira  exec -> first request at the Ironic API (version discovery, GET /)
  ira  exec -> first GET /v1/lookup
  IPA  exec -> its API app answering GET /v1/status (ironic-python-agent from PyPI,
       imports ironic_python_agent.agent first as the real agent does; no managers)
  RSS of each server once it answers.

ira runs with a device allow-list that matches nothing and --no-power-off.
usage: startup.py IRA_BIN IPA_PYTHON RUNS
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
NO_DISK = "/dev/ira-bench-no-such-disk"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def time_to_answer(argv, port, path="/v1/status", env=None):
    """Exec -> first byte of an HTTP answer on 127.0.0.1:port; returns (ms, rss KiB)."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")
            if time.monotonic() - t0 > 60:
                raise RuntimeError("no answer within 60 s")
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                time.sleep(0.0002)
                continue
            try:
                s.sendall(req)
                if s.recv(1):
                    ms = (time.monotonic() - t0) * 1000
                    break
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.1)
        return ms, rss_kib(proc.pid)
    finally:
        stop(proc)


class FakeIronic(BaseHTTPRequestHandler):
    """Answers version discovery and refuses lookup (404), recording arrival times."""

    arrivals = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        key = "root" if self.path == "/" else ("lookup" if self.path.startswith("/v1/lookup") else None)
        if key and key not in FakeIronic.arrivals:
            FakeIronic.arrivals[key] = time.monotonic()
        if self.path == "/":
            body = json.dumps({"default_version": {"id": "v1", "version": "1.115",
                                                   "min_version": "1.1"}}).encode()
            self.send_response(200)
        else:
            body = b'{"error_message": "{\\"faultstring\\": \\"Resource could not be found.\\"}"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(ThreadingHTTPServer):
    """The agent is stopped mid-conversation on purpose: broken pipes are expected."""

    def handle_error(self, request, client_address):
        pass


def time_to_lookup(ira, cmdline_dir):
    srv = QuietServer(("127.0.0.1", 0), FakeIronic)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cmdline = os.path.join(cmdline_dir, "cmdline-lookup")
    with open(cmdline, "w") as f:
        f.write(f"ipa-api-url=http://127.0.0.1:{srv.server_port} ipa-lookup-interval=5\n")
    FakeIronic.arrivals = {}
    t0 = time.monotonic()
    proc = subprocess.Popen([ira, "--cmdline-file", cmdline, "--device-allowlist", NO_DISK,
                             "--no-power-off", "--listen-host", "127.0.0.1",
                             "--listen-port", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while "lookup" not in FakeIronic.arrivals and time.monotonic() - t0 < 30:
            if proc.poll() is not None:
                raise RuntimeError(f"ira exited with {proc.returncode}")
            time.sleep(0.0005)
    finally:
        stop(proc)
        srv.shutdown()
        srv.server_close()
    a = FakeIronic.arrivals
    if "lookup" not in a:
        raise RuntimeError("no lookup within 30 s")
    return (a["root"] - t0) * 1000, (a["lookup"] - t0) * 1000


def summary(values):
    return statistics.median(values), min(values), max(values)


def row(name, ms, rss=None):
    med, lo, hi = summary(ms)
    extra = f"  RSS {statistics.median(rss) / 1024:.1f} MiB" if rss and all(rss) else ""
    print(f"{name:<52} {med:9.2f} ms  ({lo:.2f}-{hi:.2f}){extra}")
    return med


def main():
    ira, ipa_python, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tmp = tempfile.mkdtemp(prefix="ira-bench-")
    empty = os.path.join(tmp, "cmdline-empty")
    open(empty, "w").close()

    def ira_api():
        port = free_port()
        return time_to_answer([ira, "--standalone", "--cmdline-file", empty,
                               "--device-allowlist", NO_DISK, "--no-power-off",
                               "--listen-host", "127.0.0.1", "--listen-port", str(port)], port)

    def ipa_api():
        port = free_port()
        return time_to_answer([ipa_python, os.path.join(HERE, "ipa_api_baseline.py"), str(port)],
                              port)

    results = {"ira_api": [], "ira_api_rss": [], "ira_root": [], "ira_lookup": [],
               "ipa_api": [], "ipa_api_rss": []}
    ira_api(), ipa_api(), time_to_lookup(ira, tmp)  # warm-up: page cache, pyc files
    for _ in range(runs):
        ms, rss = ira_api()
        results["ira_api"].append(ms)
        results["ira_api_rss"].append(rss)
        root, lookup = time_to_lookup(ira, tmp)
        results["ira_root"].append(root)
        results["ira_lookup"].append(lookup)
        ms, rss = ipa_api()
        results["ipa_api"].append(ms)
        results["ipa_api_rss"].append(rss)
    print(f"start-up, {runs} runs each, interleaved (median, min-max)")
    a = row("ira: exec -> API answers /v1/status", results["ira_api"], results["ira_api_rss"])
    row("ira: exec -> first request to Ironic (GET /)", results["ira_root"])
    row("ira: exec -> first GET /v1/lookup", results["ira_lookup"])
    b = row("IPA (PyPI): exec -> API app answers /v1/status", results["ipa_api"],
            results["ipa_api_rss"])
    print(f"ratio IPA / ira (API answering): {b / a:.0f}x")
    print(json.dumps({k: summary(v)[0] if v and all(v) else None for k, v in results.items()}))


if __name__ == "__main__":
    main()

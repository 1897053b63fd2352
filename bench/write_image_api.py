#!/usr/bin/env python3
"""The whole write_image deploy step through the agent's HTTP API, as the conductor drives it.

Usage: write_image_api.py IRA_BIN DEVICE IMAGE_URL SHA256 WORKDIR

Starts the agent (--standalone, the device as its only allowed disk, a pregenerated agent
token, API on 127.0.0.1), waits for /v1/status, then times: deploy.get_deploy_steps (the
conductor's cached step list), deploy.execute_deploy_step write_image (wait=false) and
polling GET /v1/commands/<id> every 50 ms until the command leaves RUNNING. The agent is
stopped with SIGTERM by its pid. Prints one JSON line: seconds (the step, first POST to the
final poll), the agent's peak RSS (VmHWM) and the step's result; exits 1 if it failed.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

TOKEN = "bench-token"
NODE_UUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    # Loopback only: no proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def command(base, name, params, wait):
    return call(base, "POST", f"/v1/commands/?wait={str(wait).lower()}&agent_token={TOKEN}",
                {"name": name, "params": params})


def main():
    ira, device, url, sha256, work = sys.argv[1:6]
    port = free_port()
    cmdline = os.path.join(work, "write-image-api.cmdline")
    with open(cmdline, "w") as f:
        # The loop device is under IPA's 4 GiB root-disk minimum: one look for an install
        # disk at start, not the default ten 3 s apart.
        f.write(f"ipa-agent-token={TOKEN} ipa-disk-wait-attempts=1\n")
    log = open(os.path.join(work, "write-image-api.log"), "w")
    agent = subprocess.Popen(
        [ira, "--standalone", "--cmdline-file", cmdline, "--device-allowlist", device,
         "--no-power-off", "--listen-host", "127.0.0.1", "--listen-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                call(base, "GET", "/v1/status")
                break
            except OSError:
                if agent.poll() is not None:
                    sys.exit(f"the agent exited with {agent.returncode}; see {log.name}")
                time.sleep(0.025)
        else:
            sys.exit("the agent API did not answer within 5 s")
        node = {"uuid": NODE_UUID, "properties": {"root_device": {"name": device}},
                "instance_info": {}, "driver_info": {}, "driver_internal_info": {}}
        info = {"id": "bench", "urls": [url], "disk_format": "raw", "container_format": "bare",
                "stream_raw_images": True, "os_hash_algo": "sha256", "os_hash_value": sha256,
                "node_uuid": NODE_UUID}
        step = {"interface": "deploy", "step": "write_image",
                "args": {"image_info": info, "configdrive": None}}
        started = time.monotonic()
        steps = command(base, "deploy.get_deploy_steps", {"node": node, "ports": []}, True)
        versions = steps["command_result"]["hardware_manager_version"]
        r = command(base, "deploy.execute_deploy_step",
                    {"step": step, "node": node, "ports": [], "deploy_version": versions}, False)
        while r["command_status"] == "RUNNING":
            time.sleep(0.05)
            r = call(base, "GET", f"/v1/commands/{r['id']}?agent_token={TOKEN}")
        seconds = time.monotonic() - started
        hwm = 0
        with open(f"/proc/{agent.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        ok = r["command_status"] == "SUCCEEDED"
        result = r["command_result"]["deploy_result"]["result"] if ok else r["command_error"]
        print(json.dumps({"seconds": round(seconds, 3), "agent_rss_kib": hwm,
                          "status": r["command_status"], "result": result}))
        sys.exit(0 if ok else 1)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


if __name__ == "__main__":
    main()

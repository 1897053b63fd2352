#!/usr/bin/env python3
"""Scenarios against the real Ironic, with ira running on this machine.

ira runs with a device allow-list that matches no disk, so it can neither list nor open
any disk of this machine, and with --no-power-off. Standard library only.

  inspection: a node in `inspect wait` receives ira's inventory through
              /v1/continue_inspection and goes to `manageable`; the inventory Ironic
              stored is the one `ira inventory` prints.
  deploy:     a node is cleaned by the agent (automated cleaning, Ironic's default), then
              in `wait call-back` it gets ira's lookup and heartbeat (auto-TLS), the
              conductor fetches the deploy steps over HTTPS and runs write_image, which
              fails cleanly (no disk is allowed, image writing is not built yet); the
              conductor collects the agent's logs and the node ends in `deploy failed`.

Prints one line per check and a final "N passed, M failed" line; exit 1 on any failure.
"""

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

from ironic_api import Ironic

NO_DISK = "/dev/ira-test-no-such-disk"
RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append((name, bool(ok)))
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""),
          flush=True)
    return ok


class Agent:
    """One ira process, stopped by its PID."""

    def __init__(self, ira, cmdline, state, name, port):
        self.log_path = os.path.join(state, f"ira-{name}.log")
        self.cmdline_path = os.path.join(state, f"cmdline-{name}")
        with open(self.cmdline_path, "w") as f:
            f.write(f"{cmdline} {os.environ['IRA_TEST_CMDLINE']}\n")
        self.port = port
        argv = [ira, "--cmdline-file", self.cmdline_path, "--device-allowlist", NO_DISK,
                "--no-power-off", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--debug"]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def ira_inventory(ira):
    out = subprocess.run([ira, "inventory", "--device-allowlist", NO_DISK],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(out)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no file)"


def scenario_inspection(ironic, args, inv):
    print("== scenario: agent inspection", flush=True)
    mac = inv["interfaces"][0]["mac_address"]
    uuid = ironic.create_node(f"ira-inspect-{int(time.time())}", mac)
    ironic.provision(uuid, "manage")
    ironic.wait_state(uuid, "manageable", 60)
    ironic.provision(uuid, "inspect")
    transitions = []
    n = ironic.wait_state(uuid, "inspect wait", 30, transitions)
    check("inspection: node waits in 'inspect wait'", n["provision_state"] == "inspect wait",
          n["provision_state"])
    port = free_port()
    bootif = "01-" + mac.replace(":", "-")
    agent = Agent(args.ira, f"ipa-inspection-callback-url={ironic.url}/v1/continue_inspection "
                            f"BOOTIF={bootif} ipa-debug=1",
                  args.state, "inspection", port)
    t0 = time.monotonic()
    n = ironic.wait_state(uuid, "manageable", 90, transitions)
    took = time.monotonic() - t0
    ok = check("inspection: node reaches 'manageable' after the agent's callback",
               n["provision_state"] == "manageable",
               f"state {n['provision_state']}, last_error {n.get('last_error')}")
    if ok:
        print(f"     agent start -> manageable: {took:.1f} s", flush=True)
    stored = ironic.inventory(uuid)
    inv_stored = (stored or {}).get("inventory", {})
    check("inspection: stored inventory has the agent's interfaces (names, MACs)",
          [(i["name"], i["mac_address"]) for i in inv_stored.get("interfaces", [])] ==
          [(i["name"], i["mac_address"]) for i in inv["interfaces"]],
          json.dumps(inv_stored.get("interfaces"))[:300])
    # `ira inventory` ran without BOOTIF, so boot.pxe_interface is compared on its own.
    diff = [k for k in ("cpu", "memory", "system_vendor", "hostname", "disks")
            if inv_stored.get(k) != inv.get(k)]
    if inv_stored.get("boot", {}).get("current_boot_mode") != inv["boot"]["current_boot_mode"]:
        diff.append("boot.current_boot_mode")
    check("inspection: stored cpu, memory, system_vendor, boot mode, hostname and disks "
          "equal `ira inventory`", not diff,
          "; ".join(f"{k}: stored {json.dumps(inv_stored.get(k))[:200]} "
                    f"vs {json.dumps(inv.get(k))[:200]}" for k in diff))
    check("inspection: no disk is listed (allow-list matches none)",
          inv_stored.get("disks") == [], json.dumps(inv_stored.get("disks"))[:200])
    check("inspection: boot.pxe_interface is the BOOTIF value",
          inv_stored.get("boot", {}).get("pxe_interface") == bootif)
    plugin = (stored or {}).get("plugin_data", {})
    check("inspection: plugin data carries the collectors and managers",
          "configuration" in plugin or "boot_interface" in plugin, json.dumps(plugin)[:300])
    check("inspection: agent still running after the callback", agent.alive())
    agent.stop()
    if not ok:
        print(tail(agent.log_path), flush=True)
    # Free the MAC for the next scenario.
    ironic.call("DELETE", f"/v1/nodes/{uuid}")


def scenario_deploy(ironic, args, inv):
    print("== scenario: deploy to `wait call-back`, steps fetched from the agent", flush=True)
    mac = inv["interfaces"][0]["mac_address"]
    image = os.path.join(args.http_root, "img.raw")
    with open(image, "wb") as f:
        f.write(os.urandom(1 << 20))
    with open(image, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    uuid = ironic.create_node(f"ira-deploy-{int(time.time())}", mac)
    ironic.provision(uuid, "manage")
    ironic.wait_state(uuid, "manageable", 60)
    # Automated cleaning (Ironic's default): the conductor "reboots" the node into the
    # ramdisk, so a fresh agent cleans it (no disk is allowed, so there is none to erase)
    # and is gone once the conductor powers the node off.
    ironic.provision(uuid, "provide")
    ironic.wait_state(uuid, "clean wait", 60)
    port = free_port()
    cleaner = Agent(args.ira, f"ipa-api-url={ironic.url} ipa-advertise-host=127.0.0.1 "
                              f"ipa-advertise-port={port} ipa-lookup-interval=0.2 ipa-debug=1",
                    args.state, "clean", port)
    n = ironic.wait_state(uuid, "available", 90)
    cleaner.stop()
    ran = [s for s in ("erase_devices_metadata", "erase_devices")
           if f'step completed kind=clean step="{s}"' in cleaner.text()]
    check("deploy: automated cleaning ran erase_devices_metadata and erase_devices, "
          "node 'available'", n["provision_state"] == "available" and len(ran) == 2,
          f"state {n['provision_state']}, ran {ran}, last_error {n.get('last_error')}")
    ironic.set_image(uuid, f"http://127.0.0.1:{args.http_port}/img.raw", sha)
    ironic.provision(uuid, "active")
    transitions = []
    n = ironic.wait_state(uuid, "wait call-back", 60, transitions)
    check("deploy: node waits in 'wait call-back'", n["provision_state"] == "wait call-back",
          f"{n['provision_state']}: {n.get('last_error')}")
    port = free_port()
    agent = Agent(args.ira, f"ipa-api-url={ironic.url} ipa-advertise-host=127.0.0.1 "
                            f"ipa-advertise-port={port} ipa-lookup-interval=0.2 ipa-debug=1",
                  args.state, "deploy", port)
    t0 = time.monotonic()
    n = ironic.wait_state(uuid, "deploy failed", 120, transitions)
    took = time.monotonic() - t0
    log = agent.text()
    check("deploy: the conductor accepted the heartbeat (agent_url recorded or used)",
          "get_deploy_steps" in log, tail(agent.log_path, 20))
    # The agent serves only https once auto-TLS is on, so a command arriving at all means
    # the conductor verified the certificate the heartbeat carried.
    check("deploy: callback URL is https (auto-TLS) and the conductor reached it",
          f"callback_url=https://127.0.0.1:{port}" in log and "execute_deploy_step" in log,
          tail(agent.log_path, 20))
    check("deploy: conductor fetched deploy steps and ran write_image on the agent",
          "execute_deploy_step" in log and "write_image" in log, tail(agent.log_path, 20))
    ok = check("deploy: node ends in 'deploy failed' with the agent's error in last_error",
               n["provision_state"] == "deploy failed" and
               "write_image" in (n.get("last_error") or ""),
               f"state {n['provision_state']}, last_error {n.get('last_error')}")
    if ok:
        print(f"     agent start -> deploy failed: {took:.1f} s", flush=True)
        print(f"     last_error: {n.get('last_error')}", flush=True)
    logs_dir = os.path.join(args.state, "deploy-logs")
    blobs = [f for f in os.listdir(logs_dir) if f.startswith(uuid)] if os.path.isdir(logs_dir) else []
    members = []
    for b in blobs:
        try:
            with tarfile.open(os.path.join(logs_dir, b), "r:gz") as t:
                members = t.getnames()
        except (tarfile.TarError, OSError, EOFError) as e:
            members = [f"unreadable: {e}"]
    check("deploy: the conductor stored the agent's system logs as a readable tar.gz",
          blobs and members and not members[0].startswith("unreadable"), f"{blobs} {members[:5]}")
    # Ironic's tokens are 43 url-safe base64 characters; none may appear in the log.
    leaked = re.findall(r"agent_token[\"']?[=:]\s*[\"']?([A-Za-z0-9_-]{32,})", log)
    check("deploy: agent never logged the token", not leaked, f"{len(leaked)} token-like values")
    check("deploy: agent still running after the failure", agent.alive())
    agent.stop()
    if not ok:
        print(tail(agent.log_path), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ironic-url", required=True)
    p.add_argument("--http-port", required=True)
    p.add_argument("--http-root", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--ira", required=True)
    args = p.parse_args()
    ironic = Ironic(args.ironic_url)
    inv = ira_inventory(args.ira)
    for scenario in (scenario_inspection, scenario_deploy):
        try:
            scenario(ironic, args, inv)
        except Exception as e:  # a broken scenario is a failed check, never a skip
            check(f"{scenario.__name__} ran to the end", False, repr(e))
    passed = sum(1 for _, ok in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(f"ironic-e2e: {passed} passed, {failed} failed", flush=True)
    return 1 if failed or not RESULTS else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A small client of the Ironic REST API for the end-to-end tests and the demo.

Standard library only. Used as a module (class Ironic) and as a command line:

  ironic_api.py URL create-node NAME MAC [JSON]   prints the node UUID (fake-hardware,
                                                  direct deploy, agent inspection); JSON:
                                                  node fields that replace those defaults
  ironic_api.py URL provision UUID TARGET [JSON]  manage | provide | inspect | active | deleted;
                                                  JSON: extra body keys (configdrive, deploy_steps)
  ironic_api.py URL patch UUID /PATH JSON-VALUE   adds or replaces one node field
  ironic_api.py URL wait UUID STATE TIMEOUT       polls every 0.2 s, prints each state change
                                                  with its time; exit 1 on timeout or on an
                                                  unexpected *failed state
  ironic_api.py URL set-image UUID URL SHA256 [FORMAT]   FORMAT "-" leaves disk_format unset
  ironic_api.py URL field UUID KEY[.KEY...]       prints one field of the node as JSON
  ironic_api.py URL inventory UUID                prints the stored inventory as JSON
  ironic_api.py URL power UUID TARGET            power on | power off | reboot
  ironic_api.py URL delete UUID
"""

import json
import sys
import time
import urllib.error
import urllib.request


class Ironic:
    """Ironic API on a URL, with the latest microversion."""

    def __init__(self, url):
        self.url = url.rstrip("/")

    def call(self, method, path, body=None, ok=(200, 201, 202, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "X-OpenStack-Ironic-API-Version": "latest",
            "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        if status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def node(self, uuid):
        return self.call("GET", f"/v1/nodes/{uuid}")

    def create_node(self, name, mac, **extra):
        """A fake-hardware node with one port; `properties.vendor=lenovo` lets UEFI deploys
        finish with fake management (it cannot set the boot device to disk)."""
        body = {"driver": "fake-hardware", "name": name, "boot_interface": "fake",
                "inspect_interface": "agent", "network_interface": "noop",
                "deploy_interface": "direct",
                "properties": {"cpu_arch": "x86_64", "vendor": "lenovo"}}
        body.update(extra)
        node = self.call("POST", "/v1/nodes", body)
        self.call("POST", "/v1/ports", {"address": mac, "node_uuid": node["uuid"]})
        return node["uuid"]

    def provision(self, uuid, target, **extra):
        self.call("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target, **extra})

    def set_image(self, uuid, url, sha256, disk_format="raw"):
        fields = [("image_source", url), ("image_os_hash_algo", "sha256"),
                  ("image_os_hash_value", sha256)]
        if disk_format != "-":
            fields.append(("image_disk_format", disk_format))
        for k, v in fields:
            self.call("PATCH", f"/v1/nodes/{uuid}",
                      [{"op": "add", "path": f"/instance_info/{k}", "value": v}])

    def inventory(self, uuid):
        return self.call("GET", f"/v1/nodes/{uuid}/inventory", ok=(200, 404)) or {}

    def wait_state(self, uuid, wanted, timeout, transitions=None, out=sys.stdout):
        """Polls every 0.2 s until `wanted`, a failed state, or the timeout; prints and
        records each change as (seconds, state)."""
        transitions = [] if transitions is None else transitions
        start = time.monotonic()
        deadline = start + timeout
        last = None
        while True:
            n = self.node(uuid)
            st = n["provision_state"]
            if st != last:
                t = time.monotonic() - start
                transitions.append((round(t, 1), st))
                print(f"     {t:6.1f} s  {st}", file=out, flush=True)
                last = st
            if st == wanted:
                return n
            if st.endswith("failed") and not wanted.endswith("failed"):
                return n
            if time.monotonic() >= deadline:
                return n
            time.sleep(0.2)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    ironic, cmd, args = Ironic(argv[1]), argv[2], argv[3:]
    if cmd == "create-node":
        print(ironic.create_node(args[0], args[1], **(json.loads(args[2]) if len(args) > 2 else {})))
    elif cmd == "provision":  # provision UUID TARGET [JSON object of extra body keys]
        ironic.provision(args[0], args[1], **(json.loads(args[2]) if len(args) > 2 else {}))
    elif cmd == "patch":  # patch UUID /json/pointer JSON-VALUE  (op add)
        ironic.call("PATCH", f"/v1/nodes/{args[0]}",
                    [{"op": "add", "path": args[1], "value": json.loads(args[2])}])
    elif cmd == "wait":
        n = ironic.wait_state(args[0], args[1], float(args[2]), out=sys.stderr)
        if n["provision_state"] != args[1]:
            print(f"node {args[0]} is '{n['provision_state']}', not '{args[1]}': "
                  f"{n.get('last_error')}", file=sys.stderr)
            return 1
    elif cmd == "set-image":
        ironic.set_image(args[0], args[1], args[2], *(args[3:4]))
    elif cmd == "field":
        value = ironic.node(args[0])
        for key in args[1].split("."):
            value = (value or {}).get(key)
        print(json.dumps(value))
    elif cmd == "inventory":
        print(json.dumps(ironic.inventory(args[0])))
    elif cmd == "power":
        ironic.call("PUT", f"/v1/nodes/{args[0]}/states/power", {"target": args[1]})
    elif cmd == "delete":
        ironic.call("DELETE", f"/v1/nodes/{args[0]}")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Prints a fleet run's result (the JSON of bench/fleet.sh) as the tables of bench/README.md.
Usage: report.py RESULT.json"""

import json
import sys


def main(path):
    res = json.load(open(path))
    if "n" not in res:
        print("fleet: the run stopped before its result was written")
        return
    n = res["n"]
    print(f"fleet of {n} nodes")
    print("| flow | reached | wall s | Ironic CPU s/node | agent requests/node (lookup, heartbeat, "
          "inspection) | p50 / p95 / p99 s to target | per minute | agents' RSS peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, f in res["flows"].items():
        c, t = f["agent_requests"], f["time_to_target_s"]
        print(f"| {name} | {f['reached']}/{n} {f['target']} | {f['wall_s']} | "
              f"{f['ironic_cpu_s_per_node']} | {f['agent_requests_per_node']} "
              f"({c['lookup']}, {c['heartbeat']}, {c['continue_inspection']}) | "
              f"{t['p50']} / {t['p95']} / {t['p99']} | {f['per_minute']} | "
              f"{f['agents_rss_peak_mib']} ({f['agents_peak']} agents) |")
    if "idle" in res:
        i = res["idle"]
        print(f"idle agents (fast track, manageable), {i['seconds']:.0f} s, {i['agents']} agents: Ironic CPU "
              f"{i['ironic_cpu_s_per_node_hour']} s per node-hour, "
              f"{i['heartbeats_per_node_hour']} heartbeats per node-hour, agents' RSS "
              f"{i['agents_rss_mib']} MiB")
    if "outage" in res:
        o = res["outage"]
        print(f"outage: API down {o['down_s']} s; agent requests per second from "
              f"{o['per_second_from']} s after the restart: {o['per_second']}")
        print(f"        busiest second {o['max_per_second']}; {o['agents_back']} agents "
              f"heartbeating again within {o['back_within_s']} s")
    if "origin" in res:
        print(f"origin: {res['origin']}; proxy: {res['proxy']}")
        print(f"URL signatures in logs: {res['signature_leaks'] or 'none'} (Ironic's own DEBUG "
              f"lines holding one: {res.get('ironic_debug_lines_with_signature', 0)})")
    print(f"agent boots {res.get('agent_boots')}, agents that died {res.get('agent_crashes')}")


if __name__ == "__main__":
    main(sys.argv[1])

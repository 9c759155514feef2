"""Bridged networking at scale: the time to program a project of 200 VMs' security groups.

Builds a project of N VMs in G groups (each group: a few rules naming CIDRs, ports and a
remote group), loads the ruleset into a scratch network namespace the way a host does
(`nft -f -` in the namespace, all tables replaced atomically), then changes one group and
loads again (every change replaces the tables), and lists the conntrack table the way a rule
change does before cutting flows.  Needs root; creates and removes its own namespace.

    .venv/bin/python bench/network.py [--vms 200] [--groups 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import uuid
from typing import Any

from evroc_compute.hosts.network import rules, security

SUBNETS = {"se-sto-a": "10.0.1.0/24", "se-sto-b": "10.0.2.0/24", "se-sto-c": "10.0.3.0/24"}


def project(vms: int, groups: int, port: int = 22) -> rules.ProjectNetwork:
    objects: dict[str, dict[str, Any]] = {}
    for g in range(groups):
        objects[f"g{g}"] = {"metadata": {"name": f"g{g}"}, "spec": {"rules": [
            {"name": "ssh", "direction": "Ingress", "protocol": "TCP", "port": port,
             "remote": {"address": "0.0.0.0/0"}},
            {"name": "web", "direction": "Ingress", "protocol": "TCP", "port": 8000,
             "endPort": 8100, "remote": {"subnetRef": {"name": "default-se-sto-a"}}},
            {"name": "peers", "direction": "Ingress", "protocol": "All",
             "remote": {"securityGroupRef": {"name": f"g{(g + 1) % groups}"}}},
            {"name": "dns", "direction": "Egress", "protocol": "UDP", "port": 53,
             "remote": {"address": "10.0.0.0/8"}},
            {"name": "out", "direction": "Egress", "protocol": "TCP",
             "remote": {"address": "0.0.0.0/0"}}]}}
    machines = [{"metadata": {"namespace": "p", "name": f"vm{i}", "uid": f"uid-{i}"},
                 "spec": {"networking": {"securityGroups": {"securityGroupMemberships": [
                     {"name": f"g{i % groups}"}, {"name": f"g{(i + 7) % groups}"}]}}},
                 "status": {"networking": {"privateIPv4Address":
                                           f"10.0.{1 + i // 250}.{2 + i % 250}"}}}
                for i in range(vms)]
    return security.project_network(SUBNETS, machines, objects)


def timed(netns: str, *argv: str, stdin: str | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, text=True, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    netns = f"evbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        started = time.perf_counter()
        first = rules.ruleset(project(args.vms, args.groups))
        generate = time.perf_counter() - started
        changed = rules.ruleset(project(args.vms, args.groups, port=2222))
        lines = sum(1 for line in first.splitlines() if line.strip())
        loads, changes, listings = [], [], []
        for _ in range(args.runs):
            loads.append(timed(netns, "nft", "-f", "-", stdin=first))
            changes.append(timed(netns, "nft", "-f", "-", stdin=changed))
            listings.append(timed(netns, "conntrack", "-L", "-f", "ipv4"))
        print(f"{args.vms} VMs in {args.groups} groups (2 each): {lines} ruleset lines, "
              f"generated in {generate * 1000:.0f} ms")
        for name, values in (("load into a fresh namespace", loads),
                             ("replace after a group change", changes),
                             ("list conntrack (before cutting)", listings)):
            print(f"  {name}: median {statistics.median(values) * 1000:.0f} ms "
                  f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, {args.runs} runs)")
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)


if __name__ == "__main__":
    main()

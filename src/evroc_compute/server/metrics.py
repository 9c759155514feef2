"""The server's Prometheus metrics, named and labelled as kube-apiserver's.

Requests are counted as they finish: `apiserver_request_total` and
`apiserver_request_duration_seconds` by verb (GET, LIST, WATCH, CREATE, UPDATE, PATCH,
APPLY, DELETE, DELETECOLLECTION), dry_run, group, version, resource, subresource, scope and
component, as kube labels them; the total also by code. Non-resource paths (discovery,
OpenAPI, health, /metrics) are labelled as kube does: the method as verb and the path in
`subresource` (one label value per path family, so cardinality stays bounded). Open
watches are `apiserver_longrunning_requests`. Only requests over HTTP are counted: the
in-process client of the controllers calls the handlers directly (its work shows in the
controller_runtime_* metrics).

The state of the world (objects per resource, VMs by status, host allocation against
capacity) is read from the store's memory when scraped, so writes pay nothing for it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from evroc_compute.api.compute import STATUS_VALUES, VIRTUAL_MACHINE, size_in_bytes
from evroc_compute.api.infra import HOST
from evroc_compute.api.kinds import Registry
from evroc_compute.store.base import Store

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
disable_created_metrics()  # as kube: no `_created` series beside each counter and histogram

Labels = tuple[str, ...]  # verb, dry_run, group, version, resource, subresource, scope, component
LABEL_NAMES = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope",
               "component")
# kube-apiserver's buckets for apiserver_request_duration_seconds
BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10,
           15, 20, 30, 45, 60)

LONGRUNNING = Gauge("apiserver_longrunning_requests", "Requests open now (watches).",
                    LABEL_NAMES)


class RequestStats(Collector):
    """Request counts and latencies as plain numbers, turned into kube's families when scraped.

    Kept on the event loop's thread (requests and scrapes both run there), so counting a
    request is one dict lookup and three additions: no lock, no label resolution.
    """

    def __init__(self) -> None:
        # (labels, code) -> [count, sum of seconds, then one count per bucket and +Inf]
        self._series: dict[tuple[Labels, int], list[float]] = {}

    def observe(self, labels: Labels, code: int, seconds: float) -> None:
        series = self._series.get((labels, code))
        if series is None:
            series = self._series[labels, code] = [0.0] * (len(BUCKETS) + 3)
        series[0] += 1
        series[1] += seconds
        series[2 + bisect.bisect_left(BUCKETS, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily("apiserver_request", "Requests by verb, resource and HTTP "
                                    "code.", labels=(*LABEL_NAMES, "code"))
        latency = HistogramMetricFamily(
            "apiserver_request_duration_seconds", "Response latency by verb and resource "
            "(watches: how long they stayed open).", labels=LABEL_NAMES)
        merged: dict[Labels, list[float]] = {}
        for (labels, code), series in list(self._series.items()):
            total.add_metric((*labels, str(code)), series[0])
            into = merged.setdefault(labels, [0.0] * len(series))
            for index, value in enumerate(series):
                into[index] += value
        for labels, series in merged.items():
            latency.add_metric(labels, list(zip(_BOUNDS, itertools.accumulate(series[2:]),
                                                strict=True)), sum_value=series[1])
        yield total
        yield latency


_BOUNDS = [*(floatToGoString(bound) for bound in BUCKETS), "+Inf"]
REQUESTS = RequestStats()
REGISTRY.register(REQUESTS)
observe = REQUESTS.observe


def longrunning(labels: Labels) -> Any:
    """The gauge of open requests with these labels (inc when one opens, dec when it ends)."""
    return LONGRUNNING.labels(*labels)


class WorldCollector(Collector):
    """Gauges computed at scrape time from the store's memory."""

    def __init__(self, registry: Registry, store: Callable[[], Store | None]) -> None:
        self.registry, self.store = registry, store

    def collect(self) -> Iterator[Metric]:
        store = self.store()
        if store is None:  # not started yet
            return
        objects = GaugeMetricFamily("apiserver_storage_objects",
                                    "Stored objects by resource.", labels=("resource",))
        for kind in self.registry.kinds:
            objects.add_metric((kind.qualified_resource,), len(store.current(kind.key_prefix(None))))
        yield objects
        yield self._vms(store)
        yield from self._hosts(store)

    @staticmethod
    def _vms(store: Store) -> Metric:
        counts = dict.fromkeys(STATUS_VALUES, 0)
        for entry in store.current(VIRTUAL_MACHINE.key_prefix(None)):
            status = (entry.obj.get("status") or {}).get("virtualMachineStatus") or ""
            counts[status] = counts.get(status, 0) + 1
        vms = GaugeMetricFamily("evroc_virtualmachines", "VirtualMachines by "
                                "status.virtualMachineStatus (\"\": not reported yet).",
                                labels=("status",))
        for status, count in counts.items():
            vms.add_metric((status,), count)
        return vms

    @staticmethod
    def _hosts(store: Store) -> Iterator[Metric]:
        labels = ("host", "zone", "resource")
        capacity = GaugeMetricFamily("evroc_host_capacity", "What a host offers: vcpu, "
                                     "memory_bytes, local_disk_gb and GPUs by model.", labels=labels)
        allocated = GaugeMetricFamily("evroc_host_allocated", "What is reserved on a host for "
                                      "its instances, by the same resources.", labels=labels)
        for entry in store.current(HOST.key_prefix(None)):
            host = entry.obj
            name, zone = host["metadata"]["name"], host["spec"]["zone"]
            spec = host["spec"]["capacity"]
            offered = _amounts(spec, size_in_bytes(spec["memory"]))
            status = (host.get("status") or {}).get("allocated") or {}
            taken = {**dict.fromkeys(offered, 0), **_amounts(status, status.get("memoryBytes"))}
            for family, amounts in ((capacity, offered), (allocated, taken)):
                for resource, value in amounts.items():
                    family.add_metric((name, zone, resource), value)
        yield capacity
        yield allocated


def _amounts(amounts: dict[str, Any], memory_bytes: int | None) -> dict[str, float]:
    found = {"vcpu": amounts.get("vcpu") or 0, "memory_bytes": memory_bytes or 0,
             "local_disk_gb": amounts.get("localDiskGB") or 0}
    for gpu in amounts.get("gpus") or []:
        found[gpu["model"]] = gpu["count"]
    return found


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text format of the process-wide metrics and those of `registries`."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))

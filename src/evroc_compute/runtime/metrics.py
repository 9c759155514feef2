"""The controllers' Prometheus metrics, named as controller-runtime's, read when scraped.

Each controller already counts its outcomes (`Controller.metrics`) and its queue knows its
depth, so reconciles pay nothing more here; only the reconcile time histogram is observed
as it happens (in the runtime). Controllers of the same name are summed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from evroc_compute.runtime import controller as runtime


class ControllerCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(runtime.METRICS, 0))
        depth: dict[str, int] = defaultdict(int)
        for controller in list(runtime.LIVE):
            for metric, value in controller.metrics.items():
                counts[controller.name][metric] += value
            depth[controller.name] += len(controller.queue)
        # controller-runtime's results; requeue: a rate-limited retry after a conflict or a
        # stale-cache 404; error: a failure, retried with back-off or terminal.
        total = CounterMetricFamily("controller_runtime_reconcile", "Reconciles by controller "
                                    "and result.", labels=("controller", "result"))
        errors = CounterMetricFamily("controller_runtime_reconcile_errors", "Failed reconciles "
                                     "(retried with back-off, or terminal).", labels=("controller",))
        terminal = CounterMetricFamily("controller_runtime_terminal_reconcile_errors",
                                       "Failed reconciles not retried.", labels=("controller",))
        queued = GaugeMetricFamily("workqueue_depth", "Keys waiting in a controller's queue.",
                                   labels=("name",))
        for name, seen in counts.items():
            failed = seen["errors"] + seen["terminal"]
            total.add_metric((name, "success"), seen["reconciled"] - seen["requeued"])
            total.add_metric((name, "requeue_after"), seen["requeued"])
            total.add_metric((name, "requeue"), seen["conflicts"])
            total.add_metric((name, "error"), failed)
            errors.add_metric((name,), failed)
            terminal.add_metric((name,), seen["terminal"])
            queued.add_metric((name,), depth[name])
        yield from (total, errors, terminal, queued)


REGISTRY.register(ControllerCollector())

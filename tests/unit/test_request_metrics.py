"""Request counts and latency histograms: what a scrape shows for the requests observed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from evroc_compute.server.metrics import RequestStats

GET_VM = ("GET", "", "compute.evroclabs.net", "v1alpha1", "virtualmachines", "", "resource",
          "apiserver")
LIST_VM = ("LIST", *GET_VM[1:6], "namespace", "apiserver")


def scrape(stats: RequestStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(stats)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def sample(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           labels: tuple[str, ...], **extra: str) -> float:
    names = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope",
             "component")
    return found[name, tuple(sorted({**dict(zip(names, labels, strict=True)), **extra}.items()))]


@pytest.mark.parametrize(("seconds", "first_bucket"), [
    (0.0001, "0.005"), (0.005, "0.005"), (0.0051, "0.025"), (59.0, "60.0"), (61.0, "+Inf")],
    ids=["fast", "on a bound (le)", "just past a bound", "slow", "beyond the last bound"])
def test_a_request_lands_in_the_first_bucket_that_holds_it(seconds: float, first_bucket: str) -> None:
    stats = RequestStats()
    stats.observe(GET_VM, 200, seconds)
    found = scrape(stats)
    bounds = [dict(labels)["le"] for name, labels in found
              if name == "apiserver_request_duration_seconds_bucket"]
    first = float(first_bucket)  # "+Inf" parses as inf
    for le in bounds:  # cumulative: every bucket from the first that holds it counts it
        assert sample(found, "apiserver_request_duration_seconds_bucket", GET_VM, le=le) == \
            (1.0 if float(le) >= first else 0.0), le
    assert sample(found, "apiserver_request_duration_seconds_sum", GET_VM) == pytest.approx(seconds)


def test_counts_are_by_code_and_latency_by_labels_across_codes() -> None:
    stats = RequestStats()
    for code, seconds in ((200, 0.001), (200, 0.002), (404, 0.003)):
        stats.observe(GET_VM, code, seconds)
    stats.observe(LIST_VM, 200, 0.3)
    found = scrape(stats)
    assert sample(found, "apiserver_request_total", GET_VM, code="200") == 2
    assert sample(found, "apiserver_request_total", GET_VM, code="404") == 1
    assert sample(found, "apiserver_request_total", LIST_VM, code="200") == 1
    assert sample(found, "apiserver_request_duration_seconds_count", GET_VM) == 3
    assert sample(found, "apiserver_request_duration_seconds_sum", GET_VM) == pytest.approx(0.006)
    assert sample(found, "apiserver_request_duration_seconds_bucket", LIST_VM, le="0.2") == 0
    assert sample(found, "apiserver_request_duration_seconds_bucket", LIST_VM, le="0.4") == 1

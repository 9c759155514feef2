"""bench/wrk.py reads wrk's result line, our /metrics and moto's XML, and checks what was stored
against what was answered."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from wrkresult import created_in_metrics, ec2_instance_ids, parse_wrk, stored_check

# wrk's own report as it prints it, then bench/wrk.lua's line (from a real run)
REPORT = """Running 2s test @ https://127.0.0.1:45215/apis/x
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    29.72ms   18.92ms 113.90ms   85.29%
  4140 requests in 2.03s, 3.14MB read
Requests/sec:   2035.81
"""
LINE = ('WRK_RESULT {"requests": 4140, "duration_us": 2033592, "bytes": 3294297, "threads": 2, '
        '"errors": {"connect": 0, "read": 0, "write": 0, "status": %d, "timeout": %d}, '
        '"statuses": {%s}, "latency_us": {"p50": 24063, "p90": 54960, "p99": 103150, '
        '"p999": 111144, "max": 113902, "mean": 29719.2}}\n')


@pytest.mark.parametrize(("stdout", "ok", "non_2xx", "socket_errors"), [
    pytest.param(REPORT + LINE % (0, 0, '"201": 4140'), 4140, 0, {}, id="all created"),
    pytest.param(REPORT + LINE % (40, 3, '"201": 4000, "409": 30, "500": 10, "302": 100'),
                 4000, 140, {"timeout": 3},
                 id="4xx, 5xx and 3xx are all non-2xx; timeouts are socket errors"),
    pytest.param(REPORT + LINE % (0, 0, ''), 0, 0, {}, id="no answer at all"),
])
def test_parse_wrk_counts(stdout: str, ok: int, non_2xx: int,
                          socket_errors: dict[str, int]) -> None:
    result = parse_wrk(stdout)
    assert (result.ok, result.non_2xx, result.socket_errors) == (ok, non_2xx, socket_errors)
    assert result.rate == pytest.approx(4140 / 2.033592)
    assert result.latency_ms["p50"] == pytest.approx(24.063)
    assert result.latency_ms["p99"] == pytest.approx(103.15)


@pytest.mark.parametrize("stdout", [
    pytest.param(REPORT, id="the script's line is missing (wrk ran without bench/wrk.lua)"),
    pytest.param(REPORT + LINE % (0, 0, '"200": 1') * 2, id="two lines"),
])
def test_parse_wrk_refuses_output_without_exactly_one_result(stdout: str) -> None:
    with pytest.raises(ValueError, match="WRK_RESULT"):
        parse_wrk(stdout)


@pytest.mark.parametrize(("stored", "ok", "connections", "problem"), [
    pytest.param(1000, 1000, 64, "", id="every 2xx stored, none in flight"),
    pytest.param(1064, 1000, 64, "", id="one answer in flight per connection at the deadline"),
    pytest.param(999, 1000, 64, "1 answered 2xx but not stored", id="a 2xx lost"),
    pytest.param(1065, 1000, 64, "65 stored beyond", id="more stored than can be in flight"),
])
def test_stored_check(stored: int, ok: int, connections: int, problem: str) -> None:
    found = stored_check(stored, ok, connections)
    assert found.startswith(problem) and bool(found) == bool(problem)


METRICS = """# TYPE apiserver_request_total counter
apiserver_request_total{verb="CREATE",dry_run="",group="compute.evroclabs.net",version="v1alpha1",\
resource="virtualmachines",subresource="",scope="resource",component="apiserver",code="201"} 9350.0
apiserver_request_total{verb="CREATE",dry_run="",group="compute.evroclabs.net",version="v1alpha1",\
resource="virtualmachines",subresource="",scope="resource",component="apiserver",code="409"} 7.0
apiserver_request_total{verb="CREATE",dry_run="",group="compute.evroclabs.net",version="v1alpha1",\
resource="disks",subresource="",scope="resource",component="apiserver",code="201"} 5.0
apiserver_request_total{verb="GET",dry_run="",group="compute.evroclabs.net",version="v1alpha1",\
resource="virtualmachines",subresource="",scope="resource",component="apiserver",code="200"} 3.0
"""


@pytest.mark.parametrize(("text", "created"), [
    pytest.param(METRICS, 9350, id="only VM creates answered 201"),
    pytest.param("# TYPE apiserver_request_total counter\n", 0, id="none yet"),
])
def test_created_in_metrics(text: str, created: int) -> None:
    assert created_in_metrics(text) == created


DESCRIBE = """<?xml version="1.0" encoding="utf-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15">
<reservationSet>
 <item><reservationId>r-1</reservationId><instancesSet>
  <item><blockDeviceMapping><item><deviceName>/dev/sda1</deviceName></item></blockDeviceMapping>
   <networkInterfaceSet><item><networkInterfaceId>eni-1</networkInterfaceId></item>
   </networkInterfaceSet><instanceId>i-1</instanceId><instanceState><code>0</code></instanceState>
  </item></instancesSet></item>
 <item><reservationId>r-2</reservationId><instancesSet>
  <item><instanceId>i-2</instanceId><instanceState><code>16</code></instanceState></item>
  <item><instanceId>i-3</instanceId><instanceState><code>16</code></instanceState></item>
 </instancesSet></item>
</reservationSet><nextToken>r-2</nextToken></DescribeInstancesResponse>"""


@pytest.mark.parametrize(("xml", "ids"), [
    pytest.param(DESCRIBE, ["i-1", "i-2", "i-3"],
                 id="instances only: not reservations, disks or network interfaces"),
    pytest.param('<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15">'
                 "<reservationSet/></DescribeInstancesResponse>", [], id="none"),
])
def test_ec2_instance_ids(xml: str, ids: list[str]) -> None:
    assert ec2_instance_ids(ET.fromstring(xml)) == ids

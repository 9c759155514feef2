"""The host rules as a table: what the agent of host `a` may do."""

from __future__ import annotations

import pytest

from evroc_compute.server.auth.authz import Attributes
from evroc_compute.server.auth.hosts import decide
from evroc_compute.server.auth.users import host_user

INFRA, COMPUTE = "infra.evroc-compute.io", "compute.evroclabs.net"
BOUND = {("p", "mine"): ("a",), ("p", "theirs"): ("b",), ("p", "arriving"): ("b", "a")}

CASES = [
    # (verb, group, resource, namespace, name, subresource, allowed)
    ("list", INFRA, "virtualmachineinstances", "", "", "", True),
    ("watch", INFRA, "hosts", "", "", "", True),
    ("get", COMPUTE, "virtualmachines", "p", "theirs", "", True),
    ("list", COMPUTE, "diskimages", "", "", "", True),
    ("create", INFRA, "hosts", "", "", "", True),  # the name is checked at admission
    ("patch", INFRA, "hosts", "", "a", "status", True),
    ("patch", INFRA, "hosts", "", "a", "", False),
    ("patch", INFRA, "hosts", "", "b", "status", False),
    ("delete", INFRA, "hosts", "", "a", "", False),
    ("update", INFRA, "leases", "", "host-a", "", True),
    ("patch", INFRA, "leases", "", "host-b", "", False),
    ("patch", INFRA, "leases", "", "evroc-compute-controllers", "", False),
    ("delete", INFRA, "leases", "", "host-a", "", False),
    ("patch", INFRA, "virtualmachineinstances", "p", "mine", "status", True),
    ("patch", INFRA, "virtualmachineinstances", "p", "mine", "", True),
    ("patch", INFRA, "virtualmachineinstances", "p", "arriving", "status", True),
    ("patch", INFRA, "virtualmachineinstances", "p", "theirs", "status", False),
    ("patch", INFRA, "virtualmachineinstances", "p", "gone", "status", False),
    ("create", INFRA, "virtualmachineinstances", "p", "", "", False),
    ("delete", INFRA, "virtualmachineinstances", "p", "mine", "", False),
    ("get", "networking.evroclabs.net", "publicips", "p", "ip", "", False),
    ("watch", "networking.evroclabs.net", "securitygroups", "", "", "", True),  # enforced here
    ("patch", "networking.evroclabs.net", "securitygroups", "p", "web", "", False),
    ("list", "identity.evroc-compute.io", "credentials", "", "", "", False),
    ("list", "", "namespaces", "", "", "", False),
    ("patch", COMPUTE, "virtualmachines", "p", "mine", "status", False),
]


@pytest.mark.parametrize(("verb", "group", "resource", "namespace", "name", "subresource",
                          "allowed"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[4] or 'all'}-{c[5] or 'main'}" for c in CASES])
def test_host_a_may(verb: str, group: str, resource: str, namespace: str, name: str,
                    subresource: str, allowed: bool) -> None:
    attributes = Attributes(host_user("a"), verb, resource, group, namespace, name, subresource)
    decision = decide(attributes, lambda host: host == "a",
                      lambda ns, n: BOUND.get((ns, n), ()))
    assert decision.allowed is allowed
    if not allowed:
        assert 'host "a" may write only' in decision.reason

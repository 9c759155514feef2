"""networking.evroclabs.net/v1alpha1: PublicIP and SecurityGroup, shaped as evroc documents them."""

from __future__ import annotations

import ipaddress
from typing import Any

from evroc_compute.api.compute import conditions
from evroc_compute.api.kinds import Column, Kind
from evroc_compute.api.schema import (
    FieldError,
    array,
    forbidden,
    integer,
    invalid,
    obj,
    required,
    string,
)
from evroc_compute.api.tables import age, condition_status, path

GROUP = "networking.evroclabs.net"
MAX_LISTED_MEMBERS = 100  # a SecurityGroup's status names at most this many VMs
VERSION = "v1alpha1"

PUBLIC_IP = Kind(
    group=GROUP, version=VERSION, kind="PublicIP", plural="publicips", namespaced=True,
    short_names=("pip",), categories=("evroc", "networking"),
    description="A static public IPv4 address a VirtualMachine can use. Static addresses are "
                "kept while the VM is stopped; an address in use cannot be deleted.",
    spec=obj("The desired public IP (nothing to configure: the address is allocated).",
             description=string("A free-form description.")),
    status=obj("The allocated address and its user.",
               conditions=conditions("The state of the public IP over time."),
               publicIPv4Address=string("The allocated public IPv4 address."),
               usedBy=string("The VirtualMachine using this address, if any.")),
    delete_check=lambda obj: forbidden(
        "status.usedBy", f'it is in use by VirtualMachine "{obj["status"]["usedBy"]}"; delete the '
        "VM or remove the address from its spec.networking first")
        if (obj.get("status") or {}).get("usedBy") else None,
    columns=(
        Column("Address", "string", path("status", "publicIPv4Address"), "The address."),
        Column("Used By", "string", path("status", "usedBy"), "The VM using it."),
        Column("Age", "date", age, "Time since creation."),
    ),
)

_REMOTE = obj(
    "Where the traffic comes from (Ingress) or goes to (Egress): exactly one of address, "
    "securityGroupRef or subnetRef.",
    address=string("An IPv4 address or CIDR, e.g. 0.0.0.0/0."),
    securityGroupRef=obj("Members of another security group.", required=("name",),
                         name=string("The SecurityGroup's name.")),
    subnetRef=obj("Addresses of a subnet.", required=("name",),
                  name=string("The subnet's name, e.g. default-se-sto-a.")),
)


def check_security_group(new: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errors: list[FieldError] = []
    names: set[str] = set()
    for index, rule in enumerate((new.get("spec") or {}).get("rules") or []):
        if not isinstance(rule, dict):
            continue
        at = f"spec.rules[{index}]"
        name = rule.get("name")
        if name in names:
            errors.append(FieldError(f"{at}.name", "FieldValueDuplicate",
                                     f'Duplicate value: "{name}"', name))
        names.add(str(name))
        port, end = rule.get("port"), rule.get("endPort")
        if rule.get("protocol") in ("ICMP", "All") and (port is not None or end is not None):
            errors.append(invalid(f"{at}.port", port, f"ports apply only to TCP and UDP, not "
                                  f"{rule.get('protocol')}"))
        for field, value in (("port", port), ("endPort", end)):
            if isinstance(value, int) and not 1 <= value <= 65535:
                errors.append(invalid(f"{at}.{field}", value, "must be between 1 and 65535"))
        if isinstance(end, int) and (not isinstance(port, int) or end < port):
            errors.append(invalid(f"{at}.endPort", end, "must be at least port"))
        remote = rule.get("remote") or {}
        given = [k for k in ("address", "securityGroupRef", "subnetRef") if remote.get(k)]
        if len(given) != 1:
            errors.append(required(f"{at}.remote", "Required value: exactly one of address, "
                                   f"securityGroupRef or subnetRef (got {len(given)})"))
        address = remote.get("address")
        if isinstance(address, str) and address:
            try:
                ipaddress.IPv4Network(address, strict=False)
            except ValueError:
                errors.append(invalid(f"{at}.remote.address", address,
                                      "must be an IPv4 address or CIDR, e.g. 10.0.1.0/24"))
    return errors


SECURITY_GROUP = Kind(
    group=GROUP, version=VERSION, kind="SecurityGroup", plural="securitygroups",
    namespaced=True, short_names=("sg",), categories=("evroc", "networking"),
    description="Firewall rules applied to the VMs that are members of the group.",
    spec=obj("The rules.", rules=array(obj(
        "One allowed flow.", required=("name", "direction", "protocol", "remote"),
        name=string("The rule's name, unique in the group."),
        direction=string("Ingress or Egress.", enum=("Ingress", "Egress")),
        protocol=string("The protocol.", enum=("TCP", "UDP", "ICMP", "All")),
        port=integer("The first port (TCP/UDP)."),
        endPort=integer("The last port of a range (TCP/UDP); defaults to port."),
        remote=_REMOTE), "The allowed flows.")),
    status=obj(
        "The observed state.",
        appliesTo=array(obj("A VM the group applies to.", required=("name",),
                            name=string("The VirtualMachine's name.")),
                        f"The VMs the group applies to, by name, at most {MAX_LISTED_MEMBERS} "
                        "(appliesToCount counts them all). A group named default also applies "
                        "to the VMs that name no group.", list_map_keys=("name",)),
        appliesToCount=integer("How many VMs the group applies to.", minimum=0),
        conditions=conditions("Ready: every host that runs one of its VMs enforces the "
                              "group's current generation.")),
    semantic_check=check_security_group,
    columns=(
        Column("Rules", "integer", lambda o: len((o.get("spec") or {}).get("rules") or []),
               "Number of rules."),
        Column("VMs", "integer", lambda o: (o.get("status") or {}).get("appliesToCount", 0),
               "The VMs it applies to."),
        Column("Ready", "string", condition_status("Ready"),
               "Whether every host running its VMs enforces the current rules."),
        Column("Age", "date", age, "Time since creation."),
    ),
)

KINDS = (PUBLIC_IP, SECURITY_GROUP)

"""API discovery, aggregated (v2) and legacy, generated from the registry and cached.

kubectl needs the aggregated form with its exact content type; the Python DynamicClient
reads the legacy documents.
"""

from __future__ import annotations

from typing import Any

import orjson

from evroc_compute.api.kinds import Kind, Registry
from evroc_compute.server.http import Request, Response

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_BETA = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
NAMESPACE_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _verbs(kind: Kind) -> list[str]:
    if not kind.stored:
        return ["create"]
    return NAMESPACE_VERBS if kind.plural == "namespaces" else VERBS


def _aggregated_resource(kind: Kind) -> dict[str, Any]:
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    resource: dict[str, Any] = {
        "resource": kind.plural, "responseKind": gvk,
        "scope": "Namespaced" if kind.namespaced else "Cluster",
        "singularResource": kind.singular, "verbs": _verbs(kind),
    }
    if kind.short_names:
        resource["shortNames"] = list(kind.short_names)
    if kind.categories:
        resource["categories"] = list(kind.categories)
    if kind.subresources and kind.stored:
        resource["subresources"] = [{"subresource": sub, "responseKind": gvk,
                                     "verbs": _subresource_verbs(sub)} for sub in kind.subresources
                      if kind.stored]
    return resource


def _subresource_verbs(subresource: str) -> list[str]:
    return {"finalize": ["update"], "console": ["get"]}.get(subresource, ["get", "patch", "update"])


def _aggregated(registry: Registry, core: bool, beta: bool) -> bytes:
    groups: dict[str, dict[str, list[Kind]]] = {}
    for kind in registry.kinds:
        if (kind.group == "") == core:
            groups.setdefault(kind.group, {}).setdefault(kind.version, []).append(kind)
    version = "v2beta1" if beta else "v2"
    return orjson.dumps({
        "kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": [{"metadata": {"name": group, "creationTimestamp": None},
                   "versions": [{"version": v, "freshness": "Current",
                                 "resources": [_aggregated_resource(k) for k in kinds]}
                                for v, kinds in versions.items()]}
                  for group, versions in groups.items()]})


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for kind in registry.kinds:
        if kind.group != group or kind.version != version:
            continue
        entry: dict[str, Any] = {"name": kind.plural, "singularName": kind.singular,
                                 "namespaced": kind.namespaced, "kind": kind.kind,
                                 "verbs": _verbs(kind)}
        if kind.short_names:
            entry["shortNames"] = list(kind.short_names)
        if kind.categories:
            entry["categories"] = list(kind.categories)
        resources.append(entry)
        resources += [{"name": f"{kind.plural}/{sub}", "singularName": "",
                       "namespaced": kind.namespaced, "kind": kind.kind,
                       "verbs": _subresource_verbs(sub)} for sub in kind.subresources
                      if kind.stored]
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": listed,
            "preferredVersion": listed[0]}


def _wants_aggregated(req: Request) -> str | None:
    accept = req.accept
    if "g=apidiscovery.k8s.io" not in accept:
        return None
    for option in accept.split(","):
        if "as=APIGroupDiscoveryList" in option and "g=apidiscovery.k8s.io" in option:
            return "v2beta1" if "v=v2beta1" in option else "v2"
    return None


class Discovery:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[str, bytes] = {}

    def _cached(self, key: str, build: Any) -> bytes:
        body = self._cache.get(key)
        if body is None:
            body = self._cache[key] = build()
        return body

    def api(self, req: Request) -> Response:
        wanted = _wants_aggregated(req)
        if wanted:
            beta = wanted == "v2beta1"
            return Response(200, self._cached(f"agg-core-{wanted}",
                                              lambda: _aggregated(self.registry, True, beta)),
                            (AGGREGATED_BETA if beta else AGGREGATED).encode())
        return Response(200, self._cached("api", lambda: orjson.dumps({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})))

    def apis(self, req: Request) -> Response:
        wanted = _wants_aggregated(req)
        if wanted:
            beta = wanted == "v2beta1"
            return Response(200, self._cached(f"agg-groups-{wanted}",
                                              lambda: _aggregated(self.registry, False, beta)),
                            (AGGREGATED_BETA if beta else AGGREGATED).encode())
        return Response(200, self._cached("apis", lambda: orjson.dumps({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group(g, vs) for g, vs in self.registry.group_versions().items()]})))

    def group(self, group: str) -> Response | None:
        versions = self.registry.group_versions().get(group)
        if not versions:
            return None
        return Response(200, self._cached(f"group-{group}",
                                          lambda: orjson.dumps(_group(group, versions))))

    def resources(self, group: str, version: str) -> Response | None:
        if not self.registry.in_group_version(group, version):
            return None
        return Response(200, self._cached(f"rl-{group}-{version}", lambda: orjson.dumps(
            resource_list(self.registry, group, version))))

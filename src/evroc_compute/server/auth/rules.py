"""RBAC rule matching, as kube's rbac/v1 helpers decide it: pure functions over one rule.

A rule allows a resource request when its verbs, apiGroups and resources match (a resource is
`plural`, `plural/subresource`, `*/subresource` or `*`) and, if it names resourceNames, the
request names one of them; it allows a non-resource request when its nonResourceURLs match
(exactly, `*`, or a prefix ending in `*`). `*` in verbs or apiGroups matches anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from evroc_compute.server.auth.authz import Attributes

ALL = "*"


@dataclass(frozen=True, slots=True)
class Rule:
    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: tuple[str, ...] = ()
    source: str = ""  # which binding and role granted it, for SubjectAccessReview's reason

    @staticmethod
    def parse(rule: dict[str, Any], source: str = "") -> Rule:
        def strings(field: str) -> list[str]:
            return [str(v) for v in rule.get(field) or ()]
        return Rule(frozenset(strings("verbs")), frozenset(strings("apiGroups")),
                    frozenset(strings("resources")), frozenset(strings("resourceNames")),
                    tuple(strings("nonResourceURLs")), source)

    def as_dict(self) -> dict[str, list[str]]:
        """The rule as rbac/v1 writes it (SelfSubjectRulesReview)."""
        if self.non_resource_urls:
            return {"verbs": sorted(self.verbs), "nonResourceURLs": list(self.non_resource_urls)}
        out = {"verbs": sorted(self.verbs), "apiGroups": sorted(self.api_groups),
               "resources": sorted(self.resources)}
        if self.resource_names:
            out["resourceNames"] = sorted(self.resource_names)
        return out


def verb_matches(rule: Rule, verb: str) -> bool:
    return ALL in rule.verbs or verb in rule.verbs


def group_matches(rule: Rule, group: str) -> bool:
    return ALL in rule.api_groups or group in rule.api_groups


def resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    resources = rule.resources
    return ALL in resources or combined in resources or (
        bool(subresource) and f"*/{subresource}" in resources)


def name_matches(rule: Rule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def url_matches(rule: Rule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url in (ALL, path) or (url.endswith(ALL) and path.startswith(url[:-1])):
            return True
    return False


def allows(rule: Rule, a: Attributes) -> bool:
    if not verb_matches(rule, a.verb):
        return False
    if a.resource_request:
        return (group_matches(rule, a.api_group) and resource_matches(rule, a.resource,
                                                                      a.subresource)
                and name_matches(rule, a.name))
    return url_matches(rule, a.path)


def first_allowing(rules: Iterable[Rule], a: Attributes) -> Rule | None:
    return next((rule for rule in rules if allows(rule, a)), None)


def _owner_covers(owner: Rule, verb: str, group: str, resource: str, name: str,
                  url: str) -> bool:
    """Whether `owner` allows one atomic grant; a grant of `*` is covered only by `*`."""
    if not verb_matches(owner, verb):
        return False
    if url:
        return url_matches(owner, url)
    resource_ok = ALL in owner.resources or resource in owner.resources or (
        "/" in resource and f"*/{resource.split('/', 1)[1]}" in owner.resources)
    return group_matches(owner, group) and resource_ok and name_matches(owner, name)


def uncovered(owner: list[Rule], servant: list[Rule]) -> list[Rule]:
    """The servant's rules the owner's do not cover, as kube's escalation check finds them
    (each servant rule broken into one verb, group, resource and name at a time)."""
    missing: list[Rule] = []
    for rule in servant:
        if rule.non_resource_urls:
            atoms: Iterable[tuple[str, str, str, str, str]] = (
                (v, "", "", "", u) for v, u in itertools.product(rule.verbs,
                                                                 rule.non_resource_urls))
        else:
            atoms = ((v, g, r, n, "") for v, g, r, n in itertools.product(
                rule.verbs, rule.api_groups, rule.resources, rule.resource_names or {""}))
        if not all(any(_owner_covers(o, *atom) for o in owner) for atom in atoms):
            missing.append(rule)
    return missing

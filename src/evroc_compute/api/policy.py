"""The default RBAC policy, seeded at start like kube's bootstrap roles (admins' edits are kept).

- `cluster-admin` (bound to system:masters): everything.
- `admin`, `edit`, `view`: the project roles, granted in a namespace by a RoleBinding. view
  reads the project's objects (and their status), events and quotas; edit also writes them
  (never their status: only the controllers and hosts write status); admin also manages the
  project's Roles and RoleBindings, and may delete the project itself.
- `project-creator`: may create namespaces (projects); the creator becomes the project's admin.
- Every authenticated user may read discovery and OpenAPI (`system:discovery`), the catalog
  (`evroc-compute:catalog-reader`), and ask about its own identity and access
  (`system:basic-user`).
- `system:controller-manager`: what the in-process controllers do, which is everything.
The infrastructure kinds (Host, VirtualMachineInstance, Lease) and Credentials are in no role
but cluster-admin.
"""

from __future__ import annotations

from typing import Any

from evroc_compute.api import catalog, compute, networking

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
AUTHENTICATED = "system:authenticated"
PROJECT_ADMIN_BINDING = "admin"  # the RoleBinding that makes a project's creator its admin

READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]

_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _by_group(kinds: tuple[Any, ...]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for kind in kinds:
        groups.setdefault(kind.group, []).append(kind.plural)
    return groups


# The kinds a project holds, and the catalog every user reads.
PROJECT_KINDS = _by_group((*compute.KINDS, *networking.KINDS))
CATALOG_KINDS = _by_group(catalog.KINDS)


def _rules(verbs: list[str], kinds: dict[str, list[str]], *, status: bool) -> list[dict[str, Any]]:
    rules = []
    for group, plurals in kinds.items():
        resources = plurals + [f"{p}/status" for p in plurals] * status
        rules.append({"apiGroups": [group], "resources": resources, "verbs": verbs})
    return rules


_VIEW = [*_rules(READ, PROJECT_KINDS, status=True),
         {"apiGroups": [""], "resources": ["events", "resourcequotas", "resourcequotas/status"],
          "verbs": READ},
         {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": READ},
         # A VM's serial console is readable by whoever reads the VM, as kube's view reads
         # pods/log.
         {"apiGroups": [compute.GROUP], "resources": ["virtualmachines/console"],
          "verbs": ["get"]},
         {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "watch"]}]
_EDIT = [*_VIEW, *_rules(WRITE, PROJECT_KINDS, status=False)]
_ADMIN = [*_EDIT,
          {"apiGroups": [GROUP], "resources": ["roles", "rolebindings"], "verbs": READ + WRITE},
          {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["delete"]}]


def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ClusterRole",
            "metadata": {"name": name, "labels": _LABELS, "annotations": _ANNOTATIONS},
            "rules": rules}


def cluster_role_binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": _LABELS, "annotations": _ANNOTATIONS},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": GROUP, "kind": kind, "name": subject}]}


EVERYTHING = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
              {"nonResourceURLs": ["*"], "verbs": ["*"]}]

CLUSTER_ROLES = (
    cluster_role("cluster-admin", EVERYTHING),
    cluster_role("admin", _ADMIN),
    cluster_role("edit", _EDIT),
    cluster_role("view", _VIEW),
    cluster_role("project-creator", [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}]),
    cluster_role("system:discovery", [{"nonResourceURLs": [
        "/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/",
        "/healthz", "/livez", "/readyz"], "verbs": ["get"]}]),
    cluster_role("system:basic-user", [
        {"apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
         "verbs": ["create"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
         "verbs": ["create"]}]),
    cluster_role("evroc-compute:catalog-reader", _rules(READ, CATALOG_KINDS, status=True)),
    cluster_role("system:controller-manager", EVERYTHING),
)

CLUSTER_ROLE_BINDINGS = (
    cluster_role_binding("cluster-admin", "cluster-admin", "Group", "system:masters"),
    cluster_role_binding("system:discovery", "system:discovery", "Group", AUTHENTICATED),
    cluster_role_binding("system:basic-user", "system:basic-user", "Group", AUTHENTICATED),
    cluster_role_binding("evroc-compute:catalog-reader", "evroc-compute:catalog-reader",
                         "Group", AUTHENTICATED),
    cluster_role_binding("system:controller-manager", "system:controller-manager", "User",
                         "system:controller-manager"),
)

"""Users as the authenticators see them, and the users and groups the system itself uses."""

from __future__ import annotations

from dataclasses import dataclass, field

ANONYMOUS = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"
AUTHENTICATED = "system:authenticated"
MASTERS = "system:masters"  # kube's break-glass group: every request is allowed
CONTROLLER_MANAGER = "system:controller-manager"
HOSTS = "system:hosts"
HOST_PREFIX = "system:host:"
FLEET_SIMULATOR = "system:fleet-simulator"  # the in-process agent of every simulated host


@dataclass(frozen=True)
class UserInfo:
    """kube's user.Info: a name, groups, and how the user was recognised."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS

    @property
    def host(self) -> str:
        """The Host this user is the agent of ("" for anyone else)."""
        if self.name.startswith(HOST_PREFIX) and HOSTS in self.groups:
            return self.name[len(HOST_PREFIX):]
        return ""

    def as_dict(self) -> dict[str, object]:
        """The `UserInfo` of authentication.k8s.io (SelfSubjectReview, audit events)."""
        result: dict[str, object] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            result["uid"] = self.uid
        if self.extra:
            result["extra"] = {k: list(v) for k, v in self.extra.items()}
        return result


def authenticated(name: str, groups: tuple[str, ...] = (), uid: str = "",
                  extra: dict[str, tuple[str, ...]] | None = None) -> UserInfo:
    """A recognised user: its groups plus system:authenticated, as every kube authenticator adds."""
    everyone = groups if AUTHENTICATED in groups else (*groups, AUTHENTICATED)
    return UserInfo(name, everyone, uid, extra or {})


ANONYMOUS_USER = UserInfo(ANONYMOUS, (UNAUTHENTICATED,))
CONTROLLERS = authenticated(CONTROLLER_MANAGER)
FLEET_SIMULATOR_USER = authenticated(FLEET_SIMULATOR)


def host_user(name: str) -> UserInfo:
    """The agent of Host `name`, as its credential authenticates it."""
    return authenticated(HOST_PREFIX + name, (HOSTS,))

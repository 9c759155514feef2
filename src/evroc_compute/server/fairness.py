"""Fairness: each user may have only so many requests in flight, and so many open watches.

One event loop serves every user, so a user with hundreds of requests in flight makes everyone
else's wait behind them. Capping what one user (by authenticated name) may have in flight bounds
that share; the excess is refused at once with kube's 429 TooManyRequests and Retry-After, which
client-go and kubectl retry. Watches are counted apart: they are long-lived and cheap while idle,
so an informer-heavy controller holding a few dozen must not use up its budget for requests.

The in-process controllers are not counted: their requests do not come over HTTP (they call the
router directly) and are bounded by their own work queues. Every HTTP client is, host agents
(one user per host) and the admin included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evroc_compute.server import errors

# Far above what real clients hold in flight (kubectl: 1; client-go's default rate limit: a
# burst of 10; Terraform's default parallelism: 10), far below what starves the loop.
DEFAULT_MAX_REQUESTS = 100
# An informer holds one watch per kind; a controller of every kind ~20, a host agent a few.
DEFAULT_MAX_WATCHES = 200


@dataclass
class Limits:
    """In-flight requests and open watches per user; a limit of 0 means no limit."""

    max_requests: int = DEFAULT_MAX_REQUESTS
    max_watches: int = DEFAULT_MAX_WATCHES
    requests: dict[str, int] = field(default_factory=dict)  # user name -> in flight
    watches: dict[str, int] = field(default_factory=dict)  # user name -> open

    def admit(self, user: str, watch: bool) -> None:
        """Take a slot for one request of `user` (a watch's if `watch`), or refuse it with a
        429. Nothing awaits in here, so a burst cannot overrun a limit."""
        counts, limit = (self.watches, self.max_watches) if watch \
            else (self.requests, self.max_requests)
        held = counts.get(user, 0)
        if limit and held >= limit:
            what = "open watches" if watch else "requests in flight"
            option = "--max-watches-per-user" if watch else "--max-requests-per-user"
            raise errors.too_many_requests(
                f"user {user!r} has {held} {what}, the most one user may have ({option} "
                f"{limit}); retry when some have finished")
        counts[user] = held + 1

    def release(self, user: str, watch: bool) -> None:
        """Give back the slot `admit` took."""
        counts = self.watches if watch else self.requests
        held = counts[user] - 1
        if held:
            counts[user] = held
        else:
            del counts[user]  # no entry per user ever seen: the map stays as small as the load

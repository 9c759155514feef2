"""The cost of authentication and authorization per request, in process (no HTTP, no TLS).

    .venv/bin/python bench/auth.py

Times what every request pays on top of its handler: reading its credential (the admin's
client certificate; an issued token) and asking the authorizers (host rules, then RBAC) for an
allowed and a refused request. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import tempfile
import timeit
from pathlib import Path

from evroc_compute.server.app import App
from evroc_compute.server.auth.authn import ClientCertificate
from evroc_compute.server.auth.authz import Attributes
from evroc_compute.server.auth.users import MASTERS, authenticated

CALLS = 100_000


def per_call(what: str, call: object) -> None:
    seconds = timeit.timeit(call, number=CALLS)  # type: ignore[arg-type]
    print(f"{what:<48} {seconds / CALLS * 1e6:6.2f} us")


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        app = App(Path(directory), admin_certificates=("ad",))
        await app.start()
        admin = ClientCertificate("admin", (MASTERS,), "ad")
        per_call("authenticate: the admin's certificate",
                 lambda: app.authenticator.authenticate("", admin))
        user = app.authenticator.authenticate("", admin)
        stranger = authenticated("stranger")
        for who, name in ((user, "admin, allowed"), (stranger, "a user with no role, refused")):
            attributes = Attributes(who, "get", "virtualmachines", "compute.evroclabs.net",
                                    "default", "web")
            per_call(f"authorize a get: {name}", lambda a=attributes: app.authorizer.authorize(a))
        await app.stop()


if __name__ == "__main__":
    asyncio.run(main())

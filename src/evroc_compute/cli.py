"""Command line: `evroc-compute serve` and `evroc-compute kubeconfig`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

DEFAULT_DATA_DIR = Path(os.environ.get("EVROC_COMPUTE_DATA_DIR", "./data"))


def kubeconfig(server: str, cluster: str = "") -> str:
    """A kubeconfig for the local server; with `cluster`, evroc's kcp-style URL."""
    url = f"{server.rstrip('/')}/clusters/{cluster}" if cluster else server
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "evroc-compute",
        "clusters": [{"name": "evroc-compute", "cluster": {"server": url}}],
        "users": [{"name": "evroc-user", "user": {}}],
        "contexts": [{"name": "evroc-compute", "context": {
            "cluster": "evroc-compute", "user": "evroc-user", "namespace": "default"}}],
    }, sort_keys=False)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from evroc_compute.cloud import Cloud
    from evroc_compute.hosts.fleet import FleetError, default_fleet, load_fleet

    try:
        fleet = load_fleet(Path(args.fleet)) if args.fleet else default_fleet()
    except FleetError as problem:
        sys.exit(f"evroc-compute: {problem}")
    app = Cloud(Path(args.data_dir), fleet=fleet, controllers=not args.no_controllers,
                compact_interval=args.compact_interval, compact_keep=args.compact_keep)
    print(f"evroc-compute serving on http://{args.host}:{args.port} "
          f"(data in {Path(args.data_dir).resolve()})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log, loop="uvloop", http="httptools",
                timeout_keep_alive=60, backlog=4096,
                # Open watches would otherwise hold a graceful shutdown (Ctrl-C) for up to
                # their timeout (30 min): give requests 3 s, then cancel what remains.
                timeout_graceful_shutdown=3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="evroc-compute", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the API server")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=6443)
    run.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                     help="where the embedded SQLite store lives (default ./data)")
    run.add_argument("--compact-interval", type=float, default=300.0,
                     help="seconds between store compactions")
    run.add_argument("--compact-keep", type=int, default=1000,
                     help="revisions of history kept by compaction")
    run.add_argument("--fleet", default="",
                     help="a YAML fleet file (hosts, timing, faults' back-off); default: the "
                          "built-in simulated fleet of three zones with realistic timing")
    run.add_argument("--no-controllers", action="store_true",
                     help="serve the API only: no controllers, scheduler or hosts")
    run.add_argument("--log-level", default="warning")
    run.add_argument("--access-log", action="store_true")
    config = commands.add_parser("kubeconfig", help="print a kubeconfig for the local server")
    config.add_argument("--server", default="http://127.0.0.1:6443")
    config.add_argument("--cluster", default="",
                        help="serve through evroc's kcp-style prefix, e.g. root:my-org")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(args)
    else:
        print(kubeconfig(args.server, args.cluster), end="")


if __name__ == "__main__":
    main()

"""`serve --controllers process`: the control plane in a child process, over HTTPS, as itself.

The child runs the controllers, the scheduler and the simulated fleet's agent with the PKI's
controller-manager and fleet-simulator certificates; serve restarts it when it dies.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import yaml

from tests.conftest import Kubectl, Server, children, make_kubectl, start_server
from tests.e2e.test_lifecycle import apply, disk, vm, wait_status

FLEET = {"timing": "immediate", "heartbeat": {"interval": 0.5, "timeout": 3},
         "hosts": [{"name": "p", "zone": "se-sto-a", "vcpu": 16, "memoryGB": 64, "count": 2}]}


def controllers_child(server: Server, other_than: int = 0, limit: float = 15) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        pids = [p for p in children(server.process.pid) if p != other_than]
        if pids:
            return pids[0]
        time.sleep(0.05)
    raise AssertionError(f"no controllers process under {server.process.pid}: "
                         f"{server.log_path.read_text()[-2000:]}")


def as_context(kc: Kubectl, server: Server, context: str) -> Kubectl:
    """kubectl with the controllers process's kubeconfig, in one of its contexts."""
    config = kc.kubeconfig.with_name(f"kubeconfig-{context}")
    config.write_text((server.pki_dir / "controllers.kubeconfig").read_text())
    kubectl = Kubectl(kc.binary, config, kc.cache_dir)
    kubectl("config", "use-context", context)
    return kubectl


def test_vms_run_through_a_controllers_process_that_is_restarted_when_killed(
        tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(FLEET))
    server = start_server(tmp_path / "data", "--fleet", str(fleet), "--controllers", "process")
    try:
        kc = make_kubectl(server, tmp_path)
        first = controllers_child(server)
        apply(kc, disk("boot-1"), vm("vm-1", "boot-1"))
        wait_status(kc, "vm-1", "Running")
        managers = kc("get", "vm/vm-1", "-o",
                      "jsonpath={.metadata.managedFields[*].manager}").split()
        assert "evroc-compute-controllers" in managers

        os.kill(first, signal.SIGKILL)
        second = controllers_child(server, other_than=first)
        apply(kc, disk("boot-2"), vm("vm-2", "boot-2"))
        wait_status(kc, "vm-2", "Running")
        assert "restarting" in server.log_path.read_text()
        assert f"controllers[{second}]" in server.log_path.read_text()

        # Each identity is itself, with its own rights: the fleet simulator may not write
        # what is not its hosts'.
        controllers = as_context(kc, server, "controllers")
        assert "system:controller-manager" in controllers("auth", "whoami")
        simulator = as_context(kc, server, "fleet-simulator")
        assert "system:fleet-simulator" in simulator("auth", "whoami")
        refused = simulator.run("create", "namespace", "not-mine", check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr
    finally:
        server.stop()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{second}").exists():  # the child ends with serve
        assert time.monotonic() < deadline, "the controllers process outlived serve"
        time.sleep(0.05)

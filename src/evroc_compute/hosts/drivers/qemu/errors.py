"""The exceptions of the QEMU driver, one per thing a caller can act on.

Every message says what failed and what to look at (a log file, a missing tool), because
these errors end up in a VM's status conditions and in an operator's terminal.
"""

from __future__ import annotations


class QemuDriverError(Exception):
    """Base class: anything the QEMU driver could not do."""


class ToolError(QemuDriverError):
    """An external tool (qemu-img, apt-get, debootstrap...) is missing or failed."""


class ImageBuildError(QemuDriverError):
    """A guest image could not be built."""


class ImagePullError(QemuDriverError):
    """An image source could not be fetched, verified, decompressed or converted."""


class ImageNotFoundError(QemuDriverError, LookupError):
    """The image store holds no image of that name."""


class DiskError(QemuDriverError):
    """A VM disk could not be created, resized or deleted."""


class SeedError(QemuDriverError):
    """The cloud-init seed could not be built from the given settings."""


class QmpError(QemuDriverError):
    """QEMU's monitor could not be reached or refused a command."""


class MachineError(QemuDriverError):
    """A VM could not be started, stopped, adopted or changed."""


class MachineStateError(MachineError):
    """An operation was asked for in a run state that does not allow it."""

    def __init__(self, action: str, state: object, allowed: tuple[object, ...]) -> None:
        names = ", ".join(str(s) for s in allowed)
        super().__init__(f"cannot {action} a machine in state {state}; allowed in: {names}")
        self.action = action
        self.state = state
        self.allowed = allowed

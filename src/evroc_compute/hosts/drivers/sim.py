"""The simulated driver: what a host would report about an instance, as a pure function of time.

`step(instance, now)` takes the instance (spec: what should be; status: what the host last
reported) and returns the next status and how long until something changes by itself.  The
life of a guest: Scheduled -> Pulling (the boot image) -> Starting (booting) -> Running;
Stopping -> Stopped when spec.running turns false.  Faults come from the instance's
annotations (copied there from the VM and its boot image by the VM controller):

- `fault.evroc-compute.io/image-pull: MESSAGE`: every pull of the boot image fails with MESSAGE;
  the failure is reported at once (ErrImagePull), then the host backs off (ImagePullBackOff),
  doubling from `backoff_base` up to `backoff_max`, and tries again.
- `fault.evroc-compute.io/crash-on-boot: N`: the first N boots of the instance fail; each failure
  is followed by a back-off before the next start (CrashLoopBackOff), then the guest runs.
- `fault.evroc-compute.io/io-error: MESSAGE`: the guest is paused by the hypervisor, as QEMU does
  with werror=stop when a disk write fails (e.g. the backing storage is full); removing the
  annotation resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evroc_compute.api.infra import FAULT_PREFIX
from evroc_compute.api.meta import format_time, parse_time
from evroc_compute.runtime.settings import Settings

FAULT_IMAGE_PULL = FAULT_PREFIX + "image-pull"
FAULT_CRASH_ON_BOOT = FAULT_PREFIX + "crash-on-boot"
FAULT_IO_ERROR = FAULT_PREFIX + "io-error"
SCSI_DEVICES = tuple(f"/dev/sd{chr(ord('a') + i)}" for i in range(26))
FAILURE_REPORT_SECONDS = 1.0  # a failure is shown this long before the back-off starts


@dataclass(frozen=True, slots=True)
class Step:
    status: dict[str, Any]
    wait: float | None  # seconds until the next step changes something by itself


def _faults(instance: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (instance["metadata"].get("annotations") or {}).items()
            if k.startswith(FAULT_PREFIX)}


def _crashes_wanted(faults: dict[str, str]) -> int:
    try:
        return max(0, int(faults.get(FAULT_CRASH_ON_BOOT, "0")))
    except ValueError:
        return 0


def _hotswap(spec: dict[str, Any], old: list[dict[str, Any]], running: bool) -> list[dict[str, Any]]:
    """Hot-plugged disks: each keeps its SCSI device while plugged; unplugged when removed."""
    before = {e.get("attachment"): e for e in old}
    used = {e.get("device") for e in old if e.get("attached")}
    out = []
    for want in spec.get("hotswap") or []:
        entry = {"attachment": want["attachment"], "disk": want["disk"], "serial": want["serial"]}
        if running:
            device = (before.get(want["attachment"]) or {}).get("device")
            if not device:
                device = next(d for d in SCSI_DEVICES if d not in used)
                used.add(device)
            out.append({**entry, "device": device, "attached": True})
        else:
            out.append({**entry, "attached": False,
                        "message": "the VM is not running; the disk is plugged in when it starts"})
    return out


def step(instance: dict[str, Any], now: float, settings: Settings) -> Step:
    spec, old = instance.get("spec") or {}, dict(instance.get("status") or {})
    timing = settings.timing
    faults = _faults(instance)
    status = dict(old)
    phase = old.get("phase") or "Scheduled"
    since = parse_time(old.get("phaseSince")) or now
    elapsed = now - since
    wait: float | None = None

    def move(to: str, message: str) -> None:
        nonlocal phase
        if to != phase:
            status["phaseSince"] = format_time(now)
        phase = to
        status["phase"], status["message"] = to, message

    wants_up = spec.get("running") is not False
    if not wants_up:
        if phase in ("Running", "Paused", "Starting", "Migrating"):
            move("Stopping", "ACPI power-down sent; waiting for the guest to shut down")
            elapsed = 0.0
        if phase == "Stopping":
            if elapsed >= timing.stop:
                move("Stopped", "the guest shut down")
            else:
                wait = timing.stop - elapsed
        elif phase != "Stopped":
            move("Stopped", "the guest was never started")
    elif not spec.get("disksReady"):
        if phase in ("Scheduled", "Pending"):
            move("Scheduled", "waiting for the VM's disks to be provisioned")
    else:
        wait = _run(status, phase, elapsed, now, faults, settings, move)
        phase = status["phase"]
    status["hotswap"] = _hotswap(spec, old.get("hotswap") or [], phase in ("Running", "Paused"))
    if not status["hotswap"]:
        del status["hotswap"]
    return Step(status, wait)


def _run(status: dict[str, Any], phase: str, elapsed: float, now: float, faults: dict[str, str],
         settings: Settings, move: Any) -> float | None:
    """The start sequence and the running guest; returns the wait until the next change."""
    timing = settings.timing
    if phase in ("Running", "Paused"):
        if FAULT_IO_ERROR in faults:
            move("Paused", f"the hypervisor paused the guest after a disk I/O error: "
                           f"{faults[FAULT_IO_ERROR] or 'injected fault'}")
        else:
            move("Running", "the guest is running")
        return None
    if phase in ("Scheduled", "Pending", "Stopped"):
        move("Pulling", "pulling the boot image")
        elapsed = 0.0
        phase = "Pulling"
    if phase == "Failed":
        crash_retry = parse_time(status.get("crashRetryAt")) or now
        if now < crash_retry:
            return crash_retry - now
        move("Starting", "starting the guest again after it failed")
        status["bootCount"] = status.get("bootCount", 0) + 1
        return _boot(status, 0.0, now, faults, settings, move)
    if phase == "Pulling":
        error = status.get("imagePullError")
        retry_at = parse_time(status.get("imageRetryAt"))
        if error and retry_at is None:  # the failure was shown; now back off
            if elapsed < FAILURE_REPORT_SECONDS:
                return FAILURE_REPORT_SECONDS - elapsed
            failures = status.get("imagePullFailures", 1)
            status["imageRetryAt"] = format_time(now + settings.backoff(failures))
            return settings.backoff(failures)
        if error and retry_at is not None and now < retry_at:
            return retry_at - now
        if elapsed < timing.pull and not error:
            return timing.pull - elapsed
        if FAULT_IMAGE_PULL in faults:
            status["imagePullError"] = faults[FAULT_IMAGE_PULL] or "the image could not be fetched"
            status["imagePullFailures"] = status.get("imagePullFailures", 0) + 1
            status.pop("imageRetryAt", None)
            status["phaseSince"] = format_time(now)
            status["message"] = f"pulling the boot image failed: {status['imagePullError']}"
            return FAILURE_REPORT_SECONDS
        for field in ("imagePullError", "imagePullFailures", "imageRetryAt"):
            status.pop(field, None)
        move("Starting", "booting the guest")
        status["bootCount"] = status.get("bootCount", 0) + 1
        return _boot(status, 0.0, now, faults, settings, move)
    if phase == "Starting":
        return _boot(status, elapsed, now, faults, settings, move)
    return None


def _boot(status: dict[str, Any], elapsed: float, now: float, faults: dict[str, str],
          settings: Settings, move: Any) -> float | None:
    if elapsed < settings.timing.boot:
        return settings.timing.boot - elapsed
    if status.get("bootCount", 1) <= _crashes_wanted(faults):
        crashes = status.get("crashCount", 0) + 1
        status["crashCount"] = crashes
        status["crashRetryAt"] = format_time(now + settings.backoff(crashes))
        move("Failed", f"the guest exited during boot, boot {status.get('bootCount', 1)} "
                       f"({FAULT_CRASH_ON_BOOT})")
        return settings.backoff(crashes)
    for field in ("crashCount", "crashRetryAt"):
        status.pop(field, None)
    move("Running", "the guest is running")
    return _run(status, "Running", 0.0, now, faults, settings, move)

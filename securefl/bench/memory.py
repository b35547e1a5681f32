"""Peak resident memory of a block of code: reset the kernel's high-water mark, read it afterwards.

Linux only: writing "5" to /proc/self/clear_refs resets VmHWM (peak RSS) to the current RSS, so
VmHWM after the block minus VmRSS before it is the most memory the block added at any moment,
whoever allocated it (numpy, torch, TenSEAL's C++, gmpy2). It is the whole simulated round (every
party lives in this one process), not a single party. Elsewhere the figure is None.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

METHOD = "VmHWM after the round minus VmRSS before it, VmHWM reset via /proc/self/clear_refs"


def _status_kb(field: str) -> int | None:
    """A field of /proc/self/status in kB (None where the kernel does not report it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def available() -> bool:
    """Whether peak memory can be measured here."""
    return _reset()


class Peak:
    """Holds the measured peak (bytes above the RSS at entry), or None where unavailable."""

    bytes: int | None = None


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """Measure the block's peak memory into the yielded Peak."""
    peak = Peak()
    before = _status_kb("VmRSS") if _reset() else None
    yield peak
    after = _status_kb("VmHWM") if before is not None else None
    if after is not None:
        peak.bytes = max(0, after - before) * 1024

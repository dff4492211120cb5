"""What CPU this process may use: how many cores (cgroup quota and affinity) and which
instructions (for BF16 and INT8), read from the kernel without any runtime."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

# The instruction sets that decide how fast each precision runs, as /proc/cpuinfo names them.
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def available_cpus() -> int:
    """CPUs this container may use: the cgroup quota and the affinity mask, whichever is less."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_quota()
    return min(cpus, quota) if quota else cpus


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPU limit in whole cores (rounded up) from cgroup v2 `cpu.max` or v1 CFS files;
    None without a limit."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    try:
        v1 = root / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else max(1, -(-quota_us // period_us))
    except (OSError, ValueError):
        return None


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the cores: workers run side by side, each on its own."""
    return max(1, available_cpus() // workers)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes in BF16 itself (AVX512_BF16 or AMX), rather than emulating it."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in NATIVE_BF16_FLAGS)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown"


def capabilities() -> dict[str, Any]:
    """What `/v1/models/<name>` shows of the CPU: enough to tell why a precision was chosen."""
    flags = cpu_flags()
    return {
        "model": cpu_model(),
        "cores": available_cpus(),
        "flags": [flag for flag in SPEED_FLAGS if flag in flags],
        "native_bf16": native_bf16(flags),
    }

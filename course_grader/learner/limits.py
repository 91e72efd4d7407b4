"""Resource limits for the worker that runs learner code, and where their values come from.

Every limit has a default suited to the course's exercises on a laptop CPU and can be lowered
(or raised) with an environment variable, which is how the grader's own tests keep a bad
submission down to a few seconds:

| limit | variable | default |
|---|---|---|
| wall clock per call (a call that runs past it is not repeated) | COURSE_GRADE_CALL_TIMEOUT | 30 s |
| wall clock per exercise (all calls) | COURSE_GRADE_EXERCISE_TIMEOUT | 300 s |
| start-up of a worker (torch import; the learner's import: per-call limit) | COURSE_GRADE_STARTUP_TIMEOUT | 120 s |
| memory (RLIMIT_DATA) | COURSE_GRADE_MEMORY_MB | 4096 MiB |
| largest file written, console output included (RLIMIT_FSIZE) | COURSE_GRADE_FILE_MB | 64 MiB |
| address space (RLIMIT_AS): the worker's size at start + memory + 1 GiB | (COURSE_GRADE_MEMORY_MB) | |
| tasks (processes and threads) in one sandbox (RLIMIT_NPROC, sandbox only) | COURSE_GRADE_NPROC | 128 |

RLIMIT_DATA does not count shared anonymous mappings; RLIMIT_AS bounds every mapping, with a 1 GiB
margin for the libraries' reservations.

The trusted pytest process of a grading run gets limits of its own (`apply_in_session`): RLIMIT_AS
of its size at start + the memory limit + 2 GiB (answers are capped at 16 MiB each, so this only
stops a runaway), no core dumps, and files of at most 1 GiB. RLIMIT_NPROC counts per user, so it is set only inside the
bubblewrap sandbox (sandbox.py), where the learner's processes have a user of their own.
"""

from __future__ import annotations

import os
import resource
import signal
from dataclasses import dataclass

__all__ = ["SANDBOX_NPROC", "Limits", "apply_in_session", "apply_in_worker", "sandbox_nproc"]

SANDBOX_NPROC = 128
_AS_MARGIN = 1 << 30


def _number(variable: str, default: float) -> float:
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{variable}={raw!r} is not a number; expected seconds or MiB, e.g. 30"
        ) from None
    if value <= 0:
        raise ValueError(f"{variable}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class Limits:
    """Limits of one worker; `from_env()` reads the COURSE_GRADE_* variables."""

    call_timeout: float = 30.0
    exercise_timeout: float = 300.0
    startup_timeout: float = 120.0
    memory_mb: float = 4096.0
    file_mb: float = 64.0

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            call_timeout=_number("COURSE_GRADE_CALL_TIMEOUT", cls.call_timeout),
            exercise_timeout=_number("COURSE_GRADE_EXERCISE_TIMEOUT", cls.exercise_timeout),
            startup_timeout=_number("COURSE_GRADE_STARTUP_TIMEOUT", cls.startup_timeout),
            memory_mb=_number("COURSE_GRADE_MEMORY_MB", cls.memory_mb),
            file_mb=_number("COURSE_GRADE_FILE_MB", cls.file_mb),
        )

    @property
    def cpu_seconds(self) -> int:
        """CPU-time limit of a worker: its whole exercise budget plus the start-up."""
        return int(self.exercise_timeout + self.startup_timeout) + 1


def apply_in_worker(limits: Limits) -> None:
    """Lower this process's limits (hard limits too, so learner code cannot raise them again)."""

    lower = _lower
    cpu = limits.cpu_seconds
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(
        resource.RLIMIT_CPU,
        (cpu, cpu + 2 if cpu_hard == resource.RLIM_INFINITY else min(cpu + 2, cpu_hard)),
    )
    lower(resource.RLIMIT_CORE, 0)
    lower(resource.RLIMIT_FSIZE, int(limits.file_mb * 2**20))
    current_data = _data_in_use()
    lower(resource.RLIMIT_DATA, current_data + int(limits.memory_mb * 2**20))
    size = _status_kb("VmSize:")
    if size:
        lower(resource.RLIMIT_AS, size + int(limits.memory_mb * 2**20) + _AS_MARGIN)
    signal.signal(
        signal.SIGXFSZ, signal.SIG_IGN
    )  # a too-large write raises OSError instead of killing


def _lower(kind: int, value: int) -> None:
    """Lower soft and hard limit `kind` to `value` (never above the current hard limit)."""
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def apply_in_session(limits: Limits) -> None:
    """Limits of the trusted pytest process of a grading run (it never runs learner code)."""
    _lower(resource.RLIMIT_CORE, 0)
    _lower(resource.RLIMIT_FSIZE, 1 << 30)
    size = _status_kb("VmSize:")
    if size:
        _lower(resource.RLIMIT_AS, size + int(limits.memory_mb * 2**20) + 2 * _AS_MARGIN)


def sandbox_nproc() -> int:
    """RLIMIT_NPROC of a sandbox: COURSE_GRADE_NPROC, default SANDBOX_NPROC."""
    return int(_number("COURSE_GRADE_NPROC", SANDBOX_NPROC))


def _data_in_use() -> int:
    """Bytes of this process's data segment now (VmData), so the limit counts from here."""
    return _status_kb("VmData:")


def _status_kb(field: str) -> int:
    """A `kB` field of /proc/self/status, in bytes (0 when it cannot be read)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

"""Run graded test files in a fresh pytest process and read back what each test earned.

`run_tests(files, target)` starts `python -m pytest -p course_grader.learner.plugin ...` in its own
process group, with the graded copy chosen by `target`, waits at most `timeout` seconds, and
returns one record per collected test (see plugin.py); with a zygote the process is forked. The
pytest process is trusted: it imports the tests and course_lib, and sends every learner call to a
worker (runner.py). When the pytest process itself dies or overruns, the tests it had not
finished are reported as `missing`.

When bubblewrap is available (sandbox.py) and COURSE_GRADE_SANDBOX is not "off", the run's workers
fork from a zygote of their own inside the sandbox, and `SessionResult.sandbox` says "bubblewrap";
otherwise "none". COURSE_GRADE_SANDBOX=required makes a run without the sandbox an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from course_grader.layout import CourseLayout
from course_grader.learner.limits import Limits
from course_grader.records import TestRecord

__all__ = ["SessionResult", "run_tests"]


@dataclass
class SessionResult:
    """Outcome of one pytest run: per-test records, and how the run itself ended."""

    tests: list[TestRecord] = field(default_factory=list)
    status: str = "ok"  # ok | timeout | crash
    log: str = ""
    sandbox: str = "none"  # bubblewrap | none: how the learner's code was confined


def _limits_env(limits: Limits) -> dict[str, str]:
    return {
        "COURSE_GRADE_CALL_TIMEOUT": str(limits.call_timeout),
        "COURSE_GRADE_EXERCISE_TIMEOUT": str(limits.exercise_timeout),
        "COURSE_GRADE_STARTUP_TIMEOUT": str(limits.startup_timeout),
        "COURSE_GRADE_MEMORY_MB": str(limits.memory_mb),
        "COURSE_GRADE_FILE_MB": str(limits.file_mb),
    }


def run_tests(
    files: list[Path],
    target: str,
    layout: CourseLayout,
    *,
    limits: Limits | None = None,
    timeout: float | None = None,
    forbidden: list[Path] = (),
    log_limit: int = 20000,
    zygote: str | None = None,
) -> SessionResult:
    """Run the graded tests `files` against `target` ("exercises", "solutions" or a folder).

    With `zygote` (a `zygote.Zygote.socket_path`) the pytest process and its workers are forked
    from that zygote instead of starting new interpreters.
    """
    limits = limits or Limits.from_env()
    if not files:
        return SessionResult(tests=[], status="ok", log="no graded test files")
    from course_grader.learner import sandbox

    mode = sandbox.mode()
    if mode == "none" and os.environ.get("COURSE_GRADE_SANDBOX", "").lower() == "required":
        raise RuntimeError(f"the grader's sandbox is required but unavailable: {sandbox.reason()}")
    if mode == "bubblewrap":
        from course_grader.learner.zygote import SandboxZygote

        jail = tempfile.mkdtemp(prefix="grade-sandbox-")
        probes = layout.root / "probes"
        worker_zygote = SandboxZygote(Path(jail), [probes] if probes.is_dir() else [])
        try:
            result = _run(
                files,
                target,
                layout,
                limits,
                timeout,
                forbidden,
                log_limit,
                zygote,
                worker_zygote.start(),
                jail,
            )
        finally:
            worker_zygote.stop()
            shutil.rmtree(jail, ignore_errors=True)
        result.sandbox = mode
        return result
    return _run(files, target, layout, limits, timeout, forbidden, log_limit, zygote, None, None)


def _run(files, target, layout, limits, timeout, forbidden, log_limit, zygote, worker_zygote, jail):
    """`run_tests` proper; with `worker_zygote` the workers fork from that sandboxed zygote."""
    if timeout is None:
        timeout = len(files) * (limits.exercise_timeout + limits.startup_timeout) + 60
    with tempfile.TemporaryDirectory(prefix="grade-session-") as scratch:
        report = Path(scratch) / "report.json"
        log_path = Path(scratch) / "pytest.log"
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("COURSE_GRADE_")]:
            del env[key]
        env.update(_limits_env(limits))
        env.update(
            {
                "COURSE_GRADE_REPORT": str(report),
                "COURSE_GRADE_TARGET": str(target),
                "COURSE_GRADE_ROOT": str(layout.root),
                "COURSE_GRADE_FORBIDDEN": os.pathsep.join([scratch, *map(str, forbidden)]),
                "COURSE_MODE": env.get("COURSE_MODE", "fast"),
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # graded tests need no third-party plugin; halves start-up
            }
        )
        if worker_zygote is not None:
            env["TMPDIR"] = jail  # WorkerClient makes the workers' homes here, inside the sandbox
        pytest_args = [
            "-p",
            "course_grader.learner.plugin",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(layout.root),
            "-W",
            "ignore::pytest.PytestConfigWarning",
            *map(str, files),
        ]
        status = "ok"
        with open(log_path, "wb") as log:
            process = None
            if zygote:
                from course_grader.learner.zygote import spawn_child

                env["COURSE_GRADE_ZYGOTE"] = zygote
                if worker_zygote is not None:
                    env["COURSE_GRADE_ZYGOTE"] = worker_zygote.socket_path
                    env["COURSE_GRADE_WORKERS_SANDBOXED"] = "1"
                null = os.open(os.devnull, os.O_RDONLY)
                try:
                    process = spawn_child(
                        zygote,
                        "session",
                        cwd=str(layout.root),
                        env=env,
                        args=pytest_args,
                        fds=[null, log.fileno(), log.fileno()],
                    )
                except OSError:  # the zygote is gone: start a new interpreter instead
                    env.pop("COURSE_GRADE_ZYGOTE")
                    env.pop("COURSE_GRADE_WORKERS_SANDBOXED", None)
                finally:
                    os.close(null)
            if process is None:
                if worker_zygote is not None:
                    env["COURSE_GRADE_ZYGOTE"] = worker_zygote.socket_path
                    env["COURSE_GRADE_WORKERS_SANDBOXED"] = "1"
                process = subprocess.Popen(
                    [sys.executable, "-m", "pytest", *pytest_args],
                    cwd=layout.root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                status = "timeout"
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        if status == "ok" and process.returncode not in (0, 1):
            status = "crash" if not report.is_file() else status
        tests = (
            [
                TestRecord.from_json(t)
                for t in json.loads(report.read_text(encoding="utf-8"))["tests"]
            ]
            if report.is_file()
            else []
        )
        if (
            process.returncode not in (0, 1)
            and status == "ok"
            and any(t.outcome == "missing" for t in tests)
        ):
            status = "crash"
        raw = log_path.read_bytes()[-log_limit:].decode("utf-8", errors="replace")
    return SessionResult(tests=tests, status=status, log=raw)

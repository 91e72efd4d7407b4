"""The grader's side of a worker: start it, send calls, enforce wall-clock limits, replace it.

`WorkerClient` owns one worker process for one learner file. The worker is started lazily, loads
the file once and serves every call of the exercise (the torch import is paid once). A call that
runs past `Limits.call_timeout`, or a worker that dies (os._exit, a crash, the memory limit), is
reported as `LearnerError` with a one-line reason; the process group is killed and the next call
starts a fresh worker. A function or probe that timed out once is not run again: its later calls
fail at once, so an endless loop costs one call limit per function, not one per test. A file that
cannot be imported (syntax error, exception, endless loop at import) fails every call at once with
the same reason, without retrying. When the calls of an exercise have used
`Limits.exercise_timeout` seconds in all, further calls fail immediately.

Nothing from the worker is unpickled: answers are wire frames of plain data (`wire.py`), at most
`MAX_ANSWER_BYTES` each (checked from the frame's header before anything else is read; the worker
refuses a larger answer itself, with the learner's function in the message). The largest answer of
the course's graded tests is about 1.2 MiB.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from course_grader.learner import wire
from course_grader.learner.limits import Limits

__all__ = ["MAX_ANSWER_BYTES", "LearnerError", "WorkerClient", "worker_environment"]

MAX_ANSWER_BYTES = 16 << 20  # one answer of the worker, far below wire.MAX_FRAME_BYTES


class LearnerError(AssertionError):
    """A learner's call that did not produce an answer; the message's first line says why.

    `raised` holds the qualified names of the learner's exception class and its bases
    (`("builtins.ValueError", "builtins.Exception", ...)`; empty when the learner's code raised
    nothing, e.g. a time-out or a missing function); `where` is the innermost line of the learner's
    file in the traceback, `{"file", "line", "function", "code"}`, or None.
    """

    def __init__(
        self, message: str, *, raised: Iterable[str] = (), where: dict | None = None
    ) -> None:
        super().__init__(message)
        self.raised = tuple(raised)
        self.where = where


class _TimedOut(LearnerError):
    """A call (or the import) ran past its wall-clock limit."""


def worker_environment(home: str) -> dict[str, str]:
    """Minimal environment of a worker: CPU only, one thread, private home and temp folder."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "COURSE_MODE": os.environ.get("COURSE_MODE", "fast"),
    }
    return env


class WorkerClient:
    """Runs the calls of one exercise in a killable worker process.

    `source` is the learner's file as bytes (read here, so the worker never opens the folder it
    came from; the worker compiles the bytes, so a BOM or a PEP 263 coding line is honoured);
    `task_names` are the functions and classes the exercise asks for; `forbidden_roots` are folders
    the worker may not read.
    """

    def __init__(
        self,
        exercise: str,
        path: Path,
        source: bytes | str,
        *,
        task_names: list[str],
        forbidden_roots: list[str],
        limits: Limits,
        probes_path: Path | None = None,
    ):
        self.exercise = exercise
        self.path = Path(path)
        self.source = source
        self.task_names = list(task_names)
        self.forbidden_roots = [str(Path(root).resolve()) for root in forbidden_roots]
        self.limits = limits
        self.probes_path = str(probes_path) if probes_path else None
        self.spent = 0.0
        self.starts = 0
        self.peak_rss_kb = 0
        self._process = None  # subprocess.Popen or zygote.ChildHandle
        self._stdin = self._stdout = None
        self._home: str | None = None
        self._broken: str | None = None
        self._broken_where: dict | None = None  # the learner's line that stopped the import
        self._reused: dict[str, str] = {}
        self._timed_out: dict[tuple[str, str], float] = {}  # (op, name) -> the limit it ran past

    # -- process management -------------------------------------------------------------------
    def _spawn(self) -> None:
        """Start a worker: forked from the zygote when COURSE_GRADE_ZYGOTE names a live one, else a
        new interpreter."""
        self._home = tempfile.mkdtemp(prefix=f"grade-{self.exercise.split('_')[0]}-")
        zygote = os.environ.get("COURSE_GRADE_ZYGOTE")
        if zygote and self._spawn_from_zygote(zygote):
            return
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-m", "course_grader.learner.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._home,
            env=worker_environment(self._home),
            start_new_session=True,
        )
        self._stdin, self._stdout = self._process.stdin, self._process.stdout

    def _spawn_from_zygote(self, zygote: str) -> bool:
        """Fork the worker from the zygote; False when the zygote cannot be reached."""
        from course_grader.learner.zygote import spawn_child

        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            self._process = spawn_child(
                zygote,
                "worker",
                cwd=self._home,
                env=worker_environment(self._home),
                args=[],
                fds=[request_read, answer_write, null],
            )
        except OSError:
            os.close(request_write)
            os.close(answer_read)
            return False
        finally:
            for fd in (request_read, answer_write, null):
                os.close(fd)
        self._stdin = os.fdopen(request_write, "wb")
        self._stdout = os.fdopen(answer_read, "rb")
        return True

    def _start(self) -> None:
        self._spawn()
        self.starts += 1
        limits = {
            name: getattr(self.limits, name)
            for name in (
                "call_timeout",
                "exercise_timeout",
                "startup_timeout",
                "memory_mb",
                "file_mb",
            )
        }
        setup = {
            "path": str(self.path),
            "exercise": self.exercise,
            "source": self.source,
            "task_names": self.task_names,
            "forbidden_roots": self.forbidden_roots,
            "limits": limits,
            "probes_path": self.probes_path,
            "max_answer_bytes": MAX_ANSWER_BYTES,
        }
        try:  # two answers: the worker is up (start-up budget), the file is imported (call budget)
            self._exchange(setup, self.limits.startup_timeout, what="starting the worker")
            ready = self._exchange(None, self.limits.call_timeout, what="importing the file")
        except LearnerError as error:
            self._broken = f"{self.path.name} could not be imported: {error}"
            raise LearnerError(self._broken) from None
        if not ready["ready"]["ok"]:
            message = ready["ready"]["error"]
            detail = ready["ready"].get("detail")
            self._broken = f"{self.path.name} could not be imported: {message}" + (
                f"\n{detail}" if detail else ""
            )
            self._broken_where = ready["ready"].get("where")
            self._stop()
            raise LearnerError(self._broken, where=self._broken_where)
        self._reused = ready["reused"]

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    try:
                        os.kill(process.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            process.wait()
            for stream in (self._stdin, self._stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            self._stdin = self._stdout = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def _exchange(self, message: Any, timeout: float, what: str) -> Any:
        """Send `message` (unless None), wait at most `timeout` seconds for the answer; LearnerError
        otherwise."""
        process = self._process
        result: dict[str, Any] = {}

        def read() -> None:
            try:
                result["value"] = wire.read_frame(self._stdout, max_bytes=MAX_ANSWER_BYTES)
            except BaseException as error:  # noqa: BLE001  (reported below)
                result["error"] = error

        try:
            if message is not None:
                wire.write_frame(self._stdin, message)
        except (BrokenPipeError, OSError):
            pass  # the reader sees the closed pipe and reports the dead worker
        reader = threading.Thread(target=read, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(timeout)
        self.spent += time.monotonic() - started
        if reader.is_alive():
            self._stop()
            reader.join(5)
            raise _TimedOut(f"timed out after {timeout:.0f} s while {what} (an endless loop?)")
        if "error" in result:
            code = process.poll()
            if code is None:
                try:
                    code = process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = None
            self._stop()
            error = result["error"]
            if isinstance(error, EOFError):
                reason = _describe_exit(code)
                raise LearnerError(f"the worker running the file stopped while {what}: {reason}")
            if isinstance(error, wire.FrameTooLarge):
                raise LearnerError(f"the answer while {what} was refused: {error}")
            raise LearnerError(f"the worker sent an unreadable answer while {what}: {error}")
        return result["value"]

    # -- public API --------------------------------------------------------------------------
    def request(self, op: str, name: str, args: tuple, kwargs: dict) -> Any:
        """Run `op` ("call" or "probe") `name` with plain-data arguments; return the answer."""
        __tracebackhide__ = True  # pytest shows the learner's failure, not the grader's frames
        if self._broken:
            raise LearnerError(self._broken, where=self._broken_where)
        label = f"{self.exercise.split('_')[0]}.{name}"
        if (op, name) in self._timed_out:
            raise LearnerError(
                f"{label} timed out after {self._timed_out[op, name]:.0f} s in an earlier test, "
                "so it is not run again (an endless loop?)"
            )
        remaining = self.limits.exercise_timeout - self.spent
        if remaining <= 0:
            raise LearnerError(
                f"the time budget of {self.limits.exercise_timeout:.0f} s for {self.exercise} is used up"
            )
        if self._process is None or self._process.poll() is not None:
            self._stop()
            self._start()
        timeout = min(self.limits.call_timeout, remaining)
        try:
            answer = self._exchange(
                {"op": op, "name": name, "args": list(args), "kwargs": dict(kwargs)},
                timeout,
                what=f"running {label}",
            )
        except _TimedOut:
            self._timed_out[op, name] = timeout
            raise
        if not isinstance(answer, dict) or type(answer.get("ok")) is not bool:
            self._stop()  # a worker whose answers are not the worker's is not reused
            raise LearnerError(f"the worker sent a malformed answer while running {label}")
        rss_kb = answer.get("rss_kb")
        self.peak_rss_kb = max(self.peak_rss_kb, rss_kb if type(rss_kb) is int else 0)
        if not answer["ok"]:
            error, detail = answer.get("error"), answer.get("detail")
            raised, where = answer.get("raised"), answer.get("where")
            raise LearnerError(
                (error if isinstance(error, str) else f"{label} failed")
                + (f"\n{detail}" if isinstance(detail, str) and detail else ""),
                raised=[r for r in raised if isinstance(r, str)]
                if isinstance(raised, list)
                else (),
                where=where if isinstance(where, dict) else None,
            )
        return answer.get("value")

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hints = {
            "SIGKILL": " (killed: the memory or CPU limit?)",
            "SIGXCPU": " (CPU time limit)",
            "SIGSEGV": " (a crash in native code)",
        }
        return f"killed by {name}{hints.get(name, '')}"
    return f"it exited with status {code} (sys.exit or os._exit in the learner's code?)"

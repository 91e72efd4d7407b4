"""A fork server: pay the torch and pytest imports once per class instead of once per process.

    python -I -m course_lib.grade.zygote SOCKET        (started by `Zygote.start()`)

The zygote is a fresh interpreter that imports torch, numpy, pytest and the grader, then waits
on a Unix socket. Each request carries the kind of child ("worker" or "session"), its working
folder, its complete environment, its arguments and three file descriptors (SCM_RIGHTS) that
become the child's stdin, stdout and stderr. The zygote forks; the child starts a new session
(so the whole group can be killed), takes the descriptors, environment and folder, and runs
`worker.main()` or `pytest.main(args)`. The zygote answers {"pid": ...} at once and
{"exit": status} when the child ends (negative: killed by that signal).

Because children fork from an interpreter that has only imported libraries, a worker's memory
holds no test, no manifest and no other student's code. The zygote exits when its parent does.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["PRELOAD", "Zygote", "spawn_child"]

PRELOAD = (
    "numpy",
    "torch",
    "torch.testing",
    "torch.nn",
    "pytest",
    "course_lib.grade.worker",
    "course_lib.grade.plugin",
    "course_lib.grade.fixtures",
    "course_lib.grade.guards",
)
_MAX_REQUEST = 1 << 20


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested process; never returns."""
    code = 1
    try:
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        if request["kind"] == "worker":
            from course_lib.grade import worker

            worker.main()
            code = 0
        else:
            import pytest

            code = int(pytest.main(request["args"]))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001  (the child must never return into the zygote's loop)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def serve(path: str) -> None:
    """The zygote's loop: accept requests, fork children, report their exits."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for key, _ in selector.select(timeout=0.05):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                try:
                    message, fds, _, _ = socket.recv_fds(connection, _MAX_REQUEST, 3)
                    request = json.loads(message.decode("utf-8"))
                except (OSError, ValueError):
                    connection.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    connection.close()
                    for other in children.values():
                        other.close()
                    _run_child(request, fds)
                for fd in fds:
                    os.close(fd)
                children[pid] = connection
                try:
                    connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                except OSError:
                    pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            connection = children.pop(pid, None)
            if connection is not None:
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                try:
                    connection.sendall(json.dumps({"exit": code}).encode() + b"\n")
                except OSError:
                    pass
                connection.close()
        if os.getppid() != parent:
            for pid in list(children):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            return


class ChildHandle:
    """A child of the zygote: its pid, `kill()`, and `wait(timeout)` for its exit status."""

    def __init__(self, connection: socket.socket, pid: int):
        self.pid = pid
        self._connection = connection
        self._buffer = b""
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(0.0)
        return self.returncode

    def _read(self, timeout: float | None) -> None:
        self._connection.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._connection.recv(4096)
                if not chunk:
                    self.returncode = (
                        self.returncode if self.returncode is not None else -signal.SIGKILL
                    )
                    return
                self._buffer += chunk
        except (TimeoutError, BlockingIOError):
            return
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.returncode = int(json.loads(line)["exit"])
        self._connection.close()

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._read(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("zygote child", timeout)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def spawn_child(
    socket_path: str, kind: str, *, cwd: str, env: dict, args: list[str], fds: list[int]
) -> ChildHandle:
    """Ask the zygote at `socket_path` for a child; `fds` become its stdin, stdout, stderr."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(socket_path)
    request = json.dumps({"kind": kind, "cwd": cwd, "env": env, "args": args}).encode("utf-8")
    socket.send_fds(connection, [request], fds)
    buffer = b""
    connection.settimeout(60)
    while b"\n" not in buffer:
        chunk = connection.recv(4096)
        if not chunk:
            raise OSError("the zygote closed the connection without starting a child")
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    handle = ChildHandle(connection, int(json.loads(line)["pid"]))
    handle._buffer = rest
    return handle


class Zygote:
    """Start and stop a zygote process; `socket_path` is what children requests go to."""

    def __init__(self, env: dict | None = None):
        self._folder = tempfile.mkdtemp(prefix="grade-zygote-")
        self.socket_path = str(Path(self._folder) / "zygote.sock")
        self._env = env
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> Zygote:
        env = dict(self._env if self._env is not None else os.environ)
        env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-m", "course_lib.grade.zygote", self.socket_path],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self._folder,
        )
        deadline = time.monotonic() + timeout
        line = self._process.stdout.readline()
        if line.strip() != b"ready" or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError("the grader's zygote process did not start")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process.stdout.close()
            self._process = None
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        try:
            os.rmdir(self._folder)
        except OSError:
            pass

    def __enter__(self) -> Zygote:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    serve(sys.argv[1])

"""A fork server: pay the torch and pytest imports once per class instead of once per process.

    python -I -m course_grader.learner.zygote SOCKET        (started by `Zygote.start()`)

The zygote is a fresh interpreter that imports torch, numpy, pytest and the grader, then waits
on a Unix socket. Each request carries the kind of child ("worker" or "session"), its working
folder, its complete environment, its arguments and three file descriptors (SCM_RIGHTS) that
become the child's stdin, stdout and stderr. The zygote forks; the child starts a new session
(so the whole group can be killed), takes the descriptors, environment and folder, and runs
`worker.main()` or `pytest.main(args)`. The zygote answers {"pid": ...} at once and
{"exit": status} when the child ends (negative: killed by that signal).

Because children fork from an interpreter that has only imported libraries, a worker's memory
holds no test, no manifest and no other student's code. The zygote exits when its parent does.

`SandboxZygote` starts a second kind of zygote, for one pytest run's workers only, inside the
bubblewrap sandbox (sandbox.py): `python -I -m course_grader.learner.zygote --fd N --sandbox`. It
inherits an already listening socket (its path is not inside the sandbox, so a worker cannot ask
its zygote for anything), serves only "worker" requests and lowers RLIMIT_NPROC before forking.
Its children live in the sandbox's PID namespace, so each child itself sends the {"pid": ...} line:
the kernel attaches the sender's credentials (SO_PASSCRED) translated to the grader's namespace,
and `spawn_child` uses that host pid to kill the child's process group. When a zygote dies before it
reports a child's exit, `ChildHandle` kills that child's process group (no orphan keeps running)
and sets `zygote_lost`; the class grader treats the unfinished run as its own fault (bulk.py). A pytest process whose
environment has COURSE_GRADE_WORKERS_SANDBOXED=1 never falls back to unsandboxed workers: when
the sandboxed zygote cannot be reached, `spawn_child` raises WorkerStartError (a RuntimeError)
instead of OSError; the test then fails with kind "grader" and the class grader grades the
student again (runner.py, bulk.py).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["PRELOAD", "SandboxZygote", "WorkerStartError", "Zygote", "spawn_child"]

PRELOAD = (
    "numpy",
    "torch",
    "torch.testing",
    "torch.nn",
    "pytest",
    "course_grader.learner.worker",
    "course_grader.learner.plugin",
    "course_grader.learner.fixtures",
    "course_grader.learner.guards",
)
_MAX_REQUEST = 1 << 20


class WorkerStartError(RuntimeError):
    """A sandboxed worker could not be started: the grader's fault, never the learner's answer."""


def _run_child(request: dict, fds: list[int], announce: socket.socket | None = None) -> None:
    """In the forked child: become the requested process; never returns.

    `announce` (sandboxed zygote): the child sends its own {"pid": ...} line on it, so the grader
    receives the child's credentials, with its pid as the grader sees it.
    """
    code = 1
    try:
        os.setsid()
        if announce is not None:
            from course_grader.learner.sandbox import drop_privileges

            drop_privileges(request.get("cwd"))
            announce.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
            announce.close()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile as _tempfile

        _tempfile.tempdir = None  # the zygote may have cached its own TMPDIR
        os.chdir(request["cwd"])
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        if request["kind"] == "worker":
            from course_grader.learner import worker

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


def serve(path: str | None, *, listen_fd: int | None = None, sandboxed: bool = False) -> None:
    """The zygote's loop: accept requests, fork children, report their exits.

    `listen_fd`: an inherited listening socket instead of binding `path`; `sandboxed`: serve only
    workers, let each child announce its own pid, and lower RLIMIT_NPROC first.
    """
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    if sandboxed:
        import resource

        from course_grader.learner.limits import sandbox_nproc

        nproc = sandbox_nproc()
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    parent = os.getppid()
    if listen_fd is not None:
        listener = socket.socket(fileno=listen_fd)
    else:
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
                if sandboxed and (not isinstance(request, dict) or request.get("kind") != "worker"):
                    for fd in fds:
                        os.close(fd)
                    connection.close()
                    continue
                try:
                    pid = os.fork()
                except OSError:  # RLIMIT_NPROC: the sandbox is full
                    for fd in fds:
                        os.close(fd)
                    connection.close()
                    continue
                if pid == 0:
                    listener.close()
                    for other in children.values():
                        other.close()
                    if sandboxed:
                        _run_child(request, fds, announce=connection)
                    connection.close()
                    _run_child(request, fds)
                for fd in fds:
                    os.close(fd)
                children[pid] = connection
                if not sandboxed:
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
        self.zygote_lost = False  # the zygote died before reporting this child's exit

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(0.0)
        return self.returncode

    def _read(self, timeout: float | None) -> None:
        self._connection.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._connection.recv(4096)
                if not chunk:  # the zygote is gone: end the orphan, a grader fault
                    if self.returncode is None:
                        self.zygote_lost = True
                        self.kill()
                        self.returncode = -signal.SIGKILL
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
    if os.environ.get("COURSE_GRADE_WORKERS_SANDBOXED") == "1" and kind == "worker":
        try:
            return _spawn_sandboxed(socket_path, cwd=cwd, env=env, args=args, fds=fds)
        except (
            OSError
        ) as error:  # never OSError: the caller would fall back to an unsandboxed worker
            raise WorkerStartError(f"the sandboxed worker could not be started: {error}") from None
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


def _spawn_sandboxed(
    socket_path: str, *, cwd: str, env: dict, args: list[str], fds: list[int]
) -> ChildHandle:
    """`spawn_child` for a sandboxed zygote: the pid comes from the child's own credentials."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    connection.connect(socket_path)
    request = json.dumps({"kind": "worker", "cwd": cwd, "env": env, "args": args}).encode("utf-8")
    socket.send_fds(connection, [request], fds)
    # the sandboxed zygote imports torch before it accepts: allow the start-up budget
    connection.settimeout(float(os.environ.get("COURSE_GRADE_STARTUP_TIMEOUT") or 120) + 30)
    buffer, pid = b"", None
    while b"\n" not in buffer:
        chunk, ancillary, _, _ = connection.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        if not chunk:
            raise OSError("the sandboxed zygote closed the connection without starting a worker")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and pid is None:
                pid = struct.unpack("3i", data[: struct.calcsize("3i")])[0]
        buffer += chunk
    line, rest = buffer.split(b"\n", 1)
    if "pid" not in json.loads(line) or not pid or pid <= 1:
        connection.close()
        raise OSError("the sandboxed worker ended before it announced itself")
    handle = ChildHandle(connection, pid)
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
            [sys.executable, "-I", "-m", "course_grader.learner.zygote", self.socket_path],
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
        _remove_socket_folder(self.socket_path, self._folder)

    def __enter__(self) -> Zygote:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SandboxZygote:
    """A zygote for one pytest run's workers, inside bubblewrap (see sandbox.py).

    `scratch` is the run's private writable folder (workers' homes are made in it); `readable`
    extra read-only folders (course-local probes). `start()` does not wait for torch to be
    imported: the first `spawn_child` waits on the already listening socket.
    """

    def __init__(self, scratch: Path, readable: list[Path] = ()):
        self.scratch = Path(scratch)
        self.readable = [Path(p) for p in readable]
        self._folder = tempfile.mkdtemp(prefix="grade-sandbox-zygote-")
        self.socket_path = str(Path(self._folder) / "zygote.sock")
        self._process: subprocess.Popen | None = None
        self._listener: socket.socket | None = None

    def start(self) -> SandboxZygote:
        from course_grader.learner import sandbox

        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.socket_path)
        self._listener.listen(64)
        fd = self._listener.fileno()
        command = [
            sys.executable,
            "-I",
            "-m",
            "course_grader.learner.zygote",
            "--fd",
            str(fd),
            "--sandbox",
        ]
        argv = sandbox.bwrap_command(
            command, writable=[self.scratch], readable=self.readable, drop_in_children=True
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TMPDIR": str(self.scratch),
            "COURSE_GRADE_NPROC": os.environ.get("COURSE_GRADE_NPROC", ""),
        }
        self._process = subprocess.Popen(
            argv,
            pass_fds=[fd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=str(self.scratch),
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self._process is not None:
            try:  # bwrap is the sandbox's PID 1: when it dies, the kernel kills every process in it
                os.killpg(self._process.pid, signal.SIGKILL)
            except OSError:
                self._process.kill()
            self._process.wait()
            self._process = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        _remove_socket_folder(self.socket_path, self._folder)

    def __enter__(self) -> SandboxZygote:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _remove_socket_folder(socket_path, folder) -> None:
    """Remove a zygote's socket and its (then empty) folder; either may be gone already."""
    for remove, path in ((os.unlink, socket_path), (os.rmdir, folder)):
        try:
            remove(path)
        except OSError:
            pass


if __name__ == "__main__":
    if sys.argv[1] == "--fd":
        serve(None, listen_fd=int(sys.argv[2]), sandboxed="--sandbox" in sys.argv[3:])
    else:
        serve(sys.argv[1])

"""Guards for the worker process that runs learner code: a PEP 578 audit hook that cannot be lifted.

`install_guards(write_root, forbidden_roots)` adds an audit hook (there is no API to remove one)
that, from then on, refuses with PermissionError:
- reading or listing anything under `forbidden_roots` (solutions, hidden tests, the manifest, the
  grader's output folder);
- creating, writing, renaming, deleting or changing files outside `write_root` (the worker's
  private temporary folder);
- starting processes (subprocess, os.system, exec*, spawn*, fork), sending signals (os.kill);
- sockets, ctypes, changing resource limits;
- the introspection a submission would need to disarm the grader: sys.settrace / sys.setprofile
  (the profiler that spots calls to the course_lib implementation; a new `threading.Thread` may
  install that same profiler on itself, or no thread could run), gc.get_objects /
  gc.get_referrers / gc.get_referents, and replacing a function's `__code__`.
Every refusal is also recorded in `violations()` so the report can say why a test failed.

This is a guard against honest mistakes and casual cheating, not a sandbox: a process that can run
arbitrary Python can reach the operating system in ways no audit hook sees (see docs/grading.md).
The worker therefore also runs with resource limits, and bulk grading belongs in a container.
"""

from __future__ import annotations

import os
import sys

__all__ = ["install_guards", "violations"]

_DENIED_EVENTS = (
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.startfile",
    "pty.spawn",
    "os.kill",
    "os.killpg",
    "signal.pthread_kill",
    "socket.__new__",
    "socket.bind",
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.sendto",
    "socket.sendmsg",
    "resource.setrlimit",
    "resource.prlimit",
    "sys.settrace",
    "sys.setprofile",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "sys.remote_exec",
    "os.add_dll_directory",
    "winreg.",
    "_winapi.",
    "msvcrt.",
)
_PATH_EVENTS = {  # event -> indices of its path arguments that must lie in the write root
    "os.remove": (0,),
    "os.rename": (0, 1),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.symlink": (0, 1),
    "os.link": (0, 1),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.chflags": (0,),
    "os.lchflags": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.copyfile": (1,),
    "shutil.copymode": (1,),
    "shutil.copystat": (1,),
    "shutil.copytree": (1,),
    "shutil.rmtree": (0,),
    "shutil.move": (0, 1),
    "shutil.chown": (0,),
    "shutil.make_archive": (0,),
    "shutil.unpack_archive": (1,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

_violations: list[str] = []


def violations() -> list[str]:
    """Refusals recorded so far (most recent last), as one line each."""
    return list(_violations)


def _as_path(value: object) -> str | None:
    if type(value) is str:
        return value
    if type(value) is bytes:
        return os.fsdecode(value)
    return None


def install_guards(write_root: str, forbidden_roots: tuple[str, ...]) -> None:
    """Install the audit hook; `write_root` and `forbidden_roots` are absolute folder paths."""
    import threading

    realpath, join, sep = os.path.realpath, os.path.join, os.sep
    get_frame = sys._getframe
    # a new thread installs the worker's profiler (threading.setprofile) on itself: allowed, so
    # that threads run at all; any other sys.setprofile stays refused
    thread_start, profiler = threading.Thread._bootstrap_inner.__code__, threading._profile_hook
    write_prefix = realpath(write_root).rstrip(sep) + sep
    forbidden = tuple(realpath(root).rstrip(sep) for root in forbidden_roots)
    denied = _DENIED_EVENTS
    path_events = dict(_PATH_EVENTS)
    record = _violations.append

    def resolve(path: str) -> str:
        return realpath(path if os.path.isabs(path) else join(os.getcwd(), path))

    def is_forbidden(path: str) -> bool:
        full = resolve(path)
        return any(full == root or full.startswith(root + sep) for root in forbidden)

    def refuse(message: str) -> None:
        if len(_violations) < 100:
            record(message)
        raise PermissionError(f"the grader forbids {message}")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, flags = _as_path(args[0]), args[2] if len(args) > 2 else 0
            if path is None:
                return  # an already open file descriptor
            if is_forbidden(path):
                refuse(f"reading {path}")
            writing = (type(flags) is int and flags & _WRITE_FLAGS) or (
                type(args[1]) is str and any(c in args[1] for c in "wax+")
            )
            if writing and not (resolve(path) + sep).startswith(write_prefix):
                refuse(f"writing {path} (only the worker's temporary folder is writable)")
            return
        if event in ("os.listdir", "os.scandir", "glob.glob", "os.walk"):
            path = _as_path(args[0]) if args else None
            if path is not None and is_forbidden(path):
                refuse(f"listing {path}")
            return
        if event in path_events:
            for index in path_events[event]:
                path = _as_path(args[index]) if index < len(args) else None
                if path is None or not (resolve(path) + sep).startswith(write_prefix):
                    refuse(
                        f"{event} on {args[index] if index < len(args) else '?'!r} outside the temporary folder"
                    )
            return
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            refuse("replacing a function's __code__")
        if event.startswith("ctypes."):
            refuse(f"ctypes ({event})")
        if (
            event == "sys.setprofile"
            and profiler is not None
            and threading._profile_hook is profiler
        ):
            if get_frame(1).f_code is thread_start:
                return
        if event.startswith(denied):
            refuse(f"{event}")

    sys.addaudithook(hook)

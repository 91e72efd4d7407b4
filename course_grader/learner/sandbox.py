"""An operating-system sandbox (bubblewrap) around the processes that run learner code, on Linux.

Each pytest run (one student, or one `check`) gets its own sandboxed zygote: `bwrap` starts a
fresh interpreter in new mount, PID, IPC, UTS, network (and, when the grader is not root, user)
namespaces, with `--die-with-parent` and `--new-session`. Inside, the file system is a private
tmpfs that holds only:

- read-only: /usr, /lib*, /bin, /sbin (links into /usr on merged-/usr systems), /etc/ld.so.*, the
  Python installation (`sys.prefix`, `sys.base_prefix`, site-packages), the `course_lib` package
  folder and, when the course has them, its course-local probes (`<root>/probes`);
- writable: one private scratch folder (the workers' homes are made in it), at the same path as on
  the host, so the grader can read and delete what a worker wrote;
- a private /tmp (tmpfs), /proc of the sandbox's own PID namespace, a minimal /dev.

Nothing else of the course is there: no `solutions/`, no `tests/`, no submissions, no output folder,
no other student's copy, not even the learner's own file (its bytes reach the worker in the set-up
message). The zygote imports torch and pytest once and forks one worker per exercise, so the
sandbox costs one extra interpreter start per student, not one per worker.

The processes run as a non-root user: with an unprivileged grader, uid/gid 65534 inside a new user
namespace; when the grader runs as root, bwrap makes the namespaces with root's privileges and the
command drops to a per-sandbox uid (`setpriv`), because the kernel never applies RLIMIT_NPROC to
processes of the host's uid 0. The zygote lowers RLIMIT_NPROC (`limits.SANDBOX_NPROC`) before it
forks, so a fork bomb stops at that many tasks; the workers' other limits are in limits.py.

`available()` runs a self-test once (cached): the `bwrap` binary exists and a trivial Python
command runs under the exact options used for grading, as a non-root user. `mode()` is
"bubblewrap" when sandboxing is on and possible, else "none"; COURSE_GRADE_SANDBOX=off turns it
off (what `--no-sandbox` sets).
"""

from __future__ import annotations

import itertools
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

__all__ = ["INSTALL_HINT", "available", "bwrap_command", "mode", "reason", "wanted"]

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf "
    "install bubblewrap`) and make sure unprivileged user namespaces are enabled, or grade "
    "inside a container (see docs/grading.md)"
)
_NOBODY = 65534
_ROOT_UIDS = itertools.count()
_state: dict[str, object] = {}


def _course_folders() -> list[Path]:
    """The folders of `course_lib` and `course_grader`, mounted read-only in the sandbox."""
    import course_grader
    import course_lib

    return [Path(package.__file__).resolve().parent for package in (course_lib, course_grader)]


def _python_folders() -> list[Path]:
    folders = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    try:
        folders.update(Path(p) for p in site.getsitepackages())
    except AttributeError:  # a virtualenv with an old site.py
        pass
    executable = Path(sys.executable)
    folders.add(executable.parent)
    real = executable.resolve()
    folders.add(real.parent.parent if real.parent.name == "bin" else real.parent)
    resolved = sorted(
        {f.resolve() for f in folders if f.exists()} | {f for f in folders if f.exists()}
    )
    # drop folders inside another one of the list
    return [f for f in resolved if not any(o != f and f.is_relative_to(o) for o in resolved)]


def _system_binds() -> list[str]:
    args: list[str] = []
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        args += ["--ro-bind-try", name, name]
    return args


def bwrap_command(
    command: list[str],
    *,
    writable: list[Path] = (),
    readable: list[Path] = (),
    cwd: Path | None = None,
    drop_in_children: bool = False,
) -> list[str]:
    """The argv that runs `command` in the sandbox; `writable`/`readable` keep their host paths.

    When the grader is root, the namespaces are made with root's privileges and the processes must
    drop to a uid of their own (the kernel exempts host uid 0 from RLIMIT_NPROC, so mapping
    nobody to root would not do): the command runs under `setpriv`, or, with `drop_in_children`
    (the zygote), keeps CAP_SETUID/SETGID/CHOWN and gets COURSE_GRADE_SANDBOX_UID, and each
    child it forks gives its home to that uid and drops to it before anything else.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError(f"no bwrap binary: {INSTALL_HINT}")
    args = [bwrap, "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        uid = 200000 + (os.getpid() % 20000) * 64 + next(_ROOT_UIDS) % 64
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID") + (("CAP_CHOWN",) if drop_in_children else ()):
            args += ["--cap-add", cap]
        if drop_in_children:
            args += ["--setenv", "COURSE_GRADE_SANDBOX_UID", str(uid)]
        else:
            setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
            command = [
                setpriv,
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--",
                *command,
            ]
        for folder in writable:  # the zygote (root without capabilities but these) must enter it
            os.chown(folder, uid, uid)
            os.chmod(folder, 0o711)
    else:
        args += ["--unshare-all", "--unshare-user", "--uid", str(_NOBODY), "--gid", str(_NOBODY)]
        args += ["--disable-userns"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += _system_binds()
    bound = [*_python_folders(), *_course_folders(), *map(Path, readable), *map(Path, writable)]
    parents = sorted(
        {a for f in bound for a in f.parents if a != Path("/")}, key=lambda a: len(a.parts)
    )
    for parent in parents:  # traversable by the sandbox's user, whatever the host's modes
        if parent not in bound and str(parent) not in ("/tmp", "/usr"):
            args += ["--perms", "0755", "--dir", str(parent)]
    for folder in [*_python_folders(), *_course_folders(), *map(Path, readable)]:
        args += ["--ro-bind", str(folder), str(folder)]
    for folder in writable:
        args += ["--bind", str(folder), str(folder)]
    args += ["--remount-ro", "/", "--chdir", str(cwd or (writable[0] if writable else "/"))]
    args += ["--setenv", "HOME", str(writable[0]) if writable else "/tmp"]
    return [*args, "--", *command]


def drop_privileges(home: str | None) -> None:
    """In a child of the sandboxed zygote run as root: give `home` to the sandbox's uid, become it."""
    raw = os.environ.get("COURSE_GRADE_SANDBOX_UID")
    if not raw:
        return
    uid = int(raw)
    if home:
        for folder, _, names in os.walk(home):
            os.chown(folder, uid, uid)
            for name in names:
                os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from uid 0 to another: the kernel clears every capability
    if os.getuid() == 0 or os.geteuid() == 0:
        os._exit(70)


def _self_test() -> tuple[bool, str]:
    if shutil.which("bwrap") is None:
        return False, f"no bwrap binary on PATH; {INSTALL_HINT}"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="grade-sandbox-test-") as scratch:
        # course_lib and course_grader must import from the read-only mounts: an editable install
        # that points at another checkout would leave the sandboxed zygote unable to start
        probe = (
            "import os, sys, importlib.util\n"
            "for name in ('course_lib', 'course_grader'):\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    assert spec and os.path.exists(spec.origin), f'{name} not importable: {spec}'\n"
            "print(os.getuid(), os.path.exists(sys.argv[1]))"
        )
        try:
            argv = bwrap_command(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    probe,
                    str(Path(__file__).resolve().parents[2] / "solutions"),
                ],
                writable=[Path(scratch)],
            )
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            return False, f"bwrap failed its self-test ({error}); {INSTALL_HINT}"
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 2 or words[0] == "0" or words[1] != "False":
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return False, f"bwrap failed its self-test ({why}); {INSTALL_HINT}"
    return True, "bubblewrap"


def available() -> bool:
    """Whether learner code can run under bubblewrap here (a self-test, run once per process)."""
    if "ok" not in _state:
        if sys.platform != "linux":
            _state["ok"], _state["why"] = False, "the sandbox needs Linux (bubblewrap)"
        else:
            _state["ok"], _state["why"] = _self_test()
    return bool(_state["ok"])


def reason() -> str:
    """Why `available()` is False (or "bubblewrap")."""
    available()
    return str(_state["why"])


def wanted() -> bool:
    """False when COURSE_GRADE_SANDBOX=off (the `--no-sandbox` flag)."""
    return os.environ.get("COURSE_GRADE_SANDBOX", "auto").lower() not in ("off", "none", "0", "no")


def mode() -> str:
    """ "bubblewrap" when learner code will run sandboxed, else "none"."""
    return "bubblewrap" if wanted() and available() else "none"

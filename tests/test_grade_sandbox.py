"""The bubblewrap sandbox around learner code (course_grader/learner/sandbox.py).

Learner code runs through the real worker path (WorkerClient, forked from a sandboxed zygote) with
no forbidden roots for the audit hook, so a refused read is the kernel's doing, not the hook's;
the network and uid checks also run a bare interpreter under the same bwrap options, with no
audit hook at all (what a submission that defeats the hook would see). Skipped only where bwrap
is unavailable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from course_grader.layout import CourseLayout
from course_grader.learner import sandbox
from course_grader.learner.client import WorkerClient
from course_grader.learner.limits import Limits
from course_grader.learner.session import run_tests
from course_grader.learner.zygote import SandboxZygote

pytestmark = pytest.mark.skipif(not sandbox.available(), reason=f"no sandbox: {sandbox.reason()}")

ROOT = Path(__file__).resolve().parents[1]
SECRET = ROOT / "tests" / "test_grade_sandbox.py"  # a file of the course the learner must not read
SOLUTION = sorted((ROOT / "solutions").glob("ex*.py"))[0]
LIMITS = Limits(
    call_timeout=30, exercise_timeout=120, startup_timeout=120, memory_mb=1024, file_mb=8
)
DEMO = CourseLayout(Path(__file__).parent / "grading_cases" / "demo")

LEARNER = f'''
import os, threading, time

SECRET = {str(SECRET)!r}
SOLUTION = {str(SOLUTION)!r}
ROOT = {str(ROOT)!r}

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read(20).decode("latin-1")
    except OSError as e:
        return "denied " + type(e).__name__

def read_dir_fd():
    try:
        fd = os.open("/", os.O_RDONLY)
        inner = os.open(SECRET.lstrip("/"), os.O_RDONLY, dir_fd=fd)
        return os.read(inner, 20).decode("latin-1")
    except OSError as e:
        return "denied " + type(e).__name__

def read_after_chdir():
    try:
        os.chdir("/")
        return os.read(os.open(os.path.relpath(SOLUTION, "/"), os.O_RDONLY), 20).decode("latin-1")
    except OSError as e:
        return "denied " + type(e).__name__

def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return ["denied " + type(e).__name__]

def write_native(path):  # torch.from_file(shared=True) creates the file from C: no audit event
    import torch
    try:
        torch.from_file(path, shared=True, size=16, dtype=torch.uint8)
        return "written"
    except (RuntimeError, OSError) as e:
        return "denied"

def pids():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())

def uid():
    return [os.getuid(), os.geteuid(), os.getgid()]

def _sandbox_tasks():
    """Threads of every process in the sandbox (its /proc lists only the sandbox's pids)."""
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                count += len(os.listdir("/proc/" + pid + "/task"))
            except OSError:
                pass
    return count


def _settle(limit, seconds=10):
    """Wait until at most `limit` tasks are left in the sandbox (threads of an earlier call exit
    asynchronously, and RLIMIT_NPROC would count them against this one)."""
    deadline = time.monotonic() + seconds
    while _sandbox_tasks() > limit and time.monotonic() < deadline:
        time.sleep(0.05)


def threads(n, native=False):
    """Start up to n threads that wait; return (started, running at once)."""
    import _thread
    _settle(16)
    baseline = _sandbox_tasks()
    running, stop, lock = [0], threading.Event(), threading.Lock()

    def wait():
        with lock:
            running[0] += 1
        stop.wait()

    started = 0
    try:
        for _ in range(n):
            if native:
                _thread.start_new_thread(wait, ())
            else:
                threading.Thread(target=wait, daemon=True).start()
            started += 1
    except RuntimeError:
        pass
    deadline = time.monotonic() + 10
    while running[0] < started and time.monotonic() < deadline:
        time.sleep(0.01)
    at_once = running[0]
    stop.set()
    _settle(baseline)  # leave no thread behind for the next call
    return [started, at_once]

def home():
    return os.environ["HOME"]

def home_write():
    with open("scratch.txt", "w") as f:
        f.write("ok")
    return read("scratch.txt")
'''


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    jail = Path(tempfile.mkdtemp(prefix="grade-sandbox-test-"))
    with SandboxZygote(jail) as zygote:
        saved = {
            k: os.environ.get(k)
            for k in ("COURSE_GRADE_ZYGOTE", "COURSE_GRADE_WORKERS_SANDBOXED", "TMPDIR")
        }
        os.environ.update(
            {
                "COURSE_GRADE_ZYGOTE": zygote.socket_path,
                "COURSE_GRADE_WORKERS_SANDBOXED": "1",
                "TMPDIR": str(jail),
            }
        )
        tempfile.tempdir = None
        client = WorkerClient(
            "ex99_sandbox",
            jail / "ex99_sandbox.py",
            LEARNER.encode(),
            task_names=[],
            forbidden_roots=[],
            limits=LIMITS,
        )
        try:
            yield lambda name, *args: client.request("call", name, args, {})
        finally:
            client.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            tempfile.tempdir = None
    import shutil

    shutil.rmtree(jail, ignore_errors=True)


def test_course_files_cannot_be_read_by_absolute_path(learner):
    assert SECRET.is_file() and SOLUTION.is_file()
    assert learner("read", str(SECRET)).startswith("denied")
    assert learner("read", str(SOLUTION)).startswith("denied")


def test_course_files_cannot_be_read_with_dir_fd_or_after_chdir(learner):
    assert learner("read_dir_fd").startswith("denied")
    assert learner("read_after_chdir").startswith("denied")


def test_only_the_course_packages_are_visible(learner):
    assert learner("listing", str(ROOT)) == ["course_grader", "course_lib"]
    inside_tmp = learner("listing", "/tmp")  # a private tmpfs holding only the run's scratch folder
    mount_points = {
        Path(p).resolve().relative_to("/tmp").parts[0]  # the read-only mounts' parents,
        for p in (ROOT, sys.prefix)  # when the course lives in /tmp
        if Path(p).resolve().is_relative_to("/tmp")
    }
    scratch = [name for name in inside_tmp if name not in mount_points]
    assert len(scratch) == 1 and scratch[0].startswith("grade-sandbox-"), inside_tmp


def test_no_write_outside_the_scratch_folder(learner):
    assert learner("write_native", os.path.join(learner("home"), "scratch.bin")) == "written"
    for path in (
        ROOT / "sandbox_escape.bin",
        Path(sys.prefix) / "sandbox_escape.bin",
        Path("/sandbox_escape.bin"),
    ):
        assert learner("write_native", str(path)) == "denied", path
        assert not path.exists()


def test_no_host_processes(learner):
    inside = learner("pids")
    assert os.getpid() not in inside or len(inside) < 20
    assert len(inside) < 20, inside  # bwrap, the zygote, its workers: not the host's processes
    assert max(inside) < 100


def test_runs_as_non_root(learner):
    assert 0 not in learner("uid")


def test_threads_run_in_the_worker(learner):
    # the worker's profiler is installed on each new thread; the audit hook lets exactly that pass
    assert learner("threads", 3) == [3, 3]


@pytest.mark.parametrize("native", [False, True], ids=["threading", "_thread"])
def test_too_many_tasks_are_stopped_by_the_limit(learner, native):
    # RLIMIT_NPROC counts the tasks of the worker's uid (a uid of the sandbox's own, without
    # capabilities): 128 by default, the zygote and the worker included
    started, at_once = learner("threads", 1000, native)
    assert 50 < started < 128, started
    assert at_once == started, (started, at_once)  # every thread it started really ran


def _bare(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a bare interpreter under the grader's bwrap options (no audit hook)."""
    with tempfile.TemporaryDirectory() as scratch:
        argv = sandbox.bwrap_command([sys.executable, "-I", "-c", code], writable=[Path(scratch)])
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_no_network_even_without_the_audit_hook():
    done = _bare(
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(5)\n"
        "try:\n    s.connect(('127.0.0.1', 22)); print('connected')\n"
        "except OSError as e:\n    print('refused', e)\n"
        "print(sorted(socket.if_nameindex()))\n"
    )
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout and "connected" not in done.stdout
    assert "eth" not in done.stdout


def test_bare_interpreter_is_non_root_and_cannot_read_the_course():
    done = _bare(f"import os; print(os.getuid()); print(os.path.exists({str(SOLUTION)!r}))")
    assert done.returncode == 0, done.stderr
    uid, exists = done.stdout.split()
    assert uid != "0" and exists == "False"


def _demo_target(tmp_path: Path, source_folder: str) -> Path:
    target = tmp_path / source_folder
    target.mkdir()
    for name in ("ex90_demo.py", "ex91_more.py"):
        (target / name).write_bytes((DEMO.root / source_folder / name).read_bytes())
    return target


@pytest.mark.parametrize("folder, full", [("solutions", True), ("exercises", False)])
def test_real_grader_path_scores_solutions_full_and_stubs_zero(tmp_path, folder, full):
    files = DEMO.test_files("ex90_demo", hidden=False) + DEMO.test_files("ex91_more", hidden=False)
    result = run_tests(files, str(_demo_target(tmp_path, folder)), DEMO, limits=LIMITS)
    assert result.sandbox == "bubblewrap"
    assert result.tests, result.log
    passed = [t.passed for t in result.tests]
    assert all(passed) if full else not any(passed), result.tests

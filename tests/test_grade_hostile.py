"""Hostile submissions, graded by the real class grader (`grade_class`, sandbox required).

The class run is skipped where the sandbox is unavailable (docs/grading.md says which attacks then
get through); the tests of the grader's own faults at the end run either way.

One class of the demo course (tests/grading_cases/demo: 10 points, 3 of them on `add_one`) holds
honest students and attackers. Each attacker submits the reference solution, except that `add_one`
first runs one attack and returns the right answer only when the attack worked (it raises
otherwise). So an attacker scores exactly 7 when the attack gains nothing, and 10 when it gets
through. Attacks on the grader or on other students (killing processes, pre-creating reports,
a process left behind to rewrite the gradebook) gain their author nothing either way; what they
must not do is change anyone else's grade or the gradebook, which the honest students and the
files under OUT check. The test itself also leaves traps in OUT before the run (grades.csv as a
folder, a student's folder as a link, a results.json that is a folder), as a submission graded
without the sandbox could have.

Attacks whose names start with `probe` (redefining the trusted probes) are covered by
tests/test_grade_trusted_references.py.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from course_grader.instructor import bulk
from course_grader.instructor.bulk import grade_class, grade_student, publish_folder
from course_grader.instructor.intake import take_in
from course_grader.instructor.manifest import build_manifest, save_manifest
from course_grader.instructor.manifest import tests_sha256 as hash_of_tests
from course_grader.layout import CourseLayout
from course_grader.learner import sandbox
from course_grader.learner.client import LearnerError, WorkerClient
from course_grader.learner.limits import Limits
from course_grader.learner.runner import ExerciseHandle
from course_grader.learner.session import SessionResult
from course_grader.learner.zygote import Zygote, spawn_child
from course_grader.records import ManifestTest, TestRecord
from tests.test_grade_isolation import ODD_BUT_HONEST, _write_odd_but_honest

CASES = Path(__file__).parent / "grading_cases"
DEMO = CourseLayout(CASES / "demo")
LIMITS = Limits(call_timeout=10, exercise_timeout=60, startup_timeout=90, memory_mb=512, file_mb=8)
REFERENCE_90 = (DEMO.solutions / "ex90_demo.py").read_text(encoding="utf-8")
REFERENCE_91 = (DEMO.solutions / "ex91_more.py").read_bytes()
SECRET = f"hostile-suite-secret-{uuid.uuid4().hex}"  # in the grader's environment
TOKEN = f"hostile-suite-escape-{uuid.uuid4().hex}"  # in the argv of a process that tries to stay

# name -> body of `_attack(x)`, run by add_one; True means "the attack worked". `OUT`, `ROOT`
# (the demo course, with solutions/), `GRADER` (the grader's pid), `SECRET` and `TOKEN` are known.
ATTACKS = {
    "dir_fd_read_and_write": """
    for folder in (OUT, ROOT):  # writes: checked on the host after the run
        try:
            out = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            os.close(os.open("dir_fd_was_here.txt", os.O_WRONLY | os.O_CREAT, dir_fd=out))
        except OSError:
            pass
    fd = os.open(ROOT, os.O_RDONLY | os.O_DIRECTORY)
    text = os.read(os.open("solutions/ex90_demo.py", os.O_RDONLY, dir_fd=fd), 4096)
    return b"BEGIN SOLUTION" in text
""",
    "cwd_patching": """
    os.getcwd = lambda: "/tmp"
    os.chdir(ROOT)
    return "BEGIN SOLUTION" in open("solutions/ex90_demo.py").read()
""",
    "fork_exec_setsid": """
    import _posixsubprocess
    code = ("import time; time.sleep(20); "
            f"open({OUT!r} + '/grades.csv', 'w').write('student,total\\\\nfork_exec_setsid,100\\\\n')")
    args = [sys.executable.encode(), b"-c", code.encode(), TOKEN.encode()]
    error_read, error_write = os.pipe()
    for arity in (23, 22, 21):  # the signature differs between Python versions
        try:
            _posixsubprocess.fork_exec(args, [args[0]], True, (error_write,), None, None, -1, -1, -1,
                                       -1, -1, -1, error_read, error_write, True, True,
                                       *([-1, None, None, None, -1, None, False][: arity - 16]))
            break
        except TypeError:
            continue
    else:
        raise RuntimeError("fork_exec could not be called")
    return False  # it gains nothing now; the test checks that the process did not outlive the run
""",
    "pidfd_signals": """
    import signal
    targets = [GRADER]  # the grader's pid on the host; and the sandbox's zygote when it is not ours
    if os.stat(f"/proc/{os.getppid()}").st_uid != os.getuid():  # (killing our own only hurts us)
        targets.append(os.getppid())
    for pid in targets:
        try:
            fd = os.pidfd_open(pid)
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
    return False
""",
    "huge_answer": """
    raise _Huge()
""",
    "shared_memory": """
    import mmap
    size = 3 << 30
    block = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    for start in range(0, size, 4096):
        block[start] = 1
    return True
""",
    "proc_reads": """
    found = False
    for path in ("/proc/self/environ", "/proc/1/environ", f"/proc/{os.getppid()}/environ",
                 f"/proc/{GRADER}/environ", f"/proc/{GRADER}/cmdline"):
        try:
            found = found or SECRET.encode() in open(path, "rb").read()
        except OSError:
            pass
    try:
        with open(f"/proc/{GRADER}/mem", "rb") as memory:
            found = found or bool(memory.read(1))
    except (OSError, ValueError):
        pass
    return found
""",
    "sqlite_and_from_file": """
    import sqlite3, torch  # writes: checked on the host after the run
    for folder in (OUT, ROOT, os.path.dirname(ROOT)):
        try:
            sqlite3.connect(os.path.join(folder, "hostile.db")).execute("create table t (x)")
        except Exception:
            pass
        try:
            torch.from_file(os.path.join(folder, "hostile.bin"), shared=True, size=16)
        except Exception:
            pass
    return False
""",
    "reads_other_students": """
    import glob
    found = []
    for pattern in ("/tmp/grade-submission-*/ex90_demo.py", "/tmp/grade-submissions-*/*/ex90_demo.py",
                    "/tmp/*/grade-submission-*/ex90_demo.py"):
        for path in glob.glob(pattern):
            try:
                found.append(open(path).read())
            except OSError:
                pass
    return any("_attack" not in text for text in found)
""",
    "precreates_reports": """
    for path in ("victim/results.json", "grades.csv", "reference/feedback.md"):
        try:
            os.makedirs(os.path.join(OUT, path), exist_ok=True)
        except OSError:
            pass
    return False
""",
    "disarms_the_profiler": """
    sys.setprofile(None)
    return True
""",
    "status_spoofing": """
    raise ValueError("the worker running the file stopped; timed out; could not be imported; "
                     "unreadable answer; time budget")
""",
}
HONEST = {"reference": 10, "victim": 10, "only_ex90": 9}


def _attacker(name: str, body: str, out: Path) -> str:
    header = (
        "import os, sys\nimport torch\n\n"
        f"OUT, ROOT, GRADER = {str(out)!r}, {str(DEMO.root)!r}, {os.getpid()}\n"
        f"SECRET, TOKEN = {SECRET!r}, {TOKEN!r}\n\n\n"
        "class _Huge(Exception):\n    pass\n\n\n"
        f"def _attack(x):\n    # {name}{body}\n\n"
    )
    add_one = (
        "    try:\n        won = _attack(x)\n    except _Huge:\n"
        "        return torch.zeros(40 << 20, dtype=torch.uint8)  # 40 MiB, past the answer cap\n"
        "    if not won:\n        raise RuntimeError('the attack gained nothing')\n"
        "    return x + 1\n"
    )
    text = REFERENCE_90.replace(
        "    # BEGIN SOLUTION\n    # HINT: tensors support `+` with a Python number.\n"
        "    return x + 1\n    # END SOLUTION\n",
        add_one,
        1,
    )
    assert text != REFERENCE_90
    return text.replace(
        "import torch\nfrom torch import nn\n", header + "from torch import nn\n", 1
    )


def _host_processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if (
        sandbox.mode() != "bubblewrap"
    ):  # the attacks are stopped by the sandbox; without it, see the docs
        pytest.skip(f"the sandbox is off or unavailable ({sandbox.reason()})")
    root = tmp_path_factory.mktemp("hostile")
    submissions, out, elsewhere = root / "submissions", root / "out", root / "elsewhere"
    for name, body in ATTACKS.items():
        (submissions / name).mkdir(parents=True)
        (submissions / name / "ex90_demo.py").write_text(_attacker(name, body, out))
        (submissions / name / "ex91_more.py").write_bytes(REFERENCE_91)
    for name in ("reference", "victim", "only_ex90"):
        (submissions / name).mkdir()
        (submissions / name / "ex90_demo.py").write_text(REFERENCE_90)
        if name != "only_ex90":
            (submissions / name / "ex91_more.py").write_bytes(REFERENCE_91)
    _write_odd_but_honest(submissions)
    # traps left in OUT before the run
    (out / "grades.csv").mkdir(parents=True)
    (out / "grades.csv" / "kept.txt").write_text("not a gradebook")
    elsewhere.mkdir()
    (elsewhere / "untouched.txt").write_text("untouched")
    os.symlink(elsewhere, out / "victim")
    (out / "reference" / "results.json").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COURSE_GRADE_SANDBOX", "required")
        patch.setenv("COURSE_GRADE_HOSTILE_SECRET", SECRET)
        started = time.monotonic()
        summary = grade_class(
            submissions, out, workers=2, hidden=True, layout=DEMO, limits=LIMITS, progress=False
        )
        seconds = time.monotonic() - started
    time.sleep(1)
    return {
        "summary": summary,
        "rows": {row["student"]: row for row in summary["rows"]},
        "out": out,
        "root": root,
        "elsewhere": elsewhere,
        "seconds": seconds,
    }


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_attack_earns_nothing(graded, attack):
    row = graded["rows"][attack]
    feedback = (graded["out"] / attack / "feedback.md").read_text()
    assert row["total"] == 7, f"{attack}: {row['total']} points\n{feedback}"
    assert row["ex91_more"] == 1 and row["sandbox"] == "bubblewrap"


def test_status_comes_from_the_grader_not_from_the_learners_message(graded):
    assert graded["rows"]["status_spoofing"]["status"] == "partial"


@pytest.mark.parametrize("student", sorted(HONEST) + sorted(ODD_BUT_HONEST))
def test_honest_students_get_exactly_their_score(graded, student):
    row = graded["rows"][student]
    feedback = (graded["out"] / student / "feedback.md").read_text()
    assert row["total"] == HONEST.get(student, 10), f"{student}: {row['total']}\n{feedback}"
    assert row["status"] == ("partial" if student == "only_ex90" else "ok")
    results = json.loads((graded["out"] / student / "results.json").read_text())
    assert results["score"] == row["total"] and results["sandbox"] == "bubblewrap"


def test_the_gradebook_is_complete_and_the_grader_wrote_it(graded):
    with open(graded["out"] / "grades.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    expected = sorted([*ATTACKS, *HONEST, *ODD_BUT_HONEST])
    assert [r["student"] for r in rows] == expected
    digest = hash_of_tests(DEMO, ["ex90_demo", "ex91_more"], hidden=True)
    for row in rows:
        assert float(row["total"]) == graded["rows"][row["student"]]["total"]
        assert row["sandbox"] == "bubblewrap" and row["tests_sha256"] == digest
    # the folder left in its place was moved aside, not deleted
    aside = list(graded["out"].glob("grades.csv.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "kept.txt").read_text() == "not a gradebook"


def test_reports_are_fresh_folders_written_by_the_grader(graded):
    out = graded["out"]
    for student in graded["rows"]:
        folder = out / student
        assert folder.is_dir() and not folder.is_symlink(), student
        assert (folder / "results.json").is_file() and (folder / "feedback.md").is_file(), student
        assert sorted(p.name for p in folder.iterdir()) == ["feedback.md", "results.json"], student
    assert [p.name for p in graded["elsewhere"].iterdir()] == ["untouched.txt"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_nothing_was_written_outside_the_sandbox(graded):
    for folder in (graded["out"], DEMO.root, DEMO.root.parent, graded["root"]):
        for name in ("hostile.db", "hostile.bin", "dir_fd_was_here.txt"):
            assert not (folder / name).exists(), folder / name


def test_the_escape_attempts_really_ran(graded):
    # the process was started (fork_exec raised nothing), and the signals were sent
    for attack in ("fork_exec_setsid", "pidfd_signals", "sqlite_and_from_file"):
        feedback = (graded["out"] / attack / "feedback.md").read_text()
        assert "the attack gained nothing" in feedback, f"{attack}:\n{feedback}"


def test_no_process_outlives_the_run(graded):
    # the escaped process would rewrite grades.csv 20 s after it started: it is gone already
    assert _host_processes_with(TOKEN) == []


def test_a_class_of_this_size_grades_in_reasonable_time(graded):
    # not a speed target: a bound that catches an attack stalling the class (e.g. a hung worker)
    assert graded["seconds"] < 240, graded["seconds"]


# -- grader faults -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(request):
    """Public and hidden tests of ex90 and ex91: the class run's manifest, or a new one."""
    if sandbox.mode() == "bubblewrap":
        return request.getfixturevalue("graded")["summary"]["manifest"]
    return build_manifest(DEMO, ["ex90_demo", "ex91_more"], hidden=True, limits=LIMITS)


def _reference_intake(tmp_path: Path):
    folder = tmp_path / "submissions" / "carol"
    folder.mkdir(parents=True)
    (folder / "ex90_demo.py").write_text(REFERENCE_90)
    (folder / "ex91_more.py").write_bytes(REFERENCE_91)
    return take_in(folder, ["ex90_demo", "ex91_more"])


def _passed(test: ManifestTest) -> TestRecord:
    """The record a run would report for manifest `test` when it passed."""
    return TestRecord(test.id, test.name, test.exercise, test.points, outcome="passed", message="")


@pytest.mark.parametrize("cut", ["killed", "no_worker"])
def test_an_unfinished_run_is_graded_again_in_a_fresh_process(tmp_path, manifest, monkeypatch, cut):
    calls, real = [], bulk.run_tests

    def cut_short_once(files, target, layout, **kwargs):
        calls.append(kwargs.get("zygote"))
        if len(calls) > 1:
            return real(files, target, layout, **kwargs)
        tests = [_passed(t) for t in manifest.tests]
        if cut == "killed":  # as if the zygote had been killed in the middle of the run: the test
            tests = tests[:2] + [replace(tests[2], outcome="running")]  # running, never reported
        else:  # the sandboxed zygote could not start a worker for one test
            tests[3] = replace(tests[3], outcome="failed", kind="grader")
        return SessionResult(tests=tests, status="ok", sandbox="bubblewrap")

    monkeypatch.setattr(bulk, "run_tests", cut_short_once)
    row = grade_student(
        _reference_intake(tmp_path),
        DEMO,
        manifest,
        tmp_path / "out",
        forbidden=[],
        limits=LIMITS,
        zygote="/nonexistent/zygote.sock",
    )
    assert calls == ["/nonexistent/zygote.sock", None]
    assert (row["total"], row["status"]) == (10, "ok")


def test_a_worker_the_grader_cannot_start_is_its_own_fault(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_GRADE_ZYGOTE", str(tmp_path / "gone.sock"))
    monkeypatch.setenv(
        "COURSE_GRADE_WORKERS_SANDBOXED", "1"
    )  # never falls back to an unsandboxed one
    source = (DEMO.solutions / "ex91_more.py").read_bytes()
    client = WorkerClient(
        "ex91_more",
        tmp_path / "ex91_more.py",
        source,
        task_names=["square"],
        forbidden_roots=[],
        limits=LIMITS,
    )
    handle = ExerciseHandle("ex91_more", tmp_path / "ex91_more.py", client)
    with pytest.raises(LearnerError, match="the grader could not start a worker") as caught:
        handle.square(torch.ones(2))
    assert caught.value.kind == "grader"
    handle.close()


def test_a_run_that_never_finishes_is_booked_as_zero_not_partially(tmp_path, manifest, monkeypatch):
    def always_killed(files, target, layout, **kwargs):
        tests = [_passed(t) for t in manifest.tests]
        return SessionResult(tests=tests[:3], status="crash", sandbox="bubblewrap")

    monkeypatch.setattr(bulk, "run_tests", always_killed)
    submissions, out = tmp_path / "submissions", tmp_path / "out"
    _reference_intake(tmp_path)
    save_manifest(manifest, tmp_path / "manifest.json")
    summary = grade_class(
        submissions,
        out,
        hidden=True,
        layout=DEMO,
        limits=LIMITS,
        progress=False,
        use_zygote=False,
        manifest_path=tmp_path / "manifest.json",
    )
    row = summary["rows"][0]
    assert (row["student"], row["total"], row["status"]) == ("carol", 0, "crash")
    results = json.loads((out / "carol" / "results.json").read_text())
    assert results["score"] == 0 and "did not finish" in results["output"]


def test_tests_sha256_is_computed_from_the_files_used(tmp_path, manifest):
    course = tmp_path / "course"
    shutil.copytree(DEMO.root, course, ignore=shutil.ignore_patterns("__pycache__"))
    layout = CourseLayout(course)
    test_file = course / "tests" / "graded" / "test_ex91_more.py"
    test_file.write_text(test_file.read_text() + "\n# changed after the manifest was built\n")
    row = grade_student(
        _reference_intake(tmp_path), layout, manifest, tmp_path / "out", forbidden=[], limits=LIMITS
    )
    assert row["tests_sha256"] != manifest.tests_sha256
    assert row["tests_sha256"] == hash_of_tests(layout, ["ex90_demo", "ex91_more"], hidden=True)


def test_a_zygote_child_is_killed_when_its_zygote_dies(tmp_path):
    with Zygote() as zygote:
        read_end, write_end = os.pipe()
        null = os.open(os.devnull, os.O_WRONLY)
        child = spawn_child(
            zygote.socket_path,
            "worker",
            cwd=str(tmp_path),
            env={"PATH": "/usr/bin:/bin"},
            args=[],
            fds=[read_end, null, null],
        )
        for fd in (read_end, null):
            os.close(fd)
        os.kill(child.pid, 0)  # alive, waiting for its set-up message
        zygote._process.kill()
        assert child.wait(timeout=10) < 0 and child.zygote_lost
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child.pid):
            time.sleep(0.1)
        assert not _alive(child.pid)
        os.close(write_end)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_a_gradebook_that_cannot_be_written_fails_clearly(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real = bulk.write_text_atomic

    def refuse_grades_csv(path, text):
        if Path(path).name == "grades.csv":
            raise PermissionError(f"cannot write {path}")
        real(path, text)

    monkeypatch.setattr(bulk, "write_text_atomic", refuse_grades_csv)
    with pytest.raises(RuntimeError, match=r"the gradebook is in .*grades-.*\.csv"):
        bulk.write_gradebook(out, "student,total\nalice,1\n")
    spare = list(out.glob("grades-*.csv"))
    assert len(spare) == 1 and spare[0].read_text() == "student,total\nalice,1\n"


def test_the_trusted_pytest_process_has_limits_too(tmp_path):
    # the plugin lowers the limits of a grading run's pytest process (COURSE_GRADE_REPORT set)
    (tmp_path / "test_limits.py").write_text(
        "import resource\n\n"
        "def test_limited():\n"
        "    soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "    assert soft != resource.RLIM_INFINITY and soft == hard\n"
        "    assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        "    try:\n"
        "        bytearray(soft)\n"
        "    except MemoryError:\n"
        "        return\n"
        "    raise AssertionError('an allocation past RLIMIT_AS succeeded')\n"
    )
    env = {
        **os.environ,
        "COURSE_GRADE_REPORT": str(tmp_path / "report.json"),
        "COURSE_GRADE_MEMORY_MB": "256",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "course_grader.learner.plugin",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_limits.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_publish_folder_replaces_whatever_it_finds(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "folder_with_a_folder" / "results.json").mkdir(parents=True)
    (out / "plain_file").write_text("not a folder")
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("kept")
    os.symlink(elsewhere, out / "link")
    for name in ("folder_with_a_folder", "plain_file", "link", "new"):
        publish_folder(out, name, {"results.json": "{}"})
        folder = out / name
        assert folder.is_dir() and not folder.is_symlink(), name
        assert [p.name for p in folder.iterdir()] == ["results.json"], name
        assert (folder / "results.json").read_text() == "{}"
    assert [p.name for p in elsewhere.iterdir()] == ["kept.txt"]
    assert sorted(p.name for p in out.iterdir()) == [
        "folder_with_a_folder",
        "link",
        "new",
        "plain_file",
    ]

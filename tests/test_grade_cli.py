"""The grader's command line and Python entry points, on the demo course of tests/grading_cases/demo."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from course_grader import grade_exercise
from course_grader.instructor import build
from course_grader.instructor.bulk import grade_class
from course_grader.instructor.package import write_packages
from course_grader.layout import CourseLayout
from course_grader.records import Manifest

DEMO = Path(__file__).parent / "grading_cases" / "demo"


def _grade(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "COURSE_GRADE_ROOT": str(DEMO),
        "COURSE_GRADE_CALL_TIMEOUT": "4",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "course_grader", *args],
        check=False,  # the exit status is what the tests check
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )


def test_solutions_get_full_marks_as_json():
    done = _grade("ex90", "--target", "solutions", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["exercise"] == "ex90_demo" and report["status"] == "ok"
    assert (report["score"], report["max_score"]) == (7, 7)
    assert [t["outcome"] for t in report["tests"]] == ["passed"] * 5


def test_stub_table_shows_points_first_lines_and_hidden_reminder():
    done = _grade("ex90")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "ex90_demo"
    row = next(line for line in lines if line.startswith("test_count_labels_matches_loop"))
    assert "0/2" in row and "ex90.count_labels is not implemented yet (NotImplementedError)" in row
    assert "ex90.Doubler.__init__ is not implemented yet" in done.stdout
    assert any(line.startswith("total") and "0/7" in line for line in lines)
    assert "hidden tests" in done.stdout


def test_a_folder_target_with_an_endless_loop_and_a_wrong_answer(tmp_path):
    source = (DEMO / "solutions" / "ex90_demo.py").read_text()
    source = source.replace(
        "    return in_features * out_features + out_features\n", "    while True:\n        pass\n"
    )
    source = source.replace("    return x + 1\n", "    return x + 2\n")
    source = source.replace(
        "    return x * self.scale\n",
        "    raise ValueError('a diagnosis far longer than the table row, whose last words "
        "are the ones that tell the learner what to do: END')\n",
    )
    (tmp_path / "ex90_demo.py").write_text(source)
    done = _grade("ex90_demo", "--target", str(tmp_path), COURSE_GRADE_CALL_TIMEOUT="2")
    assert done.returncode == 1
    assert "timed out after 2 s while running ex90.count_parameters" in done.stdout
    assert "add_one on a float tensor" in done.stdout  # the test's own failure message, first line
    assert any(line.startswith("total") and "2/7" in line for line in done.stdout.splitlines())
    below = " ".join(done.stdout.split("What went wrong:")[1].split())  # unwrapped
    assert "what to do: END your code, ex90_demo.py:" in below and "in forward:" in below


def test_syntax_error_is_reported_not_fatal(tmp_path):
    (tmp_path / "ex90_demo.py").write_text("def add_one(x):\nreturn x\n")
    done = _grade("ex90", "--target", str(tmp_path))
    assert done.returncode == 1
    assert "ex90_demo.py could not be imported: SyntaxError at line 2" in done.stdout
    below = done.stdout.split("What went wrong:")[
        1
    ]  # each failure in full, with the learner's line
    assert "your code, ex90_demo.py:2:\n      return x" in below


@pytest.mark.parametrize(
    "args, complaint",
    [
        (("ex77",), "exercise='ex77' is not known"),
        (("ex90", "--target", "/nonexistent/folder"), "is not a folder"),
    ],
)
def test_usage_errors_exit_2(args, complaint):
    done = _grade(*args)
    assert done.returncode == 2 and complaint in done.stderr


def test_grade_exercise_survives_os_exit_at_import(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_GRADE_ROOT", str(DEMO))
    (tmp_path / "ex91_more.py").write_text("import os\nos._exit(3)\n")
    report = grade_exercise("ex91", str(tmp_path))
    assert report.score == 0 and report.max_score == 1
    assert "could not be imported" in report.tests[0].message
    assert "exited with status 3" in report.tests[0].message
    assert repr(report) == ("ExerciseResult(ex91_more: 0/1 points, 0/1 tests passed, status 'ok')")


def test_instructor_bundle_and_packages(tmp_path):
    assert build.main(["--root", str(DEMO), "--instructor", str(tmp_path / "bundle")]) == 0
    bundle = tmp_path / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {t["visibility"] for t in manifest["tests"]} == {"public", "hidden"}
    assert (bundle / "solutions" / "ex90_demo.py").is_file() and (
        bundle / "tests" / "hidden" / "test_ex90_hidden.py"
    ).is_file()
    assert [t["number"] for t in manifest["tests"]][:2] == ["1.1", "1.2"]

    zip_path, workflow_path = write_packages(
        CourseLayout(DEMO), tmp_path / "packages", manifest=Manifest.from_json(manifest)
    )
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert {"setup.sh", "run_autograder", "course/manifest.json"} <= set(names)
        assert not [n for n in names if n.startswith("course/solutions/")]
        assert "course/tests/hidden/test_ex90_hidden.py" in names
        assert stat.S_IMODE(archive.getinfo("run_autograder").external_attr >> 16) == 0o755
        assert json.loads(archive.read("course/manifest.json")) == manifest
    # the Gradescope flow: the unpacked zip has no solutions/, the bundled manifest stands in for them
    unpacked = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(unpacked)
    submission = tmp_path / "submissions" / "student"
    submission.mkdir(parents=True)
    shutil.copy(DEMO / "solutions" / "ex91_more.py", submission / "ex91_more.py")
    summary = grade_class(
        submission.parent,
        tmp_path / "out",
        hidden=True,
        layout=CourseLayout(unpacked / "course"),
        manifest_path=unpacked / "course" / "manifest.json",
        progress=False,
    )
    assert [(r["student"], r["total"], r["max_score"]) for r in summary["rows"]] == [
        ("student", 1, 10)
    ]
    results = json.loads((tmp_path / "out" / "student" / "results.json").read_text())
    assert results["score"] == 1 and len(results["tests"]) == len(manifest["tests"])

    workflow = yaml.safe_load(workflow_path.read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    graders = {
        s["with"]["test-name"]: s["with"] for s in steps if "command-grader" in s.get("uses", "")
    }
    assert graders["ex90_demo"]["command"] == "python -m course_grader ex90"
    assert graders["ex90_demo"]["max-score"] == 7 and graders["ex91_more"]["max-score"] == 1


def test_run_autograder_script_grades_a_submission(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    from course_grader.instructor.package import RUN_AUTOGRADER

    assert RUN_AUTOGRADER.startswith("#!/usr/bin/env bash")
    assert "results.json.tmp" in RUN_AUTOGRADER and "--manifest" in RUN_AUTOGRADER
    subprocess.run(["bash", "-n", "-c", RUN_AUTOGRADER], check=True)


def test_class_run_writes_the_sandbox_mode_and_a_gradebook_over_a_folder(tmp_path):
    from course_grader.learner import sandbox

    submission = tmp_path / "submissions" / "dana"
    submission.mkdir(parents=True)
    shutil.copy(DEMO / "solutions" / "ex91_more.py", submission / "ex91_more.py")
    out = tmp_path / "out"
    (out / "grades.csv").mkdir(parents=True)  # left there by a hostile run without the sandbox
    mode = "bubblewrap" if sandbox.available() else "none"
    flags = [] if mode == "bubblewrap" else ["--no-sandbox"]
    done = _grade(
        "--submissions",
        str(tmp_path / "submissions"),
        "--out",
        str(out),
        "--exercises",
        "ex91",
        "--hidden",
        *flags,
    )
    assert done.returncode == 0, done.stderr
    assert f"learner code ran with sandbox: {mode}" in done.stdout
    assert "was not a file; moved it to grades.csv.replaced-" in done.stderr
    lines = (out / "grades.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == [
        "student",
        "ex91_more",
        "total",
        "max_score",
        "status",
        "sandbox",
    ]
    assert lines[1].split(",")[:6] == ["dana", "1", "1", "1", "ok", mode]
    assert json.loads((out / "dana" / "results.json").read_text())["sandbox"] == mode

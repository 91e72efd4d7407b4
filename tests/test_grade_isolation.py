"""The bad-submission suite: a class of hostile or broken submissions graded in one bulk run.

Each folder under tests/grading_cases/submissions/ is one student's submission of the demo course
(tests/grading_cases/demo: ex90 worth 9 points with its hidden tests, ex91 worth 1);
tests/grading_cases/expected.json gives the points (and status) each must get. More cases are
built here: a zip with `../` and absolute paths, a symlinked exercise file, and honest but odd
submissions of the reference solution that must be graded exactly like `reference` (a UTF-8 BOM, a
latin-1 file with its PEP 263 coding line, a `.ZIP`, a zip whose first member is a nested old copy).
The run uses small limits so the endless loops cost seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from course_grader.instructor.bulk import grade_class
from course_grader.layout import CourseLayout
from course_grader.learner.limits import Limits

CASES = Path(__file__).parent / "grading_cases"
DEMO = CourseLayout(CASES / "demo")
EXPECTED = json.loads((CASES / "expected.json").read_text())
EXPECTED.update(
    {
        "zip_with_traversal": {
            "points": 9,
            "status": "partial",
            "why": "the legit file of a zip is graded, ../ entries ignored",
        },
        "symlinked_file": {
            "points": 0,
            "status": "missing",
            "why": "a symlinked exercise file is ignored",
        },
        "reference_2": {
            "points": 1,
            "status": "partial",
            "why": "reference.zip next to reference/ is a second student",
        },
    }
)
ODD_BUT_HONEST = {  # graded exactly like the clean `reference` submission
    "utf8_bom": "both files start with a UTF-8 byte order mark",
    "latin1_coding_line": "ex90 saved as latin-1 with `# -*- coding: latin-1 -*-`",
    "upper_case_zip": "a zip named upper_case_zip.ZIP",
    "zip_copy_choice": "a zip listing old/ex90_demo.py (a stub) before ex90_demo.py: the shallowest "
    "copy wins, as in a folder",
}
EXPECTED.update(
    {case: {**EXPECTED["reference"], "why": why} for case, why in ODD_BUT_HONEST.items()}
)
LIMITS = Limits(call_timeout=4, exercise_timeout=40, startup_timeout=90, memory_mb=768, file_mb=8)


def _write_odd_but_honest(submissions: Path) -> None:
    """The reference solution, submitted in the odd ways of ODD_BUT_HONEST."""
    ex90 = (DEMO.solutions / "ex90_demo.py").read_bytes()
    ex91 = (DEMO.solutions / "ex91_more.py").read_bytes()
    bom = submissions / "utf8_bom"
    bom.mkdir()
    (bom / "ex90_demo.py").write_bytes(b"\xef\xbb\xbf" + ex90)
    (bom / "ex91_more.py").write_bytes(b"\xef\xbb\xbf" + ex91)
    latin = submissions / "latin1_coding_line"
    latin.mkdir()
    text = ex90.decode("utf-8").replace('"""Demo exercise', '"""Démo exercise, café-grade', 1)
    assert "é" in text
    latin_bytes = ("# -*- coding: latin-1 -*-\n" + text).encode("latin-1")
    assert b"\xe9" in latin_bytes  # not valid UTF-8: only the coding line makes it readable
    (latin / "ex90_demo.py").write_bytes(latin_bytes)
    (latin / "ex91_more.py").write_bytes(ex91)
    with zipfile.ZipFile(submissions / "upper_case_zip.ZIP", "w") as bundle:
        bundle.writestr("ex90_demo.py", ex90)
        bundle.writestr("ex91_more.py", ex91)
    with zipfile.ZipFile(submissions / "zip_copy_choice.zip", "w") as bundle:
        bundle.writestr("old/ex90_demo.py", (DEMO.exercises / "ex90_demo.py").read_bytes())
        bundle.writestr("ex90_demo.py", ex90)
        bundle.writestr("ex91_more.py", ex91)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    submissions = root / "submissions"
    shutil.copytree(CASES / "submissions", submissions)
    solution = (DEMO.solutions / "ex90_demo.py").read_bytes()
    with zipfile.ZipFile(submissions / "zip_with_traversal.zip", "w") as bundle:
        bundle.writestr("ex90_demo.py", solution)
        bundle.writestr("../../escaped.py", b"print('escaped')\n")
        bundle.writestr("../ex91_more.py", b"def square(x):\n    return x * x\n")
        bundle.writestr("/tmp/absolute_ex.py", b"x = 1\n")
        link = zipfile.ZipInfo("ex91_more.py")
        link.external_attr = 0o120777 << 16
        bundle.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(submissions / "reference.zip", "w") as bundle:
        bundle.writestr("work/ex91_more.py", (DEMO.solutions / "ex91_more.py").read_bytes())
    _write_odd_but_honest(submissions)
    (submissions / "symlinked_file").mkdir()
    os.symlink(DEMO.solutions / "ex90_demo.py", submissions / "symlinked_file" / "ex90_demo.py")
    before = set(Path("/tmp").glob("results.json"))
    summary = grade_class(
        submissions,
        root / "out",
        workers=2,
        hidden=True,
        layout=DEMO,
        limits=LIMITS,
        progress=False,
    )
    return {
        "summary": summary,
        "out": root / "out",
        "root": root,
        "tmp_before": before,
    }


def test_every_student_finishes_within_the_budget_its_limits_allow(graded):
    # Not a speed target: the limits must bound each student's grading, whatever the code does
    # (endless loops, loops that swallow BaseException, floods). Per exercise at most the exercise
    # budget plus one worker start-up, plus a margin for the student's pytest process.
    exercises = len(graded["summary"]["manifest"].exercises)
    budget = exercises * (LIMITS.exercise_timeout + LIMITS.startup_timeout) + 60
    rows = graded["summary"]["rows"]
    over = {row["student"]: row["seconds"] for row in rows if row["seconds"] > budget}
    assert not over, f"students graded past their {budget:.0f} s budget: {over}"


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_expected_points_and_status(graded, case):
    rows = {row["student"]: row for row in graded["summary"]["rows"]}
    assert case in rows, f"{case} was not graded"
    row, expected = rows[case], EXPECTED[case]
    feedback = (graded["out"] / case / "feedback.md").read_text()
    assert row["total"] == expected["points"], (
        f"{case} ({expected['why']}): got {row['total']}\n{feedback}"
    )
    if expected["status"] is not None:
        assert row["status"] == expected["status"], f"{case}: status {row['status']}\n{feedback}"


@pytest.mark.parametrize("case", sorted(ODD_BUT_HONEST))
def test_odd_but_honest_files_are_graded_like_the_clean_one(graded, case):
    def outcomes(student):
        results = json.loads((graded["out"] / student / "results.json").read_text())
        return {t["name"]: (t["status"], t["score"]) for t in results["tests"]}

    rows = {row["student"]: row for row in graded["summary"]["rows"]}
    feedback = (graded["out"] / case / "feedback.md").read_text()
    assert outcomes(case) == outcomes("reference"), f"{case} ({ODD_BUT_HONEST[case]}):\n{feedback}"
    assert (rows[case]["total"], rows[case]["status"]) == (10, "ok")
    if case == "zip_copy_choice":
        assert "old/ex90_demo.py: a second copy of ex90_demo.py" in feedback


def test_every_manifest_test_is_in_every_results_file(graded):
    manifest = json.loads((graded["out"] / "manifest.json").read_text())
    assert len(manifest["tests"]) == 8 and sum(t["points"] for t in manifest["tests"]) == 10
    names = {f"{t['exercise']}: {t['name']}" for t in manifest["tests"]}
    for case in EXPECTED:
        results = json.loads((graded["out"] / case / "results.json").read_text())
        assert {t["name"] for t in results["tests"]} == names, case
        assert (
            results["score"]
            == sum(t["score"] for t in results["tests"])
            == EXPECTED[case]["points"]
        )
        for test in results["tests"]:
            assert test["status"] in ("passed", "failed")
            assert test["score"] in (0, test["max_score"])
            assert len(test["output"]) < 2100
            hidden = test["name"].split(": ")[1] in (
                "test_count_labels_with_absent_class",
                "test_add_one_on_empty",
            )
            assert test["visibility"] == ("after_due_date" if hidden else "visible")


def test_grades_csv_lists_every_student_with_hashes(graded):
    with open(graded["out"] / "grades.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["student"] for r in rows] == sorted(EXPECTED)
    manifest = json.loads((graded["out"] / "manifest.json").read_text())
    for row in rows:
        assert float(row["total"]) == EXPECTED[row["student"]]["points"]
        assert float(row["ex90_demo"]) + float(row["ex91_more"]) == float(row["total"])
        assert row["tests_sha256"] == manifest["tests_sha256"]
        assert len(row["submission_sha256"]) == 64
    by_name = {r["student"]: r for r in rows}
    assert by_name["reference"]["submission_sha256"] != by_name["stubs"]["submission_sha256"]


def test_reports_say_why(graded):
    def feedback(case):
        return (graded["out"] / case / "feedback.md").read_text()

    assert "calls course_lib.utils.count_parameters" in feedback("calls_course_lib")
    assert "forbids reading" in feedback("reads_solutions_and_hidden_tests")
    assert "timed out" in feedback("infinite_loop")
    assert "SyntaxError at line" in feedback("syntax_error")
    # under the table, the learner's line that raised: file:line, function and code
    assert "your code, ex90_demo.py:11 in add_one:\n      raise KeyboardInterrupt" in feedback(
        "keyboard_interrupt"
    )
    assert "not implemented yet" in feedback("stubs")
    assert "conftest.py" in feedback("shipped_config_files") and "sitecustomize.py" in feedback(
        "shipped_config_files"
    )
    assert "unsafe path" in feedback("zip_with_traversal") and "symbolic link" in feedback(
        "zip_with_traversal"
    )
    assert "symbolic link" in feedback("symlinked_file")
    assert "not UTF-8" in feedback("non_utf8_file")
    assert "must be plain data" in feedback("always_equal_results")
    hidden_feedback = feedback("stubs")
    assert (
        "test_count_labels_with_absent_class" not in hidden_feedback
    )  # hidden test names stay hidden


def test_nothing_escaped_the_worker(graded):
    assert not (graded["root"] / "escaped.py").exists()
    assert set(Path("/tmp").glob("results.json")) == graded["tmp_before"]
    assert not (graded["out"].parent / "results.json").exists()
    assert not list(graded["root"].rglob("big.bin"))


def test_regrading_gives_identical_scores(graded, tmp_path):
    subset = tmp_path / "subset"
    for case in ("reference", "always_equal_results", "calls_course_lib"):
        shutil.copytree(CASES / "submissions" / case, subset / case)
    again = grade_class(
        subset,
        tmp_path / "out",
        workers=2,
        hidden=True,
        layout=DEMO,
        limits=LIMITS,
        progress=False,
        manifest_path=graded["out"] / "manifest.json",
    )
    first = {
        r["student"]: (r["total"], r["status"], r["submission_sha256"])
        for r in graded["summary"]["rows"]
    }
    for row in again["rows"]:
        assert (row["total"], row["status"], row["submission_sha256"]) == first[row["student"]]

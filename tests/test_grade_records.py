"""The grader's typed records at the JSON boundary: round trips, and malformed files refused.

`course_grader.records` is the one home of the per-test record, the manifest and a report's rows;
what is written to disk must read back equal, and a file with a missing, unknown or mistyped key
must stop with that key named, not fail later with a KeyError.
"""

from __future__ import annotations

import json

import pytest

from course_grader.instructor.manifest import load_manifest, save_manifest
from course_grader.instructor.reports import merge_with_manifest, not_submitted, student_status
from course_grader.records import Manifest, ManifestTest, RecordError, TestRecord

# A manifest exactly as `save_manifest` has always written it (version 1).
MANIFEST_JSON = {
    "version": 1,
    "exercises": ["ex90_demo", "ex91_more"],
    "hidden": True,
    "tests_sha256": "ab" * 32,
    "tests": [
        {
            "id": "tests/graded/test_ex90_demo.py::test_add_one",
            "name": "test_add_one",
            "exercise": "ex90_demo",
            "points": 2.0,
            "visibility": "public",
            "number": "1.1",
        },
        {
            "id": "tests/hidden/test_ex90_hidden.py::test_add_one_on_floats",
            "name": "test_add_one_on_floats",
            "exercise": "ex90_demo",
            "points": 1.0,
            "visibility": "hidden",
            "number": "1.2",
        },
        {
            "id": "tests/graded/test_ex91_more.py::test_square",
            "name": "test_square",
            "exercise": "ex91_more",
            "points": 1.0,
            "visibility": "public",
            "number": "2.1",
        },
    ],
}

# Records as the pytest plugin writes them: a pass (no `kind`), and a failure with its kind.
PASSED_JSON = {
    "nodeid": "tests/graded/test_ex90_demo.py::test_add_one",
    "name": "test_add_one",
    "exercise": "ex90_demo",
    "points": 2.0,
    "outcome": "passed",
    "message": "",
    "details": [],
    "where": None,
    "output": "",
    "duration": 0.012,
}
FAILED_JSON = {
    "nodeid": "tests/graded/test_ex91_more.py::test_square",
    "name": "test_square",
    "exercise": "ex91_more",
    "points": 1.0,
    "outcome": "failed",
    "message": "ex91.square raised ValueError: no",
    "details": ["ex91.square raised ValueError: no"],
    "where": {"file": "/private/copy/ex91_more.py", "line": 3, "function": "square", "code": "x"},
    "output": "ex91.square raised ValueError: no\n  trace",
    "duration": 0.5,
    "kind": "raised",
}


def test_manifest_round_trips_through_json(tmp_path):
    manifest = Manifest.from_json(MANIFEST_JSON)
    assert manifest.exercises == ("ex90_demo", "ex91_more") and manifest.hidden is True
    assert manifest.tests[1] == ManifestTest(
        "tests/hidden/test_ex90_hidden.py::test_add_one_on_floats",
        "test_add_one_on_floats",
        "ex90_demo",
        1.0,
        "hidden",
        "1.2",
    )
    assert manifest.max_score == 4.0
    assert manifest.to_json() == MANIFEST_JSON
    save_manifest(manifest, tmp_path / "manifest.json")
    written = (tmp_path / "manifest.json").read_text()
    assert written == json.dumps(MANIFEST_JSON, indent=1) + "\n"  # the file's shape is unchanged
    assert load_manifest(tmp_path / "manifest.json") == manifest
    only = manifest.select(["ex91_more"])
    assert only.exercises == ("ex91_more",) and [t.name for t in only.tests] == ["test_square"]


def test_test_record_round_trips_through_json():
    for data in (PASSED_JSON, FAILED_JSON):
        record = TestRecord.from_json(data)
        assert record.to_json() == data
    passed, failed = TestRecord.from_json(PASSED_JSON), TestRecord.from_json(FAILED_JSON)
    assert (passed.earned, failed.earned) == (2.0, 0.0)
    assert failed.details == ("ex91.square raised ValueError: no",) and failed.kind == "raised"
    # a test's own check failing (a wrong answer) has kind None, and says so in the JSON
    wrong = {**FAILED_JSON, "kind": None, "where": None}
    assert TestRecord.from_json(wrong).to_json() == wrong


def _without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (_without(MANIFEST_JSON, "hidden"), "manifest is missing key 'hidden'"),
        ({**MANIFEST_JSON, "solutions": "x"}, "manifest has unknown key 'solutions'"),
        ({**MANIFEST_JSON, "hidden": "yes"}, "key 'hidden' must be bool, got str"),
        ({**MANIFEST_JSON, "exercises": ["ex90", 3]}, "key 'exercises' must be a list of strings"),
        (
            {**MANIFEST_JSON, "tests": [_without(MANIFEST_JSON["tests"][0], "points")]},
            "manifest test 0 of 'tests' is missing key 'points'",
        ),
        (
            {**MANIFEST_JSON, "tests": [{**MANIFEST_JSON["tests"][0], "points": "2"}]},
            "key 'points' must be int or float, got str",
        ),
        (
            {**MANIFEST_JSON, "tests": [{**MANIFEST_JSON["tests"][0], "visibility": "secret"}]},
            "key 'visibility' must be one of ['public', 'hidden'], got 'secret'",
        ),
        ({**MANIFEST_JSON, "version": 2}, "key 'version' must be 1"),
        ([MANIFEST_JSON], "manifest must be a JSON object, got list"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_key(data, complaint):
    with pytest.raises(RecordError) as caught:
        Manifest.from_json(data)
    assert complaint in str(caught.value)


def test_load_manifest_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**MANIFEST_JSON, "tests": [{"id": "x"}]}))
    with pytest.raises(ValueError, match=r"manifest=.*manifest\.json.* missing key 'name'"):
        load_manifest(path)
    path.write_text(json.dumps({"version": 7, "tests": []}))
    with pytest.raises(ValueError, match="is not a version-1 grader manifest"):
        load_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="could not be read as JSON"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (_without(PASSED_JSON, "outcome"), "is missing key 'outcome'"),
        ({**PASSED_JSON, "score": 2}, "has unknown key 'score'"),
        ({**PASSED_JSON, "outcome": "won"}, "key 'outcome' must be one of"),
        ({**PASSED_JSON, "points": True}, "key 'points' must be int or float, got bool"),
        ({**PASSED_JSON, "details": "one line"}, "key 'details' must be list, got str"),
        ({**FAILED_JSON, "where": {"file": "x.py", "row": 3}}, "has unknown key 'row'"),
    ],
)
def test_a_malformed_test_record_is_refused_naming_the_key(data, complaint):
    with pytest.raises(RecordError, match="test record") as caught:
        TestRecord.from_json(data)
    assert complaint in str(caught.value)


def test_report_rows_take_the_manifest_points_and_mark_what_did_not_report():
    manifest = Manifest.from_json(MANIFEST_JSON)
    boasting = {**PASSED_JSON, "points": 100.0}  # a run's own points never count
    rows = merge_with_manifest(
        manifest, [TestRecord.from_json(boasting), TestRecord.from_json(FAILED_JSON)]
    )
    assert [r.test.number for r in rows] == ["1.1", "1.2", "2.1"]
    assert [r.earned for r in rows] == [2.0, 0.0, 0.0]
    assert rows[1].record.outcome == "missing" and rows[1].hidden
    assert rows[2].record.where["file"] == "ex91_more.py"  # the private copy's folder is dropped
    assert student_status(rows, "ok", accepted_files=2) == "error"  # a test did not report
    dropped = not_submitted(rows[2])
    assert (dropped.record.kind, dropped.record.message) == (
        "not submitted",
        "ex91_more.py was not submitted",
    )
    assert dropped.record.where is None and dropped.test is rows[2].test

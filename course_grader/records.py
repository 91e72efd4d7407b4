"""The grader's typed records: what a run says of each test, the manifest, and a report's rows.

- `TestRecord`: one graded test as the pytest plugin reports it (plugin.py writes it, session.py
  reads it back): nodeid, name, exercise, points, outcome, message, details, where, output,
  duration and, for a failure, the `kind` the grader's side gave it.
- `ManifestTest` and `Manifest`: every graded test of the course with its points and visibility
  (instructor/manifest.py builds one from a run on the solutions).
- `ReportRow`: one manifest test and what a student's run made of it (instructor/reports.py).

Every record crosses the JSON boundary through `to_json()` and `from_json()`; `from_json` checks
each key's type and refuses a missing or unknown key with a `RecordError` that names it, so a
hand-edited or truncated file stops with the key to fix. The JSON shapes are the ones the grader
has always written (report, manifest.json); `to_json(from_json(data)) == data`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Manifest", "ManifestTest", "RecordError", "ReportRow", "TestRecord"]

OUTCOMES = ("passed", "failed", "error", "skipped", "xfail", "missing", "running")
VISIBILITIES = ("public", "hidden")
WHERE_KEYS = ("file", "line", "function", "code")


class RecordError(ValueError):
    """A JSON record that is not what the grader writes: a missing, unknown or mistyped key."""


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _keys(data: Any, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """`data` as a dict with every `required` key and no key outside `required + optional`."""
    if not isinstance(data, dict):
        raise RecordError(f"{what} must be a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise RecordError(f"{what} is missing key {missing[0]!r} (expected keys: {list(required)})")
    unknown = [k for k in data if k not in required and k not in optional]
    if unknown:
        raise RecordError(
            f"{what} has unknown key {unknown[0]!r} (expected keys: {list(required + optional)})"
        )
    return data


def _typed(data: dict, key: str, what: str, *types: type) -> Any:
    """data[key], checked to be one of `types` (a bool is never taken for a number)."""
    value = data[key]
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        raise RecordError(
            f"{what}: key {key!r} must be {_type_names(types)}, got {type(value).__name__} "
            f"{value!r:.80}"
        )
    return value


def _one_of(data: dict, key: str, what: str, allowed: tuple[str, ...]) -> str:
    value = _typed(data, key, what, str)
    if value not in allowed:
        raise RecordError(f"{what}: key {key!r} must be one of {list(allowed)}, got {value!r}")
    return value


def _strings(data: dict, key: str, what: str) -> tuple[str, ...]:
    values = _typed(data, key, what, list)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise RecordError(
                f"{what}: key {key!r} must be a list of strings; item {index} is "
                f"{type(value).__name__}"
            )
    return tuple(values)


def _where(data: dict, what: str) -> dict | None:
    """The learner's line that raised: {"file", "line", "function", "code"} (some may be null)."""
    where = _typed(data, "where", what, dict, type(None))
    if where is not None:
        _keys(where, f"{what}: key 'where'", (), WHERE_KEYS)
        return dict(where)
    return None


@dataclass(frozen=True)
class TestRecord:
    """What one run said of one graded test; only `outcome == "passed"` earns the points."""

    __test__ = False  # a record, not a pytest test class

    nodeid: str
    name: str
    exercise: str | None  # the test module's EXERCISE constant; None when it has none
    points: float
    outcome: str = "missing"  # one of OUTCOMES
    message: str = "did not run"  # the failure's first line
    details: tuple[str, ...] = ()  # the failure's first lines, without the learner's traceback
    where: dict | None = None  # the learner's line that raised (WHERE_KEYS), or None
    output: str = ""  # the failure text, truncated
    duration: float = 0.0
    kind: str | None = None  # what stopped the learner's call (set by runner.py), for a failure

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def earned(self) -> float:
        """All the points when the test passed, none otherwise."""
        return self.points if self.passed else 0.0

    def to_json(self) -> dict:
        """The report's JSON object; `kind` is written for failed and errored tests only."""
        data = {
            "nodeid": self.nodeid,
            "name": self.name,
            "exercise": self.exercise,
            "points": self.points,
            "outcome": self.outcome,
            "message": self.message,
            "details": list(self.details),
            "where": None if self.where is None else dict(self.where),
            "output": self.output,
            "duration": self.duration,
        }
        if self.kind is not None or self.outcome in ("failed", "error"):
            data["kind"] = self.kind
        return data

    @classmethod
    def from_json(cls, data: Any) -> TestRecord:
        what = f"test record {data.get('nodeid')!r}" if isinstance(data, dict) else "test record"
        _keys(
            data,
            what,
            (
                "nodeid",
                "name",
                "exercise",
                "points",
                "outcome",
                "message",
                "details",
                "where",
                "output",
                "duration",
            ),
            ("kind",),
        )
        return cls(
            nodeid=_typed(data, "nodeid", what, str),
            name=_typed(data, "name", what, str),
            exercise=_typed(data, "exercise", what, str, type(None)),
            points=float(_typed(data, "points", what, int, float)),
            outcome=_one_of(data, "outcome", what, OUTCOMES),
            message=_typed(data, "message", what, str),
            details=_strings(data, "details", what),
            where=_where(data, what),
            output=_typed(data, "output", what, str),
            duration=float(_typed(data, "duration", what, int, float)),
            kind=_typed(data, "kind", what, str, type(None)) if "kind" in data else None,
        )


@dataclass(frozen=True)
class ManifestTest:
    """One graded test of the manifest: its id, exercise, points, visibility and report number."""

    id: str  # the pytest node id, e.g. "tests/graded/test_ex01_....py::test_name"
    name: str
    exercise: str
    points: float
    visibility: str  # "public" | "hidden"
    number: str  # "exercise.test", e.g. "1.2", Gradescope's ordering

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "exercise": self.exercise,
            "points": self.points,
            "visibility": self.visibility,
            "number": self.number,
        }

    @classmethod
    def from_json(cls, data: Any, what: str = "manifest test") -> ManifestTest:
        _keys(data, what, ("id", "name", "exercise", "points", "visibility", "number"))
        return cls(
            id=_typed(data, "id", what, str),
            name=_typed(data, "name", what, str),
            exercise=_typed(data, "exercise", what, str),
            points=float(_typed(data, "points", what, int, float)),
            visibility=_one_of(data, "visibility", what, VISIBILITIES),
            number=_typed(data, "number", what, str),
        )


@dataclass(frozen=True)
class Manifest:
    """Every graded test of a course run, fixed before any submission runs (version 1)."""

    exercises: tuple[str, ...]
    hidden: bool  # whether the hidden tests are part of it
    tests_sha256: str  # hash of the test files, conftest files and probes
    tests: tuple[ManifestTest, ...]
    version: int = 1

    @property
    def max_score(self) -> float:
        return sum(t.points for t in self.tests)

    def select(self, exercises: list[str]) -> Manifest:
        """The same manifest reduced to `exercises` (in that order) and their tests."""
        return replace(
            self,
            exercises=tuple(exercises),
            tests=tuple(t for t in self.tests if t.exercise in exercises),
        )

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "exercises": list(self.exercises),
            "hidden": self.hidden,
            "tests_sha256": self.tests_sha256,
            "tests": [t.to_json() for t in self.tests],
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        what = "manifest"
        _keys(data, what, ("version", "exercises", "hidden", "tests_sha256", "tests"))
        version = _typed(data, "version", what, int)
        if version != 1:
            raise RecordError(f"{what}: key 'version' must be 1, got {version!r}")
        tests = _typed(data, "tests", what, list)
        return cls(
            version=version,
            exercises=_strings(data, "exercises", what),
            hidden=_typed(data, "hidden", what, bool),
            tests_sha256=_typed(data, "tests_sha256", what, str),
            tests=tuple(
                ManifestTest.from_json(t, f"manifest test {i} of 'tests'")
                for i, t in enumerate(tests)
            ),
        )


@dataclass(frozen=True)
class ReportRow:
    """One manifest test and what a student's run made of it.

    `record` carries the manifest's id, name, exercise and points (never the run's own), and the
    run's outcome, message, details, where, output and kind.
    """

    test: ManifestTest
    record: TestRecord

    @property
    def earned(self) -> float:
        return self.record.earned

    @property
    def hidden(self) -> bool:
        return self.test.visibility == "hidden"

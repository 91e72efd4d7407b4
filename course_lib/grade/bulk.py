"""Grade a whole class: `python -m course_lib.grade --submissions DIR --out OUT [--workers N] [--hidden]`.

DIR holds one folder or `.zip` per student. For each student the grader takes in the whitelisted
exercise files (intake.py), writes a fallback `results.json` (zero points, every test listed), runs
the graded tests in a fresh pytest process whose workers run the student's code (session.py), then
replaces `results.json` atomically and writes `feedback.md`. The class gets `grades.csv` (a column
per exercise, total, status, submission and tests hashes) and a summary table. Workers never read
DIR, OUT, the manifest, solutions/ or hidden tests (guards.py).

Output: OUT/manifest.json, OUT/grades.csv, OUT/<student>/results.json, OUT/<student>/feedback.md.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from course_lib.atomic import write_text_atomic
from course_lib.grade.intake import Intake, take_in
from course_lib.grade.layout import CourseLayout
from course_lib.grade.limits import Limits
from course_lib.grade.manifest import build_manifest, load_manifest, save_manifest
from course_lib.grade.reports import (
    fallback_results,
    feedback_markdown,
    gradescope_results,
    merge_with_manifest,
    student_status,
)
from course_lib.grade.runner import course_layout
from course_lib.grade.session import run_tests
from course_lib.grade.table import earned
from course_lib.grade.zygote import Zygote

__all__ = ["grade_class", "grade_student", "student_folder_name"]


def student_folder_name(student: str) -> str:
    """A safe folder name for `student` (letters, digits, `.`, `_`, `-`)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", student).strip(".") or "student"
    if name in ("manifest.json", "grades.csv"):
        name = f"student_{name}"
    return name[:100]


def grade_student(
    intake: Intake,
    layout: CourseLayout,
    manifest: dict,
    out: Path,
    *,
    forbidden: list[Path],
    limits: Limits,
    zygote: str | None = None,
) -> dict:
    """Grade one student's accepted files; write their reports; return their gradebook row."""
    folder = out / student_folder_name(intake.student)
    write_text_atomic(
        folder / "results.json",
        json.dumps(
            fallback_results(manifest, "grading did not finish; ask your instructor"), indent=1
        ),
    )
    started = time.monotonic()
    records, session_status = [], "ok"
    with tempfile.TemporaryDirectory(prefix="grade-submission-") as copy:
        intake.write(Path(copy))
        files = [
            f
            for name in manifest["exercises"]
            for f in layout.test_files(name, hidden=manifest["hidden"])
        ]
        if intake.files:
            result = run_tests(
                files, copy, layout, limits=limits, forbidden=forbidden, zygote=zygote
            )
            records, session_status = result.tests, result.status
    rows = merge_with_manifest(manifest, records)
    for row in rows:
        if f"{row['exercise']}.py" not in intake.files:
            row["outcome"], row["message"], row["output"] = (
                "missing",
                f"{row['exercise']}.py was not submitted",
                "",
            )
            row["details"], row["where"] = [], None
    status = student_status(rows, session_status, len(intake.files))
    write_text_atomic(
        folder / "feedback.md", feedback_markdown(intake.student, rows, intake.ignored, status)
    )
    write_text_atomic(
        folder / "results.json",
        json.dumps(gradescope_results(intake.student, rows, intake.ignored, status), indent=1),
    )
    row = {"student": intake.student}
    for name in manifest["exercises"]:
        row[name] = sum(earned(r) for r in rows if r["exercise"] == name)
    row.update(
        {
            "total": sum(earned(r) for r in rows),
            "max_score": sum(float(r["points"]) for r in rows),
            "status": status,
            "submission_sha256": intake.sha256(),
            "tests_sha256": manifest["tests_sha256"],
            "ignored": len(intake.ignored),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    return row


def _grader_fault_row(intake: Intake, manifest: dict, names: list[str], error: Exception) -> dict:
    """Gradebook row of a student whose grading itself failed: zero, status crash, fallback report kept."""
    print(f"grading {intake.student} failed: {type(error).__name__}: {error}", file=sys.stderr)
    row = {"student": intake.student, **{name: 0.0 for name in names}}
    row.update(
        {
            "total": 0.0,
            "max_score": sum(float(t["points"]) for t in manifest["tests"]),
            "status": "crash",
            "submission_sha256": intake.sha256(),
            "tests_sha256": manifest["tests_sha256"],
            "ignored": len(intake.ignored),
            "seconds": 0.0,
        }
    )
    return row


def _csv_text(rows: list[dict], exercises: list[str]) -> str:
    columns = [
        "student",
        *exercises,
        "total",
        "max_score",
        "status",
        "submission_sha256",
        "tests_sha256",
        "ignored",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _summary(rows: list[dict], exercises: list[str], seconds: float) -> str:
    short = [name.split("_")[0] for name in exercises]
    width = max([7] + [len(r["student"]) for r in rows])
    head = (
        f"{'student':<{width}}  " + "  ".join(f"{s:>5}" for s in short) + f"  {'total':>9}  status"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = "  ".join(f"{row[name]:>5g}" for name in exercises)
        total = f"{row['total']:g}/{row['max_score']:g}"
        lines.append(f"{row['student']:<{width}}  {cells}  {total:>9}  {row['status']}")
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines.append(
        f"{len(rows)} submissions in {seconds:.0f} s; "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    )
    return "\n".join(lines)


def grade_class(
    submissions: Path,
    out: Path,
    *,
    workers: int = 1,
    hidden: bool = False,
    exercises: list[str] | None = None,
    layout: CourseLayout | None = None,
    limits: Limits | None = None,
    manifest_path: Path | None = None,
    progress: bool = True,
    use_zygote: bool = True,
) -> dict:
    """Grade every submission in `submissions` into `out`; return {"rows", "seconds", "manifest"}.

    `use_zygote=False` starts a fresh interpreter for every pytest process and worker (slower; the
    benchmark's baseline).
    """
    layout = layout or course_layout()
    limits = limits or Limits.from_env()
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    if not submissions.is_dir():
        raise ValueError(
            f"submissions={str(submissions)!r} is not a folder; expected one folder or zip per student"
        )
    if workers < 1:
        raise ValueError(f"workers={workers} must be at least 1")
    if out == submissions or out.is_relative_to(submissions) or submissions.is_relative_to(out):
        raise ValueError(f"out={str(out)!r} must be outside submissions={str(submissions)!r}")
    out.mkdir(parents=True, exist_ok=True)
    if exercises:
        names = [layout.resolve(e) for e in exercises]
    elif manifest_path is not None:  # e.g. on Gradescope, where solutions/ is not shipped
        names = load_manifest(manifest_path)["exercises"]
    else:
        names = layout.exercise_names()
    if not use_zygote:
        return _grade_all(
            submissions, out, workers, hidden, names, layout, limits, manifest_path, progress, None
        )
    with Zygote() as zygote:
        return _grade_all(
            submissions,
            out,
            workers,
            hidden,
            names,
            layout,
            limits,
            manifest_path,
            progress,
            zygote,
        )


def _grade_all(
    submissions: Path,
    out: Path,
    workers: int,
    hidden: bool,
    names: list[str],
    layout: CourseLayout,
    limits: Limits,
    manifest_path: Path | None,
    progress: bool,
    zygote: Zygote | None,
) -> dict:
    socket_path = zygote.socket_path if zygote is not None else None
    if manifest_path is not None:
        manifest = load_manifest(manifest_path)
        if manifest["hidden"] != hidden or any(n not in manifest["exercises"] for n in names):
            raise ValueError(
                f"manifest {manifest_path} was built for exercises={manifest['exercises']} "
                f"hidden={manifest['hidden']}; rebuild it for this run"
            )
        manifest = {
            **manifest,
            "exercises": names,
            "tests": [t for t in manifest["tests"] if t["exercise"] in names],
        }
    else:
        manifest = build_manifest(layout, names, hidden=hidden, limits=limits, zygote=socket_path)
    save_manifest(manifest, out / "manifest.json")
    forbidden = [out, submissions] + ([Path(manifest_path).resolve()] if manifest_path else [])
    entries = sorted(p for p in submissions.iterdir() if not p.name.startswith("."))
    started = time.monotonic()
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc="grading", unit="student", file=sys.stderr)
    intakes, folders = [], set()
    for entry in entries:
        intake = take_in(entry, names)
        base, number = intake.student, 2
        while (
            student_folder_name(intake.student) in folders
        ):  # "bob/" and "bob.zip" are two submissions
            intake.student, number = f"{base}_{number}", number + 1
        folders.add(student_folder_name(intake.student))
        intakes.append(intake)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(
                grade_student,
                intake,
                layout,
                manifest,
                out,
                forbidden=forbidden,
                limits=limits,
                zygote=socket_path,
            ): intake
            for intake in intakes
        }
        for future in as_completed(futures):
            try:
                rows.append(future.result())
            except Exception as error:  # noqa: BLE001  (a grader fault for one student must not stop the class)
                rows.append(_grader_fault_row(futures[future], manifest, names, error))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    rows.sort(key=lambda r: r["student"])
    seconds = time.monotonic() - started
    write_text_atomic(out / "grades.csv", _csv_text(rows, names))
    print(_summary(rows, names, seconds))
    return {"rows": rows, "seconds": seconds, "manifest": manifest}

"""Grade a whole class: `python -m course_grader --submissions DIR --out OUT [--workers N] [--hidden]`.

DIR holds one folder or `.zip` per student. For each student the grader takes in the whitelisted
exercise files (intake.py), puts a fallback `results.json` (zero points, every test listed) in a
folder of its own, runs the graded tests in a fresh pytest process whose workers run the student's
code (session.py), then replaces the student's folder with a new one holding `results.json` and
`feedback.md`. The class gets `grades.csv` (a column per exercise, total, status, sandbox,
submission and tests hashes) and a summary table. Workers never read DIR, OUT, the manifest,
solutions/, hidden tests or other students' copies (the sandbox hides them; guards.py refuses them).

Only this process writes under OUT, and only from its own records:
- each student's folder is made fresh (a new folder renamed into place; whatever was at that path,
  a file, a folder or a link, is moved aside and deleted first);
- a run that did not finish (the pytest process died, a test never reported, no worker could be
  started, the tests changed during the run) is a grader fault: the student is graded again in a
  fresh interpreter, and if that fails too their row is booked as zero with status `crash`, never as a partial report;
- `tests_sha256` is computed from the test files, conftest files and probes on disk before and after
  each student's run;
- `grades.csv` is written last, atomically; a folder or link in its place is moved aside.

Output: OUT/manifest.json, OUT/grades.csv, OUT/<student>/results.json, OUT/<student>/feedback.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from course_grader.instructor.intake import Intake, take_in
from course_grader.instructor.manifest import (
    build_manifest,
    load_manifest,
    save_manifest,
    tests_sha256,
)
from course_grader.instructor.reports import (
    fallback_results,
    feedback_markdown,
    gradescope_results,
    merge_with_manifest,
    not_submitted,
    student_status,
)
from course_grader.layout import CourseLayout, course_layout
from course_grader.learner import sandbox
from course_grader.learner.limits import Limits
from course_grader.learner.session import run_tests
from course_grader.learner.zygote import Zygote
from course_grader.records import Manifest
from course_lib.atomic import write_text_atomic

__all__ = ["grade_class", "grade_student", "student_folder_name"]


def student_folder_name(student: str) -> str:
    """A safe folder name for `student` (letters, digits, `.`, `_`, `-`)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", student).strip(".") or "student"
    if name in ("manifest.json", "grades.csv"):
        name = f"student_{name}"
    return name[:100]


def _move_aside_and_delete(path: Path) -> None:
    """Remove whatever is at `path` (file, folder or link, never following a link)."""
    aside = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)  # out of the way already: a leftover does no harm
    else:
        aside.unlink()


def publish_folder(out: Path, name: str, files: dict[str, str]) -> Path:
    """Make OUT/name a folder made fresh by the grader that holds `files` (name -> text).

    The files are written into a new private folder under OUT, which is then renamed to OUT/name
    after whatever was there has been moved aside and deleted. Three attempts; a path that keeps
    being re-created raises RuntimeError.
    """
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".new", dir=out))
    try:
        for file_name, text in files.items():
            write_text_atomic(staging / file_name, text)
        os.chmod(staging, 0o755)
        target = out / name
        for _ in range(3):
            _move_aside_and_delete(target)
            try:
                os.rename(staging, target)  # an empty folder put back in between is replaced too
                return target
            except OSError:  # something else appeared at `target` in between
                continue
        raise RuntimeError(f"{target} keeps being re-created; its reports could not be written")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _finished(result, manifest: Manifest) -> bool:
    """Whether a pytest run reported a final outcome for every manifest test."""
    if result.status == "crash":
        return False
    if any(t.kind == "grader" for t in result.tests):  # e.g. no sandboxed worker could start
        return False
    outcomes = {t.nodeid: t.outcome for t in result.tests}
    return all(outcomes.get(t.id) not in (None, "missing", "running") for t in manifest.tests)


def grade_student(
    intake: Intake,
    layout: CourseLayout,
    manifest: Manifest,
    out: Path,
    *,
    forbidden: list[Path],
    limits: Limits,
    zygote: str | None = None,
    copies: Path | None = None,
) -> dict:
    """Grade one student's accepted files; write their reports; return their gradebook row.

    `copies`: the folder under which the student's files are copied (the class keeps all its
    copies in one folder that every worker is forbidden to read).
    """
    folder_name = student_folder_name(intake.student)
    fallback = fallback_results(manifest, "grading did not finish; ask your instructor")
    publish_folder(out, folder_name, {"results.json": json.dumps(fallback, indent=1)})
    started = time.monotonic()
    names = list(manifest.exercises)
    files = [f for name in names for f in layout.test_files(name, hidden=manifest.hidden)]
    records, session_status, mode = [], "ok", sandbox.mode()
    digest = tests_sha256(layout, names, manifest.hidden)
    if intake.files:
        finished = False
        for attempt in (
            (zygote, None) if zygote else (None, None)
        ):  # the second in a fresh interpreter
            with tempfile.TemporaryDirectory(prefix="grade-submission-", dir=copies) as copy:
                intake.write(Path(copy))
                result = run_tests(
                    files, copy, layout, limits=limits, forbidden=forbidden, zygote=attempt
                )
            after = tests_sha256(layout, names, manifest.hidden)
            finished = _finished(result, manifest) and after == digest
            if result.status == "timeout" or finished:
                break
            print(
                f"grading {intake.student} did not finish (run status {result.status}"
                f"{', the tests changed during the run' if after != digest else ''}); grading again",
                file=sys.stderr,
            )
            digest = after
        if not finished and result.status != "timeout":
            raise RuntimeError(
                f"grading {intake.student} did not finish twice: {result.log[-500:]}"
            )
        records, session_status, mode = result.tests, result.status, result.sandbox
    rows = [
        row if f"{row.test.exercise}.py" in intake.files else not_submitted(row)
        for row in merge_with_manifest(manifest, records)
    ]
    status = student_status(rows, session_status, len(intake.files))
    results = gradescope_results(intake.student, rows, intake.ignored, status)
    results["sandbox"] = mode
    publish_folder(
        out,
        folder_name,
        {
            "results.json": json.dumps(results, indent=1),
            "feedback.md": feedback_markdown(intake.student, rows, intake.ignored, status),
        },
    )
    row = {"student": intake.student}
    for name in names:
        row[name] = sum(r.earned for r in rows if r.test.exercise == name)
    row.update(
        {
            "total": sum(r.earned for r in rows),
            "max_score": sum(r.test.points for r in rows),
            "status": status,
            "sandbox": mode,
            "submission_sha256": intake.sha256(),
            "tests_sha256": digest,
            "ignored": len(intake.ignored),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    return row


def _grader_fault_row(
    intake: Intake, manifest: Manifest, names: list[str], error: Exception, layout: CourseLayout
) -> dict:
    """Gradebook row of a student whose grading itself failed: zero, status crash, fallback report kept."""
    print(f"grading {intake.student} failed: {type(error).__name__}: {error}", file=sys.stderr)
    row = {"student": intake.student, **{name: 0.0 for name in names}}
    row.update(
        {
            "total": 0.0,
            "max_score": manifest.max_score,
            "status": "crash",
            "sandbox": sandbox.mode(),
            "submission_sha256": intake.sha256(),
            "tests_sha256": tests_sha256(layout, names, manifest.hidden),
            "ignored": len(intake.ignored),
            "seconds": 0.0,
        }
    )
    return row


def write_gradebook(out: Path, text: str) -> Path:
    """Write OUT/grades.csv atomically; a folder or link in its place is moved aside first.

    When even that fails, the gradebook goes to OUT/grades-<time>.csv and RuntimeError says where:
    a class run never ends without a gradebook it does not mention.
    """
    path = out / "grades.csv"
    try:
        if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
            aside = path.with_name(f"grades.csv.replaced-{uuid.uuid4().hex[:8]}")
            os.rename(path, aside)
            print(f"warning: {path} was not a file; moved it to {aside.name}", file=sys.stderr)
        write_text_atomic(path, text)
        return path
    except OSError as error:
        spare = out / f"grades-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.csv"
        write_text_atomic(spare, text)
        raise RuntimeError(
            f"could not write {path} ({error}); the gradebook is in {spare}"
        ) from error


def _csv_text(rows: list[dict], exercises: list[str]) -> str:
    columns = [
        "student",
        *exercises,
        "total",
        "max_score",
        "status",
        "sandbox",
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
    """Grade every submission in `submissions` into `out`; return {"rows", "seconds", "manifest"}
    (the gradebook rows, as in grades.csv, and the `Manifest`).

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
        names = list(load_manifest(manifest_path).exercises)
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
        if manifest.hidden != hidden or any(n not in manifest.exercises for n in names):
            raise ValueError(
                f"manifest {manifest_path} was built for exercises={list(manifest.exercises)} "
                f"hidden={manifest.hidden}; rebuild it for this run"
            )
        manifest = manifest.select(names)
    else:
        manifest = build_manifest(layout, names, hidden=hidden, limits=limits, zygote=socket_path)
    save_manifest(manifest, out / "manifest.json")
    copies = Path(tempfile.mkdtemp(prefix="grade-submissions-"))  # every student's copy, one folder
    forbidden = [out, submissions, copies] + (
        [Path(manifest_path).resolve()] if manifest_path else []
    )
    try:
        return _grade_students(
            submissions,
            out,
            workers,
            names,
            layout,
            limits,
            progress,
            socket_path,
            manifest,
            forbidden,
            copies,
        )
    finally:
        shutil.rmtree(copies, ignore_errors=True)


def _grade_students(
    submissions,
    out,
    workers,
    names,
    layout,
    limits,
    progress,
    socket_path,
    manifest,
    forbidden,
    copies,
) -> dict:
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
                copies=copies,
            ): intake
            for intake in intakes
        }
        for future in as_completed(futures):
            try:
                rows.append(future.result())
            except Exception as error:  # noqa: BLE001  (a grader fault for one student must not stop the class)
                rows.append(_grader_fault_row(futures[future], manifest, names, error, layout))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    rows.sort(key=lambda r: r["student"])
    seconds = time.monotonic() - started
    write_gradebook(out, _csv_text(rows, names))
    print(_summary(rows, names, seconds))
    return {"rows": rows, "seconds": seconds, "manifest": manifest}

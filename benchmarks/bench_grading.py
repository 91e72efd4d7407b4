"""Throughput of the class grader on 30 synthetic submissions, mixed good and bad, in one run.

The class (exercise ex01 by default; `--exercises` for more): 10 reference solutions, 8 untouched
stubs, 6 with one function broken, 2 with a syntax error, 2 with an endless loop, 2 that call
os._exit. Measured:
- the whole class with the zygote (one torch import for every pytest process and worker),
  wall time and wall time per submission;
- the baseline: 6 submissions of the same mix (every fifth student) graded with the zygote and
  with a fresh interpreter per process, and the ratio of their per-submission times;
- peak memory (max RSS) of the grading parent, of the zygote, and of one worker answering ex01's
  public tests on the solution.

    python benchmarks/bench_grading.py [--workers 2] [--exercises ex01] [--call-timeout 30] [--baseline 6]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from course_grader.instructor.bulk import grade_class
from course_grader.layout import course_layout
from course_grader.learner.limits import Limits


def _make_class(folder: Path, exercises: list[str]) -> dict[str, str]:
    """Write 30 submissions into `folder`; return student -> kind."""
    layout = course_layout()
    kinds = (
        ["reference"] * 10
        + ["stub"] * 8
        + ["one_broken"] * 6
        + ["syntax_error"] * 2
        + ["endless_loop"] * 2
        + ["os_exit"] * 2
    )
    students = {}
    for number, kind in enumerate(kinds):
        student = folder / f"student{number:02d}_{kind}"
        student.mkdir(parents=True)
        for name in exercises:
            solution = (layout.solutions / f"{name}.py").read_text()
            stub = (layout.exercises / f"{name}.py").read_text()
            if kind == "reference":
                text = solution
            elif kind == "stub":
                text = stub
            elif kind == "one_broken":
                text = solution.replace(
                    "def ", "def _unused_", 1
                )  # the first function goes missing
            elif kind == "syntax_error":
                text = solution + "\ndef broken(:\n"
            elif kind == "endless_loop":
                text = solution.replace('    """\n', '    """\n    while True:\n        pass\n', 1)
            else:
                text = solution + "\nimport os\nos._exit(1)\n"
            (student / f"{name}.py").write_text(text)
        students[student.name] = kind
    return students


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def _worker_peak_mib(exercise: str) -> float:
    import torch

    from course_grader.learner.runner import open_exercise

    handle = open_exercise(exercise, target="solutions")
    try:
        instances = torch.tensor([[0, 1, 1], [2, 2, 0]])
        handle.semantic_from_instances(instances, [0, 3, 4]) if exercise.startswith(
            "ex01"
        ) else None
        return handle.worker.peak_rss_kb / 1024
    finally:
        handle.close()


def _baseline(scratch: Path, students: dict[str, str], args, layout, exercises, limits) -> dict:
    """Grade every n-th student (the same mix of kinds) with and without the zygote."""
    subset = scratch / "subset"
    subset.mkdir()
    chosen = sorted(students)[:: max(1, len(students) // args.baseline)][: args.baseline]
    for name in chosen:
        shutil.copytree(scratch / "class" / name, subset / name)
    timed: dict = {"count": len(chosen), "kinds": ", ".join(students[name] for name in chosen)}
    for use_zygote in (True, False):
        result = grade_class(
            subset,
            scratch / f"out_subset_{use_zygote}",
            workers=args.workers,
            layout=layout,
            exercises=exercises,
            limits=limits,
            progress=False,
            use_zygote=use_zygote,
            manifest_path=scratch / "out" / "manifest.json",
        )
        timed[use_zygote] = result["seconds"] / len(chosen)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--exercises", nargs="*", default=["ex01"])
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=Limits.call_timeout,
        help="seconds per call (default: the grader's own default)",
    )
    parser.add_argument(
        "--baseline",
        type=int,
        default=6,
        help="submissions graded both ways (0: skip the baseline)",
    )
    args = parser.parse_args()
    layout = course_layout()
    exercises = [layout.resolve(e) for e in args.exercises]
    limits = Limits(call_timeout=args.call_timeout)
    scratch = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        students = _make_class(scratch / "class", exercises)
        print(
            f"class: {len(students)} submissions of {', '.join(exercises)}; workers={args.workers}; "
            f"call timeout {args.call_timeout:g} s"
        )
        started = time.monotonic()
        summary = grade_class(
            scratch / "class",
            scratch / "out",
            workers=args.workers,
            layout=layout,
            exercises=exercises,
            limits=limits,
            progress=False,
        )
        total = time.monotonic() - started
        grading = summary["seconds"]
        zygote_peak = _peak_mib(resource.RUSAGE_CHILDREN)

        timed = (
            _baseline(scratch, students, args, layout, exercises, limits) if args.baseline else {}
        )
        per_zygote = grading / len(students)
        worker_peak = _worker_peak_mib(exercises[0])

        print()
        print(
            f"class of {len(students)}: {total:.1f} s in all (manifest run on the solutions included), "
            f"{grading:.1f} s grading"
        )
        print(f"per submission (class of {len(students)}): {per_zygote:.2f} s wall")
        if timed:
            print(
                f"same {timed['count']} submissions ({timed['kinds']}): {timed[True]:.2f} s each with "
                f"the zygote, {timed[False]:.2f} s each with a fresh interpreter per process (baseline)"
            )
            print(f"ratio baseline / zygote per submission: {timed[False] / timed[True]:.2f}x")
        print(f"throughput: {len(students) / grading * 60:.1f} submissions per minute")
        print(
            f"peak RSS: parent {_peak_mib(resource.RUSAGE_SELF):.0f} MiB, zygote {zygote_peak:.0f} MiB, "
            f"one worker (ex01 on the solution) {worker_peak:.0f} MiB"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

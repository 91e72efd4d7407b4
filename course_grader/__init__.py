"""The exercise grader, beside the course library: `python -m course_grader exNN` checks one
exercise, `python -m course_grader --submissions DIR --out OUT` grades a class.

It is a product of its own: `course_lib` never imports it (its probes build learner modules from
`course_lib.models`). docs/grading.md is the guide. Two sides:
- `learner/`: `check`, the pytest plugin, fixtures and runner that decide, and the only process
  that runs learner code: a `worker` forked from a `zygote` (inside the bubblewrap `sandbox` where
  there is one), under audit-hook `guards` and resource `limits`, answering as plain data (`wire`);
- `instructor/`: `build` and `release` (stubs, student release, instructor bundle), `intake` of
  submissions, the `manifest` of points, `bulk` class grading, `reports` and `package` for
  Gradescope / GitHub Classroom. It uses the learner's side; never the other way round.
Shared by both: `layout` (where the course's folders are), `stubs` (solution markers) and
`records` (the typed per-test record, manifest and report row, with their JSON form).
"""

from course_grader.learner.check import ExerciseResult, check, grade_exercise

__all__ = ["ExerciseResult", "check", "grade_exercise"]

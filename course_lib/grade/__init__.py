"""The exercise grader: `python -m course_lib.grade exNN` for learners, `--submissions` for a class.

Modules, in the order a submission meets them (docs/grading.md is the guide):
- `stubs`, `build`, `release`: solution markers -> learner stubs, the sync check, the student
  release (with its leak check) and the instructor bundle;
- `intake`: whitelisted exercise files from a submission folder or zip;
- `manifest`: every graded test with points and visibility, from a run on the solutions;
- `session`, `plugin`: one pytest process per run, recording each test's outcome;
- `fixtures`, `runner`, `client`: the `exercise` fixture, a handle that sends calls to a worker;
- `worker`, `guards`, `limits`, `wire`: the only process that runs learner code, its audit-hook
  guards and resource limits, and the plain-data format of its answers;
- `zygote`: a fork server so torch and pytest are imported once per class;
- `reports`, `table`, `bulk`, `package`: points tables, Gradescope results, feedback, grades.csv,
  class grading, and the Gradescope / GitHub Classroom packages;
- `check`: `check("ex01")` grades one exercise from Python or a notebook and prints the table.
"""

from course_lib.grade.check import check, grade_exercise

__all__ = ["check", "grade_exercise"]

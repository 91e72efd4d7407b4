"""Fixtures for the graded exercise tests.

Each graded test module names its exercise with a module-level constant, e.g.
`EXERCISE = "ex01_segmentation_types"`, and asks for the `exercise` fixture. The fixture is a
handle on the learner's file chosen by `--target`:

    exercise.some_function(*args)       # calls the learner's function, returns its result
    exercise.probe("name", *args)       # runs the trusted probe course_grader.probes.exNN.name(module, *args)

The learner's code runs in a separate worker process (course_grader/learner/worker.py), never in the
pytest process, so arguments and results are plain data only (tensors, arrays, numbers, strings,
lists, tuples, dicts).
"""

from course_grader.learner.fixtures import _worker_zygote, exercise  # noqa: F401  (the fixtures)

"""The learner's side of the grader: `check`, and the machinery that runs learner code safely.

The pytest plugin, fixtures and runner decide; a worker process (forked from a zygote, inside
the bubblewrap sandbox where there is one, under audit-hook guards and resource limits) is
the only process that runs learner code, and answers as plain data (`wire`). Nothing here
imports the instructor's side.
"""

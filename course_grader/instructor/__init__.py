"""The instructor's side of the grader: build the stubs and releases, take in submissions, grade
a class, write reports and gradebooks, and package for Gradescope / GitHub Classroom. It uses
the learner's side to run each submission; the learner's side never imports it.
"""

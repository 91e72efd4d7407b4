"""Trusted probe functions, one module per exercise (`probes/exNN.py`).

A probe receives the learner's module as its first argument, exercises a class or a stateful
object from it (build a model, copy weights, run a forward pass) and returns plain data
(tensors, numbers, dicts). Tests call them as `exercise.probe("name", *args)`.
"""

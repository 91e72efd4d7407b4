"""Trusted probe functions, one module per exercise (`probes/exNN.py`).

A probe runs in the worker: it receives the learner's module as its first argument and plain data
(constructor arguments, weights, inputs), exercises a class or a stateful object from it (build a
model, load the weights, run a forward pass) and returns only what the learner's code produced.
Tests call them as `exercise.probe("name", *args)`. The same modules hold the functions the tests
call in their own process to build the reference and the expected values (`unet_case`,
`case_data`): the worker may have been rewritten by the learner, so nothing it answers is taken as
expected.
"""

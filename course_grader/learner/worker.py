"""The worker: the only process that runs learner code. Started by `client.WorkerClient`.

    python -I -m course_grader.learner.worker      (stdin: requests, stdout: answers, both wire frames)

Sequence: move the request/answer pipes to private descriptors and send the console (fd 1 and 2)
to a size-limited log file; import torch and the probes once; read the set-up message; lower the
resource limits; install the audit-hook guards; only then compile and run the learner's file
(its source bytes come in the set-up message, so the worker never opens solutions/; they are
compiled as bytes, so a UTF-8 BOM and a PEP 263 coding line work as they do for `python file.py`).
Then answer requests one by one:

    {"op": "call", "name": f, "args": [...], "kwargs": {...}}   -> learner_module.f(*args, **kwargs)
    {"op": "probe", "name": p, ...}                            -> probes.exNN.p(learner_module, ...)

Probes receive everything as plain data (weights, inputs) and return only what the learner's code
produced: the tests compute the expected values in the grader's process, so nothing this process
answers is ever taken as a reference. An answer larger than the grader's limit (set-up message)
is refused here, naming the function.

An answer is {"ok": True, "value": ...} or {"ok": False, "error": "<one line>", "detail": "...",
"raised": [...], "where": {...}}: `raised` names the learner's exception class and its bases
("builtins.ValueError", ...), `where` is the innermost line of the learner's file in the traceback
(file, line, function, code), so a test can tell a ValueError from a TypeError and the learner's
table can show the line that failed.
A profiler notes every call into a course_lib function or class that has the name of one of the
exercise's tasks and that happens while learner code is on the stack; such an answer earns nothing.
"""

from __future__ import annotations

import io
import os
import resource
import sys
import traceback
import types
from pathlib import Path

import course_lib

_COURSE_LIB = str(Path(course_lib.__file__).resolve().parent) + os.sep


def _private_pipes(log_path: str) -> tuple[io.BufferedReader, io.BufferedWriter]:
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    return io.BufferedReader(requests), answers


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _learner_trace(error: BaseException, learner_file: str, limit: int = 6) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == learner_file]
    lines = [
        f"  {Path(f.filename).name}, line {f.lineno}, in {f.name}: {f.line}"
        for f in frames[-limit:]
    ]
    return "\n".join(lines)


def _raised(error: BaseException) -> list[str]:
    """Qualified names of the class of `error` and its bases, e.g. ["builtins.ValueError", ...]."""
    return [f"{cls.__module__!s}.{cls.__qualname__!s}" for cls in type(error).__mro__[:-1]]


def _where(error: BaseException, learner_file: str) -> dict | None:
    """The innermost frame of the learner's file in the traceback of `error` (None if there is none)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == learner_file]
    if isinstance(error, SyntaxError) and error.filename == learner_file and error.lineno:
        code = (error.text or "").rstrip()
        return {"file": learner_file, "line": error.lineno, "function": None, "code": code}
    if not frames:
        return None
    last = frames[-1]
    code = last.line or ""
    return {"file": learner_file, "line": last.lineno, "function": last.name, "code": code}


def _learner_function(error: BaseException, learner_file: str) -> str | None:
    """Qualified name of the innermost learner function in the traceback of `error`."""
    tb, found = error.__traceback__, None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == learner_file:
            found = getattr(code, "co_qualname", code.co_name)
        tb = tb.tb_next
    return found


class _CallWatch:
    """Profiler that records calls to course_lib implementations of the exercise's tasks."""

    def __init__(self, task_names: set[str], learner_file: str):
        self.task_names = task_names
        self.learner_file = learner_file
        self.hits: list[str] = []

    def __call__(self, frame: types.FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        code = frame.f_code
        filename = code.co_filename
        if not filename.startswith(_COURSE_LIB):
            return
        qualname = getattr(code, "co_qualname", code.co_name)
        if qualname.split(".")[0] not in self.task_names and code.co_name not in self.task_names:
            return
        caller = frame.f_back
        while caller is not None:
            if caller.f_code.co_filename == self.learner_file:
                module = frame.f_globals.get("__name__", "course_lib")
                self.hits.append(f"{module}.{qualname}")
                return
            caller = caller.f_back


def _reuses_course_lib(module: types.ModuleType, task_names: set[str]) -> dict[str, str]:
    """Tasks whose answer *is* a course_lib object (imported, aliased or subclassed)."""
    found = {}
    for name in task_names:
        answer = getattr(module, name, None)
        if answer is None:
            continue
        code = getattr(answer, "__code__", None)
        origin = getattr(answer, "__module__", "") or ""
        if origin.startswith("course_lib."):
            found[name] = f"{origin}.{getattr(answer, '__qualname__', name)}"
        elif code is not None and code.co_filename.startswith(_COURSE_LIB):
            found[name] = f"course_lib code {code.co_name}"
        elif isinstance(answer, type):
            for base in answer.__mro__[1:]:
                if base.__module__.startswith("course_lib.") and base.__name__ == name:
                    found[name] = f"a subclass of {base.__module__}.{base.__qualname__}"
    return found


def _source_lines(source: bytes) -> list[str]:
    """The learner's lines as Python decodes them (BOM and PEP 263 coding line honoured)."""
    import importlib.util

    try:
        text = importlib.util.decode_source(source)
    except (SyntaxError, UnicodeDecodeError, LookupError):  # compile() reports the problem
        text = source.decode("utf-8", "replace")
    return text.splitlines(True)


def _load_probes(exercise: str, probes_path: str | None) -> types.ModuleType | None:
    """The trusted probes of `exercise`: a course-local file if given, else course_grader.probes.exNN."""
    import importlib
    import importlib.util

    prefix = exercise.split("_")[0]
    if probes_path:
        spec = importlib.util.spec_from_file_location(f"_probes_{prefix}", probes_path)
        probes = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(probes)
        return probes
    try:
        return importlib.import_module(f"course_grader.probes.{prefix}")
    except ModuleNotFoundError as error:
        if error.name != f"course_grader.probes.{prefix}":
            raise
        return None


def _probe_functions(probes: types.ModuleType | None) -> dict[str, types.FunctionType]:
    """The public functions the probe module defines, taken before any learner code runs.

    Probes only build the learner's objects and run them; the expected values are computed by the
    tests in the grader's process, so a probe the learner replaces can only change the learner's
    own answer. Taking them early keeps the error messages of an honest run intact all the same.
    """
    if probes is None:
        return {}
    return {
        name: value
        for name, value in vars(probes).items()
        if not name.startswith("_")
        and isinstance(value, types.FunctionType)
        and value.__module__ == probes.__name__
    }


def main() -> None:
    home = os.getcwd()
    requests, answers = _private_pipes(os.path.join(home, "console.log"))

    import numpy  # noqa: F401  (imported before the guards: both load native code)
    import torch

    from course_grader.learner import wire
    from course_grader.learner.guards import install_guards, violations
    from course_grader.learner.limits import Limits, apply_in_worker

    torch.set_num_threads(1)
    setup = wire.read_frame(requests)
    learner_file, exercise = setup["path"], setup["exercise"]
    task_names = set(setup["task_names"])
    max_answer_bytes = int(setup.get("max_answer_bytes") or wire.MAX_FRAME_BYTES)
    probes = _probe_functions(_load_probes(exercise, setup.get("probes_path")))

    apply_in_worker(Limits(**setup["limits"]))
    watch = _CallWatch(task_names, learner_file)
    sys.setprofile(watch)
    import threading

    threading.setprofile(watch)
    import importlib.util  # noqa: F401  (used by _source_lines; imported before the guards)
    import linecache

    install_guards(home, tuple(setup["forbidden_roots"]))
    wire.write_frame(
        answers, {"started": True}
    )  # from here on, the learner's import has the call budget

    source = setup["source"]  # bytes, as on disk: compile() reads a BOM or a coding line itself
    if isinstance(source, str):
        source = source.encode("utf-8")
    # tracebacks read the learner's lines from here, not from the (guarded) file
    linecache.cache[learner_file] = (len(source), None, _source_lines(source), learner_file)
    module = types.ModuleType(f"_graded_{exercise}")
    module.__file__ = learner_file
    sys.modules[module.__name__] = module
    loaded: dict = {"ok": True}
    try:
        code = compile(source, learner_file, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except SyntaxError as error:
        loaded = {
            "ok": False,
            "error": f"SyntaxError at line {error.lineno}: {error.msg}",
            "where": _where(error, learner_file),
        }
    except BaseException as error:  # noqa: BLE001  (sys.exit and KeyboardInterrupt at import too)
        loaded = {
            "ok": False,
            "error": f"{_first_line(error)} while importing",
            "detail": _learner_trace(error, learner_file),
            "where": _where(error, learner_file),
        }
    reused = _reuses_course_lib(module, task_names) if loaded["ok"] else {}
    wire.write_frame(answers, {"ready": loaded, "reused": reused})

    while True:
        try:  # requests come from the grader: only the frame limit applies
            request = wire.read_frame(requests, max_tree_bytes=wire.MAX_FRAME_BYTES)
        except EOFError:
            return
        answer = _serve(
            request,
            module,
            probes,
            watch,
            learner_file,
            exercise,
            reused,
            violations,
            wire,
            max_answer_bytes,
        )
        answer["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            wire.write_frame(answers, answer)
        except BaseException as error:  # noqa: BLE001  (an answer that is not plain data)
            wire.write_frame(answers, {"ok": False, "error": f"returned {error}", "detail": ""})


def _serve(
    request,
    module,
    probes,
    watch,
    learner_file,
    exercise,
    reused,
    violations,
    wire,
    max_answer_bytes,
) -> dict:
    op, name = request["op"], request["name"]
    args, kwargs = request.get("args", []), request.get("kwargs", {})
    label = f"{exercise.split('_')[0]}.{name}"
    if op == "call":
        target = getattr(module, name, None)
        if target is None:
            return {"ok": False, "error": f"{label} is missing: define a function named {name!r}"}
        if not callable(target):
            return {"ok": False, "error": f"{label} is a {type(target).__name__}, not a function"}
        if name in reused:
            return {
                "ok": False,
                "error": f"{label} is {reused[name]}; write it yourself, it earns nothing",
            }
    elif op == "probe":
        if name not in probes:
            return {"ok": False, "error": f"the grader has no probe {name!r} for {exercise}"}
        bad = sorted(t for t in reused)
        if bad:
            return {
                "ok": False,
                "error": f"{exercise.split('_')[0]}.{bad[0]} is {reused[bad[0]]}; write it yourself, it earns nothing",
            }
        target = probes[name]
        args = [module, *args]
    else:
        return {"ok": False, "error": f"unknown request {op!r}"}
    watch.hits.clear()
    seen = len(violations())
    try:
        value = target(*args, **kwargs)
    except NotImplementedError as error:
        where = _learner_function(error, learner_file) or name
        return {
            "ok": False,
            "error": f"{exercise.split('_')[0]}.{where} is not implemented yet (NotImplementedError)",
            "raised": _raised(error),
        }
    except BaseException as error:  # noqa: BLE001  (SystemExit, KeyboardInterrupt included)
        refused = violations()[seen:]
        reason = (
            f"; the grader refused {refused[0]}"
            if refused and "the grader forbids" not in str(error)
            else ""
        )
        return {
            "ok": False,
            "error": f"{label} raised {_first_line(error)}{reason}",
            "detail": _learner_trace(error, learner_file),
            "raised": _raised(error),
            "where": _where(error, learner_file),
        }
    if watch.hits:
        return {
            "ok": False,
            "error": f"{label} calls {watch.hits[0]}, the course_lib implementation "
            "this exercise asks you to write; it earns nothing",
        }
    try:
        size = wire.frame_size({"ok": True, "value": value, "rss_kb": 0})
    except wire.WireError as error:
        return {"ok": False, "error": f"{label} returned {error}"}
    if size > max_answer_bytes:
        return {
            "ok": False,
            "error": f"{label} returned {size / 2**20:.1f} MiB of data; answers are limited to "
            f"{max_answer_bytes / 2**20:.0f} MiB (return only what the task asks for)",
        }
    return {"ok": True, "value": value}


if __name__ == "__main__":
    main()

"""Mutation testing of the graded tests: how many wrong answers do they catch?

    python benchmarks/bench_test_strength.py                          # every exercise, every mutant
    python benchmarks/bench_test_strength.py --exercises ex01 ex06 --max-mutants 25 --timeout 60

For each exercise the reference solution (`solutions/exNN_*.py`) is parsed with `ast`, and only
the code between `# BEGIN SOLUTION` and `# END SOLUTION` is mutated, one change per mutant:
comparison swaps (`<`/`<=`, `>`/`>=`, `==`/`!=`), arithmetic swaps (`+`/`-`, `*`/`/`, also in
`+=`...), integer and float constants (`0`/`1`, `n` -> `n + 1`), `True`/`False`, `and`/`or`,
and statement deletion (the statement becomes `pass`). Each mutant is written with
`ast.unparse` into a temporary copy of `solutions/` and graded like a submission: pytest on the
public tests with `--target COPY -x -q` and a timeout; when the public tests pass, the hidden
tests too. A timeout counts as caught (the learner would get no points for a hang either).

Printed per exercise: mutants, caught by public, caught by public + hidden, the share caught
(equivalent mutants, listed in EQUIVALENT below, are left out of the share), and the survivors
(file:line and the mutation). The issue's target: >= 95 % by public + hidden, >= 90 % by public.

`--max-mutants N` grades a deterministic sample of N mutants per exercise (seeded by the exercise
name), so two runs with the same options grade the same mutants. `--only TEXT ...` grades only
the mutants whose key ("exNN:line:mutation", as printed) contains one of the texts: a quick check
that a new test kills the survivors of a full run (the share printed then is of those only).
The pytest runs are forked from the grader's zygote (torch imported once), so a mutant costs
about a second or two of CPU.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
GRADED = ROOT / "tests" / "graded"
HIDDEN = ROOT / "tests" / "hidden"

# "exNN:line:mutation" (as printed in the survivors list) -> why no test can tell it apart.
# These are left out of the share; every other survivor is a test to write.
EQUIVALENT: dict[str, str] = {
    "ex01:75:`+` -> `-` in `cy + dy`": (
        "the neighbour steps are symmetric ((dy, dx) comes with (-dy, dx)): same neighbours"
    ),
    "ex01:75:`+` -> `-` in `cx + dx`": (
        "the neighbour steps are symmetric ((dy, dx) comes with (dy, -dx)): same neighbours"
    ),
    "ex03:49:`True` -> `False`": (
        "nn.ReLU(inplace=False) gives the same numbers and parameters; only memory use differs"
    ),
    "ex05:123:`1` -> `0`": (
        "clamp(min=0) differs from clamp(min=1) only where the union is below 1; a confusion "
        "matrix holds counts, so that union is 0, where torch.where takes NaN anyway"
    ),
    "ex06:39:delete `if image.ndim != 3: ...`": (
        "the mask check that follows raises the same ValueError: a 2-D mask equal to "
        "image.shape[1:] needs a 3-D image; only the message differs"
    ),
    "ex06:40:delete `raise ValueError(f'image must be (C, H, ...`": (
        "as the line above: the mask check raises the same ValueError for every image that is "
        "not 3-D"
    ),
    "ex06:122:`+` -> `-` in `image_pixels[in_image] += keep.sum()`": (
        "every P_k changes sign, so every f_k and the median change sign and the weights "
        "median / f_k stay the same (up to a rounding far below float32)"
    ),
    "ex07:47:delete `images, targets = (images.to(device), ta...`": (
        "the grader runs on the CPU: .to('cpu') returns CPU tensors unchanged"
    ),
    "ex07:82:`1` -> `0`": (
        "clamp(min=0) differs from clamp(min=1) only where the union is 0, where torch.where "
        "takes NaN anyway"
    ),
    "ex08:70:`1` -> `0`": (
        "max(threshold, 0) differs from max(threshold, 1) only when the region is empty, and "
        "writing an empty region changes nothing"
    ),
    "ex08:72:delete `taken |= region`": (
        "only later stuff classes read `taken`, and their regions (semantic == c) are disjoint "
        "from this one; a class listed twice writes the same ids again"
    ),
    "ex08:101:delete `if t // label_divisor == ignore_index: ...`": (
        "as ex08:102, the whole if: a void target goes through the loop and never matches"
    ),
    "ex08:102:delete `continue`": (
        "pred_ids has no void segment and a match needs the same class: a void target never "
        "matches anyway"
    ),
    "ex08:109:delete `if intersection == 0: ...`": (
        "as ex08:110, the whole if: with no overlap the IoU is 0, never > 0.5"
    ),
    "ex08:110:delete `continue`": (
        "the shortcut only saves time: with no overlap the IoU is 0 (union >= |T| >= 1), "
        "never > 0.5"
    ),
}

COMPARE_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
ARITH_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
BOOL_SWAPS = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOLS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.And: "and",
    ast.Or: "or",
}


@dataclass(frozen=True)
class Mutant:
    exercise: str  # "ex06"
    line: int  # line in the reference solution
    site: int  # index of the node in the walk order of the parsed module
    kind: str  # "compare", "binop", "augassign", "boolop", "constant", "delete"
    index: int  # which operator of a Compare
    description: str

    @property
    def key(self) -> str:
        return f"{self.exercise}:{self.line}:{self.description}"


def solution_ranges(source: str) -> list[tuple[int, int]]:
    """(first, last) line numbers strictly between each BEGIN/END SOLUTION marker pair."""
    ranges, start = [], None
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() == "# BEGIN SOLUTION":
            start = number
        elif line.strip() == "# END SOLUTION" and start is not None:
            ranges.append((start + 1, number - 1))
            start = None
    return ranges


def _short(node: ast.AST, limit: int = 40) -> str:
    text = ast.unparse(node).splitlines()[0]
    if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try)) or len(text) > limit:
        text = text[:limit].rstrip(": ") + ": ..." if text.endswith(":") else text[:limit] + "..."
    return text


def _new_constant(value):
    """The mutated constant, or None when the constant is not mutated."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        if value == 0:
            return type(value)(1)
        if value == 1:
            return type(value)(0)
        return value + 1
    return None


def find_mutants(path: Path) -> list[Mutant]:
    source = path.read_text(encoding="utf-8")
    ranges = solution_ranges(source)
    tree = ast.parse(source)
    exercise = path.name[:4]

    def inside(node: ast.AST) -> bool:
        line = getattr(node, "lineno", None)
        end = getattr(node, "end_lineno", line)
        return line is not None and any(a <= line and end <= b for a, b in ranges)

    # nodes that are part of an f-string's formatting are never mutated
    in_fstring = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.JoinedStr)
        for n in ast.walk(f)
        if n is not f
    }
    mutants = []
    for site, node in enumerate(ast.walk(tree)):
        if not inside(node) or id(node) in in_fstring:
            continue
        line = node.lineno
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in COMPARE_SWAPS:
                    new = COMPARE_SWAPS[type(op)]
                    mutants.append(
                        Mutant(
                            exercise,
                            line,
                            site,
                            "compare",
                            i,
                            f"`{SYMBOLS[type(op)]}` -> `{SYMBOLS[new]}` in `{_short(node)}`",
                        )
                    )
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITH_SWAPS:
            new = ARITH_SWAPS[type(node.op)]
            kind = "binop" if isinstance(node, ast.BinOp) else "augassign"
            mutants.append(
                Mutant(
                    exercise,
                    line,
                    site,
                    kind,
                    0,
                    f"`{SYMBOLS[type(node.op)]}` -> `{SYMBOLS[new]}` in `{_short(node)}`",
                )
            )
        elif isinstance(node, ast.BoolOp):
            new = BOOL_SWAPS[type(node.op)]
            mutants.append(
                Mutant(
                    exercise,
                    line,
                    site,
                    "boolop",
                    0,
                    f"`{SYMBOLS[type(node.op)]}` -> `{SYMBOLS[new]}` in `{_short(node)}`",
                )
            )
        elif isinstance(node, ast.Constant) and _new_constant(node.value) is not None:
            mutants.append(
                Mutant(
                    exercise,
                    line,
                    site,
                    "constant",
                    0,
                    f"`{node.value!r}` -> `{_new_constant(node.value)!r}`",
                )
            )
        if isinstance(node, ast.stmt) and not isinstance(node, ast.Pass):
            mutants.append(Mutant(exercise, line, site, "delete", 0, f"delete `{_short(node)}`"))
    return mutants


def apply(source: str, mutant: Mutant) -> str:
    """The mutated module's source (ast.unparse: comments and markers are dropped)."""
    tree = ast.parse(source)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == mutant.site)
    if mutant.kind == "compare":
        node.ops[mutant.index] = COMPARE_SWAPS[type(node.ops[mutant.index])]()
    elif mutant.kind in ("binop", "augassign"):
        node.op = ARITH_SWAPS[type(node.op)]()
    elif mutant.kind == "boolop":
        node.op = BOOL_SWAPS[type(node.op)]()
    elif mutant.kind == "constant":
        node.value = _new_constant(node.value)
    elif mutant.kind == "delete":
        replacement = ast.copy_location(ast.Pass(), node)
        for parent in ast.walk(tree):
            for _, value in ast.iter_fields(parent):
                if isinstance(value, list) and any(item is node for item in value):
                    value[[id(item) for item in value].index(id(node))] = replacement
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def sample(mutants: list[Mutant], count: int | None, exercise: str) -> list[Mutant]:
    if count is None or len(mutants) <= count:
        return mutants
    chosen = random.Random(zlib.crc32(exercise.encode())).sample(mutants, count)
    return sorted(chosen, key=lambda m: (m.line, m.site, m.index, m.kind))


class Runner:
    """Runs pytest on a target folder: forked from the grader's zygote, or a plain subprocess."""

    def __init__(self, timeout: float, use_zygote: bool = True):
        self.timeout = timeout
        self.zygote = None
        if use_zygote:
            try:
                from course_grader.learner.zygote import Zygote

                self.zygote = Zygote().start()
            except (OSError, RuntimeError, ImportError):
                self.zygote = None

    def env(self, target: Path) -> dict:
        env = dict(os.environ)
        env.update(
            {
                "COURSE_MODE": "fast",
                "PYTHONDONTWRITEBYTECODE": "1",
                "COURSE_GRADE_CALL_TIMEOUT": str(self.timeout),
                "COURSE_GRADE_EXERCISE_TIMEOUT": str(self.timeout),
            }
        )
        env.pop("COURSE_GRADE_TARGET", None)
        if self.zygote is not None:
            env["COURSE_GRADE_ZYGOTE"] = self.zygote.socket_path
        return env

    def fails(self, target: Path, tests: list[Path]) -> bool:
        """True when the tests fail (or time out) on `target`: the mutant is caught."""
        args = [
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "--no-header",
            "--target",
            str(target),
            *map(str, tests),
        ]
        if self.zygote is not None:
            from course_grader.learner.zygote import spawn_child

            with open(os.devnull, "r+b") as null:
                child = spawn_child(
                    self.zygote.socket_path,
                    "session",
                    cwd=str(ROOT),
                    env=self.env(target),
                    args=args,
                    fds=[null.fileno(), null.fileno(), null.fileno()],
                )
            try:
                return child.wait(self.timeout) != 0
            except subprocess.TimeoutExpired:
                child.kill()
                return True
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", *args],
                cwd=ROOT,
                env=self.env(target),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            return True
        return done.returncode != 0

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.stop()


def grade_exercise(
    path: Path,
    runner: Runner,
    max_mutants: int | None,
    verbose: bool,
    only: list[str] | None = None,
) -> dict:
    exercise = path.name[:4]
    public = sorted(GRADED.glob(f"test_{exercise}_*.py"))
    hidden = sorted(HIDDEN.glob(f"test_{exercise}_hidden*.py"))
    source = path.read_text(encoding="utf-8")
    every = find_mutants(path)
    mutants = sample(every, max_mutants, exercise)
    if only:
        mutants = [m for m in mutants if any(text in m.key for text in only)]
    result = {
        "exercise": exercise,
        "generated": len(every),
        "graded": len(mutants),
        "public": 0,
        "both": 0,
        "survivors": [],
        "equivalent": [],
    }
    with tempfile.TemporaryDirectory(prefix=f"mutants-{exercise}-") as folder:
        target = Path(folder) / "solutions"
        shutil.copytree(SOLUTIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
        if runner.fails(target, public + hidden):
            raise SystemExit(
                f"{exercise}: the tests fail on the unmutated solutions; fix that first"
            )
        for number, mutant in enumerate(mutants, start=1):
            (target / path.name).write_text(apply(source, mutant), encoding="utf-8")
            start = time.monotonic()
            by_public = runner.fails(target, public)
            by_both = by_public or (bool(hidden) and runner.fails(target, hidden))
            result["public"] += by_public
            result["both"] += by_both
            if not by_both:
                bucket = "equivalent" if mutant.key in EQUIVALENT else "survivors"
                result[bucket].append(mutant)
            elif not by_public:
                result.setdefault("hidden_only", []).append(mutant)
            if verbose:
                status = "public" if by_public else "hidden" if by_both else "SURVIVED"
                print(
                    f"  [{number}/{len(mutants)}] {status:8} {time.monotonic() - start:5.1f}s "
                    f"{path.name}:{mutant.line} {mutant.description}",
                    flush=True,
                )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exercises", nargs="*", default=None, help="e.g. ex01 ex06 (default all)")
    parser.add_argument(
        "--max-mutants",
        type=int,
        default=None,
        help="grade a deterministic sample of at most N mutants per exercise",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="grade only the mutants whose key contains one of these texts, e.g. 'ex06:117:'",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per pytest run")
    parser.add_argument(
        "--no-zygote", action="store_true", help="run each pytest as a fresh interpreter (slower)"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants, grade nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per mutant")
    options = parser.parse_args(argv)

    paths = sorted(SOLUTIONS.glob("ex[0-9][0-9]_*.py"))
    if options.exercises:
        wanted = {name[:4] for name in options.exercises}
        paths = [p for p in paths if p.name[:4] in wanted]
    if options.list:
        for path in paths:
            for mutant in sample(find_mutants(path), options.max_mutants, path.name[:4]):
                if not options.only or any(text in mutant.key for text in options.only):
                    print(f"{path.name}:{mutant.line} {mutant.description}")
        return 0

    runner = Runner(options.timeout, use_zygote=not options.no_zygote)
    results = []
    try:
        for path in paths:
            print(f"{path.name}: grading mutants ...", flush=True)
            results.append(
                grade_exercise(path, runner, options.max_mutants, options.verbose, options.only)
            )
    finally:
        runner.close()

    print()
    print(
        f"{'exercise':8} {'mutants':>8} {'graded':>7} {'equiv':>6} {'public':>7} "
        f"{'pub+hid':>8} {'share pub':>10} {'share all':>10}"
    )
    totals = {"graded": 0, "equivalent": 0, "public": 0, "both": 0}
    for r in results:
        counted = r["graded"] - len(r["equivalent"])
        share_public = r["public"] / counted if counted else float("nan")
        share_both = r["both"] / counted if counted else float("nan")
        print(
            f"{r['exercise']:8} {r['generated']:8d} {r['graded']:7d} {len(r['equivalent']):6d} "
            f"{r['public']:7d} {r['both']:8d} {share_public:10.1%} {share_both:10.1%}"
        )
        totals["graded"] += r["graded"]
        totals["equivalent"] += len(r["equivalent"])
        totals["public"] += r["public"]
        totals["both"] += r["both"]
    counted = totals["graded"] - totals["equivalent"]
    if counted:
        print(
            f"{'all':8} {'':8} {totals['graded']:7d} {totals['equivalent']:6d} "
            f"{totals['public']:7d} {totals['both']:8d} {totals['public'] / counted:10.1%} "
            f"{totals['both'] / counted:10.1%}"
        )
    print(
        "\ntarget: >= 90 % caught by public tests, >= 95 % by public + hidden "
        "(equivalent mutants left out)"
    )
    for r in results:
        for mutant in r.get("hidden_only", []):
            print(f"  caught only by hidden: {mutant.key}")
        for mutant in r["survivors"]:
            print(f"  SURVIVOR {mutant.key}")
        for mutant in r["equivalent"]:
            print(f"  equivalent {mutant.key}: {EQUIVALENT[mutant.key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every public function and method of course_lib (and of course_grader) is fully annotated.

Public: a function, class or method whose name has no leading underscore, defined in a module
whose own name has none, plus the dunders that make up a class's interface (`__init__`,
`__call__`, `__getitem__`, `__len__`, `__iter__`). Every parameter except the first `self`/`cls`
needs an annotation (`*args`/`**kwargs` too), and so does the return, except `__init__`'s
(PEP 484 lets it go without `-> None`). Annotations are read as written (`eval_str=False`), so a
name imported only under `TYPE_CHECKING` counts; ruff's undefined-name check covers their spelling.
"""

import importlib
import inspect
import pkgutil
import sys
import types
import warnings
from collections.abc import Callable, Iterator

INTERFACE_DUNDERS = {"__init__", "__call__", "__getitem__", "__len__", "__iter__"}

# Gaps known when this test was written, in files other people were editing at the time; each
# entry is one missing annotation, "module.function(parameter)" or "module.function -> ?" for the
# return. Annotate the code and delete its entry; a new gap anywhere else fails the test.
ALLOWED_COURSE_LIB: set[str] = set()
ALLOWED_COURSE_GRADER: set[str] = set()


def _modules(package: str) -> Iterator[types.ModuleType]:
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue  # private modules and __main__
        yield importlib.import_module(info.name)


def _missing(func: Callable, name: str) -> list[str]:
    """One entry per parameter without an annotation, and one for a missing return annotation."""
    signature = inspect.signature(func, eval_str=False)
    missing = []
    for position, parameter in enumerate(signature.parameters.values()):
        if position == 0 and parameter.name in ("self", "cls"):
            continue
        if parameter.annotation is inspect.Parameter.empty:
            missing.append(f"{name}({parameter.name})")
    if signature.return_annotation is inspect.Signature.empty and not name.endswith(".__init__"):
        missing.append(f"{name} -> ?")
    return missing


def _public_methods(cls: type) -> Iterator[tuple[str, Callable]]:
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in INTERFACE_DUNDERS:
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            member = member.fget
        # Methods written in this class, not inherited ones or aliases of torch's.
        if inspect.isfunction(member) and member.__module__ == cls.__module__:
            yield name, member


def missing_annotations(modules: list[types.ModuleType]) -> list[str]:
    """Every missing annotation on the public functions and methods defined in `modules`."""
    missing = []
    for module in modules:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue  # private, or imported from elsewhere (checked where it is defined)
            if inspect.isfunction(obj):
                missing += _missing(obj, f"{module.__name__}.{name}")
            elif inspect.isclass(obj):
                for method_name, method in _public_methods(obj):
                    missing += _missing(method, f"{module.__name__}.{name}.{method_name}")
    return missing


def _check(package: str, allowed: set[str]) -> None:
    missing = missing_annotations(list(_modules(package)))
    new = sorted(set(missing) - allowed)
    assert not new, f"{len(new)} public signatures of {package} lack annotations:\n" + "\n".join(
        new
    )
    fixed = sorted(allowed - set(missing))
    if fixed:
        warnings.warn(
            f"annotated now, delete from the allow-list in {__name__}: {fixed}", stacklevel=2
        )


def test_course_lib_public_signatures_are_annotated():
    _check("course_lib", ALLOWED_COURSE_LIB)


def test_course_grader_public_signatures_are_annotated():
    _check("course_grader", ALLOWED_COURSE_GRADER)


def test_the_check_finds_each_kind_of_missing_annotation():
    source = """
from __future__ import annotations


def typed(x: int, *rest: str, **options: float) -> int:
    return x


def untyped(x, y: int, *rest, **options):
    return x


def _private(x):
    return x


class Model:
    def __init__(self, width: int):
        self.width = width

    def __call__(self, x) -> int:
        return x

    def forward(self, x: int):
        return x

    @classmethod
    def build(cls, width) -> Model:
        return cls(width)

    @property
    def size(self):
        return self.width

    def _helper(self, x):
        return x
"""
    module = types.ModuleType("fake_course_module")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, "fake_course_module.py", "exec"), module.__dict__)
        found = missing_annotations([module])
    finally:
        del sys.modules[module.__name__]
    assert sorted(found) == sorted(
        [
            "fake_course_module.untyped(x)",
            "fake_course_module.untyped(rest)",
            "fake_course_module.untyped(options)",
            "fake_course_module.untyped -> ?",
            "fake_course_module.Model.__call__(x)",
            "fake_course_module.Model.forward -> ?",
            "fake_course_module.Model.build(width)",
            "fake_course_module.Model.size -> ?",
        ]
    )

"""The learner's points table: one row per graded test, the first line of each failure, the total."""

from __future__ import annotations

__all__ = ["earned", "format_table"]


def earned(record: dict) -> float:
    """Points a test record earns: all of them when it passed, none otherwise."""
    return float(record["points"]) if record["outcome"] == "passed" else 0.0


def _short_name(record: dict) -> str:
    return record.get("name") or record["nodeid"].split("::")[-1]


def format_table(
    exercise: str, tests: list[dict], *, width: int = 120, hidden_note: bool = True
) -> str:
    """Plain-text table of `tests` (plugin records) for `exercise`, with the total."""
    if not tests:
        return f"{exercise}: no graded tests were collected"
    names = [_short_name(t) for t in tests]
    name_width = min(max(len(n) for n in names), 44)
    lines = [
        f"{exercise}",
        f"{'test':<{name_width}}  {'points':>9}  result",
        "-" * min(width, name_width + 40),
    ]
    for record, name in zip(tests, names):
        shown = name if len(name) <= name_width else name[: name_width - 1] + "…"
        points = f"{earned(record):g}/{float(record['points']):g}"
        result = (
            "passed" if record["outcome"] == "passed" else record["message"] or record["outcome"]
        )
        room = max(20, width - name_width - 13)
        if len(result) > room:
            result = result[: room - 1] + "…"
        lines.append(f"{shown:<{name_width}}  {points:>9}  {result}")
    total = sum(earned(t) for t in tests)
    possible = sum(float(t["points"]) for t in tests)
    lines.append("-" * min(width, name_width + 40))
    lines.append(f"{'total':<{name_width}}  {f'{total:g}/{possible:g}':>9}")
    if hidden_note:
        lines.append(
            "Your instructor also runs hidden tests on the same functions: passing these is necessary, not sufficient."
        )
    return "\n".join(lines)

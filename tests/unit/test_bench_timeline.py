"""The light-load timeline (``python -m bench.probes timeline``) marks functions of the services by
name: each must still exist, and its marks must turn into steps."""

from __future__ import annotations

import importlib

import pytest
from bench import timeline


@pytest.mark.parametrize(("module", "path", "step"), timeline.POINTS, ids=[p[2] for p in timeline.POINTS])
def test_every_point_names_a_function_that_exists(module: str, path: str, step: str) -> None:
    target: object = importlib.import_module(module)
    for part in path.split("."):
        target = getattr(target, part)
    assert callable(target), step


def test_marks_become_the_median_of_each_step() -> None:
    order = [timeline.CLIENT_START, *(step for _, _, step in timeline.POINTS), timeline.CLIENT_FIRST]
    marks = []
    for request, spacing_ns in enumerate((1_000, 3_000, 2_000)):
        start = request * 10_000_000
        marks += [(start + i * spacing_ns, step) for i, step in enumerate(order)]
        # a mark out of order (a later request's point, another delta) is skipped, not counted
        marks.append((start + 1, timeline.CLIENT_FIRST))
    # a request cut short (no first token) is left out
    marks += [(50_000_000, timeline.CLIENT_START), (50_000_500, order[1])]
    durations, complete = timeline.steps(sorted(marks))
    assert complete == 3
    assert durations == {step: 2.0 for step in order[1:]}

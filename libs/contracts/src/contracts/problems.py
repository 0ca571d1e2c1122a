"""How a 400 names every problem of a request at once, the same way in every service.

A request with one problem keeps its plain message (``Missing required parameter: 'name'.``). With
several, the message lists them all, each as ``<param>: <problem>``, joined by ``; `` in the order of
the model's fields::

    The request has 3 problems: name: Field required; provider: unknown connection 'opneai'
    (known: anthropic, openai); tools[0]: unknown tool 'web_serch' (known: calculator, current_time).

and the error's ``param`` names the first of them (so a client reading only ``param``, as OpenAI's
SDKs do, still learns where to look).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: A problem: the parameter it is about (OpenAI's naming: ``tools[0]``, ``model_parameters.top_p``)
#: or ``None`` for the request as a whole, and what is wrong with it.
Problem = tuple[str | None, str]

#: At most this many problems are listed (the rest are counted).
MAX_LISTED = 20


def param_from_loc(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as a parameter name: ``("tools", 0)`` → ``tools[0]``. Union member
    tags (``function-after[…]``, ``str``, a model's class name) are skipped."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header") and not out:
            continue
        if isinstance(part, str) and _is_union_tag(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "bytes"})


def _is_union_tag(part: str) -> bool:
    return "[" in part or part in _SCALAR_TAGS or part[:1].isupper()


def from_pydantic(errors: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Pydantic's errors as problems (one per parameter: a union's members failing alike count once)."""
    out: list[Problem] = []
    seen: set[str | None] = set()
    for err in errors:
        param = param_from_loc(err.get("loc", ()))
        if param in seen:
            continue
        seen.add(param)
        out.append((param, str(err.get("msg", "invalid value")).removeprefix("Value error, ")))
    return out


def in_field_order(problems: Iterable[Problem], fields: Sequence[str]) -> list[Problem]:
    """``problems`` sorted by the position of their top-level field in ``fields`` (stable; others last)."""
    rank = {name: i for i, name in enumerate(fields)}

    def key(problem: Problem) -> int:
        param = problem[0] or ""
        top = param.split(".", 1)[0].split("[", 1)[0]
        return rank.get(top, len(rank))

    return sorted(problems, key=key)


def describe(problems: Sequence[Problem]) -> str:
    """The message of several problems (see the module); for one, ``<param>: <problem>``."""
    items = [f"{p}: {m}" if p else m for p, m in problems[:MAX_LISTED]]
    more = len(problems) - len(items)
    if more > 0:
        items.append(f"and {more} more")
    if len(problems) == 1:
        return items[0]
    return f"The request has {len(problems)} problems: " + "; ".join(items) + "."

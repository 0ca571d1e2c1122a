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
    tags (``function-after[…]``, ``str``, a model's class name) are skipped, and so is the tag a
    discriminated union puts before the member's fields (``content[0].input_audio.format``, not
    ``content[0].input_audio.input_audio.format``): the part after a ``tagged-union[…]`` member and its
    index, or a part repeated (OpenAI's parts are named after their ``type``)."""
    out = ""
    after_tagged = False
    previous: int | str | None = None
    for part in loc:
        if part in ("body", "query", "path", "header") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_union_tag(part):
            after_tagged = after_tagged or "tagged-union[" in part
            continue
        elif after_tagged:
            after_tagged = False  # the member's tag: the field after it is kept, whatever its name
            previous = None
            continue
        elif part != previous:
            name = shown_key(part)
            out += f".{name}" if out else name
        previous = part
    return out or None


#: A key of the client's own (a ``metadata`` key, a schema's property) is named in an error only when
#: it is short and printable: the error must not carry back what storage refuses, nor grow with it.
MAX_SHOWN_KEY = 64


def shown_key(part: str) -> str:
    return part if len(part) <= MAX_SHOWN_KEY and part.isprintable() else "…"


_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "bytes"})


def _is_union_tag(part: str) -> bool:
    return "[" in part or part in _SCALAR_TAGS or part[:1].isupper()


def from_pydantic(errors: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Pydantic's errors as problems, one per parameter. A union's members failing alike count once;
    a member the value was not even the type of (``str`` for a list of parts) is left out when another
    member got further into the value (the list, and the part inside it that is wrong)."""
    errors = members_taken(errors)
    out: list[Problem] = []
    index: dict[str | None, int] = {}
    kinds: dict[str | None, set[str]] = {}
    for err in errors:
        param = param_from_loc(err.get("loc", ()))
        kinds.setdefault(param, set()).add(str(err.get("type", "")))
        if param in index:
            if kinds[param] >= _NUMBER_TYPES:  # an int | float union: neither was given
                out[index[param]] = (param, "Input should be a valid number")
            continue
        index[param] = len(out)
        out.append((param, _message(err)))
    return out


def _message(err: Mapping[str, Any]) -> str:
    kind, ctx = err.get("type"), err.get("ctx") or {}
    if kind in ("too_long", "too_short") and isinstance(err.get("input"), str):
        # A length checked after a validator of the string: pydantic says "items", as for a list.
        most = kind == "too_long"
        limit = ctx.get("max_length" if most else "min_length")
        if isinstance(limit, int):
            return f"String should have at {'most' if most else 'least'} {limit} character{'s' * (limit != 1)}"
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


_NUMBER_TYPES = frozenset({"int_type", "float_type"})


def members_taken(errors: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``errors`` without those that only say the value is not of a union member's type, when another
    error of the same union reaches into the value (the member it is, by its shape)."""
    errors = list(errors)
    locs = [tuple(err.get("loc", ())) for err in errors]

    def passed_over(i: int) -> bool:
        loc = locs[i]
        if not loc or not isinstance(loc[-1], str) or not _is_union_tag(loc[-1]):
            return False
        if not str(errors[i].get("type", "")).endswith("_type"):
            return False
        union = loc[:-1]
        return any(len(other) > len(loc) and other[: len(union)] == union for other in locs)

    return [err for i, err in enumerate(errors) if not passed_over(i)]


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

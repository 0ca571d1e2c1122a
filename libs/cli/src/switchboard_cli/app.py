"""The ``switchboard`` commands: one per admin operation, each a thin call of :class:`AdminClient`."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
import yaml

from .client import DEFAULT_URL, AdminClient, CliError
from .output import emit

TableOpt = Annotated[bool, typer.Option("--table", help="print a table instead of JSON")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=100, help="page size")]
AfterOpt = Annotated[str | None, typer.Option("--after", help="the last id of the previous page")]

PRINCIPAL_HELP = "user:ID-OR-NAME, group:ID-OR-NAME, role:NAME or public"
#: Plain help (click's): typer's rich help shows every flag as taking a ``<bool>`` value.
HELP_MODE = None
#: What ``ledger --table`` shows of an entry (every field is in the JSON, without ``--table``): with a
#: run id of 41 characters and times to the minute it fits a 100-column terminal.
LEDGER_COLUMNS = ("created_at", "kind", "amount", "balance_after", "run_id")
#: What ``agents list --table`` shows (instructions and parameters make a row hundreds of columns wide;
#: ``agents get ID`` and the JSON show every field).
AGENT_COLUMNS = ("id", "name", "provider", "model", "tools", "owner_id")


@dataclass
class State:
    url: str
    admin_token: str | None
    table: bool
    transport: httpx.BaseTransport | None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _call(
    ctx: typer.Context,
    method: str,
    path: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    missing_ok: bool = False,
) -> Any:
    """The admin API's answer; an error message and exit 1 otherwise (``missing_ok``: None on a 404)."""
    state: State = ctx.ensure_object(State)
    if not state.admin_token:
        raise _fail("no admin token: pass --admin-token or set ADMIN_TOKEN")
    client = AdminClient(state.url, state.admin_token, transport=state.transport)
    try:
        return client.call(method, path, json=json, params=params)
    except CliError as exc:
        if missing_ok and exc.status == 404:
            return None
        raise _fail(exc.message) from exc
    finally:
        client.close()


def _show(ctx: typer.Context, value: Any, table: bool = False) -> None:
    state: State = ctx.ensure_object(State)
    emit(value, table=table or state.table)


def _seg(value: str) -> str:
    """One URL path segment (ids never smuggle a ``/``)."""
    return quote(value, safe="")


def _decimal(value: str, name: str) -> str:
    """A decimal number as the string sent (money never becomes a float), in the plain notation the
    admin API takes (``-?[0-9]+(.[0-9]+)?``): ``1E+3`` is sent as ``1000``, ``+5`` as ``5``."""
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise _fail(f"{name} must be a decimal number, got {value!r}") from None
    if not parsed.is_finite():
        raise _fail(f"{name} must be a finite decimal number")
    return format(parsed, "f")


def _page(limit: int, after: str | None, **extra: Any) -> dict[str, Any]:
    return {"limit": limit, "after": after, **extra}


def _read_mapping(file: Path) -> dict[str, Any]:
    """An agent's fields from a YAML or JSON file (JSON is YAML too)."""
    try:
        body = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {file}: {exc}") from exc
    if not isinstance(body, dict):
        raise _fail(f"{file} must hold a mapping of the agent's fields")
    return body


def _resolve(ctx: typer.Context, kind: str, ident: str) -> str:
    """The id of the user or group ``ident`` names, by id or by name; "not found" when none does, and
    an error listing the ids when a name is ambiguous."""
    path = "/users" if kind == "user" else "/groups"
    if kind == "user" and _call(ctx, "GET", f"/users/{_seg(ident)}", missing_ok=True) is not None:
        return ident  # an id: one request (groups have no such route, their list is searched)
    matches: list[str] = []
    after: str | None = None
    while True:
        page = _call(ctx, "GET", path, params=_page(100, after))
        rows = [r for r in page.get("data", []) if isinstance(r, dict)] if isinstance(page, dict) else []
        for row in rows:
            if row.get("id") == ident:
                return ident
            if row.get("name") == ident:
                matches.append(str(row.get("id")))
        if not (isinstance(page, dict) and page.get("has_more") and rows):
            break
        after = str(rows[-1].get("id"))
    if not matches:
        raise _fail(f"not found: no {kind} with the id or name {ident!r}")
    if len(matches) > 1:
        raise _fail(f"{len(matches)} {kind}s are named {ident!r} ({', '.join(matches)}): give the id")
    return matches[0]


def _date(value: Any) -> Any:
    """``2026-01-02T03:04:05.678+00:00`` as ``2026-01-02 03:04`` (UTC, as the API gives it; for narrow tables)."""
    if isinstance(value, str) and len(value) >= 16 and value[10] == "T":
        return value[:10] + " " + value[11:16]
    return value


def _columns(value: Any, columns: tuple[str, ...]) -> Any:
    """A list page reduced to ``columns`` (for ``--table``)."""
    if not (isinstance(value, dict) and isinstance(value.get("data"), list)):
        return value
    rows = [{c: _date(row.get(c)) if c.endswith("_at") else row.get(c) for c in columns} for row in value["data"]]
    return {**value, "data": rows}


def _served_rows(report: Any) -> Any:
    """The capabilities report as one row per provider, tool and MCP server (for ``--table``)."""
    if not isinstance(report, dict):
        return report
    rows = [
        {"kind": kind, "name": entry.get("name"), "runners": ", ".join(map(str, entry.get("runners") or []))}
        for kind, key in (("provider", "providers"), ("tool", "tools"), ("mcp_server", "mcp_servers"))
        for entry in report.get(key) or []
        if isinstance(entry, dict)
    ]
    return {"object": "list", "data": rows}


def build_app(transport: httpx.BaseTransport | None = None) -> typer.Typer:
    """The CLI. ``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""
    app = typer.Typer(
        name="switchboard",
        help="Operate a Switchboard deployment through its admin API.",
        no_args_is_help=True,
        rich_markup_mode=HELP_MODE,
    )

    @app.callback()
    def main(
        ctx: typer.Context,
        url: Annotated[str, typer.Option("--url", envvar="SWITCHBOARD_URL", help="the gateway")] = DEFAULT_URL,
        admin_token: Annotated[
            str | None, typer.Option("--admin-token", envvar="ADMIN_TOKEN", help="the admin token", show_default=False)
        ] = None,
        table: TableOpt = False,
    ) -> None:
        ctx.obj = State(url=url, admin_token=admin_token, table=table, transport=transport)

    users = typer.Typer(help="Users.", no_args_is_help=True)
    keys = typer.Typer(help="API keys.", no_args_is_help=True)
    agents = typer.Typer(help="Agents.", no_args_is_help=True)
    grants = typer.Typer(help="Who may use an agent.", no_args_is_help=True)
    groups = typer.Typer(help="Groups of users.", no_args_is_help=True)
    roles = typer.Typer(help="Roles and their permissions.", no_args_is_help=True)
    credits = typer.Typer(help="Credits (1,000,000 credits = 1 USD).", no_args_is_help=True)
    pricing = typer.Typer(
        help="Model prices (USD per million tokens).", no_args_is_help=True, rich_markup_mode=HELP_MODE
    )
    for sub in (users, keys, agents, grants, groups, roles, credits, pricing):
        sub.rich_markup_mode = HELP_MODE
    for sub, name in ((users, "users"), (keys, "keys"), (agents, "agents"), (grants, "grants"),
                      (groups, "groups"), (roles, "roles"), (credits, "credits"), (pricing, "pricing")):  # fmt: skip
        app.add_typer(sub, name=name)

    # --- users ------------------------------------------------------------------------------
    @users.command("create")
    def users_create(
        ctx: typer.Context,
        name: str,
        email: Annotated[str | None, typer.Option("--email")] = None,
        role: Annotated[str | None, typer.Option("--role", help="default USER")] = None,
        table: TableOpt = False,
    ) -> None:
        """Create a user."""
        body: dict[str, Any] = {"name": name, "email": email}
        if role:
            body["role"] = role
        _show(ctx, _call(ctx, "POST", "/users", json=body), table)

    @users.command("list")
    def users_list(ctx: typer.Context, limit: LimitOpt = 20, after: AfterOpt = None, table: TableOpt = False) -> None:
        """List users."""
        _show(ctx, _call(ctx, "GET", "/users", params=_page(limit, after)), table)

    @users.command("get")
    def users_get(ctx: typer.Context, user_id: str, table: TableOpt = False) -> None:
        """Show a user."""
        _show(ctx, _call(ctx, "GET", f"/users/{_seg(user_id)}"), table)

    # --- API keys ---------------------------------------------------------------------------
    @keys.command("create")
    def keys_create(
        ctx: typer.Context,
        user_id: str,
        name: str,
        expires_at: Annotated[str | None, typer.Option("--expires-at", help="ISO 8601 date-time")] = None,
        rate_limit: Annotated[int | None, typer.Option("--rate-limit", min=1, help="requests per minute")] = None,
        table: TableOpt = False,
    ) -> None:
        """Create an API key for a user. The key is printed once: store it now."""
        body: dict[str, Any] = {"name": name}
        if expires_at:
            body["expires_at"] = expires_at
        if rate_limit:
            body["rate_limit_per_minute"] = rate_limit
        created = _call(ctx, "POST", f"/users/{_seg(user_id)}/api-keys", json=body)
        _show(ctx, created, table)
        typer.echo("Store this API key now: it is shown only once and cannot be recovered.", err=True)

    @keys.command("list")
    def keys_list(
        ctx: typer.Context, user_id: str, limit: LimitOpt = 20, after: AfterOpt = None, table: TableOpt = False
    ) -> None:
        """List a user's API keys (their prefixes, never the keys)."""
        _show(ctx, _call(ctx, "GET", f"/users/{_seg(user_id)}/api-keys", params=_page(limit, after)), table)

    @keys.command("revoke")
    def keys_revoke(ctx: typer.Context, key_id: str, table: TableOpt = False) -> None:
        """Revoke an API key (it stops working on every gateway at once)."""
        answer = _call(ctx, "DELETE", f"/api-keys/{_seg(key_id)}")
        _show(ctx, answer if answer is not None else {"id": key_id, "revoked": True}, table)

    # --- agents -----------------------------------------------------------------------------
    @agents.command("create")
    def agents_create(
        ctx: typer.Context,
        file: Annotated[
            Path,
            typer.Option("-f", "--file", help="agent.yaml or agent.json", exists=True, dir_okay=False, readable=True),
        ],
        table: TableOpt = False,
    ) -> None:
        """Create an agent from a YAML or JSON file of its fields (name, provider, model, owner_id …)."""
        _show(ctx, _call(ctx, "POST", "/agents", json=_read_mapping(file)), table)

    @agents.command("list")
    def agents_list(
        ctx: typer.Context,
        owner: Annotated[str | None, typer.Option("--owner", help="only this user's agents")] = None,
        limit: LimitOpt = 20,
        after: AfterOpt = None,
        table: TableOpt = False,
    ) -> None:
        """List agents."""
        agents_page = _call(ctx, "GET", "/agents", params=_page(limit, after, owner_id=owner))
        state: State = ctx.ensure_object(State)
        _show(ctx, _columns(agents_page, AGENT_COLUMNS) if table or state.table else agents_page, table)

    @agents.command("get")
    def agents_get(ctx: typer.Context, agent_id: str, table: TableOpt = False) -> None:
        """Show an agent."""
        _show(ctx, _call(ctx, "GET", f"/agents/{_seg(agent_id)}"), table)

    @agents.command("update")
    def agents_update(
        ctx: typer.Context,
        agent_id: str,
        file: Annotated[
            Path | None,
            typer.Option("-f", "--file", help="YAML or JSON of the fields to change", dir_okay=False, readable=True),
        ] = None,
        name: Annotated[str | None, typer.Option("--name")] = None,
        description: Annotated[str | None, typer.Option("--description")] = None,
        provider: Annotated[str | None, typer.Option("--provider", help="a provider connection's name")] = None,
        model: Annotated[str | None, typer.Option("--model")] = None,
        instructions: Annotated[str | None, typer.Option("--instructions")] = None,
        tool: Annotated[
            list[str] | None, typer.Option("--tool", help="a tool the agent may call; repeat it (replaces the list)")
        ] = None,
        table: TableOpt = False,
    ) -> None:
        """Change an agent's fields (those given; flags win over the file's)."""
        body = _read_mapping(file) if file is not None else {}
        flags = {"name": name, "description": description, "provider": provider, "model": model,
                 "instructions": instructions, "tools": tool}  # fmt: skip
        body.update({k: v for k, v in flags.items() if v is not None})
        if not body:
            raise _fail("nothing to change: give --file or at least one field flag")
        _show(ctx, _call(ctx, "PATCH", f"/agents/{_seg(agent_id)}", json=body), table)

    @agents.command("delete")
    def agents_delete(ctx: typer.Context, agent_id: str, table: TableOpt = False) -> None:
        """Delete an agent."""
        answer = _call(ctx, "DELETE", f"/agents/{_seg(agent_id)}")
        _show(ctx, answer if answer is not None else {"id": agent_id, "deleted": True}, table)

    # --- grants -----------------------------------------------------------------------------
    @grants.command("add")
    def grants_add(
        ctx: typer.Context,
        agent_id: str,
        principal: Annotated[str, typer.Option("--principal", help=PRINCIPAL_HELP)],
        role: Annotated[str, typer.Option("--role", help="viewer, editor, manager or owner")],
        resource: Annotated[str, typer.Option("--resource", help="remote_agent or agent")] = "remote_agent",
        table: TableOpt = False,
    ) -> None:
        """Grant a user, group, role or everyone access to an agent."""
        kind, _, ident = principal.partition(":")
        if kind == "public" and not ident:
            principal_id = None
        elif kind in ("user", "group") and ident:
            principal_id = _resolve(ctx, kind, ident)
        elif kind == "role" and ident:
            principal_id = ident
        else:
            raise _fail(f"--principal must be {PRINCIPAL_HELP}, got {principal!r}")
        body = {"resource_type": resource, "principal_type": kind, "principal_id": principal_id, "role": role}
        _show(ctx, _call(ctx, "POST", f"/agents/{_seg(agent_id)}/grants", json=body), table)

    @grants.command("list")
    def grants_list(
        ctx: typer.Context, agent_id: str, limit: LimitOpt = 20, after: AfterOpt = None, table: TableOpt = False
    ) -> None:
        """List an agent's grants."""
        _show(ctx, _call(ctx, "GET", f"/agents/{_seg(agent_id)}/grants", params=_page(limit, after)), table)

    # --- groups and roles -------------------------------------------------------------------
    @groups.command("create")
    def groups_create(ctx: typer.Context, name: str, table: TableOpt = False) -> None:
        """Create a group."""
        _show(ctx, _call(ctx, "POST", "/groups", json={"name": name}), table)

    @groups.command("list")
    def groups_list(ctx: typer.Context, limit: LimitOpt = 20, after: AfterOpt = None, table: TableOpt = False) -> None:
        """List groups (with their members' ids)."""
        _show(ctx, _call(ctx, "GET", "/groups", params=_page(limit, after)), table)

    @groups.command("add-member")
    def groups_add_member(ctx: typer.Context, group_id: str, user_id: str, table: TableOpt = False) -> None:
        """Add a user to a group."""
        _show(ctx, _call(ctx, "POST", f"/groups/{_seg(group_id)}/members", json={"user_id": user_id}), table)

    @roles.command("set")
    def roles_set(
        ctx: typer.Context,
        role: str,
        remote_agents_use: Annotated[
            bool, typer.Option("--remote-agents-use/--no-remote-agents-use", help="may call the /v1 agent routes")
        ],
        table: TableOpt = False,
    ) -> None:
        """Set a role's permissions."""
        body = {"remote_agents_use": remote_agents_use}
        _show(ctx, _call(ctx, "PATCH", f"/roles/{_seg(role)}", json=body), table)

    # --- billing ----------------------------------------------------------------------------
    # A negative amount (``credits add u1 -1000``) is an argument, not an unknown option.
    @credits.command("add", context_settings={"ignore_unknown_options": True})
    def credits_add(
        ctx: typer.Context,
        user_id: str,
        amount: Annotated[str, typer.Argument(help="credits, a decimal; negative for an adjustment")],
        note: Annotated[str | None, typer.Option("--note")] = None,
        table: TableOpt = False,
    ) -> None:
        """Add credits to a user's balance."""
        body = {"amount": _decimal(amount, "AMOUNT"), "note": note}
        _show(ctx, _call(ctx, "POST", f"/users/{_seg(user_id)}/credits", json=body), table)

    @app.command("balance")
    def balance(ctx: typer.Context, user_id: str, table: TableOpt = False) -> None:
        """Show a user's balance."""
        _show(ctx, _call(ctx, "GET", f"/users/{_seg(user_id)}/balance"), table)

    @app.command("capabilities")
    def capabilities(ctx: typer.Context, table: TableOpt = False) -> None:
        """Show what the live runners serve: provider connections and tools, with the runners announcing each."""
        report = _call(ctx, "GET", "/capabilities")
        state: State = ctx.ensure_object(State)
        _show(ctx, _served_rows(report) if table or state.table else report, table)

    @app.command("ledger")
    def ledger(
        ctx: typer.Context,
        user_id: str,
        run_id: Annotated[str | None, typer.Option("--run-id", help="only this run's entries")] = None,
        limit: LimitOpt = 20,
        after: AfterOpt = None,
        table: TableOpt = False,
    ) -> None:
        """List a user's ledger entries."""
        params = _page(limit, after, run_id=run_id)
        entries = _call(ctx, "GET", f"/users/{_seg(user_id)}/ledger", params=params)
        state: State = ctx.ensure_object(State)
        # A table shows the columns that matter and fits a terminal; the JSON keeps every field.
        _show(ctx, _columns(entries, LEDGER_COLUMNS) if table or state.table else entries, table)

    @pricing.command("list")
    def pricing_list(ctx: typer.Context, limit: LimitOpt = 20, after: AfterOpt = None, table: TableOpt = False) -> None:
        """List model prices."""
        _show(ctx, _call(ctx, "GET", "/pricing", params=_page(limit, after)), table)

    @pricing.command("set")
    def pricing_set(
        ctx: typer.Context,
        model_key: Annotated[str, typer.Argument(help="provider/model, e.g. openai/gpt-4.1-mini")],
        input_price: Annotated[str, typer.Option("--input", help="USD per million input tokens")],
        output_price: Annotated[str, typer.Option("--output", help="USD per million output tokens")],
        cache_write: Annotated[str | None, typer.Option("--cache-write", help="default: the input price")] = None,
        cache_read: Annotated[str | None, typer.Option("--cache-read", help="default: the input price")] = None,
        table: TableOpt = False,
    ) -> None:
        """Set a model's price."""
        body: dict[str, Any] = {"input": _decimal(input_price, "--input"), "output": _decimal(output_price, "--output")}
        if cache_write is not None:
            body["cache_write"] = _decimal(cache_write, "--cache-write")
        if cache_read is not None:
            body["cache_read"] = _decimal(cache_read, "--cache-read")
        # Slashes and dots stay: the route takes the whole rest of the path as the key.
        _show(ctx, _call(ctx, "PUT", f"/pricing/{quote(model_key, safe='/')}", json=body), table)

    return app

#!/usr/bin/env python3
"""An MCP client (the official Python SDK, `mcp` 2.3.0) driving a skillbox MCP server.

    python scenarios.py --stdio "skillbox mcp --data-dir D --config C" SCENARIO...
    python scenarios.py --url http://127.0.0.1:PORT/mcp --token T SCENARIO...

Each scenario records what the client saw; the whole report is printed as one JSON
object on stdout, for the Rust integration test (tests/integration/mcp.rs) to check.
Scenarios:

  tools    list the tools (protocol 2026-07-28, tasks extension declared)
  task     call `hello` as a task: the handle, polling tasks/get to the result
  auto     call `hello` with the extension's transparent polling (call_tool returns the result)
  fails    call `hostile` with a failing case as a task: a completed task whose result is an error
  cancel   call `hostile` sleeping as a task, tasks/cancel it, poll until it is cancelled
  legacy   a client without the extension (mode="legacy"): a blocking call with progress
  errors   unknown tool, wrong types, huge arguments, unknown task id, tasks/update;
           then a good call on the same connection
  grants   call `hostile` listing its environment, with "grants" in the arguments
  approve  call `asker` (an exec the operator holds for approval): input_required with an
           elicitation, answered through tasks/update: approved (by the extension's on_input
           hook), denied (declined), and bad answers
  tampered list the tools, then append an exec rule to the manifest named by
           $SKILLBOX_MCP_TAMPER (a signed `hello`), then call `hello`: the server's trust
           policy refuses the call
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tasks_ext import (
    TERMINAL_STATUSES,
    CreateTaskResult,
    TasksExtension,
    cancel_task,
    final_result,
    get_task,
    update_task,
)


def client(ns: argparse.Namespace, mode: str, extensions: list[Any] | None = None) -> Client:
    if ns.stdio:
        argv = shlex.split(ns.stdio)
        # The SDK gives a server only a few variables of its own; pass the
        # test's SKILLBOX_MCP_* ones too.
        env = {k: v for k, v in os.environ.items() if k.startswith("SKILLBOX_MCP_")}
        env["PATH"] = os.environ.get("PATH", "")
        server: Any = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    else:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {ns.token}"},
            timeout=httpx2.Timeout(30.0, read=120.0),
        )
        server = streamable_http_client(ns.url, http_client=http)
    return Client(server, mode=mode, extensions=extensions, read_timeout_seconds=60, cache=None)


def result_json(r: types.CallToolResult) -> dict[str, Any]:
    return {
        "is_error": r.is_error,
        "text": "\n".join(c.text for c in r.content if isinstance(c, types.TextContent)),
        "structured": r.structured_content,
    }


def error_json(e: MCPError) -> dict[str, Any]:
    return {"code": e.code, "message": e.message}


async def poll(session: Any, task_id: str, seen: list[str]) -> Any:
    with anyio.fail_after(60):
        while True:
            g = await get_task(session, task_id)
            seen.append(g.status)
            if g.status in TERMINAL_STATUSES:
                return g
            await anyio.sleep((g.poll_interval_ms or 200) / 1000)


async def tools(ns: argparse.Namespace) -> dict[str, Any]:
    async with client(ns, "auto", [TasksExtension()]) as c:
        listed = await c.list_tools()
        return {
            "protocol": c.protocol_version,
            "server_tasks": TASKS in (c.server_capabilities.extensions or {}),
            "tools": {
                t.name: {"description": t.description, "input_schema": t.input_schema}
                for t in listed.tools
            },
        }


TASKS = "io.modelcontextprotocol/tasks"


async def task(ns: argparse.Namespace) -> dict[str, Any]:
    async with client(ns, "auto", [TasksExtension()]) as c:
        h = await c.session.call_tool("hello", {"name": "MCP"}, allow_claimed=True)
        if not isinstance(h, CreateTaskResult):
            return {"handle": type(h).__name__}
        seen: list[str] = []
        g = await poll(c.session, h.task_id, seen)
        again = await get_task(c.session, h.task_id)
        return {
            "handle": "task",
            "task_id": h.task_id,
            "first_status": h.status,
            "poll_interval_ms": h.poll_interval_ms,
            "seen": seen,
            "status_message": g.status_message,
            "result": result_json(final_result(g)),
            "again": again.status,
        }


async def auto(ns: argparse.Namespace) -> dict[str, Any]:
    statuses: list[str] = []
    ext = TasksExtension(on_status=lambda t: statuses.append(t.status), max_wait_seconds=60)
    async with client(ns, "auto", [ext]) as c:
        r = await c.call_tool("hello", {"name": "polling"})
        return {"result": result_json(r), "statuses": statuses}


async def fails(ns: argparse.Namespace) -> dict[str, Any]:
    async with client(ns, "auto", [TasksExtension()]) as c:
        h = await c.session.call_tool("hostile", {"case": "no-such-case"}, allow_claimed=True)
        seen: list[str] = []
        g = await poll(c.session, h.task_id, seen)
        return {"status": g.status, "result": result_json(final_result(g))}


async def cancel(ns: argparse.Namespace) -> dict[str, Any]:
    async with client(ns, "auto", [TasksExtension()]) as c:
        h = await c.session.call_tool("hostile", {"case": "sleep", "ms": 120000}, allow_claimed=True)
        await anyio.sleep(0.5)
        ack = await cancel_task(c.session, h.task_id)
        seen: list[str] = []
        g = await poll(c.session, h.task_id, seen)
        return {
            "task_id": h.task_id,
            "ack": ack.result_type,
            "status": g.status,
            "status_message": g.status_message,
        }


async def legacy(ns: argparse.Namespace) -> dict[str, Any]:
    progress: list[dict[str, Any]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "total": total, "message": message})

    async with client(ns, "legacy") as c:
        r = await c.call_tool("hostile", {"case": "progress", "steps": 4}, progress_callback=on_progress)
        return {"protocol": c.protocol_version, "result": result_json(r), "progress": progress}


async def errors(ns: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def attempt(name: str, call: Any) -> None:
        try:
            r = await call
            out[name] = {"result": result_json(r) if isinstance(r, types.CallToolResult) else str(r)}
        except MCPError as e:
            out[name] = {"error": error_json(e)}

    async with client(ns, "auto", [TasksExtension()]) as c:
        await attempt("unknown_tool", c.call_tool("no-such-tool", {}))
        await attempt("wrong_type", c.call_tool("hello", {"name": 5}))
        await attempt("unknown_field", c.call_tool("hello", {"nom": "x"}))
        await attempt("huge", c.call_tool("hello", {"name": "x" * (600 * 1024)}))
        await attempt("unknown_task", get_task(c.session, "01JUNKNOWNTASK00000000000000"))
        await attempt("not_an_id", get_task(c.session, "../../etc"))
        h = await c.session.call_tool("hello", {"name": "update"}, allow_claimed=True)
        await attempt("update", update_task(c.session, h.task_id, {"k": {"action": "accept", "content": {}}}))
        await poll(c.session, h.task_id, [])
        await attempt("cancel_ended", cancel_task(c.session, h.task_id))
        await attempt("after", c.call_tool("hello", {"name": "still serving"}))
    return out


async def grants(ns: argparse.Namespace) -> dict[str, Any]:
    """The skill sees what the operator granted, whatever the call asks for."""
    async with client(ns, "auto", [TasksExtension()]) as c:
        asked = {"case": "env", "grants": {"env": {"allow": ["SKILLBOX_MCP_SECRET"]}}}
        r = await c.call_tool("hostile", asked)
        return {"result": result_json(r)}


async def until_input(session: Any, task_id: str) -> Any:
    with anyio.fail_after(60):
        while True:
            g = await get_task(session, task_id)
            if g.status == "input_required":
                return g
            if g.status in TERMINAL_STATUSES:
                raise RuntimeError(f"task {task_id} ended ({g.status}) without asking")
            await anyio.sleep(0.05)


async def approve(ns: argparse.Namespace) -> dict[str, Any]:
    """A held call: the client sees input_required and answers through tasks/update."""
    asked: list[dict[str, Any]] = []

    async def on_input(t: Any) -> dict[str, Any]:
        asked.append(t.input_requests)
        return {key: {"action": "accept", "content": {"approve": True, "note": "from mcp"}} for key in t.input_requests}

    out: dict[str, Any] = {}
    ext = TasksExtension(on_input=on_input, max_wait_seconds=60)
    async with client(ns, "auto", [ext]) as c:
        r = await c.call_tool("asker", {"case": "exec", "program": "echo", "args": ["approved", "by", "mcp"]})
        out["approved"] = {"result": result_json(r), "asked": asked}

        h = await c.session.call_tool(
            "asker", {"case": "exec", "program": "echo", "args": ["denied"]}, allow_claimed=True
        )
        g = await until_input(c.session, h.task_id)
        out["pending"] = {"task_id": h.task_id, "input_requests": g.input_requests}
        bad: dict[str, Any] = {}
        for name, responses in {
            "unknown_key": {"bogus": {"action": "accept", "content": {"approve": True}}},
            "unknown_request": {"approval-9": {"action": "accept", "content": {"approve": True}}},
            "no_approve": {"approval-1": {"action": "accept", "content": {}}},
        }.items():
            try:
                await update_task(c.session, h.task_id, responses)
                bad[name] = "accepted"
            except MCPError as e:
                bad[name] = error_json(e)
        out["bad"] = bad
        out["still"] = (await get_task(c.session, h.task_id)).status
        await update_task(c.session, h.task_id, {"approval-1": {"action": "decline"}})
        g = await poll(c.session, h.task_id, [])
        out["denied"] = {"status": g.status, "result": result_json(final_result(g))}
        try:
            await update_task(c.session, h.task_id, {"approval-1": {"action": "accept", "content": {"approve": True}}})
            out["after_end"] = "accepted"
        except MCPError as e:
            out["after_end"] = error_json(e)
    return out


async def tampered(ns: argparse.Namespace) -> dict[str, Any]:
    async with client(ns, "auto", [TasksExtension()]) as c:
        listed = await c.session.list_tools()
        out: dict[str, Any] = {"offered": sorted(t.name for t in listed.tools)}
        with open(os.environ["SKILLBOX_MCP_TAMPER"], "a") as f:
            f.write('\n[exec]\nallow = [ { program = "rm", args = ["**"] } ]\n')
        try:
            r = await c.call_tool("hello", {"name": "after the change"})
            out["result"] = result_json(r)
        except MCPError as e:
            out["error"] = error_json(e)
    return out


SCENARIOS = {f.__name__: f for f in (tools, task, auto, fails, cancel, legacy, errors, grants, approve, tampered)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--stdio", help="server command line, shell-quoted")
    g.add_argument("--url", help="streamable HTTP endpoint")
    ap.add_argument("--token", help="bearer token for --url")
    ap.add_argument("scenario", nargs="+", choices=sorted(SCENARIOS))
    ns = ap.parse_args()
    report = {}
    for name in ns.scenario:
        report[name] = await SCENARIOS[name](ns)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    anyio.run(main)

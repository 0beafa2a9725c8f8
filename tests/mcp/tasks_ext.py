"""Client side of the MCP tasks extension (`io.modelcontextprotocol/tasks`) for the `mcp` 2.3.0 SDK.

The SDK has no tasks support of its own, only the hooks an application plugs it into;
this is that plug-in, as any application using the SDK would write it.

`mcp` 2.3.0 ships NO tasks implementation (its examples/stories/tasks README says
"Status: deferred"); it ships the generic hooks this module plugs into:

  * `mcp.client.ClientExtension`  - advertised under
    `_meta["io.modelcontextprotocol/clientCapabilities"].extensions` on every 2026-07-28 request
  * `mcp.client.ResultClaim`      - teaches `tools/call` parsing the `resultType: "task"` arm and
    calls our `resolve()` to turn the task handle into the final `CallToolResult`
  * `ClientSession.send_request`  - sends the vendor methods tasks/get, tasks/update, tasks/cancel

Wire shapes (SEP-2663, modelcontextprotocol/ext-tasks schema/draft/schema.ts):
  tools/call  -> {"resultType":"task","taskId","status","statusMessage"?,"createdAt",
                  "lastUpdatedAt","ttlMs":int|null,"pollIntervalMs"?}
  tasks/get   {taskId} -> {"resultType":"complete", <Task fields>,
                  "inputRequests"? (input_required), "result"? (completed), "error"? (failed)}
  tasks/update {taskId, inputResponses} -> {"resultType":"complete"}
  tasks/cancel {taskId}                 -> {"resultType":"complete"}
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import anyio
import mcp_types as types

from mcp.client import ClaimContext, ClientExtension, ClientSession, ResultClaim
from mcp.shared.exceptions import MCPError

logger = logging.getLogger(__name__)

TASKS_EXTENSION_ID = "io.modelcontextprotocol/tasks"
TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


# --------------------------------------------------------------------------- wire models
# `types.Result` is an MCPModel: camelCase aliases (task_id <-> taskId), `_meta` field, extra keys ignored.
class _TaskFields(types.Result):
    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None  # REQUIRED on the wire, may be null
    poll_interval_ms: int | None = None


class CreateTaskResult(_TaskFields):
    """The `tools/call` result the server returns instead of a CallToolResult."""

    result_type: Literal["task"] = "task"  # ResultClaim requires exactly Literal[<tag>]


class GetTaskResult(_TaskFields):
    """`tasks/get` result: a DetailedTask. Spec says resultType MUST be "complete"."""

    result_type: str | None = None
    input_requests: dict[str, Any] | None = None  # status == input_required
    result: dict[str, Any] | None = None  # status == completed (a CallToolResult object)
    error: dict[str, Any] | None = None  # status == failed (a JSON-RPC error object)


class TaskAck(types.Result):
    """Empty acknowledgement of tasks/update and tasks/cancel ({"resultType": "complete"})."""

    result_type: str | None = None


class TaskIdParams(types.RequestParams):
    task_id: str


class UpdateTaskParams(TaskIdParams):
    input_responses: types.InputResponses


class GetTaskRequest(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"  # -> `Mcp-Name: <taskId>` header on streamable HTTP (SEP-2663 MUST)


class UpdateTaskRequest(types.Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param = "taskId"


class CancelTaskRequest(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class TaskCancelledError(RuntimeError):
    """The task reached status "cancelled" while call_tool() was waiting for it."""

    def __init__(self, task: GetTaskResult) -> None:
        super().__init__(f"task {task.task_id} was cancelled: {task.status_message or ''}".rstrip(": "))
        self.task = task


class TaskTimeoutError(TimeoutError):
    pass


# --------------------------------------------------------------------------- raw helpers
class TaskProtocolError(ValueError):
    """The server's tasks/* answer violates SEP-2663 (raised only with strict=True)."""


async def get_task(
    session: ClientSession, task_id: str, *, timeout: float | None = None, strict: bool = True
) -> GetTaskResult:
    got = await session.send_request(
        GetTaskRequest(params=TaskIdParams(task_id=task_id)), GetTaskResult, request_read_timeout_seconds=timeout
    )
    if strict:
        if got.result_type != "complete":
            raise TaskProtocolError(f"tasks/get resultType must be 'complete', got {got.result_type!r}")
        if got.task_id != task_id:
            raise TaskProtocolError(f"tasks/get answered taskId {got.task_id!r} for {task_id!r}")
        if got.status == "input_required" and not got.input_requests:
            raise TaskProtocolError("status input_required without inputRequests")
        if got.status == "completed" and got.result is None:
            raise TaskProtocolError("status completed without result")
        if got.status == "failed" and got.error is None:
            raise TaskProtocolError("status failed without error")
    return got


async def update_task(
    session: ClientSession, task_id: str, input_responses: types.InputResponses, *, timeout: float | None = None
) -> TaskAck:
    return await session.send_request(
        UpdateTaskRequest(params=UpdateTaskParams(task_id=task_id, input_responses=input_responses)),
        TaskAck,
        request_read_timeout_seconds=timeout,
    )


async def cancel_task(session: ClientSession, task_id: str, *, timeout: float | None = None) -> TaskAck:
    return await session.send_request(
        CancelTaskRequest(params=TaskIdParams(task_id=task_id)), TaskAck, request_read_timeout_seconds=timeout
    )


def final_result(task: GetTaskResult) -> types.CallToolResult:
    """Turn a terminal tasks/get answer into what a blocking tools/call would have produced."""
    if task.status == "completed":
        if task.result is None:
            raise ValueError(f"task {task.task_id}: status completed but no `result` field")
        return types.CallToolResult.model_validate(task.result, by_name=False)
    if task.status == "failed":
        err = task.error or {}
        if "code" not in err or "message" not in err:
            raise ValueError(f"task {task.task_id}: status failed but `error` is not a JSON-RPC error: {err!r}")
        raise MCPError(code=err["code"], message=err["message"], data=err.get("data"))
    if task.status == "cancelled":
        raise TaskCancelledError(task)
    raise ValueError(f"task {task.task_id} is not terminal ({task.status})")


# --------------------------------------------------------------------------- the extension
StatusHook = Callable[[_TaskFields], Awaitable[None] | None]
# Answers a task's `inputRequests` (status input_required): the `inputResponses` to send.
InputHook = Callable[[GetTaskResult], Awaitable[dict[str, Any]]]


class TasksExtension(ClientExtension):
    """Pass to `Client(extensions=[TasksExtension()])`.

    Effects (only on a 2026-07-28 connection; under mode="legacy" the SDK drops it entirely):
      * every request carries `_meta["io.modelcontextprotocol/clientCapabilities"]["extensions"]
        ["io.modelcontextprotocol/tasks"] == {}`
      * `client.call_tool()` transparently polls a task to completion and returns its CallToolResult
      * `client.session.call_tool(..., allow_claimed=True)` returns the raw `CreateTaskResult` handle
    """

    identifier = TASKS_EXTENSION_ID

    def __init__(
        self,
        *,
        default_poll_ms: int = 500,
        min_poll_ms: int = 10,
        max_poll_ms: int = 5_000,
        max_wait_seconds: float | None = 300.0,
        cancel_on_abort: bool = True,
        on_status: StatusHook | None = None,
        on_input: InputHook | None = None,
    ) -> None:
        self.default_poll_ms = default_poll_ms
        self.min_poll_ms = min_poll_ms
        self.max_poll_ms = max_poll_ms
        self.max_wait_seconds = max_wait_seconds
        self.cancel_on_abort = cancel_on_abort
        self.on_status = on_status
        self.on_input = on_input

    def settings(self) -> dict[str, Any]:
        return {}  # spec: no settings defined, empty object == supported

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._resolve)]

    async def _notify(self, task: _TaskFields) -> None:
        if self.on_status is not None:
            maybe = self.on_status(task)
            if maybe is not None:
                await maybe

    def _interval(self, task: _TaskFields) -> float:
        ms = task.poll_interval_ms if task.poll_interval_ms is not None else self.default_poll_ms
        return max(self.min_poll_ms, min(self.max_poll_ms, ms)) / 1000.0

    async def _resolve(self, created: CreateTaskResult, ctx: ClaimContext) -> types.CallToolResult:
        return await self.wait(ctx.session, created, timeout=ctx.read_timeout_seconds)

    async def wait(
        self, session: ClientSession, created: _TaskFields, *, timeout: float | None = None
    ) -> types.CallToolResult:
        """Poll tasks/get until terminal; return the final result."""
        await self._notify(created)
        task_id = created.task_id
        current: _TaskFields = created
        try:
            with anyio.fail_after(self.max_wait_seconds):
                while True:
                    if current.status in TERMINAL_STATUSES and isinstance(current, GetTaskResult):
                        return final_result(current)
                    await anyio.sleep(self._interval(current))
                    current = await get_task(session, task_id, timeout=timeout)
                    await self._notify(current)
                    if current.status == "input_required" and isinstance(current, GetTaskResult):
                        if self.on_input is None:
                            raise TaskProtocolError(f"task {task_id} asks for input and no on_input hook answers")
                        await update_task(session, task_id, await self.on_input(current), timeout=timeout)
        except TimeoutError as exc:
            if self.cancel_on_abort:
                await self._best_effort_cancel(session, task_id)
            raise TaskTimeoutError(f"task {task_id} not terminal after {self.max_wait_seconds}s") from exc
        except anyio.get_cancelled_exc_class():
            if self.cancel_on_abort:
                with anyio.CancelScope(shield=True):
                    await self._best_effort_cancel(session, task_id)
            raise

    async def _best_effort_cancel(self, session: ClientSession, task_id: str) -> None:
        try:
            with anyio.move_on_after(5):
                await cancel_task(session, task_id)
        except Exception:
            logger.warning("tasks/cancel for %s failed", task_id, exc_info=True)

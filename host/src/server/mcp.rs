//! The Model Context Protocol server: installed skills as MCP tools, each
//! tool call a durable skillbox task.
//!
//! * `tools/list` lists the [`Catalog`]: each skill with the JSON Schema of
//!   its input and a description of what it is granted.
//! * `tools/call` checks the arguments against that schema, then spawns a
//!   task with the grants of the operator's configuration (never anything
//!   from the client). A client that declared the tasks extension
//!   (`io.modelcontextprotocol/tasks`) gets the task at once and follows it
//!   with `tasks/get` and `tasks/cancel`; the MCP task id *is* the skillbox
//!   task id, and the task's state is read from the task store on every
//!   request, so it survives a restart of the server and needs no per-session
//!   object (stateless HTTP builds a new service for every request). Any
//!   other client gets a blocking call with `notifications/progress` from
//!   the skill's progress reports; cancelling the request cancels the task.
//! * A task waiting for the operator's approval is `input_required` in
//!   `tasks/get`: each pending request is a form elicitation under the key
//!   `approval-N` (the request's number), whose form asks `approve`
//!   (boolean), `always_for_task` and a `note`. The client answers with
//!   `tasks/update`; declining or cancelling the form denies the call. The
//!   decision is recorded as `mcp:<client name and version> (through
//!   <stdio, the daemon's socket or the API token>)`. A blocking call just
//!   waits while the operator decides elsewhere.
//! * A skill's failure is a tool result with `isError: true` (the agent
//!   reads why); a protocol error is only for a bad request: an unknown
//!   tool, arguments that do not match the schema or are too large.
//!
//! Tasks spawned here are labelled `mcp/<tool>`; `tasks/get` and
//! `tasks/cancel` see only those.
//!
//! An agent runtime that starts a task on behalf of one of its sessions
//! names it in the call's `_meta` ([`META_PARENT_SESSION`], with its
//! messaging route [`META_PARENT_ROUTE`], and a [`META_LABEL`]): the relay
//! then sends the task's summary back to that session. These choose where
//! the result goes, never what the task may do.

use std::sync::Arc;

use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CreateTaskResult, DetailedTask, ElicitResult, ElicitationAction, GetTaskParams, GetTaskResult,
    Implementation, InputRequests, InputResponses, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig,
    Task as McpTask, TaskPayload, TaskStatus, Tool as McpTool, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::caps::approval::Decision;
use crate::catalog::{Catalog, Tool};
use crate::error::Error;
use crate::store::{NotifyMode, ParentRoute, StoreError, Task, TaskEvent, TaskId, TaskState};
use crate::tasks::{SpawnRequest, TaskService};

/// Largest `arguments` object of a `tools/call`, serialized.
pub const MAX_ARGUMENTS: usize = 256 * 1024;

/// How often a client should poll `tasks/get`.
const POLL_INTERVAL_MS: u64 = 500;

/// Label prefix of the tasks spawned through MCP.
pub const LABEL_PREFIX: &str = "mcp/";

/// `tools/call` `_meta` key: the caller's session, the task's parent
/// session (a string).
pub const META_PARENT_SESSION: &str = "io.skillbox/parentSession";

/// `tools/call` `_meta` key: where in the parent session's messaging
/// channel the reply goes (`{"channel", "to", "account_id"}`).
pub const META_PARENT_ROUTE: &str = "io.skillbox/parentRoute";

/// `tools/call` `_meta` key: a label for the task, after `mcp/<tool>: `.
pub const META_LABEL: &str = "io.skillbox/label";

/// Longest `_meta` string accepted.
const MAX_META_TEXT: usize = 1024;

/// Who a call is for, from its `_meta`.
struct Origin {
    parent_session: Option<String>,
    parent_route: Option<ParentRoute>,
    label: Option<String>,
}

impl Origin {
    fn from_meta(meta: &JsonObject) -> Result<Origin, ErrorData> {
        let bad = |key: &str, why: String| {
            ErrorData::invalid_params(
                format!("_meta {key:?}: {why}"),
                Some(json!({ "meta": key })),
            )
        };
        let text = |key: &str| match meta.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_META_TEXT => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(bad(
                key,
                format!("must be a non-empty string of at most {MAX_META_TEXT} bytes"),
            )),
        };
        let parent_route = match meta.get(META_PARENT_ROUTE) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| bad(META_PARENT_ROUTE, e.to_string()))?,
            ),
        };
        Ok(Origin {
            parent_session: text(META_PARENT_SESSION)?,
            parent_route,
            label: text(META_LABEL)?,
        })
    }
}

/// One MCP server over a task service. Cheap to clone: every
/// transport session (or stateless HTTP request) gets its own clone.
#[derive(Clone)]
pub struct McpServer {
    tasks: Arc<TaskService>,
    catalog: Arc<Catalog>,
}

impl McpServer {
    /// A server offering `catalog`'s skills, run as tasks of `tasks`.
    pub fn new(tasks: Arc<TaskService>, catalog: Arc<Catalog>) -> McpServer {
        McpServer { tasks, catalog }
    }

    fn tool(&self, name: &str) -> Result<&Tool, ErrorData> {
        self.catalog.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.catalog.tools().map(|t| t.name.as_str()).collect();
            ErrorData::invalid_params(
                format!(
                    "unknown tool {name:?}; this server offers: {}",
                    known.join(", ")
                ),
                Some(json!({ "tool": name })),
            )
        })
    }

    /// The MCP task behind `id`, if it is one of ours.
    fn our_task(&self, id: &str) -> Result<Task, ErrorData> {
        let unknown = || ErrorData::invalid_params(format!("unknown task: {id}"), None);
        let id: TaskId = id.parse().map_err(|_| unknown())?;
        let task = self.tasks.task(id).map_err(|e| match e {
            Error::Store(StoreError::NotFound(_)) => unknown(),
            e => internal(e),
        })?;
        let ours = task
            .spec
            .label
            .as_deref()
            .is_some_and(|l| l.starts_with(LABEL_PREFIX));
        if ours { Ok(task) } else { Err(unknown()) }
    }

    async fn spawn(
        &self,
        tool: &Tool,
        arguments: &JsonObject,
        origin: Origin,
    ) -> Result<Task, ErrorData> {
        let input = Value::Object(arguments.clone());
        tool.check_input(&input).map_err(|m| {
            ErrorData::invalid_params(
                format!(
                    "arguments of {:?} do not match its input schema: {m}",
                    tool.name
                ),
                Some(json!({ "tool": tool.name })),
            )
        })?;
        let request = SpawnRequest {
            grants: tool.grants.clone(),
            label: Some(match origin.label {
                Some(l) => format!("{LABEL_PREFIX}{}: {l}", tool.name),
                None => format!("{LABEL_PREFIX}{}", tool.name),
            }),
            parent_session: origin.parent_session,
            parent_route: origin.parent_route,
            notify: tool.config.notify.unwrap_or(NotifyMode::DoneOnly),
            notify_to: tool.config.notify_to.clone(),
            partial: tool.config.partial,
            ..SpawnRequest::new(&tool.skill, input.to_string())
        };
        // Spawning may compile the component (once): not on an I/O thread.
        let tasks = self.tasks.clone();
        let name = tool.name.clone();
        tokio::task::spawn_blocking(move || tasks.spawn(request))
            .await
            .map_err(internal)?
            .map_err(|e| match e {
                // The operator's policy, not a fault of the server: the
                // agent is told why, as for a refused capability.
                e @ (Error::Untrusted(_) | Error::NotGranted(_)) => {
                    ErrorData::invalid_request(e.to_string(), Some(json!({ "tool": name })))
                }
                e => internal(e),
            })
    }

    /// The tool result of an ended task.
    fn result(&self, task: &Task) -> Result<CallToolResult, ErrorData> {
        let n = self
            .tasks
            .notification(task.id)
            .map_err(internal)?
            .ok_or_else(|| internal(format!("task {} has not ended", task.id)))?;
        let structured = serde_json::to_value(&n).map_err(internal)?;
        let mut r = if task.state == TaskState::Succeeded {
            CallToolResult::success(vec![ContentBlock::text(n.message.clone())])
        } else {
            CallToolResult::error(vec![ContentBlock::text(n.message.clone())])
        };
        r.structured_content = Some(structured);
        Ok(r)
    }

    /// The task's pending requests for approval, each as a form
    /// elicitation under `approval-N`; empty when none is pending.
    fn input_requests(&self, task: &Task) -> Result<InputRequests, ErrorData> {
        let mut out = InputRequests::new();
        for a in self.tasks.approvals(task.id).map_err(internal)? {
            if !a.is_pending() {
                continue;
            }
            let r = &a.request;
            let because = r
                .reason
                .as_deref()
                .map(|why| format!(" The skill says: {why}."))
                .unwrap_or_default();
            let message = format!(
                "Task {} ({}) asks for approval #{}: {} {} (operator's rule {}).{because} \
                 Without a decision by {} it is denied.",
                task.id,
                task.spec.label.as_deref().unwrap_or("unlabelled"),
                a.id,
                r.capability,
                r.detail,
                r.rule,
                rfc3339(a.expires_ms),
            );
            let request = json!({
                "method": "elicitation/create",
                "params": {
                    "mode": "form",
                    "message": message,
                    "requestedSchema": {
                        "type": "object",
                        "properties": {
                            "approve": {
                                "type": "boolean",
                                "title": "Approve",
                                "description": "true lets the call go ahead; false denies it",
                            },
                            "always_for_task": {
                                "type": "boolean",
                                "title": "Always for this task",
                                "description": "also approve the task's later requests of the same rule",
                                "default": false,
                            },
                            "note": {
                                "type": "string",
                                "title": "Note",
                                "description": "why, for the skill and the record",
                                "maxLength": MAX_NOTE,
                            },
                        },
                        "required": ["approve"],
                    },
                },
            });
            let request = serde_json::from_value(request).map_err(internal)?;
            out.insert(input_key(a.id), request);
        }
        Ok(out)
    }

    /// Records the client's answers (`tasks/update`) as decisions.
    fn answer(&self, task: &Task, responses: InputResponses, by: &str) -> Result<(), ErrorData> {
        if responses.is_empty() {
            return Err(ErrorData::invalid_params(
                "tasks/update without inputResponses",
                None,
            ));
        }
        // Check every answer before recording any.
        let mut decisions = Vec::new();
        for (key, value) in responses {
            let n = key
                .strip_prefix("approval-")
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| {
                    ErrorData::invalid_params(
                        format!(
                            "unknown inputRequests key {key:?}: this server's keys are approval-N"
                        ),
                        None,
                    )
                })?;
            let result: ElicitResult = serde_json::from_value(value).map_err(|e| {
                ErrorData::invalid_params(format!("{key}: not an elicitation result: {e}"), None)
            })?;
            let content = result.content.unwrap_or(Value::Null);
            let field = |name: &str| content.get(name).filter(|v| !v.is_null());
            let approved = match result.action {
                ElicitationAction::Accept => match field("approve") {
                    Some(Value::Bool(b)) => *b,
                    _ => {
                        return Err(ErrorData::invalid_params(
                            format!("{key}: an accepted answer needs `approve` (true or false)"),
                            None,
                        ));
                    }
                },
                // Declining or cancelling the question refuses the call.
                _ => false,
            };
            let note = match field("note") {
                None => None,
                Some(Value::String(s)) if s.len() <= MAX_NOTE => Some(s.clone()),
                Some(_) => {
                    return Err(ErrorData::invalid_params(
                        format!("{key}: `note` must be a string of at most {MAX_NOTE} bytes"),
                        None,
                    ));
                }
            };
            let always_for_task = approved && field("always_for_task") == Some(&Value::Bool(true));
            decisions.push((
                n,
                Decision {
                    approved,
                    always_for_task,
                    by: by.to_string(),
                    note,
                    at_ms: 0,
                },
            ));
        }
        for (n, decision) in decisions {
            self.tasks
                .decide(task.id, Some(n), decision)
                .map_err(|e| match e {
                    Error::Store(StoreError::Conflict(m)) => ErrorData::invalid_params(m, None),
                    e => internal(e),
                })?;
        }
        Ok(())
    }

    /// `task` as an MCP task, with its result once it has ended.
    fn detailed(&self, task: &Task) -> Result<DetailedTask, ErrorData> {
        let payload = match task.state {
            // A pending request for approval is the client's to answer.
            TaskState::AwaitingApproval => {
                let input_requests = self.input_requests(task)?;
                if input_requests.is_empty() {
                    TaskPayload::Working
                } else {
                    TaskPayload::InputRequired { input_requests }
                }
            }
            TaskState::Queued | TaskState::Running | TaskState::Interrupted => TaskPayload::Working,
            TaskState::Cancelled => TaskPayload::Cancelled,
            // A skill that failed or ran out of time answered the call: its
            // result says why (`isError`), as a blocking call's would.
            TaskState::Succeeded | TaskState::Failed | TaskState::TimedOut => {
                let result = serde_json::to_value(self.result(task)?).map_err(internal)?;
                match result {
                    Value::Object(result) => TaskPayload::Completed { result },
                    _ => return Err(internal("a tool result is not an object")),
                }
            }
        };
        Ok(DetailedTask::new(mcp_task(task), payload))
    }

    /// A call without the tasks extension: runs the task to its end,
    /// reporting progress when the client asked for it; cancelling the
    /// request (or closing the connection) cancels the task.
    async fn blocking(
        &self,
        task: Task,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let token = context.meta.get_progress_token();
        let mut events = std::pin::pin!(self.tasks.subscribe(task.id, 0));
        let mut last = 0.0f64;
        let mut reports = 0u32;
        loop {
            tokio::select! {
                _ = context.ct.cancelled() => {
                    self.tasks
                        .cancel(task.id, "the MCP client cancelled the call")
                        .map_err(internal)?;
                    return Err(ErrorData::internal_error("the call was cancelled", None));
                }
                item = events.next() => match item {
                    None => break,
                    Some(Err(e)) => return Err(internal(e)),
                    Some(Ok(record)) => {
                        let (Some(token), TaskEvent::Progress { fraction, message }) =
                            (token.clone(), record.event)
                        else {
                            continue;
                        };
                        reports += 1;
                        // Progress must only grow: a fraction when the skill
                        // gives one (of 100), else the count of reports.
                        let (value, total) = match fraction {
                            Some(f) => ((f64::from(f) * 100.0).max(last), Some(100.0)),
                            None => (f64::from(reports).max(last), None),
                        };
                        last = value;
                        let mut p = ProgressNotificationParam::new(token, value).with_message(message);
                        if let Some(t) = total {
                            p = p.with_total(t);
                        }
                        // A client that went away is seen by the cancel arm.
                        let _ = context.peer.notify_progress(p).await;
                    }
                }
            }
        }
        let task = self.tasks.task(task.id).map_err(internal)?;
        self.result(&task)
    }
}

/// `inputRequests` key of approval request `n`.
fn input_key(n: u32) -> String {
    format!("approval-{n}")
}

/// Longest note of a decision.
const MAX_NOTE: usize = 512;

/// Who answers through `context`: the MCP client as it names itself, and
/// how it came in (the daemon's socket, the TCP listener's token, or the
/// stdio of `skillbox mcp`).
fn decided_by(context: &RequestContext<RoleServer>) -> String {
    let client = context.client_info().map_or_else(
        || "an unnamed client".to_string(),
        |i| {
            let name: String = i
                .name
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect();
            format!(
                "{name} {}",
                i.version
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(32)
                    .collect::<String>()
            )
        },
    );
    let channel = match context.extensions.get::<axum::http::request::Parts>() {
        None => "stdio",
        Some(parts) => parts
            .extensions
            .get::<super::approvals::Via>()
            .map_or("the daemon's socket", |v| v.0),
    };
    format!("mcp:{} (through {channel})", client.trim())
}

fn internal(e: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The task's state in words, from its latest progress report.
fn status_message(task: &Task) -> String {
    let progress = match (&task.progress_message, task.progress) {
        (Some(m), Some(f)) => format!(": {m} ({:.0}%)", f * 100.0),
        (Some(m), None) => format!(": {m}"),
        (None, Some(f)) => format!(" ({:.0}%)", f * 100.0),
        (None, None) => String::new(),
    };
    match task.state {
        TaskState::Running => format!("running{progress}"),
        TaskState::Interrupted => "interrupted by a host restart; resuming".into(),
        TaskState::AwaitingApproval => {
            format!("awaiting the operator's approval{progress}; see inputRequests")
        }
        s => s.to_string(),
    }
}

fn mcp_task(task: &Task) -> McpTask {
    let updated = task.ended_ms.or(task.started_ms).unwrap_or(task.created_ms);
    // Placeholder status: `DetailedTask::new` sets it from the payload.
    McpTask::new(
        task.id.to_string(),
        TaskStatus::Working,
        rfc3339(task.created_ms),
        rfc3339(updated),
    )
    .with_status_message(status_message(task))
    .with_poll_interval_ms(POLL_INTERVAL_MS)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("skillbox", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Each tool is a skill that runs as a sandboxed WebAssembly component with only \
             the capabilities its description lists. Calls are durable background tasks: \
             with the tasks extension a call returns a task at once (poll tasks/get); \
             without it the call blocks and reports progress.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.catalog.tools().map(mcp_tool).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<McpTool> {
        self.catalog.get(name).map(mcp_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = self.tool(&request.name)?;
        let arguments = request.arguments.unwrap_or_default();
        let size = serde_json::to_vec(&arguments).map_or(usize::MAX, |v| v.len());
        if size > MAX_ARGUMENTS {
            return Err(ErrorData::invalid_params(
                format!("arguments of {size} bytes: the limit is {MAX_ARGUMENTS}"),
                Some(json!({ "tool": tool.name, "bytes": size })),
            ));
        }
        let origin = Origin::from_meta(&context.meta)?;
        let task = self.spawn(tool, &arguments, origin).await?;
        if context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks())
        {
            return Ok(CallToolResponse::Task(CreateTaskResult::new(mcp_task(
                &task,
            ))));
        }
        Ok(self.blocking(task, &context).await?.into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let task = self.our_task(&request.task_id)?;
        Ok(GetTaskResult::new(self.detailed(&task)?))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let task = self.our_task(&request.task_id)?;
        if task.state != TaskState::AwaitingApproval {
            return Err(ErrorData::invalid_params(
                format!(
                    "task {} is {} and waits for no input: a skillbox task asks only for \
                     approvals, and has none pending",
                    task.id, task.state
                ),
                None,
            ));
        }
        let by = decided_by(&context);
        let tasks = self.clone();
        // Deciding writes to the store: not on an I/O thread.
        tokio::task::spawn_blocking(move || tasks.answer(&task, request.input_responses, &by))
            .await
            .map_err(internal)?
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let task = self.our_task(&request.task_id)?;
        if task.state.is_terminal() {
            return Err(ErrorData::invalid_params(
                format!("task {} has already ended ({})", task.id, task.state),
                None,
            ));
        }
        self.tasks
            .cancel(task.id, "cancelled through MCP tasks/cancel")
            .map_err(internal)?;
        Ok(())
    }
}

fn mcp_tool(t: &Tool) -> McpTool {
    McpTool::new(
        t.name.clone(),
        t.description.clone(),
        Arc::new(t.input_schema.clone()),
    )
}

/// The streamable-HTTP MCP service of `server`, for a router: sessions for
/// clients that start one (progress and cancellation of blocking calls on
/// their streams), stateless requests for the others (protocol
/// 2026-07-28). Every session or request gets a clone of `server`; task
/// state lives in the store. Cancelling `stop` ends every open stream.
pub fn http_service(
    server: McpServer,
    stop: tokio_util::sync::CancellationToken,
) -> rmcp::transport::StreamableHttpService<
    McpServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Default::default(),
        StreamableHttpServerConfig::default()
            .with_max_request_body_bytes(super::MAX_BODY)
            .with_cancellation_token(stop),
    )
}

/// Serves `server` on this process's stdin and stdout until the client
/// closes them (or `stop` is cancelled).
pub async fn serve_stdio(
    server: McpServer,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    use rmcp::ServiceExt;
    use rmcp::service::ServerInitializeError;
    let running = match server.serve_with_ct(rmcp::transport::stdio(), stop).await {
        Ok(r) => r,
        // A client that leaves (or a stop) before the handshake ends the
        // session like one that leaves after it.
        Err(ServerInitializeError::ConnectionClosed(_) | ServerInitializeError::Cancelled) => {
            return Ok(());
        }
        Err(e) => return Err(Error::Mcp(format!("over stdio: {e}"))),
    };
    running
        .waiting()
        .await
        .map_err(|e| Error::Mcp(format!("over stdio: {e}")))?;
    Ok(())
}

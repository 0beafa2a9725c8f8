// The client of one skillbox daemon: its MCP endpoint (`/mcp`) for the
// catalog of installed skills and for starting them, and its task API
// (`/v1/tasks…`) for looking at and cancelling tasks and for deciding
// their requests for approval.
//
// Starting goes through MCP on purpose: there the daemon checks the input
// against the skill's schema and runs it with the grants of the operator's
// catalog, never with anything the caller sends. The `_meta` of the call
// only names where the result goes (the OpenClaw session and its route).

import type { ParentRoute } from "./route.js";

/** MCP protocol revision spoken (stateless requests, tasks extension). */
export const PROTOCOL = "2026-07-28";
const TASKS_EXTENSION = "io.modelcontextprotocol/tasks";

/** One installed skill, as `tools/list` describes it. */
export interface CatalogTool {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
}

/** A skillbox task, as the task API shows it (the fields used here). */
export interface Task {
  id: string;
  spec: { skill_name: string; label?: string | null; parent_session?: string | null };
  state: string;
  created_ms: number;
  started_ms?: number | null;
  ended_ms?: number | null;
  progress?: number | null;
  progress_message?: string | null;
  cancel_requested?: boolean;
}

/** What a task asks the operator for (`request` of an approval). */
export interface ApprovalRequest {
  /** `exec`, `docker`, `write`, `net`, or `skill` for a skill's own request. */
  capability: string;
  /** The exact call, e.g. `systemctl restart myapp`. */
  detail: string;
  /** The operator's ask rule that matched, e.g. `--ask-exec 'systemctl restart *'`. */
  rule: string;
  /** The skill's own explanation, when it gave one. */
  reason?: string | null;
}

/** A decision on a request, as the daemon recorded it. */
export interface Decision {
  approved: boolean;
  always_for_task: boolean;
  /** Who decided and through which channel. */
  by: string;
  note?: string | null;
  at_ms: number;
}

/** One request for approval of a task, and its decision once given. */
export interface Approval {
  /** Its number within the task, from 1. */
  id: number;
  task_id: string;
  request: ApprovalRequest;
  attempt: number;
  requested_ms: number;
  /** When it is denied unless decided before. */
  expires_ms: number;
  decision?: Decision | null;
}

/** A decision to record (`POST /v1/tasks/{id}/approvals`). */
export interface DecideBody {
  decision: "approve" | "deny";
  /** The request's number; the task's only pending one when absent. */
  request?: number;
  always_for_task?: boolean;
  note?: string;
  /** Who decides, e.g. `openclaw:<session key>`. */
  as?: string;
}

/** A task's final notification: what the relay posts to the session. */
export interface Notification {
  message: string;
  state: string;
  summary?: string | null;
  error?: string | null;
}

/** Where a started task's result goes, and its label. */
export interface Origin {
  parentSession: string;
  parentRoute?: ParentRoute;
  label?: string;
}

/** What went wrong talking to the daemon, worded for the agent and the operator. */
export class DaemonError extends Error {
  constructor(
    message: string,
    /** HTTP status, when the daemon answered. */
    readonly status?: number,
    /** JSON-RPC error code, for MCP errors. */
    readonly code?: number,
    /** The daemon's own words, when it answered with an error body. */
    readonly reason?: string,
  ) {
    super(message);
  }
}

export const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled"]);

export class Daemon {
  private nextId = 1;

  constructor(
    readonly url: string,
    private readonly token: string,
    private readonly timeoutMs: number,
    private readonly version: string,
  ) {}

  private async request(path: string, init: RequestInit & { headers?: Record<string, string> }): Promise<Response> {
    try {
      return await fetch(this.url + path, {
        ...init,
        headers: { authorization: `Bearer ${this.token}`, ...init.headers },
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      const why = err.name === "TimeoutError" ? `no answer within ${this.timeoutMs} ms` : (err.cause?.code ?? err.message);
      throw new DaemonError(
        `the skillbox daemon at ${this.url} is not reachable (${why}); is \`skillbox serve --listen\` running?`,
      );
    }
  }

  private static async refusal(r: Response, what: string): Promise<DaemonError> {
    const body = await r.text().catch(() => "");
    if (r.status === 401) {
      return new DaemonError(
        `the skillbox daemon refused the plugin's token (HTTP 401): set plugins.entries.skillbox.config.tokenFile ` +
          `to a file holding the daemon's --token`,
        401,
      );
    }
    let message = body.trim().slice(0, 500);
    try {
      message = (JSON.parse(body) as { error?: { message?: string } }).error?.message ?? message;
    } catch {
      /* not JSON: keep the text */
    }
    return new DaemonError(`${what}: the skillbox daemon answered HTTP ${r.status}: ${message}`, r.status, undefined, message);
  }

  /** One MCP request (stateless, protocol 2026-07-28, tasks extension declared). */
  private async mcp(method: string, params: Record<string, unknown>, meta: Record<string, unknown> = {}) {
    const id = this.nextId++;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": PROTOCOL,
      "mcp-method": method,
    };
    if (typeof params.name === "string") headers["mcp-name"] = params.name;
    const body = {
      jsonrpc: "2.0",
      id,
      method,
      params: {
        ...params,
        _meta: {
          "io.modelcontextprotocol/protocolVersion": PROTOCOL,
          "io.modelcontextprotocol/clientInfo": { name: "skillbox-openclaw", version: this.version },
          "io.modelcontextprotocol/clientCapabilities": { extensions: { [TASKS_EXTENSION]: {} } },
          ...meta,
        },
      },
    };
    const r = await this.request("/mcp", { method: "POST", headers, body: JSON.stringify(body) });
    const text = await r.text();
    const message = parseMcpAnswer(text, id);
    if (message?.error) {
      throw new DaemonError(message.error.message ?? JSON.stringify(message.error), r.status, message.error.code);
    }
    if (!r.ok || !message) {
      throw new DaemonError(
        r.status === 401
          ? "the skillbox daemon refused the plugin's token (HTTP 401): set plugins.entries.skillbox.config.tokenFile " +
            "to a file holding the daemon's --token"
          : `${method}: the skillbox daemon answered HTTP ${r.status}: ${text.slice(0, 300)}`,
        r.status,
      );
    }
    return message.result as Record<string, unknown>;
  }

  /** The installed skills (the operator's catalog). */
  async tools(): Promise<CatalogTool[]> {
    const result = await this.mcp("tools/list", {});
    return (result.tools as CatalogTool[]) ?? [];
  }

  /**
   * Starts `skill` with `input` as a task for `origin`; returns the task's
   * id at once. The daemon refuses an unknown skill or input that does not
   * match the skill's schema (a DaemonError with code -32602).
   */
  async start(skill: string, input: Record<string, unknown>, origin: Origin): Promise<string> {
    const meta: Record<string, unknown> = { "io.skillbox/parentSession": origin.parentSession };
    if (origin.parentRoute) meta["io.skillbox/parentRoute"] = origin.parentRoute;
    if (origin.label) meta["io.skillbox/label"] = origin.label;
    const result = await this.mcp("tools/call", { name: skill, arguments: input }, meta);
    if (result.resultType !== "task" || typeof result.taskId !== "string") {
      throw new DaemonError(`the skillbox daemon did not answer with a task: ${JSON.stringify(result).slice(0, 300)}`);
    }
    return result.taskId;
  }

  private async json<T>(path: string, method = "GET", body?: unknown): Promise<T> {
    const r = await this.request(
      path,
      body === undefined
        ? { method }
        : { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) },
    );
    if (!r.ok) throw await Daemon.refusal(r, `${method} ${path}`);
    return (await r.json()) as T;
  }

  /** The tasks started from `session`, newest first. */
  list(session: string, limit = 20): Promise<Task[]> {
    const q = new URLSearchParams({ parent_session: session, limit: String(limit) });
    return this.json<Task[]>(`/v1/tasks?${q}`);
  }

  /** One task. */
  task(id: string): Promise<Task> {
    return this.json<Task>(`/v1/tasks/${encodeURIComponent(id)}`);
  }

  /** The final notification of an ended task. */
  notification(id: string): Promise<Notification> {
    return this.json<Notification>(`/v1/tasks/${encodeURIComponent(id)}/notification`);
  }

  /** Asks for a task's cancellation; its state as it is then. */
  cancel(id: string): Promise<Task> {
    return this.json<Task>(`/v1/tasks/${encodeURIComponent(id)}/cancel`, "POST");
  }

  /** A task's requests for approval, decided or not, oldest first. */
  approvals(id: string): Promise<Approval[]> {
    return this.json<Approval[]>(`/v1/tasks/${encodeURIComponent(id)}/approvals`);
  }

  /**
   * Records a decision on one of a task's requests; the approval as
   * recorded. The daemon refuses (409) a task that is not awaiting
   * approval, a request already decided or unknown, and a missing request
   * number while several are pending; (400) a malformed body.
   */
  decide(id: string, body: DecideBody): Promise<Approval> {
    return this.json<Approval>(`/v1/tasks/${encodeURIComponent(id)}/approvals`, "POST", body);
  }
}

interface McpMessage {
  id?: number;
  result?: unknown;
  error?: { code?: number; message?: string };
}

/** The JSON-RPC answer with `id` in a JSON or server-sent-events body. */
export function parseMcpAnswer(text: string, id: number): McpMessage | undefined {
  const candidates: string[] = [];
  if (text.trimStart().startsWith("{")) {
    candidates.push(text);
  } else {
    // SSE: events separated by blank lines, each with `data:` lines.
    for (const event of text.split(/\r?\n\r?\n/)) {
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) candidates.push(data);
    }
  }
  for (const c of candidates) {
    try {
      const m = JSON.parse(c) as McpMessage;
      if (m.id === id) return m;
    } catch {
      /* a keep-alive or partial event */
    }
  }
  return undefined;
}

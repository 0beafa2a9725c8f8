// The agent's tools: start an installed skill as a background task, look
// at the tasks started from this conversation, cancel one (and, in
// approvals.ts, relay the user's decision on a task's request).
//
// The model chooses a skill from the operator's catalog, its input and a
// label; nothing else. Grants come from the daemon's configuration, and
// the daemon checks the input against the skill's schema, so nothing the
// model sends can widen what a task may do. Tasks are scoped to the
// conversation that started them: the other tools see, cancel and
// decide for only those.

import type { AnyAgentTool, OpenClawPluginApi, OpenClawPluginToolContext } from "openclaw/plugin-sdk/plugin-entry";

import { approveTool, pendingDetails, pendingText } from "./approvals.js";
import { startDescription, startParameters } from "./catalog.js";
import { type Approval, type Daemon, DaemonError, type Task, TERMINAL } from "./daemon.js";
import { track } from "./flows.js";
import { parentRoute } from "./route.js";
import { ownTask, type Params, sessionOf, type State, text, usable } from "./shared.js";

export type { Shared, State } from "./shared.js";

/** One agent tool: its name and how it is made for a run. */
export type ToolEntry = [name: string, make: (ctx: OpenClawPluginToolContext) => AnyAgentTool];

/**
 * The tools the agent gets; `skillbox_approve` only with `approvals` (the
 * plugin's `approvals` option, on by default).
 */
export function agentTools(api: OpenClawPluginApi, s: State, approvals: boolean): ToolEntry[] {
  const tools: ToolEntry[] = [
    ["skillbox_start", (ctx) => startTool(api, s, ctx)],
    ["skillbox_tasks", (ctx) => tasksTool(s, ctx, approvals)],
    ["skillbox_cancel", (ctx) => cancelTool(s, ctx)],
  ];
  if (approvals) tools.push(["skillbox_approve", (ctx) => approveTool(s, ctx)]);
  return tools;
}

/** The pending requests of the tasks awaiting approval, by task id. */
async function pendingOf(daemon: Daemon, tasks: Task[]): Promise<Map<string, Approval[]>> {
  const waiting = tasks.filter((t) => t.state === "awaiting_approval");
  const lists = await Promise.all(waiting.map((t) => daemon.approvals(t.id)));
  return new Map(waiting.map((t, i) => [t.id, lists[i]!.filter((a) => !a.decision)]));
}

function pct(task: Task): string {
  return typeof task.progress === "number" ? ` ${Math.round(task.progress * 100)}%` : "";
}

function line(task: Task): string {
  const label = task.spec.label ? ` (${task.spec.label.replace(/^mcp\/[^:]*:?\s*/, "")})` : "";
  const what = task.progress_message && !TERMINAL.has(task.state) ? `: ${task.progress_message}` : "";
  return `${task.id}  ${task.spec.skill_name}${label}  ${task.state}${pct(task)}${what}`;
}

/** `skillbox_start`: the catalog's skills, started as background tasks. */
export function startTool(api: OpenClawPluginApi, s: State, ctx: OpenClawPluginToolContext): AnyAgentTool {
  const { tools, error } = "broken" in s ? { tools: [], error: s.broken } : s.freshCatalog();
  const unavailable = error && tools.length === 0 ? error : undefined;
  return {
    name: "skillbox_start",
    label: "skillbox: start a background task",
    description: startDescription(tools, unavailable),
    parameters: startParameters(tools) as unknown as AnyAgentTool["parameters"],
    async execute(_toolCallId: string, raw: unknown) {
      const t0 = performance.now();
      const rt = usable(s);
      const p = (raw ?? {}) as Params;
      const skill = typeof p.skill === "string" ? p.skill.trim() : "";
      if (!skill) throw new Error('"skill" is required: the name of an installed skillbox skill');
      const input = p.input ?? {};
      if (typeof input !== "object" || input === null || Array.isArray(input)) {
        throw new Error(`"input" must be a JSON object (the skill's input), not ${JSON.stringify(input)}`);
      }
      const label = typeof p.label === "string" && p.label.trim() ? p.label.trim().slice(0, 200) : undefined;
      const session = sessionOf(ctx);
      if (!rt.catalog.tools.some((t) => t.name === skill)) await rt.refreshCatalog();
      const names = rt.catalog.tools.map((t) => t.name);
      if (!names.includes(skill)) {
        throw new Error(
          `skillbox has no skill ${JSON.stringify(skill)} installed; no task was started. ` +
            (names.length ? `Installed: ${names.join(", ")}.` : "No skill is installed."),
        );
      }
      const route = parentRoute(ctx.deliveryContext);
      let id: string;
      try {
        id = await rt.daemon.start(skill, input as Params, {
          parentSession: session,
          ...(route ? { parentRoute: route } : {}),
          ...(label ? { label } : {}),
        });
      } catch (e) {
        // -32602: input the skill's schema refuses; -32600: a start the
        // operator's policy refuses (a skill not trusted, or changed since
        // it was signed; capabilities not granted).
        if (e instanceof DaemonError && (e.code === -32602 || e.code === -32600)) {
          throw new Error(`skillbox refused to start ${skill}: ${e.message}. No task was started.`);
        }
        throw e;
      }
      const spawnMs = performance.now() - t0;
      // The TaskFlow record is a view: the answer does not wait for it, and
      // without it the task runs and reports back all the same.
      track(api, ctx, id, label ? `${skill}: ${label}` : `skillbox ${skill}`).catch((e: Error) =>
        api.logger.warn(`skillbox: no TaskFlow record for task ${id}: ${e.message}`),
      );
      return text(
        `Started ${skill}${label ? ` (${label})` : ""} in the background as skillbox task ${id}. ` +
          "I will post the result here when it ends.",
        {
          task: { id, skill, label: label ?? null, state: "queued", parentSession: session, route: route ?? null },
          timing: { spawnMs: Math.round(spawnMs * 10) / 10 },
        },
      );
    },
  };
}

/**
 * `skillbox_tasks`: this conversation's tasks, or one task with its result;
 * a task awaiting approval with what it asks (and, with `canDecide`, how
 * to relay the user's decision).
 */
export function tasksTool(s: State, ctx: OpenClawPluginToolContext, canDecide = true): AnyAgentTool {
  return {
    name: "skillbox_tasks",
    label: "skillbox: tasks",
    description:
      "List the skillbox background tasks started from this conversation (newest first), or, given `task`, " +
      "show one: its state, latest progress, its result once it ended, and, while it awaits approval, " +
      "exactly what it asks. Results are posted here automatically; use this when the user asks, or when " +
      "skillbox says a task is awaiting approval.",
    parameters: {
      type: "object",
      additionalProperties: false,
      properties: { task: { type: "string", description: "A task id from skillbox_start." } },
    } as unknown as AnyAgentTool["parameters"],
    async execute(_toolCallId: string, raw: unknown) {
      const { daemon } = usable(s);
      const p = (raw ?? {}) as Params;
      if (p.task === undefined || p.task === null || p.task === "") {
        const tasks = await daemon.list(sessionOf(ctx));
        const pending = await pendingOf(daemon, tasks);
        const now = Date.now();
        const shown = (t: Task) => {
          const asks = pendingText(t.id, pending.get(t.id) ?? [], now, canDecide);
          return asks ? `${line(t)}\n${asks}` : line(t);
        };
        const body = tasks.length ? tasks.map(shown).join("\n") : "No skillbox task was started from this conversation.";
        return text(body, {
          tasks: tasks.map((t) => ({
            id: t.id,
            skill: t.spec.skill_name,
            state: t.state,
            ...(pending.has(t.id) ? { approvals: pendingDetails(pending.get(t.id)!) } : {}),
          })),
        });
      }
      const task = await ownTask(daemon, ctx, p.task);
      const pending = (await pendingOf(daemon, [task])).get(task.id);
      let more = "";
      if (TERMINAL.has(task.state)) more = `\n\n${(await daemon.notification(task.id)).message}`;
      const asks = pending ? pendingText(task.id, pending, Date.now(), canDecide) : "";
      if (asks) more = `\n${asks}`;
      return text(`${line(task)}${more}`, {
        task: {
          id: task.id,
          skill: task.spec.skill_name,
          state: task.state,
          progress: task.progress ?? null,
          ...(pending ? { approvals: pendingDetails(pending) } : {}),
        },
      });
    },
  };
}

/** `skillbox_cancel`: cancels a task of this conversation. */
export function cancelTool(s: State, ctx: OpenClawPluginToolContext): AnyAgentTool {
  return {
    name: "skillbox_cancel",
    label: "skillbox: cancel a task",
    description:
      "Cancel a skillbox background task started from this conversation. Its result (cancelled) is posted " +
      "here like any other.",
    parameters: {
      type: "object",
      additionalProperties: false,
      required: ["task"],
      properties: { task: { type: "string", description: "A task id from skillbox_start." } },
    } as unknown as AnyAgentTool["parameters"],
    async execute(_toolCallId: string, raw: unknown) {
      const { daemon } = usable(s);
      const task = await ownTask(daemon, ctx, ((raw ?? {}) as Params).task);
      if (TERMINAL.has(task.state)) {
        throw new Error(`task ${task.id} has already ended (${task.state}); nothing to cancel`);
      }
      const after = await daemon.cancel(task.id);
      return text(`Cancelling skillbox task ${task.id} (${task.spec.skill_name}): ${after.state}.`, {
        task: { id: task.id, state: after.state },
      });
    },
  };
}

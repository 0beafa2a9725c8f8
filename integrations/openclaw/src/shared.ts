// What every agent tool uses: the state shared by the registrations of one
// configuration, the conversation a tool call comes from, the tasks that
// conversation started, and the shape of a tool's answer.
//
// A tool sees and acts on the tasks of its own conversation only: a task
// records the session key of the conversation that started it, and every
// tool that names a task checks it here.

import type { OpenClawPluginToolContext } from "openclaw/plugin-sdk/plugin-entry";

import { type CatalogTool, type Daemon, DaemonError, type Task } from "./daemon.js";

/** What the tools of every registration of one configuration share. */
export interface Shared {
  daemon: Daemon;
  /** The catalog as last read (`error` when that read failed). */
  catalog: { tools: CatalogTool[]; readAt: number; error?: string };
  /** Reads the catalog again (one read at a time). */
  refreshCatalog(): Promise<void>;
  /** The catalog, read again in the background when it is old. */
  freshCatalog(): Shared["catalog"];
}

/** The tools' view of the plugin: working, or why not. */
export type State = Shared | { broken: string };

export type Params = Record<string, unknown>;

/** A tool's answer: text for the model, details for the transcript. */
export function text(t: string, details: Record<string, unknown>) {
  return { content: [{ type: "text" as const, text: t }], details };
}

/** The working plugin, or the reason it is not configured, as a tool error. */
export function usable(s: State): Shared {
  if ("broken" in s) throw new Error(`the skillbox plugin is not configured: ${s.broken}`);
  return s;
}

/** The conversation's session key. */
export function sessionOf(ctx: OpenClawPluginToolContext): string {
  const key = ctx.sessionKey?.trim();
  if (!key) throw new Error("this run has no session key, so skillbox could not post a task's result back to it");
  return key;
}

/** A task of this conversation, or a clear refusal. */
export async function ownTask(daemon: Daemon, ctx: OpenClawPluginToolContext, id: unknown): Promise<Task> {
  if (typeof id !== "string" || !/^[0-9A-Za-z]{26}$/.test(id.trim())) {
    throw new Error(`"task" must be a skillbox task id (26 letters and digits, as skillbox_start returned), not ${JSON.stringify(id)}`);
  }
  let task: Task;
  try {
    task = await daemon.task(id.trim());
  } catch (e) {
    if (e instanceof DaemonError && e.status === 404) throw new Error(`skillbox has no task ${id}`);
    throw e;
  }
  if (task.spec.parent_session !== sessionOf(ctx)) {
    throw new Error(`task ${id} was not started from this conversation`);
  }
  return task;
}

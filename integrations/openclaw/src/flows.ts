// skillbox tasks mirrored as OpenClaw TaskFlow records, so they show
// where OpenClaw users look for background work (`openclaw tasks flow
// list|show`, `openclaw tasks audit`, `openclaw status`), kept in step with
// the task: running (with its latest progress as the current step),
// waiting while it awaits approval, then succeeded, failed or cancelled.
// Cancelling the flow in OpenClaw (`openclaw tasks flow cancel`) cancels
// the task.
//
// Why flows and not task records (`openclaw tasks list`, `/tasks`): the
// plugin SDK of OpenClaw 2026.9.6 lets a tool plugin create a task record
// only inside a managed flow (`runTask`, status queued or running) and
// offers no call to end one; the calls that finish task records belong to
// the agent-harness task runtime, which needs a host-issued harness scope.
// A record the plugin could not end would stay `running` and be reported
// `lost`; a flow the plugin owns can be ended.
//
// The mirror is only a view: skillbox's store is the truth and its relay
// posts the summary. The flows' notify policy is `silent` so that OpenClaw
// does not announce their end a second time. Which flow belongs to which
// task is kept in files in OpenClaw's state directory (see EntryStore), so
// the mirror survives a gateway restart, and the tools of any plugin
// registration and the one service share it.

import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import type { OpenClawPluginApi, OpenClawPluginToolContext } from "openclaw/plugin-sdk/plugin-entry";

import { type Daemon, DaemonError, type Task, TERMINAL } from "./daemon.js";

const CONTROLLER = "skillbox";

/** One mirrored task. */
export interface Entry {
  taskId: string;
  flowId: string;
  sessionKey: string;
  requesterOrigin?: OpenClawPluginToolContext["deliveryContext"];
}

/** The current step shown for a running task. */
export function stepOf(task: Pick<Task, "state" | "progress" | "progress_message">): string {
  const pct = typeof task.progress === "number" ? ` (${Math.round(task.progress * 100)}%)` : "";
  if (task.state === "running" && task.progress_message) return `${task.progress_message}${pct}`;
  if (task.state === "interrupted") return "interrupted by a skillbox restart; resuming";
  if (task.state === "awaiting_approval") return "awaiting approval (skillbox_tasks shows the request)";
  return `${task.state}${pct}`;
}

type Api = OpenClawPluginApi;

/**
 * The mirrored tasks: one small JSON file per task in the plugin's
 * directory of OpenClaw's state dir (`~/.openclaw/plugins/skillbox/flows`).
 * One file each, written whole and renamed into place, so the tools of
 * any registration and the service never race on a shared file.
 * (OpenClaw's keyed plugin store is for trusted plugins only: a plugin
 * installed from a path may not open it.)
 */
export class EntryStore {
  constructor(private readonly dir: string) {}

  static of(api: Api): EntryStore {
    return new EntryStore(join(api.runtime.state.resolveStateDir(), "plugins", "skillbox", "flows"));
  }

  private path(taskId: string): string {
    if (!/^[0-9A-Za-z]+$/.test(taskId)) throw new Error(`not a task id: ${taskId}`);
    return join(this.dir, `${taskId}.json`);
  }

  register(e: Entry): void {
    mkdirSync(this.dir, { recursive: true });
    const tmp = `${this.path(e.taskId)}.tmp`;
    writeFileSync(tmp, JSON.stringify(e));
    renameSync(tmp, this.path(e.taskId));
  }

  entries(): Entry[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    return names
      .filter((n) => n.endsWith(".json"))
      .flatMap((n) => {
        try {
          return [JSON.parse(readFileSync(join(this.dir, n), "utf8")) as Entry];
        } catch {
          return [];
        }
      });
  }

  delete(taskId: string): void {
    rmSync(this.path(taskId), { force: true });
  }
}

/** A flow for a task just started from the conversation of `ctx`; its id. */
export async function track(api: Api, ctx: OpenClawPluginToolContext, taskId: string, goal: string): Promise<string> {
  const flows = api.runtime.tasks.async.managedFlows.fromToolContext(ctx);
  const flow = await flows.createManaged({
    controllerId: CONTROLLER,
    goal,
    status: "running",
    notifyPolicy: "silent",
    currentStep: "queued",
    stateJson: { skillboxTask: taskId },
  });
  EntryStore.of(api).register({
    taskId,
    flowId: flow.flowId,
    sessionKey: flows.sessionKey,
    ...(ctx.deliveryContext ? { requesterOrigin: ctx.deliveryContext } : {}),
  });
  return flow.flowId;
}

/** Brings every mirrored flow in step with its task. */
export class FlowMirror {
  private busy = false;

  constructor(
    private readonly api: Api,
    private readonly daemon: Daemon,
  ) {}

  /** One pass over the mirrored tasks; never throws. */
  async sync(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const store = EntryStore.of(this.api);
      for (const e of store.entries()) {
        try {
          if (await this.syncOne(e)) store.delete(e.taskId);
        } catch (err) {
          // The daemon may be down or restarting: try again next time.
          if (!(err instanceof DaemonError) || err.status !== undefined) {
            this.api.logger.warn(`skillbox: mirroring task ${e.taskId}: ${(err as Error).message}`);
          }
        }
      }
    } catch (err) {
      this.api.logger.warn(`skillbox: reading the mirrored tasks: ${(err as Error).message}`);
    } finally {
      this.busy = false;
    }
  }

  /** One task; true once its flow has ended (or is gone). */
  private async syncOne(e: Entry): Promise<boolean> {
    const bind = { sessionKey: e.sessionKey, ...(e.requesterOrigin ? { requesterOrigin: e.requesterOrigin } : {}) };
    const flows = this.api.runtime.tasks.async.managedFlows.bindSession(bind);
    const flow = await flows.get(e.flowId);
    if (!flow || ["succeeded", "failed", "cancelled", "lost"].includes(flow.status)) {
      // Ended or removed in OpenClaw: cancel the task if that is what was asked.
      if (flow?.status === "cancelled") await this.cancelTask(e.taskId);
      return true;
    }
    let task: Task;
    try {
      task = await this.daemon.task(e.taskId);
    } catch (err) {
      if (err instanceof DaemonError && err.status === 404) {
        await flows.fail({
          flowId: e.flowId,
          expectedRevision: flow.revision,
          blockedSummary: "the skillbox task no longer exists (deleted from its store)",
        });
        return true;
      }
      throw err;
    }
    if (flow.cancelRequestedAt && !TERMINAL.has(task.state) && !task.cancel_requested) {
      await this.cancelTask(e.taskId);
    }
    const stateJson = { skillboxTask: e.taskId, state: task.state };
    switch (task.state) {
      case "succeeded": {
        const r = await flows.finish({ flowId: e.flowId, expectedRevision: flow.revision, stateJson });
        return r.applied;
      }
      case "failed":
      case "timed_out": {
        const n = await this.daemon.notification(e.taskId).catch(() => undefined);
        const r = await flows.fail({
          flowId: e.flowId,
          expectedRevision: flow.revision,
          stateJson,
          blockedSummary: (n?.error ?? task.state).slice(0, 500),
        });
        return r.applied;
      }
      case "cancelled": {
        const r = await this.api.runtime.tasks.managedFlows
          .bindSession(bind)
          .cancel({ flowId: e.flowId, cfg: this.api.config });
        return r.found ? r.cancelled || flowEnded(await flows.get(e.flowId)) : true;
      }
      case "awaiting_approval": {
        const step = stepOf(task);
        if (step !== flow.currentStep || flow.status !== "waiting") {
          await flows.setWaiting({ flowId: e.flowId, expectedRevision: flow.revision, currentStep: step, stateJson });
        }
        return false;
      }
      default: {
        const step = stepOf(task);
        if (step !== flow.currentStep || flow.status === "waiting") {
          await flows.resume({
            flowId: e.flowId,
            expectedRevision: flow.revision,
            status: "running",
            currentStep: step,
            stateJson,
          });
        }
        return false;
      }
    }
  }

  private async cancelTask(taskId: string): Promise<void> {
    try {
      await this.daemon.cancel(taskId);
    } catch (err) {
      this.api.logger.warn(`skillbox: cancelling task ${taskId} for its cancelled flow: ${(err as Error).message}`);
    }
  }
}

function flowEnded(flow: { status: string } | undefined): boolean {
  return !flow || ["succeeded", "failed", "cancelled", "lost"].includes(flow.status);
}

// skillbox for OpenClaw: the agent starts an operator-installed skillbox
// skill as a sandboxed, durable background task from the conversation,
// answers at once, and the task's summary comes back into the same
// conversation through skillbox's relay (`/hooks/agent`) when it ends.
//
// Registers four tools (skillbox_start, skillbox_tasks, skillbox_cancel,
// and skillbox_approve unless the configuration says `approvals: false`),
// built per run from the daemon's catalog, and one service that keeps
// that catalog fresh and mirrors running tasks as TaskFlow records.
//
// OpenClaw registers a plugin more than once (the live registry, tool
// discovery, reloads), and only the live one runs services: the daemon
// client and its catalog are shared by all registrations of one
// configuration, and the flow mirror's state is in OpenClaw's keyed store.

import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

import { approvalsOn, ConfigError, configSchema, resolveConfig, type SkillboxConfig } from "./config.js";
import { Daemon } from "./daemon.js";
import { FlowMirror } from "./flows.js";
import { agentTools, type Shared } from "./tools.js";

const VERSION = "0.1.0";
/** How long a catalog is used before it is read again. */
const CATALOG_TTL_MS = 30_000;

const shared = new Map<string, Shared>();

function sharedFor(cfg: SkillboxConfig): Shared {
  const key = `${cfg.url}\n${cfg.token}\n${cfg.timeoutMs}`;
  let s = shared.get(key);
  if (!s) {
    const daemon = new Daemon(cfg.url, cfg.token, cfg.timeoutMs, VERSION);
    let reading: Promise<void> | undefined;
    const it: Shared = {
      daemon,
      catalog: { tools: [], readAt: 0 },
      refreshCatalog() {
        reading ??= daemon
          .tools()
          .then((tools) => {
            it.catalog = { tools, readAt: Date.now() };
          })
          .catch((e: Error) => {
            it.catalog = { tools: it.catalog.tools, readAt: Date.now(), error: e.message };
          })
          .finally(() => {
            reading = undefined;
          });
        return reading;
      },
      freshCatalog() {
        if (Date.now() - it.catalog.readAt > CATALOG_TTL_MS) void it.refreshCatalog();
        return it.catalog;
      },
    };
    s = it;
    shared.set(key, s);
  }
  return s;
}

export default definePluginEntry({
  id: "skillbox",
  name: "skillbox",
  description:
    "Run operator-installed skillbox skills as sandboxed, durable background tasks; their results come back " +
    "into the conversation that started them.",
  configSchema: { jsonSchema: configSchema as unknown as Record<string, unknown> },
  register(api) {
    let s: Shared | { broken: string };
    try {
      const cfg = resolveConfig(api.pluginConfig);
      const it = sharedFor(cfg);
      s = it;
      const timers: NodeJS.Timeout[] = [];
      api.registerService({
        id: "skillbox",
        async start(ctx) {
          await it.refreshCatalog();
          if (it.catalog.error) ctx.logger.warn(`skillbox: ${it.catalog.error}`);
          else ctx.logger.info(`skillbox: ${it.catalog.tools.length} skill(s) from ${cfg.url}`);
          const mirror = new FlowMirror(api, it.daemon);
          timers.push(setInterval(() => void mirror.sync(), cfg.syncIntervalMs));
          for (const t of timers) t.unref();
        },
        stop() {
          for (const t of timers.splice(0)) clearInterval(t);
        },
      });
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      s = { broken: e.message };
      if (api.registrationMode === "full") api.logger.error(`skillbox: ${e.message}`);
    }
    for (const [name, make] of agentTools(api, s, approvalsOn(api.pluginConfig))) {
      api.registerTool(make, { name });
    }
  },
});

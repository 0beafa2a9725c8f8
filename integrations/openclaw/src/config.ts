// The plugin's configuration (`plugins.entries.skillbox.config` in the
// gateway's config): which skillbox daemon, its bearer token, and whether
// the agent may relay the user's decisions on a task's requests for
// approval.
//
// The daemon serves its task API and its MCP endpoint only on loopback
// (`skillbox serve --listen 127.0.0.1:PORT --token T`), so the plugin talks
// to loopback only, and says so when configured otherwise.

import { readFileSync } from "node:fs";

/** The resolved configuration. */
export interface SkillboxConfig {
  /** The daemon's base URL, e.g. `http://127.0.0.1:8750`. */
  url: string;
  /** Its bearer token. */
  token: string;
  /** Longest wait for one request to the daemon. */
  timeoutMs: number;
  /** How often task state is mirrored into OpenClaw's TaskFlow records. */
  syncIntervalMs: number;
  /** Whether the agent gets `skillbox_approve`. */
  approvals: boolean;
}

/** The JSON Schema of the configuration, as the manifest declares it. */
export const configSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    url: {
      type: "string",
      description:
        "The skillbox daemon on loopback: `skillbox serve --listen 127.0.0.1:8750` serves http://127.0.0.1:8750.",
    },
    token: { type: "string", description: "The daemon's bearer token (--token); prefer tokenFile." },
    tokenFile: { type: "string", description: "A file holding the daemon's bearer token." },
    timeoutMs: { type: "integer", minimum: 100, description: "Longest wait for the daemon (default 10000)." },
    syncIntervalMs: {
      type: "integer",
      minimum: 100,
      description: "How often task state is mirrored into TaskFlow records (default 1000).",
    },
    approvals: {
      type: "boolean",
      description:
        "Give the agent skillbox_approve, to relay the user's decision on a task's request for approval " +
        "(default true). With false, requests are decided only outside OpenClaw (skillbox tasks approve/deny).",
    },
  },
} as const;

const DEFAULT_URL = "http://127.0.0.1:8750";

/** A configuration problem, worded for the operator. */
export class ConfigError extends Error {}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Whether the agent gets `skillbox_approve`: on unless `approvals` is
 * `false`. Read on its own too, so that a configuration that fails
 * otherwise still decides which tools there are.
 */
export function approvalsOn(raw: Record<string, unknown> | undefined): boolean {
  return raw?.approvals !== false;
}

/**
 * Resolves the plugin's configuration: `url` (default
 * http://127.0.0.1:8750), the token from `token`, `tokenFile` or the
 * environment variable `SKILLBOX_TOKEN`.
 */
export function resolveConfig(
  raw: Record<string, unknown> | undefined,
  env: NodeJS.ProcessEnv = process.env,
): SkillboxConfig {
  const cfg = raw ?? {};
  const url = typeof cfg.url === "string" && cfg.url.trim() ? cfg.url.trim().replace(/\/+$/, "") : DEFAULT_URL;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`plugins.entries.skillbox.config.url ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== "http:" || !isLoopback(parsed.hostname)) {
    throw new ConfigError(
      `plugins.entries.skillbox.config.url ${JSON.stringify(url)}: the skillbox daemon listens on loopback ` +
        "only (skillbox serve --listen 127.0.0.1:PORT); use http://127.0.0.1:PORT",
    );
  }
  let token: string | undefined;
  if (typeof cfg.token === "string" && cfg.token) token = cfg.token;
  if (typeof cfg.tokenFile === "string" && cfg.tokenFile) {
    if (token) throw new ConfigError("give the skillbox token as `token` or `tokenFile`, not both");
    try {
      token = readFileSync(cfg.tokenFile, "utf8").replace(/[\r\n]+$/, "");
    } catch (e) {
      throw new ConfigError(`the skillbox token file ${cfg.tokenFile}: ${(e as Error).message}`);
    }
  }
  token ??= env.SKILLBOX_TOKEN;
  if (!token) {
    throw new ConfigError(
      "no skillbox token: set plugins.entries.skillbox.config.tokenFile (or token), or SKILLBOX_TOKEN in the " +
        "gateway's environment, to the daemon's --token",
    );
  }
  const int = (v: unknown, dflt: number) => (typeof v === "number" && Number.isInteger(v) && v >= 100 ? v : dflt);
  return {
    url,
    token,
    timeoutMs: int(cfg.timeoutMs, 10_000),
    syncIntervalMs: int(cfg.syncIntervalMs, 1_000),
    approvals: approvalsOn(cfg),
  };
}

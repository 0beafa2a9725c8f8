// The operator's catalog of installed skills, as the agent sees it: the
// description and parameter schema of the start tool are made from the
// daemon's `tools/list` (each skill's description, grants and input
// schema), so an installed skill appears with its real parameters.

import type { CatalogTool } from "./daemon.js";

/** The longest part of a skill's description put in the tool's description. */
const MAX_SKILL_DESCRIPTION = 800;

/** Schema keywords dropped for the model's tool surface (see `forModel`). */
const DROPPED = new Set(["$schema", "$id", "$defs", "definitions", "format"]);

/**
 * A skill's input schema as a self-contained schema for the agent's tool
 * parameters: local `$ref`s (`#/$defs/…`, `#/definitions/…`) are inlined,
 * since the schema is nested inside the start tool's parameters where
 * those references would dangle; `format` annotations are dropped, as
 * schema checkers on the way reject formats they do not know (a Rust
 * skill's `uint64`). The daemon still checks the input against the skill's
 * own, complete schema.
 */
export function forModel(schema: Record<string, unknown>): Record<string, unknown> {
  const defs = {
    ...((schema.definitions as Record<string, unknown>) ?? {}),
    ...((schema.$defs as Record<string, unknown>) ?? {}),
  };
  const walk = (node: unknown, seen: readonly string[]): unknown => {
    if (Array.isArray(node)) return node.map((n) => walk(n, seen));
    if (node === null || typeof node !== "object") return node;
    const obj = node as Record<string, unknown>;
    const ref = typeof obj.$ref === "string" ? /^#\/(?:\$defs|definitions)\/(.+)$/.exec(obj.$ref) : null;
    const out: Record<string, unknown> = {};
    if (ref) {
      const name = decodeURIComponent(ref[1]!.replace(/~1/g, "/").replace(/~0/g, "~"));
      const target = defs[name];
      // A recursive definition cannot be inlined: any value there.
      if (target !== undefined && !seen.includes(name)) {
        Object.assign(out, walk(target, [...seen, name]) as Record<string, unknown>);
      }
    }
    for (const [k, v] of Object.entries(obj)) {
      if (k === "$ref" || DROPPED.has(k)) continue;
      // Property names are data, not keywords: keep them all.
      out[k] = k === "properties" && v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([p, s]) => [p, walk(s, seen)]))
        : walk(v, seen);
    }
    return out;
  };
  return walk(schema, []) as Record<string, unknown>;
}

function clip(text: string, max: number): string {
  const t = text.trim();
  return t.length <= max ? t : `${t.slice(0, max - 1)}…`;
}

/** The start tool's description: what it does, then every installed skill. */
export function startDescription(tools: CatalogTool[], unavailable?: string): string {
  const head =
    "Start an installed skillbox skill as a sandboxed background task and return at once with its task id. " +
    "Use it for long, multi-step or side-effecting jobs (upgrades, backups, builds, diagnostics): the task runs " +
    "outside this turn with only the capabilities the operator granted the skill (nothing in the call can add " +
    "any), and its summary is posted back into this conversation when it ends. Answer the user with the line " +
    "this tool returns; do not wait or poll.";
  if (unavailable) return `${head}\n\nThe skill catalog is unavailable right now: ${unavailable}`;
  if (tools.length === 0) return `${head}\n\nNo skill is installed.`;
  const skills = tools.map((t) => `- ${t.name}: ${clip(t.description, MAX_SKILL_DESCRIPTION).replace(/\n+/g, " ")}`);
  return `${head}\n\nInstalled skills (pass the name as \`skill\`, and \`input\` matching that skill's schema):\n${skills.join("\n")}`;
}

/** The start tool's parameters: `skill` (one of the catalog), `input` (its schema), `label`. */
export function startParameters(tools: CatalogTool[]): Record<string, unknown> {
  const skill: Record<string, unknown> = { type: "string", description: "The installed skill to run." };
  const input: Record<string, unknown> = {
    type: "object",
    description: "The skill's input, matching the chosen skill's schema.",
  };
  if (tools.length > 0) {
    skill.enum = tools.map((t) => t.name);
    input.anyOf = tools.map((t) => ({ ...forModel(t.inputSchema), title: `input of ${t.name}` }));
  }
  return {
    type: "object",
    additionalProperties: false,
    required: ["skill"],
    properties: {
      skill,
      input,
      label: {
        type: "string",
        maxLength: 200,
        description: "A short label for the task, shown with its result (e.g. what it upgrades).",
      },
    },
  };
}

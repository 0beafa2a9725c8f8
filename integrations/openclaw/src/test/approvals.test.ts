import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import type { OpenClawPluginApi, OpenClawPluginToolContext } from "openclaw/plugin-sdk/plugin-entry";

import { approveTool, decideBody, pendingText, until } from "../approvals.js";
import { type Approval, Daemon } from "../daemon.js";
import type { Shared } from "../shared.js";
import { agentTools, tasksTool } from "../tools.js";

const OURS = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const THEIRS = "01ARZ3NDEKTSV4RRFFQ69G5FAW";
const GONE = "01ARZ3NDEKTSV4RRFFQ69G5FAX";
const SESSION = "agent:main:chat";
const NOW = Date.UTC(2026, 11, 5, 12, 0, 0);

function approval(id: number, detail: string, reason?: string): Approval {
  return {
    id,
    task_id: OURS,
    request: { capability: "exec", detail, rule: "--ask-exec 'echo hello *'", ...(reason ? { reason } : {}) },
    attempt: 1,
    requested_ms: NOW,
    expires_ms: NOW + 59 * 60_000 + 30_000,
  };
}

const task = (id: string, session: string, state: string) => ({
  id,
  spec: { skill_name: "hostile", label: "mcp/hostile: echo", parent_session: session },
  state,
  created_ms: NOW,
});

/** What the fake daemon was asked to decide. */
const posted: { id: string; body: Record<string, unknown> }[] = [];

/** A daemon's task API on loopback, with two tasks awaiting approval. */
function answer(req: IncomingMessage, res: ServerResponse, body: string) {
  const reply = (status: number, v: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(v));
  };
  const url = new URL(req.url!, "http://x");
  const m = /^\/v1\/tasks\/([0-9A-Z]{26})(\/approvals)?$/.exec(url.pathname);
  if (url.pathname === "/v1/tasks") {
    return reply(200, url.searchParams.get("parent_session") === SESSION ? [task(OURS, SESSION, "awaiting_approval")] : []);
  }
  if (!m || m[1] === GONE) return reply(404, { error: { code: "not-found", message: `no task ${m?.[1]}` } });
  const id = m[1]!;
  if (!m[2]) return reply(200, task(id, id === OURS ? SESSION : "agent:main:other", "awaiting_approval"));
  if (req.method === "GET") return reply(200, [{ ...approval(1, "echo hello there", "to greet") }, approval(2, "echo hello you")]);
  const b = JSON.parse(body) as Record<string, unknown>;
  posted.push({ id, body: b });
  if (b.request === 9) {
    return reply(409, { error: { code: "conflict", message: `task ${id} has no request #9 (its requests: #1, #2)` } });
  }
  if (b.note === "malformed") return reply(400, { error: { code: "bad-request", message: "unknown field `x`" } });
  const a = approval((b.request as number | undefined) ?? 1, "echo hello there");
  return reply(200, {
    ...a,
    decision: {
      approved: b.decision === "approve",
      always_for_task: b.always_for_task === true,
      by: `${b.as} (through the API token)`,
      ...(b.note ? { note: b.note } : {}),
      at_ms: NOW,
    },
  });
}

const server = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => answer(req, res, body));
});
let shared: Shared;

before(async () => {
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  const catalog = { tools: [], readAt: Date.now() };
  shared = {
    daemon: new Daemon(`http://127.0.0.1:${port}`, "token", 5_000, "test"),
    catalog,
    refreshCatalog: async () => {},
    freshCatalog: () => catalog,
  };
});
after(() => server.close());

const ctx = (sessionKey: string) => ({ sessionKey }) as OpenClawPluginToolContext;
type Answer = { content: { text: string }[]; details: Record<string, unknown> };
const run = async (tool: { execute: (...a: never[]) => unknown }, params: unknown) =>
  (await (tool.execute as (id: string, p: unknown) => Promise<Answer>)("call-1", params));

test("a pending request shows what it asks, the rule, the skill's reason and its expiry", () => {
  const t = pendingText(OURS, [approval(1, "echo hello there", "to greet"), approval(2, "echo hi")], NOW, true);
  assert.match(t, /request #1: exec `echo hello there`\n {4}rule: --ask-exec 'echo hello \*'\n {4}the skill says: to greet\n/);
  assert.match(t, /denied unless decided by 2026-12-05T12:59:30\.000Z \(in 59 min\)/);
  assert.match(t, /request #2: exec `echo hi`/);
  assert.match(t, /relay their decision with skillbox_approve \(task 01ARZ3NDEKTSV4RRFFQ69G5FAV, request 1 or 2\); do not decide for them/);
  assert.match(pendingText(OURS, [approval(1, "x")], NOW, false), /outside OpenClaw: skillbox tasks approve\|deny 01ARZ3NDEKTSV4RRFFQ69G5FAV 1/);
  const decided = { ...approval(1, "x"), decision: { approved: true, always_for_task: false, by: "cli:root", at_ms: NOW } };
  assert.equal(pendingText(OURS, [decided], NOW, true), "", "a decided request is not pending");
  assert.equal(until(NOW + 5_000, NOW), "in 5 s");
  assert.equal(until(NOW + 2 * 3600_000 + 60_000, NOW), "in 2 h 1 min");
  assert.equal(until(NOW - 1, NOW), "expired");
});

test("a decision's body names this conversation and takes only what the API knows", () => {
  assert.deepEqual(decideBody({ decision: "approve" }, SESSION), { decision: "approve", as: `openclaw:${SESSION}` });
  assert.deepEqual(decideBody({ decision: "deny", request: 2, always_for_task: true, note: " not today " }, SESSION), {
    decision: "deny",
    as: `openclaw:${SESSION}`,
    request: 2,
    always_for_task: true,
    note: "not today",
  });
  assert.throws(() => decideBody({ decision: "yes" }, SESSION), /"decision" must be "approve" or "deny"/);
  assert.throws(() => decideBody({ decision: "approve", request: 0 }, SESSION), /"request" must be a request's number/);
  assert.throws(() => decideBody({ decision: "approve", request: "1" }, SESSION), /"request" must be/);
  assert.throws(() => decideBody({ decision: "approve", note: "x".repeat(513) }, SESSION), /longer than 512 bytes/);
});

test("the approve tool posts the user's decision as this conversation and returns the recorded approval", async () => {
  posted.length = 0;
  const tool = approveTool(shared, ctx(SESSION));
  const a = await run(tool, { task: OURS, decision: "approve", request: 1 });
  assert.deepEqual(posted, [{ id: OURS, body: { decision: "approve", as: `openclaw:${SESSION}`, request: 1 } }]);
  assert.equal(
    a.content[0]!.text,
    `Approved request #1 of skillbox task ${OURS} (hostile): exec \`echo hello there\`. ` +
      "The task goes on; its result will be posted here.",
  );
  const recorded = a.details.approval as Approval;
  assert.equal(recorded.decision?.by, `openclaw:${SESSION} (through the API token)`);

  const d = await run(tool, { task: OURS, decision: "deny", note: "not today", always_for_task: true });
  assert.match(
    d.content[0]!.text,
    /^Denied request #1 of skillbox task \w+ \(hostile\): exec `echo hello there`, and every later request of the same rule in this task\. The call is refused \(note to the skill: not today\)/,
  );
});

test("the daemon's refusals are tool errors in its own words", async () => {
  const tool = approveTool(shared, ctx(SESSION));
  await assert.rejects(
    run(tool, { task: OURS, decision: "approve", request: 9 }),
    new Error(`skillbox did not record the decision on task ${OURS}: task ${OURS} has no request #9 (its requests: #1, #2)`),
  );
  await assert.rejects(
    run(tool, { task: OURS, decision: "deny", note: "malformed" }),
    new Error("skillbox refused the decision as malformed: unknown field `x`"),
  );
  await assert.rejects(run(tool, { task: GONE, decision: "approve" }), new Error(`skillbox has no task ${GONE}`));
});

test("a task of another conversation is refused, and nothing is posted", async () => {
  posted.length = 0;
  await assert.rejects(
    run(approveTool(shared, ctx(SESSION)), { task: THEIRS, decision: "approve" }),
    new Error(`task ${THEIRS} was not started from this conversation`),
  );
  await assert.rejects(
    run(approveTool(shared, ctx("agent:main:other-chat")), { task: OURS, decision: "approve" }),
    /was not started from this conversation/,
  );
  assert.deepEqual(posted, []);
});

test("the tasks tool shows what a waiting task asks, listed or alone", async () => {
  const listed = await run(tasksTool(shared, ctx(SESSION)), {});
  assert.match(listed.content[0]!.text, /^01ARZ3NDEKTSV4RRFFQ69G5FAV {2}hostile \(echo\) {2}awaiting_approval\n {2}request #1: exec `echo hello there`/);
  assert.match(listed.content[0]!.text, /the skill says: to greet/);
  assert.match(listed.content[0]!.text, /skillbox_approve \(task 01ARZ3NDEKTSV4RRFFQ69G5FAV, request 1 or 2\)/);
  const [t] = listed.details.tasks as { approvals: { request: number; detail: string; reason: string | null }[] }[];
  assert.deepEqual(
    t!.approvals.map((a) => [a.request, a.detail, a.reason]),
    [
      [1, "echo hello there", "to greet"],
      [2, "echo hello you", null],
    ],
  );
  const one = await run(tasksTool(shared, ctx(SESSION), false), { task: OURS });
  assert.match(one.content[0]!.text, /request #2: exec `echo hello you`/);
  assert.match(one.content[0]!.text, /The operator decides outside OpenClaw/);
});

test("with approvals off the agent gets no approve tool", () => {
  const api = {} as OpenClawPluginApi;
  const names = (on: boolean) => agentTools(api, { broken: "unused" }, on).map(([n]) => n);
  assert.deepEqual(names(true), ["skillbox_start", "skillbox_tasks", "skillbox_cancel", "skillbox_approve"]);
  assert.deepEqual(names(false), ["skillbox_start", "skillbox_tasks", "skillbox_cancel"]);
});

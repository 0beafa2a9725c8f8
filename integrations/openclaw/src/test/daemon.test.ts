import assert from "node:assert/strict";
import { test } from "node:test";

import { parseMcpAnswer } from "../daemon.js";
import { stepOf } from "../flows.js";

test("MCP answers are read from JSON or server-sent events", () => {
  assert.deepEqual(parseMcpAnswer('{"jsonrpc":"2.0","id":3,"result":{"a":1}}', 3)?.result, { a: 1 });
  const sse = 'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n' +
    'data: {"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"bad"}}\n\n';
  assert.deepEqual(parseMcpAnswer(sse, 7)?.error, { code: -32602, message: "bad" });
  assert.equal(parseMcpAnswer(sse, 8), undefined);
  assert.equal(parseMcpAnswer("", 1), undefined);
});

test("a running task's step is its latest progress", () => {
  assert.equal(stepOf({ state: "running", progress: 0.4, progress_message: "backing up" }), "backing up (40%)");
  assert.equal(stepOf({ state: "queued", progress: null, progress_message: null }), "queued");
  assert.match(stepOf({ state: "interrupted" }), /resuming/);
  assert.match(stepOf({ state: "awaiting_approval", progress: 0.5 }), /^awaiting approval/);
});

test("mirrored tasks are kept one file each, and survive a new store", async () => {
  const { mkdtempSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { EntryStore } = await import("../flows.js");
  const dir = join(mkdtempSync(join(tmpdir(), "skillbox-flows-")), "flows");
  const a = new EntryStore(dir);
  assert.deepEqual(a.entries(), []);
  a.register({ taskId: "01ARZ3NDEKTSV4RRFFQ69G5FAV", flowId: "f1", sessionKey: "agent:main:main" });
  a.register({ taskId: "01ARZ3NDEKTSV4RRFFQ69G5FAW", flowId: "f2", sessionKey: "agent:main:x" });
  const b = new EntryStore(dir);
  assert.deepEqual(b.entries().map((e) => e.flowId).sort(), ["f1", "f2"]);
  b.delete("01ARZ3NDEKTSV4RRFFQ69G5FAV");
  assert.deepEqual(a.entries().map((e) => e.flowId), ["f2"]);
  assert.throws(() => a.register({ taskId: "../x", flowId: "f", sessionKey: "s" }), /not a task id/);
});

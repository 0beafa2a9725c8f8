import assert from "node:assert/strict";
import { test } from "node:test";

import { parentRoute } from "../route.js";

test("a messaging channel's conversation has a route", () => {
  assert.deepEqual(parentRoute({ channel: "telegram", to: "42" }), { channel: "telegram", to: "42" });
  assert.deepEqual(parentRoute({ channel: "slack", to: "C1", accountId: "work" }), {
    channel: "slack",
    to: "C1",
    account_id: "work",
  });
});

test("OpenClaw's own chat, or a partial context, has none", () => {
  assert.equal(parentRoute({ channel: "webchat", to: "agent:main:main" }), undefined);
  assert.equal(parentRoute({ channel: "telegram" }), undefined);
  assert.equal(parentRoute({ to: "42" }), undefined);
  assert.equal(parentRoute(undefined), undefined);
});

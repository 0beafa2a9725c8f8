import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { approvalsOn, ConfigError, configSchema, resolveConfig } from "../config.js";

test("the daemon is on loopback, with a token from the config, a file or the environment", () => {
  const dir = mkdtempSync(join(tmpdir(), "skillbox-cfg-"));
  writeFileSync(join(dir, "token"), "from-file\n");
  const c = resolveConfig({ url: "http://127.0.0.1:9/", tokenFile: join(dir, "token") }, {});
  assert.deepEqual(c, {
    url: "http://127.0.0.1:9",
    token: "from-file",
    timeoutMs: 10_000,
    syncIntervalMs: 1_000,
    approvals: true,
  });
  assert.equal(resolveConfig({}, { SKILLBOX_TOKEN: "env" }).url, "http://127.0.0.1:8750");
  assert.equal(resolveConfig({ url: "http://[::1]:1", token: "t" }, {}).token, "t");
});

test("the approve tool is on unless the configuration says approvals: false", () => {
  assert.equal(resolveConfig({ token: "t" }, {}).approvals, true);
  assert.equal(resolveConfig({ token: "t", approvals: true }, {}).approvals, true);
  assert.equal(resolveConfig({ token: "t", approvals: false }, {}).approvals, false);
  // A configuration that fails otherwise still decides which tools there are.
  assert.equal(approvalsOn({ approvals: false, url: "http://10.0.0.1" }), false);
  assert.equal(approvalsOn(undefined), true);
});

test("mistakes are refused with what to do", () => {
  const refused = (raw: Record<string, unknown>, env: NodeJS.ProcessEnv, re: RegExp) =>
    assert.throws(() => resolveConfig(raw, env), (e: unknown) => e instanceof ConfigError && re.test(e.message));
  refused({ url: "http://10.0.0.1:8750", token: "t" }, {}, /loopback only/);
  refused({ url: "https://127.0.0.1:8750", token: "t" }, {}, /loopback only/);
  refused({ url: "not a url", token: "t" }, {}, /is not a URL/);
  refused({}, {}, /no skillbox token: set plugins\.entries\.skillbox\.config\.tokenFile/);
  refused({ token: "a", tokenFile: "/nonexistent" }, {}, /not both/);
  refused({ tokenFile: "/nonexistent/token" }, {}, /the skillbox token file/);
});

test("the manifest declares the configuration the code reads", () => {
  const manifest = JSON.parse(readFileSync(new URL("../../openclaw.plugin.json", import.meta.url), "utf8"));
  assert.deepEqual(manifest.configSchema, JSON.parse(JSON.stringify(configSchema)));
});

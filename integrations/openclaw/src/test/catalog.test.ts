import assert from "node:assert/strict";
import { test } from "node:test";

import { forModel, startDescription, startParameters } from "../catalog.js";

const upgrade = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  required: ["app", "container"],
  properties: {
    app: { type: "string" },
    retries: { type: "integer", format: "uint32", minimum: 0 },
    container: { description: "How to run it.", $ref: "#/$defs/ContainerSpec" },
    format: { type: "string", description: "a property named like a keyword" },
  },
  $defs: {
    ContainerSpec: { type: "object", properties: { ports: { type: "array", items: { $ref: "#/$defs/Port" } } } },
    Port: { type: "integer", format: "uint16" },
  },
};

test("a skill's schema is made self-contained for the model", () => {
  const s = forModel(upgrade);
  assert.equal(s.$schema, undefined);
  assert.equal(s.$defs, undefined);
  const props = s.properties as Record<string, Record<string, unknown>>;
  assert.deepEqual(props.retries, { type: "integer", minimum: 0 }, "unknown formats are dropped");
  assert.deepEqual(props.container, {
    type: "object",
    description: "How to run it.",
    properties: { ports: { type: "array", items: { type: "integer" } } },
  });
  assert.deepEqual(props.format, { type: "string", description: "a property named like a keyword" });
  assert.deepEqual(s.required, ["app", "container"]);
});

test("a recursive definition becomes any value instead of looping", () => {
  const tree = {
    type: "object",
    properties: { root: { $ref: "#/definitions/Node" } },
    definitions: { Node: { type: "object", properties: { child: { $ref: "#/definitions/Node" } } } },
  };
  const s = forModel(tree) as { properties: { root: { properties: { child: unknown } } } };
  assert.deepEqual(s.properties.root.properties.child, {});
});

test("the start tool offers exactly the catalog's skills with their schemas", () => {
  const tools = [
    { name: "hello", description: "Greets someone.\n\nRuns with only: limits", inputSchema: { type: "object" } },
    { name: "upgrade", description: "Upgrades an app.", inputSchema: upgrade },
  ];
  const p = startParameters(tools) as { properties: Record<string, Record<string, unknown>>; required: string[] };
  assert.deepEqual(p.properties.skill!.enum, ["hello", "upgrade"]);
  const anyOf = p.properties.input!.anyOf as Record<string, unknown>[];
  assert.equal(anyOf.length, 2);
  assert.equal(anyOf[1]!.title, "input of upgrade");
  assert.deepEqual(anyOf[1]!.required, ["app", "container"]);
  assert.deepEqual(p.required, ["skill"]);
  const d = startDescription(tools);
  assert.match(d, /- hello: Greets someone\. Runs with only: limits/);
  assert.match(d, /- upgrade: Upgrades an app\./);
});

test("without a catalog the tool says why", () => {
  assert.match(startDescription([], "the daemon is down"), /unavailable right now: the daemon is down/);
  assert.match(startDescription([]), /No skill is installed/);
  const p = startParameters([]) as { properties: Record<string, Record<string, unknown>> };
  assert.equal(p.properties.skill!.enum, undefined);
});

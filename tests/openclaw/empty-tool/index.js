// A tool that does nothing, registered the way the skillbox plugin
// registers skillbox_start (a factory, a JSON-schema parameter object): the
// baseline of the start tool's added latency in skillbox's tests.
import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

export default definePluginEntry({
  id: "empty-tool",
  name: "Empty tool",
  description: "A tool that does nothing (a timing baseline).",
  register(api) {
    api.registerTool(
      () => ({
        name: "empty_tool",
        label: "empty tool",
        description: "Does nothing and answers ok.",
        parameters: { type: "object", additionalProperties: false, properties: { note: { type: "string" } } },
        async execute() {
          return { content: [{ type: "text", text: "ok" }], details: { done: true } };
        },
      }),
      { name: "empty_tool" },
    );
  },
});

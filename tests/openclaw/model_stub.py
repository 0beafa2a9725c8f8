#!/usr/bin/env python3
"""A tiny OpenAI-compatible model on loopback, the model of the OpenClaw
gateway in skillbox's relay tests (a fake: no real model can run here).

Serves:
  GET  /v1/models                 -> model list
  POST /v1/chat/completions       -> stream (SSE) or non-stream reply
  anything else                   -> 404 (logged)

The assistant reply is "STUB-REPLY: <last user text, last 300 chars>" so the relayed
hook message can be read back from chat.history, except in a scripted tool turn:

  * a user message containing `[[tool NAME {json args}]]` is answered with a call of
    tool NAME with those arguments (through OpenClaw's `tool_call` bridge when NAME
    itself is not among the offered tools, as with its default Tool Search);
  * once the turn has a tool result, the answer is "STUB-AFTER-TOOL: <its text>".

So a test scripts the model's choices in the user message and reads the tool's
answer back from chat.history.

Every request is appended as one JSON line to $STUB_LOG (default ./stub-requests.jsonl).
Usage: python3 model_stub.py PORT [MODEL_ID]
"""
import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 18800
MODEL_ID = sys.argv[2] if len(sys.argv) > 2 else "stub-model"
LOG = os.environ.get("STUB_LOG", "stub-requests.jsonl")


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                out.append(part.get("text") or part.get("input_text") or "")
            elif isinstance(part, str):
                out.append(part)
        return "".join(out)
    return ""


import re
_EXT = re.compile(r"<<<EXTERNAL_UNTRUSTED_CONTENT[^>]*>>>\s*(.*?)\s*<<<END_EXTERNAL_UNTRUSTED_CONTENT", re.S)


def pick_user_text(texts):
    """Prefer the hook payload inside OpenClaw's EXTERNAL_UNTRUSTED_CONTENT wrapper
    (body after the 'Source:/Task:/---' header); else the last user text that is not
    OpenClaw's internal-context block."""
    for t in reversed(texts):
        m = _EXT.search(t)
        if m:
            inner = m.group(1)
            return inner.split("\n---\n", 1)[1] if "\n---\n" in inner else inner
    for t in reversed(texts):
        if "BEGIN_OPENCLAW_INTERNAL_CONTEXT" not in t:
            return t
    return texts[-1] if texts else ""


def last_user_text_chat(body):
    return pick_user_text([text_of(m.get("content")) for m in (body.get("messages") or [])
                           if m.get("role") == "user"])


_DIRECTIVE = re.compile(r"\[\[tool\s+([A-Za-z0-9_.:-]+)\s*(\{.*?\})?\s*\]\]", re.S)


def is_real_user(m):
    return m.get("role") == "user" and "BEGIN_OPENCLAW_INTERNAL_CONTEXT" not in text_of(m.get("content"))


def scripted_turn(body):
    """("call", name, args) or ("text", reply) for a scripted tool turn, else None."""
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if is_real_user(m)), default=None)
    if last_user is None:
        return None
    after = messages[last_user + 1:]
    results = [m for m in after if m.get("role") == "tool"]
    if results:
        return ("text", "STUB-AFTER-TOOL: " + text_of(results[-1].get("content"))[:2000])
    m = _DIRECTIVE.search(text_of(messages[last_user].get("content")))
    if not m:
        return None
    name, args = m.group(1), json.loads(m.group(2) or "{}")
    offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
    if name not in offered and "tool_call" in offered:
        return ("call", "tool_call", {"id": name, "args": args})
    return ("call", name, args)


def reply_for(user_text):
    t = " ".join(user_text.split())
    return "STUB-REPLY: " + t[-300:]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet stderr
        pass

    def _log(self, body):
        rec = {"t": time.time(), "method": self.command, "path": self.path,
               "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"},
               "auth_present": "authorization" in {k.lower() for k in self.headers.keys()},
               "body": body}
        with open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, obj, event=None):
        s = ""
        if event:
            s += "event: " + event + "\n"
        s += "data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n"
        self.wfile.write(s.encode())
        self.wfile.flush()

    def do_GET(self):
        self._log(None)
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            return self._json(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "stub"}]})
        if self.path in ("/", "/health", "/healthz"):
            return self._json(200, {"ok": True})
        self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw or b"{}")
        except Exception:
            body = {"_raw": raw.decode("utf-8", "replace")}
        self._log(body)
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/chat/completions"):
            return self.chat(body)
        self._json(404, {"error": {"message": "not found: " + path, "type": "invalid_request_error"}})

    def chat(self, body):
        turn = scripted_turn(body)
        if turn and turn[0] == "call":
            return self.tool_call(body, turn[1], turn[2])
        text = turn[1] if turn else reply_for(last_user_text_chat(body))
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        created = int(time.time())
        model = body.get("model") or MODEL_ID
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            return self._json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": usage})
        self._sse_start()
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        self._sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}]})
        self._sse({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        self._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._sse({**base, "choices": [], "usage": usage})
        self._sse("[DONE]")


    def tool_call(self, body, name, args):
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        call_id = "call_" + uuid.uuid4().hex[:12]
        created = int(time.time())
        model = body.get("model") or MODEL_ID
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        call = {"id": call_id, "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        if not body.get("stream"):
            return self._json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                                     "tool_calls": [call]},
                             "finish_reason": "tool_calls"}],
                "usage": usage})
        self._sse_start()
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        self._sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None,
                                                              "tool_calls": [{"index": 0, **call}]},
                                        "finish_reason": None}]})
        self._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        self._sse({**base, "choices": [], "usage": usage})
        self._sse("[DONE]")


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", PORT), H)
    print(f"model stub listening on http://127.0.0.1:{PORT}/v1 model={MODEL_ID}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass

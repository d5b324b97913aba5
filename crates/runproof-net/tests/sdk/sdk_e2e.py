"""End-to-end check of `runproof gateway` with the official OpenAI and
Anthropic Python SDKs as clients and a local fake upstream (127.0.0.1 only).

Not run by `cargo test` (it needs `pip install openai anthropic`):
    python3 crates/runproof-net/tests/sdk/sdk_e2e.py target/debug/runproof

Checks: the SDKs parse the gateway's JSON and SSE (including the stripped
include_usage chunk and Anthropic's event stream), the host key replaces the
SDK's key, usage lands in the ledger to the token, and a budget refusal is an
error the SDK raises without retrying.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai

HOST_KEY = "sk-host-only"
SEEN = []


def sse(events):
    return "".join(events).encode()


def chat_events(include_usage):
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    out = []
    for i, text in enumerate(["Hel", "lo"]):
        delta = {"content": text} if i else {"role": "assistant", "content": text}
        c = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
        if include_usage:
            c["usage"] = None
        out.append("data: " + json.dumps(c) + "\n\n")
    c = dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
    if include_usage:
        c["usage"] = None
    out.append("data: " + json.dumps(c) + "\n\n")
    if include_usage:
        u = dict(base, choices=[], usage={"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                                          "prompt_tokens_details": {"cached_tokens": 40},
                                          "completion_tokens_details": {"reasoning_tokens": 5}})
        out.append("data: " + json.dumps(u) + "\n\n")
    out.append("data: [DONE]\n\n")
    return out


def anthropic_events():
    def ev(name, data):
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"
    return [
        ev("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-haiku-4-5",
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 50, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 200, "output_tokens": 1}}}),
        ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ev("ping", {"type": "ping"}),
        ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi there"}}),
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"output_tokens": 7}}),
        ev("message_stop", {"type": "message_stop"}),
    ]


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        SEEN.append((self.path, dict(self.headers), body))
        if self.path == "/v1/chat/completions" and body.get("stream"):
            inc = (body.get("stream_options") or {}).get("include_usage", False)
            self.reply(200, "text/event-stream", sse(chat_events(inc)))
        elif self.path == "/v1/chat/completions":
            self.reply(200, "application/json", json.dumps({
                "id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 3, "total_tokens": 33}}).encode())
        elif self.path == "/v1/messages" and body.get("stream"):
            self.reply(200, "text/event-stream", sse(anthropic_events()))
        elif self.path == "/v1/messages":
            self.reply(200, "application/json", json.dumps({
                "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 4}}).encode())
        else:
            self.reply(404, "application/json", b"{}")

    def reply(self, status, ctype, data):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(binary, up_port, ledger, budget=None):
    port = free_port()
    cmd = [binary, "gateway", "--listen", f"127.0.0.1:{port}",
           "--openai-base", f"http://127.0.0.1:{up_port}", "--anthropic-base", f"http://127.0.0.1:{up_port}",
           "--ledger", ledger, "--run-id", "sdk-run"]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    env = dict(os.environ, OPENAI_API_KEY=HOST_KEY, ANTHROPIC_API_KEY=HOST_KEY)
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("gateway did not start: " + p.stderr.read().decode())


def main():
    binary = sys.argv[1]
    up = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    up_port = up.server_address[1]
    tmp = tempfile.mkdtemp()
    ledger = os.path.join(tmp, "ledger.db")
    gw, port = start_gateway(binary, up_port, ledger)
    try:
        oa = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sandbox-key", max_retries=0)
        r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "Hello" and r.usage.prompt_tokens == 30, r
        chunks = list(oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello", text
        assert all(c.choices for c in chunks), "the injected usage-only chunk must not reach a client that did not ask"
        an = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="sandbox-key", max_retries=0)
        m = an.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert m.content[0].text == "Hi" and m.usage.output_tokens == 4, m
        with an.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
            final = s.get_final_message()
        assert final.content[0].text == "Hi there" and final.usage.output_tokens == 7, final
        for path, headers, _ in SEEN:
            low = {k.lower(): v for k, v in headers.items()}
            assert "sandbox-key" not in json.dumps(low), (path, low)
            assert low.get("authorization") == f"Bearer {HOST_KEY}" or low.get("x-api-key") == HOST_KEY, low
        assert SEEN[1][2]["stream_options"] == {"include_usage": True}
    finally:
        gw.terminate()
        gw.wait(timeout=10)
    report = json.loads(subprocess.check_output([binary, "cost", "--ledger", ledger, "--by", "model", "--format", "json"]))
    rows = {r["key"]: r for r in report["rows"]}
    g, c = rows["gpt-4o-mini"], rows["claude-haiku-4-5"]
    assert (g["requests"], g["input_tokens"], g["cache_read_tokens"], g["output_tokens"], g["reasoning_tokens"]) == (2, 30 + 60, 40, 3 + 15, 5), g
    assert (c["requests"], c["input_tokens"], c["cache_write_tokens"], c["cache_read_tokens"], c["output_tokens"]) == (2, 62, 10, 200, 11), c
    assert report["unpriced_requests"] == 0

    # Budget refusal: the SDKs raise, and do not retry (x-should-retry: false).
    gw, port = start_gateway(binary, up_port, ledger, budget=0.000001)
    try:
        before = len(SEEN)
        oa = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=3)
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])  # spends it
        try:
            oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
            raise SystemExit("expected a budget refusal")
        except openai.RateLimitError as e:
            assert e.code == "insufficient_quota", e
        an = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="x", max_retries=3)
        try:
            an.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            raise SystemExit("expected a budget refusal")
        except anthropic.BadRequestError as e:
            assert "budget" in str(e), e
        assert len(SEEN) == before + 1, "refusals never reach the upstream"
    finally:
        gw.terminate()
        gw.wait(timeout=10)
    print("sdk e2e: 2 passed, 0 failed")


if __name__ == "__main__":
    main()

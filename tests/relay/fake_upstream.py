"""A fake OpenAI-compatible upstream on loopback, scripted by the test (`behavior`).

It answers /v1/chat/completions, /v1/embeddings and /v1/responses like the real ones do:
usage present or absent, streams with and without the usage chunk, cut mid-way, slow, 429
with retry-after, 500, tool calls, n > 1. `calls` counts the requests it received.
"""

import asyncio
import json
import socket
import threading
import time

from aiohttp import web

from metering.tokens import count_tokens

WORDS = [f"word{i} " for i in range(40)]


def reply_text(index: int = 0, chunks: int = 8) -> list[str]:
    return [f"c{index} " + WORDS[i % len(WORDS)] for i in range(chunks)]


class FakeUpstream:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.behavior = "ok"
        self.calls = 0
        self.bodies: list[dict] = []
        self.request_headers: list[dict[str, str]] = []
        self.response_headers: dict[str, str] = {}  # added to non-streaming chat answers
        self.chunks = 8
        self.interval = 0.0
        self.first_byte_delay = 0.0
        self.prompt_tokens = 17
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- server lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        self._runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        self.loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=2048).start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def stop(self) -> None:
        if self.loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    # --- handlers -----------------------------------------------------------------------------

    async def _refusal(self) -> web.Response | None:
        if self.behavior == "429":
            return web.json_response(
                {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit"}},
                status=429,
                headers={"retry-after": "7"},
            )
        if self.behavior == "500":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        if self.behavior == "400":
            return web.json_response(
                {"error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature",
                           "code": None}},
                status=400,
            )  # fmt: skip
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:  # noqa: C901 - one script per behavior
        body = await request.json()
        self.calls += 1
        self.bodies.append(body)
        self.request_headers.append(dict(request.headers))
        refused = await self._refusal()
        if refused is not None:
            return refused
        model, n = body["model"], body.get("n") or 1
        tools = self.behavior == "tools"
        if not body.get("stream"):
            if self.first_byte_delay:
                await asyncio.sleep(self.first_byte_delay)
            choices, completion = [], 0
            for index in range(n):
                if tools:
                    message = {"role": "assistant", "content": None, "tool_calls": [{
                        "id": f"call_{index}", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}  # fmt: skip
                    text = "get_weather" + '{"city": "Paris"}'
                else:
                    text = "".join(reply_text(index, self.chunks))
                    message = {"role": "assistant", "content": text}
                completion += count_tokens(model=model, text=text).tokens
                choices.append({"index": index, "message": message, "finish_reason": "stop", "logprobs": None})
            data = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                    "choices": choices}  # fmt: skip
            if self.behavior != "no_usage":
                data["usage"] = {
                    "prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                    "total_tokens": self.prompt_tokens + completion,
                    "prompt_tokens_details": {"cached_tokens": 5},
                    "completion_tokens_details": {"reasoning_tokens": 3},
                }  # fmt: skip
            return web.json_response(data, headers=self.response_headers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if self.first_byte_delay:
            await asyncio.sleep(self.first_byte_delay)
        await response.prepare(request)

        async def event(data: dict) -> None:
            await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")

        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        delivered: dict[int, str] = {}
        for index in range(n):
            await event({**base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None}]})  # fmt: skip
        for step in range(self.chunks):
            for index in range(n):
                if tools:
                    delta = {"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                             "function": {"name": "get_weather", "arguments": ""}}]} if step == 0 else {
                        "tool_calls": [{"index": 0, "function": {"arguments": f'"a{step}"'}}]}  # fmt: skip
                    text = "get_weather" if step == 0 else f'"a{step}"'
                else:
                    text = reply_text(index, self.chunks)[step]
                    delta = {"content": text}
                delivered[index] = delivered.get(index, "") + text
                await event({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
            if self.behavior == "cut" and step == self.chunks // 2:
                assert request.transport is not None
                request.transport.close()  # the connection drops mid-stream
                return response
            if self.interval:
                await asyncio.sleep(self.interval)
        for index in range(n):
            await event({**base, "choices": [{"index": index, "delta": {}, "finish_reason": "stop"}]})
        completion = sum(count_tokens(model=model, text=text).tokens for text in delivered.values())
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        if include_usage and self.behavior != "no_usage":
            await event({**base, "choices": [], "usage": {
                "prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": 0}}})  # fmt: skip
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        self.bodies.append(body)
        refused = await self._refusal()
        if refused is not None:
            return refused
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))]
        prompt = sum(count_tokens(model=body["model"], text=text).tokens for text in inputs)
        result = {"object": "list", "data": data, "model": body["model"]}
        if self.behavior != "no_usage":
            result["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        return web.json_response(result)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls += 1
        self.bodies.append(body)
        refused = await self._refusal()
        if refused is not None:
            return refused
        model = body["model"]
        parts = reply_text(0, self.chunks)
        text = "".join(parts)
        output_tokens = count_tokens(model=model, text=text).tokens
        usage = {"input_tokens": self.prompt_tokens, "output_tokens": output_tokens,
                 "total_tokens": self.prompt_tokens + output_tokens,
                 "input_tokens_details": {"cached_tokens": 4},
                 "output_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip
        final = {
            "id": "resp_fake", "object": "response", "created_at": int(time.time()), "model": model,
            "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                                               "status": "completed", "content": [{"type": "output_text", "text": text,
                                                                                   "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": usage if self.behavior != "no_usage" else None,
        }  # fmt: skip
        if not body.get("stream"):
            return web.json_response(final)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sequence = 0

        async def event(kind: str, data: dict) -> None:
            nonlocal sequence
            sequence += 1
            payload = {"type": kind, "sequence_number": sequence, **data}
            await response.write(f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode())

        await event("response.created", {"response": {**final, "status": "in_progress", "output": [], "usage": None}})
        for part in parts:
            await event("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                                       "delta": part, "logprobs": []})  # fmt: skip
        await event("response.completed", {"response": final})
        await response.write_eof()
        return response

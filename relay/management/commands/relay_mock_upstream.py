"""A local stand-in for a provider, for the demo (`make run`): OpenAI-shaped answers with usage.

It answers /v1/chat/completions (streaming or not), /v1/embeddings and /v1/responses with a
canned reply, counting tokens with tiktoken. Loopback only; no provider account needed.
"""

import asyncio
import json
import time
from typing import Any

from aiohttp import web
from django.core.management.base import BaseCommand, CommandError, CommandParser

from metering.tokens import count_tokens

REPLY = "Hello from the demo upstream. The relay metered this answer and billed it once."


def _usage(model: str, prompt: str, reply: str) -> dict[str, int]:
    prompt_tokens = count_tokens(model=model, text=prompt).tokens
    completion = count_tokens(model=model, text=reply).tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body.get("model", "demo")
    prompt = json.dumps(body.get("messages", []))
    base = {"id": "chatcmpl-demo", "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": REPLY}
        return web.json_response({
            **base, "object": "chat.completion", "usage": _usage(model, prompt, REPLY),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        })  # fmt: skip
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {**base, "object": "chat.completion.chunk"}
    for word in REPLY.split(" "):
        delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
        await response.write(f"data: {json.dumps({**chunk, 'choices': [delta]})}\n\n".encode())
        await asyncio.sleep(0.05)
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {**chunk, "choices": [], "usage": _usage(model, prompt, REPLY)}
        await response.write(f"data: {json.dumps(usage)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    return response


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input", "")]
    tokens = sum(count_tokens(model=body.get("model", "demo"), text=str(text)).tokens for text in inputs)
    data = [{"object": "embedding", "index": i, "embedding": [0.0, 0.1, 0.2]} for i in range(len(inputs))]
    return web.json_response({
        "object": "list", "data": data, "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })  # fmt: skip


async def responses(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    model = body.get("model", "demo")
    usage = _usage(model, json.dumps(body.get("input")), REPLY)
    return web.json_response({
        "id": "resp_demo", "object": "response", "created_at": int(time.time()), "model": model,
        "status": "completed", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "output": [{"type": "message", "id": "msg_demo", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}],
        "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                  "total_tokens": usage["total_tokens"]},
    })  # fmt: skip


class Command(BaseCommand):
    help = "Serve a mock OpenAI-compatible upstream on 127.0.0.1 for the demo (make run)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8089, help="port on 127.0.0.1 (default 8089)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["port"] <= 65535:
            raise CommandError("--port must be from 1 to 65535.")
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/embeddings", embeddings)
        app.router.add_post("/v1/responses", responses)
        web.run_app(app, host="127.0.0.1", port=options["port"], access_log=None, print=None)

"""The baseline: a naive server that runs one `model.generate` per request behind a lock, as a plain
transformers backend does. Same model, same tokenizer, same request and response shape as ModelShip's.

    python -m bench.runtime.baseline --model-path DIR --host 127.0.0.1 --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import time

import torch
from aiohttp import web
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32).eval()
    lock = asyncio.Lock()

    def generate(prompt: str, max_tokens: int) -> tuple[str, int, int]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(
                ids,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        new = out[0, ids.shape[1] :]
        return str(tokenizer.decode(new, skip_special_tokens=True)), int(ids.shape[1]), len(new)

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        async with lock:
            text, prompt_tokens, completion_tokens = await asyncio.to_thread(
                generate, body["prompt"], int(body.get("max_tokens", 16))
            )
        return web.json_response(
            {
                "object": "text_completion",
                "created": int(time.time()),
                "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health/ready", ready)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

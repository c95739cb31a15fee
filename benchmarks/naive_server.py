"""The peer design for benchmarks/serving.py: FastAPI + a thread pool calling `model.generate`.

This is the server most tutorials show: a synchronous endpoint (FastAPI runs it in its worker
thread pool) that calls transformers' `generate` for one request at a time per thread. There
is no batching across requests, no admission control and no cancellation: a request whose
client gave up still runs to the end.

    python benchmarks/naive_server.py MODEL_DIR --port 8100
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Completion(BaseModel):
    prompt: list[int]
    max_tokens: int = 16


def build_app(model_dir: str) -> FastAPI:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/completions")
    def complete(body: Completion) -> dict:  # a plain def: FastAPI runs it in a thread pool
        ids = torch.tensor([body.prompt])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=body.max_tokens,
                min_new_tokens=body.max_tokens,  # like ignore_eos: every request does full work
                do_sample=False,
                pad_token_id=0,
            )
        generated = out[0, ids.shape[1] :].tolist()
        return {
            "choices": [
                {"index": 0, "text": "", "token_ids": generated, "finish_reason": "length"}
            ],
            "usage": {
                "prompt_tokens": len(body.prompt),
                "completion_tokens": len(generated),
                "total_tokens": len(body.prompt) + len(generated),
            },
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_dir), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""A server that refuses every POST with a 429 at once and does no other work.

The refusal benchmark (serving_refusal.py) sends its burst here too: the time its client takes
against a server with nothing to do is the client's and the kernel's share of the latency,
the floor under what any server can score with that client on that machine. Same HTTP stack as
`localseek serve` (uvicorn, httptools, uvloop), pure ASGI, bodies read and discarded.

    python benchmarks/refusing_server.py --port 8123
"""

from __future__ import annotations

import argparse
import json

import uvicorn

_REFUSAL = json.dumps(
    {
        "error": {
            "message": "server busy: the queue is full; retry after 1s",
            "type": "rate_limit_error",
            "param": None,
            "code": "server_overloaded",
        }
    }
).encode()


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = scope["method"] == "POST"
    while more:  # read the body, as a server must before it answers on a kept-alive connection
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    status, body = (429, _REFUSAL) if scope["method"] == "POST" else (200, b'{"status": "ok"}')
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 429:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

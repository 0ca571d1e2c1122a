"""``python -m fakellm``: run the fake LLM; prints ``FAKELLM_READY <url>`` once listening."""

from __future__ import annotations

import argparse
import asyncio
import contextlib


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="fakellm", description="A deterministic OpenAI- and Anthropic-compatible LLM server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="default time to first token")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="default token rate (0: instant)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()

    from .server import FakeLLM

    async def run() -> None:
        server = FakeLLM(args.host, args.port, args.ttft_ms, args.tokens_per_s, args.log_level)
        serving = asyncio.create_task(server.serve_forever())
        while not server._server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.005)
        import gc

        gc.collect()
        gc.freeze()  # no full collection walks the startup heap mid-stream (see servicekit.runtime)
        print(f"FAKELLM_READY {server.url}", flush=True)
        await serving

    import signal

    import uvloop

    # uvicorn shuts down on SIGTERM/SIGINT, then re-raises the signal under the handler it found at
    # start: a no-op handler there makes a stopped fake LLM exit 0 instead of dying of the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(run())


if __name__ == "__main__":
    main()

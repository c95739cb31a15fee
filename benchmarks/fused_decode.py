"""The fused native Gemma 3 decode step against the per-module int8 path, same weights, same
process: ms per engine decode step at each batch size, the two alternating round by round.

The fused step (kernels/gemma3_decode.c) is switched off by clearing `model.native_decode`
and back on by restoring it, so both rows read the same loaded, quantized model.

    python benchmarks/fused_decode.py
    python benchmarks/fused_decode.py --batches 1,16 --rounds 5 --model path/to/gemma3.gguf
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from quantization import _start, _time_steps  # noqa: E402

from localseek import LLM  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded demo model")
    p.add_argument("--batches", default="1,8,16,32,64")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="decode steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    budget = args.prompt_tokens + args.steps * (2 * args.rounds + 2) + 16
    llm = LLM(
        args.model,
        quantization="int8",
        max_num_seqs=max(batches),
        kv_cache_tokens=max(batches) * budget,
        show_progress=False,
    )
    model = llm.engine.runner.model
    fused = getattr(model, "native_decode", None)
    if fused is None:
        sys.exit("the fused decode step is not available here (see the load log)")
    print(f"fused step takes up to {fused.max_rows} rows")
    print(f"{'batch':>5} {'per-module ms':>14} {'fused ms':>9} {'speedup':>8}", flush=True)
    for batch in batches:
        _start(llm, batch, args.prompt_tokens, budget)
        times: dict[str, list[float]] = {"module": [], "fused": []}
        for _ in range(args.rounds):
            model.native_decode = None
            times["module"].append(_time_steps(llm, args.steps))
            model.native_decode = fused
            times["fused"].append(_time_steps(llm, args.steps))
        module, native = statistics.median(times["module"]), statistics.median(times["fused"])
        note = "" if batch <= fused.max_rows else "  (above max_rows: both per-module)"
        print(
            f"{batch:>5} {module:>14.1f} {native:>9.1f} {module / native:>7.2f}x{note}", flush=True
        )
        llm.engine.abort(llm.engine.unfinished_request_ids())


if __name__ == "__main__":
    main()

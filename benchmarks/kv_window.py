"""Sliding-window KV release on the demo model: memory held and decode speed at long contexts.

The same loaded Gemma 3 270M weights run in two engines in one process:
- **groups**: localseek's default, one KV cache group per attention kind; the 15 local layers
  (window 512) give back blocks that fall out of their window;
- **one table**: every layer in one group, so local layers keep the whole context and only
  mask it (what localseek did before KV cache groups).
Each runs one request per context length (random token ids, greedy, EOS ignored) and reports
the KV bytes held at the end, the prefill time and the decode tokens/s.

    python benchmarks/kv_window.py                       # contexts 1024, 4096, 8192
    python benchmarks/kv_window.py --contexts 2048 --output-tokens 16
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import torch

from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from localseek.engine.engine import Engine
from localseek.engine.kv_layout import single_group
from localseek.engine.model_loading import LoadedModel, load_model
from localseek.sampling_params import SamplingParams
from localseek.weights.default_model import default_model_path


def one_table(loaded: LoadedModel) -> LoadedModel:
    """The same weights with every layer in one KV group (windows only mask)."""
    layout = loaded.kv_layout
    # The inverse of KVLayout.num_physical_blocks: the same bytes as all-layer blocks.
    whole_blocks = (loaded.num_kv_blocks - int(layout.has_sliding)) // layout.num_groups
    return dataclasses.replace(
        loaded, kv_layout=single_group(layout.num_layers), num_kv_blocks=whole_blocks
    )


def run(engine: Engine, context: int, output_tokens: int, layer_block_bytes: int) -> dict:
    rng = random.Random(context)
    prompt = [2] + [rng.randrange(1000, 200_000) for _ in range(context - 1)]
    params = SamplingParams(temperature=0.0, max_tokens=output_tokens, ignore_eos=True)
    engine.add_request(f"ctx{context}", prompt, params)
    bm = engine.block_manager
    page_bytes = engine.runner.layout.page_layers * layer_block_bytes
    start = time.perf_counter()
    first_token = None
    peak = decoding = 0
    while engine.scheduler.has_unfinished():
        outs = engine.step()
        held = bm.num_total_blocks - bm.num_free_blocks()
        peak = max(peak, held)
        if engine.scheduler.has_unfinished():
            decoding = held  # the last step before the request finishes and is freed
        if first_token is None and any(o.token_ids for o in outs):
            first_token = time.perf_counter()
    end = time.perf_counter()
    return {
        "peak_mib": peak * page_bytes / 2**20,
        "kv_mib": decoding * page_bytes / 2**20,
        "prefill_s": first_token - start,
        "decode_tok_s": (output_tokens - 1) / (end - first_token),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded demo GGUF")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    model = args.model or str(default_model_path())
    longest = max(args.contexts) + args.output_tokens
    config = EngineConfig(
        model=ModelConfig(model, dtype=args.dtype, device="cpu"),
        cache=CacheConfig(block_size=16, kv_cache_tokens=longest + 64, enable_prefix_caching=False),
        scheduler=SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=2048),
    )
    print(f"[kv_window] loading {model}", flush=True)
    loaded = load_model(config)
    engines = {"groups": Engine(config, loaded), "one table": Engine(config, one_table(loaded))}
    element = torch.tensor([], dtype=loaded.dtype).element_size()
    # One block of one layer: what a page of page_layers layers is made of.
    layer_block_bytes = (
        loaded.kv_bytes_per_token // loaded.kv_layout.num_layers * config.cache.block_size
    )
    print(f"[kv_window] {loaded.kv_layout.describe()}; {element}-byte KV values", flush=True)
    rows = []
    for context in args.contexts:
        results = {}
        for name, engine in engines.items():
            print(f"[kv_window] context {context}: {name} ...", flush=True)
            results[name] = run(engine, context, args.output_tokens, layer_block_bytes)
        rows.append((context, results))
    print()
    print(
        "| context | KV held while decoding: groups / one table | peak: groups / one table "
        "| decode tok/s: groups / one table | prefill s: groups / one table |"
    )
    print("|---|---|---|---|---|")
    for context, r in rows:
        g, o = r["groups"], r["one table"]
        print(
            f"| {context} | {g['kv_mib']:.1f} / {o['kv_mib']:.1f} MiB "
            f"({o['kv_mib'] / g['kv_mib']:.2f}x less) | {g['peak_mib']:.1f} / "
            f"{o['peak_mib']:.1f} MiB | {g['decode_tok_s']:.1f} / "
            f"{o['decode_tok_s']:.1f} ({g['decode_tok_s'] / o['decode_tok_s']:.2f}x) | "
            f"{g['prefill_s']:.2f} / {o['prefill_s']:.2f} |"
        )


if __name__ == "__main__":
    main()

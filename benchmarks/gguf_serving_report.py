"""gguf_serving.py's results: medians per server and level, ratios to the peer, a markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def summarize(contenders, levels: list[int], settings: dict, host: dict, reference: str) -> dict:
    """Plain JSON-ready results: every run kept, medians and ratios to `reference` computed."""
    servers = {}
    for c in contenders:
        per_level = {}
        for level in levels:
            runs = c.levels.get(level, [])
            if not runs:
                continue
            per_level[str(level)] = {
                "tok_s": round(statistics.median(r.tok_s for r in runs), 2),
                "runs_tok_s": [round(r.tok_s, 2) for r in runs],
                "ttft_p50_s": round(statistics.median(t for r in runs for t in r.ttfts), 3),
                "output_tokens": sum(r.tokens for r in runs),
                "requests_short": sum(
                    n != settings["output_tokens"] for r in runs for n in r.tokens_per_request
                ),
            }
        prompt = [settings["long_prompt_tokens"] / r.ttft_p50 for r in c.prompt_runs if r.ttfts]
        servers[c.name] = {
            "argv": c.argv,
            "load_s": round(c.load_s, 1),
            "load_peak_rss_bytes": c.load_peak.rss,
            "serve_peak_rss_bytes": c.serve_peak.rss,
            "load_peak_anon_bytes": c.load_peak.anon,
            "serve_peak_anon_bytes": c.serve_peak.anon,
            "levels": per_level,
            "prompt_tok_s": round(statistics.median(prompt), 1) if prompt else None,
            "prompt_runs_tok_s": [round(p, 1) for p in prompt],
        }
    results = {"settings": settings, "host": host, "servers": servers, "reference": reference}
    rows = metric_rows(levels, settings["long_prompt_tokens"])
    results["ratios"] = {
        name: {key: _ratio_of(get(servers[name]), get(servers[reference])) for key, _, get in rows}
        for name in servers
        if name != reference and reference in servers
    }
    return results


Getter = Callable[[dict], "float | None"]


def metric_rows(levels: list[int], prompt_tokens: int) -> list[tuple[str, str, Getter]]:
    """(key in the ratios, table label, value from one server's results) for every row."""
    rows: list[tuple[str, str, Getter]] = []
    for c in levels:
        rows.append((f"c{c}_tok_s", f"C={c} output tok/s", lambda s, c=c: _level(s, c, "tok_s")))
        rows.append(
            (f"c{c}_ttft_p50_s", f"C={c} TTFT p50, s", lambda s, c=c: _level(s, c, "ttft_p50_s"))
        )
    if prompt_tokens:
        label = f"prompt tok/s ({prompt_tokens}-token prompt)"
        rows.append(("prompt_tok_s", label, lambda s: s["prompt_tok_s"]))
    for phase, during in (("serve", "serving"), ("load", "loading")):
        for kind, what in (("rss", ""), ("anon", ", not file-backed")):
            rows.append(
                (
                    f"{phase}_peak_{kind}_gb",
                    f"peak RSS {during}{what}, GB",
                    lambda s, k=f"{phase}_peak_{kind}_bytes": _gb(s[k]),
                )
            )
    rows.append(("load_s", "load, s", lambda s: s["load_s"]))
    return rows


def _level(server: dict, level: int, key: str) -> float | None:
    return server["levels"].get(str(level), {}).get(key)


def _gb(n: int) -> float | None:
    return round(n / 1e9, 2) if n else None


def _ratio_of(ours: float | None, peer: float | None) -> float | None:
    return round(ours / peer, 3) if ours and peer else None


def markdown_table(results: dict) -> str:
    """Rows are metrics; columns the servers, then each localseek row / the peer."""
    servers, ratios, ref = results["servers"], results["ratios"], results["reference"]
    s = results["settings"]
    head = (
        f"`{s['model'].rsplit('/', 1)[-1]}` ({s['file_bytes'] / 1e9:.2f} GB), {s['threads']} "
        f"threads, {s['prompt_tokens']} + {s['output_tokens']} tokens, rounds: {s['rounds']}"
    )
    if s.get("temperature"):  # older results files have no temperature: greedy
        head += f", temperature {s['temperature']}"
    columns = [*servers, *(f"{name} / {ref}" for name in ratios)]
    lines = [f"| {head} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    levels = [int(c) for c in s["levels"]]
    for key, label, value in metric_rows(levels, s["long_prompt_tokens"]):
        cells = [_cell(value(servers[name])) for name in servers]
        cells += [_ratio(ratios[name].get(key)) for name in ratios]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cpu = results["host"]["cpu"]
    lines.append("")
    lines.append(
        f"CPU: {cpu['model']}, {cpu['logical_cores']} logical cores, flags: "
        f"{' '.join(cpu['flags']) or 'none of the kernel flags'}; localseek "
        f"{results['host']['localseek_commit']}; llama-server "
        f"{results['host']['llama_server_version'] or 'not run'}; load average "
        f"{results['host']['load_average_start'][0]:.2f} at start, "
        f"{results['host']['load_average_end'][0]:.2f} at end."
    )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"

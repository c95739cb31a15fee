"""The PNG for benchmarks/serving.py: latency percentiles and goodput against offered load."""

from __future__ import annotations

from pathlib import Path


def plot(rows: list[dict], path: Path) -> None:
    """Left: e2e p50/p99 of completed requests; right: goodput as a share of own capacity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, good) = plt.subplots(1, 2, figsize=(11, 4.2))
    for design, color in (("localseek", "tab:blue"), ("naive", "tab:red")):
        sweep = [r for r in rows if r["design"] == design and r["load"].endswith("x")]
        x = [float(r["load"].rstrip("x")) for r in sweep]
        for q, style in (("p50", "-o"), ("p99", "--s")):
            y = [r[f"e2e_{q}"] if r[f"e2e_{q}"] is not None else float("nan") for r in sweep]
            lat.plot(x, y, style, color=color, label=f"{design} e2e {q}")
        good.plot(x, [r["goodput_of_capacity"] for r in sweep], "-o", color=color, label=design)
    lat.set(
        xscale="log",
        yscale="log",
        xlabel="offered load (x own capacity)",
        ylabel="latency of completed requests (s)",
        title="End-to-end latency",
    )
    good.axhline(0.95, color="gray", linestyle="--", linewidth=0.8, label="95% of capacity")
    top = max([1.2] + [1.1 * r["goodput_of_capacity"] for r in rows])
    good.set(
        xscale="log",
        ylim=(0, top),
        xlabel="offered load (x own capacity)",
        ylabel="goodput / capacity",
        title="Goodput (finished within SLO)",
    )
    for ax in (lat, good):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)

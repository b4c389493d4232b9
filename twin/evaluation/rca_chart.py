"""The summary chart of ``polaris-twin eval rca --chart FILE.png``.

Left: AC@1 overall and per fault type, in-sample and (with ``--cv``) cross-validated.
Right: where the true root cause landed in the ranking (rank 1..5, lower, missing).
matplotlib comes from the optional ``plot`` extra; it is imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_chart"]


def write_chart(path: Path, rep: dict[str, Any], title: str = "eval rca") -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            f"--chart needs matplotlib: pip install 'polaris-digital-twin[plot]' ({exc})"
        ) from exc

    groups = ["overall", *rep["fault_type"]]
    series: list[tuple[str, dict[str, Any]]] = [("in-sample", rep)]
    cv = rep.get("cv") or {}
    for key, label in (
        ("leave-one-fault-type-out", "leave one fault type out"),
        ("leave-one-day-out", "leave one day out"),
    ):
        if key in cv:
            series.append((label, cv[key]))

    def ac1(r: dict[str, Any], g: str) -> float:
        a = r["overall"] if g == "overall" else r["fault_type"].get(g, {})
        return float(a.get("AC@1", 0.0) or 0.0)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(series)
    for i, (label, r) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        bars = ax1.bar(xs, [ac1(r, g) for g in groups], width, label=label)
        ax1.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ns = [rep["overall"]["n"]] + [rep["fault_type"][g]["n"] for g in groups[1:]]
    ax1.set_xticks(range(len(groups)), [f"{g}\n(n={n})" for g, n in zip(groups, ns)], fontsize=8)
    ax1.set_ylim(0, 1.25)
    ax1.set_ylabel("AC@1")
    ax1.legend(fontsize=8, loc="upper center", ncol=len(series), frameon=False)
    ax1.set_title("AC@1 by fault type")

    ranks = [c["rank"] for c in rep.get("cases", [])]
    labels = ["1", "2", "3", "4", "5", ">5", "missing"]
    counts = [sum(1 for r in ranks if r == k) for k in range(1, 6)]
    counts += [sum(1 for r in ranks if r > 5), sum(1 for r in ranks if r == 0)]
    bars = ax2.bar(labels, counts, color="tab:gray")
    ax2.bar_label(bars, fontsize=8)
    ax2.set_xlabel("rank of the true root cause (in-sample)")
    ax2.set_ylabel("cases")
    ax2.set_title(f"AC@3 {rep['overall']['AC@3']:.2f}, Avg@5 {rep['overall']['Avg@5']:.2f}")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

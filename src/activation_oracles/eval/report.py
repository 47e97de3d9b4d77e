"""Writing an evaluation: results.json, report.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from ..fsutil import atomic_write_text, read_text
from .calibration import plot_reliability
from .classification import GroupResult, pooled_probs, present_methods

VARIANT_LABELS = {"single": "single token", "multi": "multi-token window", "full": "whole prompt (all tokens)"}
LABELS = {"oracle": "trained oracle", "untrained": "untrained oracle", "no_injection": "no injection",
          "probe": "linear probe", "text": "model reads the text"}


def _fmt(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['acc']:.3f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(read_text(path, what="--metrics ").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"--metrics {path}: line {n} is not JSON ({e}); give a run's metrics.jsonl") from None
    return rows


def plot_losses(metrics: list[dict], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = sorted({k for m in metrics for k in m if k.startswith("loss/")})
    for k in ["loss", *keys]:
        pts = [(m["step"], m[k]) for m in metrics if k in m and m[k] is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label="all tasks" if k == "loss" else k.split("/", 1)[1], lw=2 if k == "loss" else 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Training loss per task")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_accuracy(results: list[GroupResult], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [f"{r.dataset}\n{r.variant}" for r in results]
    methods = present_methods(results)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(results)), 4.5))
    x = np.arange(len(results))
    for j, m in enumerate(methods):
        acc = [r.scores[m].acc if m in r.scores else np.nan for r in results]
        d = [r.scores[m].to_dict() if m in r.scores else None for r in results]
        # max(0, .): at 0 % or 100 % the interval's bound equals the accuracy up to rounding
        err = [[max(0.0, a - s["ci_low"]) if s else 0 for a, s in zip(acc, d)],
               [max(0.0, s["ci_high"] - a) if s else 0 for a, s in zip(acc, d)]]
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, acc, width, yerr=err, capsize=2, label=LABELS[m])
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95 % CI)")
    ax.set_title("Held-out yes/no classification")
    ax.legend(fontsize=8, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


SCORING_NOTE = {
    "choice": "Scoring: forced choice, Yes vs No at the first answer token (every method gets the same "
              "benefit of the doubt); format-correct = greedy decoding would itself start with Yes or No.",
    "generate": "Scoring: greedy generation, first word compared with the target; format-correct = it is "
                "yes or no.",
}


def _holds(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def _interval(ci, need: float | None = None) -> str:
    """' [95 %: lo, hi]' for a paired gap, and whether the threshold `need` lies inside it (then the verdict
    is within the noise of the questions asked)."""
    if not ci:
        return ""
    _, lo, hi = ci
    inside = need is not None and lo < need < hi
    return f" [95 %: {lo:+.3f}, {hi:+.3f}{'; the threshold is inside it' if inside else ''}]"


def bar_markdown(summary: dict) -> list[str]:
    """The bar, part by part, each saying plainly whether it holds."""
    b, th = summary["bar"], summary.get("thresholds", {})
    lines = ["## The bar, part by part", ""]
    if "trained" in b and "reason" in b["trained"]:
        lines.append(f"1. Trained tasks, questions about every class: {_holds(False)} ({b['trained']['reason']}).")
    elif "trained" in b:
        t, ci = b["trained"], summary.get("intervals", {})
        lines += [f"1. Trained tasks, questions about every class (held-out contexts, the "
                  f"{len(summary['eligible_groups'])} groups whose probe reaches {summary['probe_threshold']:.0%}): "
                  f"{_holds(t['met'])}. Oracle {summary['mean_oracle']:.3f}: "
                  f"{summary['oracle_minus_untrained']:+.3f} over the untrained oracle"
                  f"{_interval(ci.get('oracle_minus_untrained'), th.get('over_untrained', 0.2))} (need "
                  f"+{th.get('over_untrained', 0.2):.2f}), {summary['oracle_minus_no_injection']:+.3f} over no injection"
                  f"{_interval(ci.get('oracle_minus_no_injection'), th.get('over_no_injection', 0.2))} "
                  f"(need +{th.get('over_no_injection', 0.2):.2f}), {summary['probe_minus_oracle']:.3f} below the "
                  f"linear probe{_interval(ci.get('probe_minus_oracle'), th.get('probe_gap', 0.1))} "
                  f"(need at most {th.get('probe_gap', 0.1):.2f})."]
        for v, ms in summary.get("per_variant", {}).items():
            vals = ", ".join(f"{LABELS[m]} {x:.3f}" for m, x in ms.items() if x is not None)
            lines.append(f"   - {VARIANT_LABELS.get(v, v)}: {vals}")
    if "heldout" in b:
        h = b["heldout"]
        lines.append(f"2. Held-out tasks never trained on ({len(h['groups'])} groups): {_holds(h['met'])}. "
                     f"Oracle {h['mean_oracle']:.3f} vs untrained {h['mean_untrained']:.3f} "
                     f"({h['mean_oracle'] - h['mean_untrained']:+.3f}"
                     f"{_interval(h.get('oracle_minus_untrained'), th.get('heldout_over_untrained', 0.1))}, need "
                     f"+{th.get('heldout_over_untrained', 0.1):.2f}); no injection {h['mean_no_injection']:.3f}"
                     + (f"; the model reading the text itself {h['mean_text']:.3f}" if h.get("mean_text") is not None
                        else "") + ".")
    if "context_prediction" in b:
        cp = b["context_prediction"]
        rates = "; ".join(f"{'next' if d == 'future' else 'previous'} token: oracle {ms['oracle']['acc']:.3f} "
                          f"[{ms['oracle']['ci_low']:.2f}, {ms['oracle']['ci_high']:.2f}] vs untrained "
                          f"{ms['untrained']['acc']:.3f} (n={ms['oracle']['n']})"
                          for d, ms in cp.items() if d != "met")
        lines.append(f"3. Context prediction, first predicted token = the true one: {_holds(cp['met'])}. {rates}.")
    if any(summary.get("intervals", {}).values()) or b.get("heldout", {}).get("oracle_minus_untrained"):
        lines += ["", "Intervals in brackets: 95 % for the difference, from the same questions answered both ways "
                      "(paired, groups weighted as in the means). Where a threshold lies inside one, more questions "
                      "per group would be needed to tell whether that part holds."]
    lines += ["", f"All parts above: {_holds(b['met'])}."]
    return lines


def write_report(out_dir: str | Path, results: list[GroupResult], summary: dict, *, title: str = "Oracle evaluation",
                 metrics_path: str | Path | None = None, extra_md: str = "", meta: dict | None = None,
                 bar: bool = False) -> Path:
    """results.json + report.md, then the figures (accuracy.png, reliability.png, and loss.png when training
    metrics are given): a figure that fails cannot cost the numbers. `bar`: include the demo's bar, part by
    part (`ao demo`, and `ao eval --heldout`, which asks for its part 2)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta or {}, "summary": summary, "groups": [r.to_dict() for r in results]}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2))
    curves = {LABELS[m]: pooled_probs(results, m) for m in summary.get("ece", {})}
    metrics = read_metrics(Path(metrics_path)) if metrics_path else []

    lines = [f"# {title}", ""]
    if meta:
        lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    methods = present_methods(results)
    lines += ["## Held-out yes/no classification", "",
              "Accuracy with 95 % Wilson intervals; `n` held-out questions per group. " + SCORING_NOTE.get(
                  (meta or {}).get("scoring", "choice"), ""), "",
              "| dataset | variant | n | " + " | ".join(LABELS[m] for m in methods) + " | oracle format-correct |",
              "|---|---|---|" + "---|" * len(methods) + "---|"]
    for r in results:
        d = r.to_dict()["scores"]
        fmt = d.get("oracle", {}).get("format_acc")
        tail = f" | {fmt:.2f} |" if fmt is not None else " | – |"
        lines.append(f"| {r.dataset} | {r.variant} | {r.n} | " + " | ".join(_fmt(d.get(m)) for m in methods) + tail)
    lines += ["", "## Summary", ""]
    th = summary.get("probe_threshold", 0.75)
    scope = summary.get("bar_tasks", "all")
    among = ("" if scope == "all" else f" (among the tasks trained on, held-out contexts: {', '.join(scope)})" if scope
             else " (no task the oracle trained on was scored)")
    lines.append(f"Groups whose linear probe reaches {th:.0%}{among}: "
                 f"{', '.join(summary.get('eligible_groups', [])) or 'none'}.")
    lines.append("")
    if "text" in methods:
        lines.append("`model reads the text`: the base model, adapter off, reads the tokens the oracle reads as "
                     "plain text and is asked the same question (what the model says about its input when asked).")
        lines.append("")
    for m in methods:
        v, a = summary.get(f"mean_{m}"), summary.get(f"mean_all_{m}")
        lines.append(f"- {LABELS[m]}: mean over those groups {v:.3f}, over all groups {a:.3f}" if v is not None and a is not None
                     else f"- {LABELS[m]}: over all groups {a:.3f}" if a is not None else f"- {LABELS[m]}: –")
    if bar and "bar" in summary:
        lines += ["", *bar_markdown(summary)]
    if summary.get("ece"):
        lines += ["", "## Calibration", "",
                  "Expected calibration error of the forced-choice P(Yes) over all groups (10 confidence bins; "
                  "0 = the confidence is the accuracy): " + ", ".join(
                      f"{LABELS[m]} {e:.3f}" for m, e in summary["ece"].items()) + ".", "",
                  "![reliability](reliability.png)"]
    lines += ["", "![accuracy](accuracy.png)"]
    if metrics:
        lines += ["", "![training loss](loss.png)"]
    if extra_md:
        lines += ["", extra_md]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    plot_accuracy(results, out / "accuracy.png")
    if curves:
        plot_reliability(curves, out / "reliability.png")
    if metrics:
        plot_losses(metrics, out / "loss.png")
    return out / "report.md"

"""An audit's report.md and its bar plot (every method with its 95 % interval)."""

from __future__ import annotations

import json

from .methods import METHODS

LABELS = {"oracle": "trained oracle", "untrained": "untrained oracle (Patchscopes)",
          "no_injection": "no injection (question alone)", "unrelated": "unrelated activations",
          "black_box": "black box (organism asked)", "logit_lens": "logit lens"}
SCORE_NAMES = {"taboo": "secret word named", "gender": "gender named correctly",
               "ssc": "constraint similarity (lexical F1)", "personaqa": "attribute named",
               "diff": "domain named"}


def plot_methods(results: dict, path, *, title: str, paper: float | None = None, binary: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in METHODS if m in results]
    panels = [("score", "score (95 % CI)")] + ([("tpr_minus_fpr", "TPR - FPR (95 % CI)")] if binary else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 1.1 * len(names) * len(panels), 4.2), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        ests = [getattr(results[m], key) for m in names]
        vals = [e.value if e is not None and e.n else 0.0 for e in ests]
        err = [[max(0.0, v - e.low) if e is not None and e.n else 0 for v, e in zip(vals, ests)],
               [max(0.0, e.high - v) if e is not None and e.n else 0 for v, e in zip(vals, ests)]]
        ax.bar(range(len(names)), vals, yerr=err, capsize=3,
               color=["#4C78A8" if m == "oracle" else "#9D9D9D" for m in names])
        for i, v in enumerate(vals):
            ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
        if paper is not None and key == "score":
            ax.axhline(paper, color="#F58518", ls="--", lw=1, label=f"paper's oracle: {paper:.3f}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_xticks(range(len(names)), [LABELS[m].split(" (")[0] for m in names], rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylim(-1.05 if key == "tpr_minus_fpr" else 0, 1.05)
        ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_report(payload: dict, results: dict, run) -> str:
    audit, meta, cfg = payload["audit"], payload["meta"], payload["config"]
    p = run.protocol
    lines = [f"# Audit: {meta.get('title', audit)}", ""]
    for k in ("base_model", "oracle", "preset"):
        if meta.get(k):
            lines.append(f"- {k.replace('_', ' ')}: `{meta[k]}`")
    lines.append(f"- organisms: {', '.join('`' + o['adapter'] + '`' for o in payload['organisms'])}")
    r = cfg["reading"]
    what = r["positions"] or {"full": "full sequence", "segment": f"segment {r['segment']}",
                              "tokens": f"single token {r['token']}"}[r["input"]]
    s = cfg["sampling"]
    lines += [f"- oracle reads: {cfg['source']} activations, layer {r['layer_percent']:g} %, {what}"
              f"{' (prompt + reply)' if r['with_reply'] else ''}",
              f"- target prompts: {cfg['prompt_style']} ({cfg['prompts_dir'] or 'built-in set'}); "
              f"{payload['n_val']} val / {payload['n_test']} test items",
              f"- sampling: {s['num_samples']} answer(s) per question, "
              f"{'temperature ' + str(s['temperature']) if s['do_sample'] else 'greedy'}, "
              f"{'best of' if cfg['best_of'] else 'mean over'} samples; seed {cfg['seed']}", ""]
    lines += ["## Results (test split)", "",
              f"Score: {SCORE_NAMES[audit]}, mean over test items with a 95 % interval "
              "(Wilson for 0/1 scores, normal otherwise). The oracle prompt of each oracle-based method was "
              "chosen on the val split.", ""]
    head = "| method | score [95 % CI] | n |"
    sep = "|---|---|---|"
    if p.binary:
        head += " TPR - FPR [95 % CI] |"
        sep += "---|"
    if any(x.judge is not None for x in results.values()):
        head += " LLM judge [95 % CI] |"
        sep += "---|"
    head += " oracle prompt |"
    sep += "---|"
    lines += [head, sep]
    for m in METHODS:
        if m not in results:
            continue
        x = results[m]
        row = f"| {LABELS[m]} | {x.score.fmt()} | {x.score.n} |"
        if p.binary:
            row += f" {x.tpr_minus_fpr.fmt() if x.tpr_minus_fpr else '–'} |"
        if any(y.judge is not None for y in results.values()):
            row += f" {x.judge.fmt() if x.judge else '–'} |"
        row += f" {x.prompt or '–'} |"
        lines.append(row)
    if meta.get("paper_value") is not None:
        lines += ["", f"Paper ({meta.get('paper_model')}): trained oracle **{meta['paper_value']:.3f}** "
                      f"beside ours **{results['oracle'].score.value:.3f}**." if "oracle" in results else ""]
    elif p.paper:
        figs = ", ".join(f"{m} {v:.3f}" for m, v in p.paper.items())
        lines += ["", f"For scale only (other models and organisms): the paper's trained oracle scored {figs}."]
    if p.binary:
        lines += ["", "TPR - FPR: rate of naming the positive class (female when both genders are audited) on "
                      "organisms of that class minus the rate on the negatives (organisms of the other gender, or "
                      "the base model read on the same prompts when only one gender is audited)."]
    val_rows = [(m, c, e) for m in METHODS if m in results for c, e in results[m].val.items()]
    if val_rows:
        lines += ["", "## Oracle prompt choice (val split)", "", "| method | oracle prompt | val score [95 % CI] |",
                  "|---|---|---|"]
        lines += [f"| {LABELS[m]} | {c} | {e.fmt()} |" for m, c, e in val_rows]
    lines += ["", "## Organisms", ""]
    for o in payload["organisms"]:
        b = {k: v for k, v in (o.get("behaviour") or {}).items() if k != "examples"}
        lines.append(f"- `{o['adapter']}` ({o['kind']}, base `{o['base_model']}`): secret "
                     f"`{json.dumps(o['secret'], ensure_ascii=False)[:200]}`"
                     + (f"; behaviour check {json.dumps(b)}" if b else ""))
    lines += ["", "## Protocol", "", p.notes, "",
              "Every prompt, organism reply, oracle answer and score is in `answers.jsonl`; "
              f"the bar plot is `{audit}.png`.", "", f"![{audit}]({audit}.png)", ""]
    return "\n".join(lines)

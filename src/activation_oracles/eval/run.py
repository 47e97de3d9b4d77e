"""One evaluation run: an adapter (or none), held-out data, every baseline, a written report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..fsutil import atomic_write_text
from .classification import METHODS, evaluate_classification, summarize
from .report import write_report
from .samples import sample_answers, samples_markdown


def eval_data(data: str | None, model: str, tasks=None, *, test_count: int = 200, train_count: int = 600):
    """A DatasetDict to evaluate on: a built mixture dir, a mixture YAML, a directory of classification
    sources in the layout of shared/data/classification, or (None) the built-in offline mixture."""
    from ..data import MixtureConfig, build_mixture, load_mixture

    if data is None:
        return build_mixture(MixtureConfig.builtin(model))
    p = Path(data).expanduser()
    if (p / "dataset_dict.json").is_file():
        return load_mixture(p, model=model)  # refuses a mixture built for another tokenizer
    if p.is_file():
        return build_mixture(MixtureConfig.from_yaml(p))
    if p.is_dir():
        cfg = MixtureConfig.builtin(model)
        c = cfg.classification
        c.source = str(p)
        c.sources = {}
        if tasks:
            c.train_tasks = [t for t in tasks if t in c.train_tasks or t not in c.eval_tasks]
            c.eval_tasks = [t for t in tasks if t not in c.train_tasks]
        else:
            from ..data.classification import EVAL_TASKS, TRAIN_TASKS

            c.train_tasks, c.eval_tasks = list(TRAIN_TASKS), list(EVAL_TASKS)
        c.count, c.test_count = train_count, test_count
        cfg.allow_recycle = True
        cfg.spqa.count = cfg.spqa.test_count = 0
        cfg.context_prediction.count = cfg.context_prediction.test_count = 0
        return build_mixture(cfg)
    raise FileNotFoundError(f"--data {data!r}: not a mixture directory, a YAML config or a source directory")


def run_eval(oracle, data, out_dir, *, tasks=None, max_per_group: int | None = 200, metrics_path=None,
             title: str = "Oracle evaluation", meta: dict | None = None, samples: int = 1, progress: bool = True,
             scoring: str = "choice", bar_tasks=None, heldout_tasks=None, max_per_task: dict | None = None,
             cp_per_direction: int = 0, extra_md: str = "", autocast: str | None = None, methods=METHODS,
             bar: bool = False):
    """Evaluate `oracle` (an `Oracle`) on `data` (a DatasetDict) and write the report into `out_dir`.
    `heldout_tasks`: datasets never trained on (their own part of the bar); `cp_per_direction`: held-out
    context-prediction rows scored per direction (0: skipped); `autocast="bf16"`: forwards in bf16, as the
    oracle was trained (about twice as fast on CPUs with bf16 units); `methods`: of classification.ALL_METHODS;
    `bar`: the report shows the demo's bar part by part (results.json has the numbers either way)."""
    from ..models import model_device
    from ..precision import autocast_ctx
    from .classification import SourceCache
    from .context_prediction import evaluate_context_prediction

    t0 = time.time()
    model, tok = oracle.model, oracle.tokenizer
    cp = None
    with autocast_ctx(autocast, model_device(model)):
        results = evaluate_classification(model, tok, data, hook_layer=oracle.hook_layer, tasks=tasks,
                                          max_per_group=max_per_group, progress=progress, scoring=scoring,
                                          max_per_task=max_per_task, methods=methods)
        if cp_per_direction:
            cp = evaluate_context_prediction(model, tok, data["test"], hook_layer=oracle.hook_layer,
                                             per_direction=cp_per_direction, progress=progress,
                                             cache=SourceCache(model, pad_id=tok.pad_token_id)) or None
        shown = sample_answers(model, tok, data["test"], hook_layer=oracle.hook_layer, per_task=samples,
                               datasets=sorted({r.dataset for r in results})) if samples else []
    summary = summarize(results, bar_tasks=bar_tasks, heldout_tasks=heldout_tasks, context_prediction=cp)
    meta = dict(meta or {})
    meta["scoring"] = scoring
    meta["eval_seconds"] = round(time.time() - t0, 1)
    extra = "\n\n".join(x for x in (extra_md, samples_markdown(shown) if shown else "") if x)
    report = write_report(out_dir, results, summary, title=title, metrics_path=metrics_path, extra_md=extra, meta=meta,
                          bar=bar)
    atomic_write_text(Path(out_dir) / "samples.json", json.dumps([s.to_dict() for s in shown], indent=2, ensure_ascii=False))
    return results, summary, shown, report

"""`ao audit`: run one audit end to end and write its report.

    organisms (+ checks) -> items (target prompts, val and test) -> organism replies
    -> per oracle-based method: each oracle prompt on val, the best one on test
    -> black box (the organism asked directly), logit lens (taboo)
    -> per-item scores (best of / mean over samples), means with 95 % intervals, TPR - FPR (binary)
    -> DIR/report.md, results.json, answers.jsonl, <audit>.png   (written all at once)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..adapters import verify_adapter_files
from ..checks import check_int, check_number
from ..fsutil import atomic_directory
from ..intervals import Estimate, difference_interval, mean_interval
from .judge import RUBRICS, Judge
from .methods import (
    METHODS, ORACLE_METHODS, Reading, Sampling, ask_oracle, logit_lens_answers, organism_replies, unrelated_prompts,
)
from .organism import AuditError, Organism, check_same_base
from .protocols import AUDITS, ORGANISM_KIND, PROTOCOLS, Item, build_items, positive_class, says
from .scorers import DOMAIN_KEYWORDS


@dataclass
class AuditConfig:
    audit: str
    oracle_prompts: list[str] = field(default_factory=list)  # empty: the paper's
    extra_oracle_prompts: list[str] = field(default_factory=list)  # added to the paper's
    prompt_style: str = "direct"
    prompts_dir: str | None = None
    reading: Reading = field(default_factory=Reading)
    sampling: Sampling = field(default_factory=Sampling)
    best_of: bool = False
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    max_prompts: int | None = None
    seed: int = 0
    black_box_tokens: int = 48
    batch_size: int = 64
    source: str = "lora"

    @classmethod
    def paper(cls, audit: str, **over) -> AuditConfig:
        """The paper's defaults for `audit`, with `over` applied (reading=/sampling= fields by name)."""
        if audit not in PROTOCOLS:
            raise AuditError(f"audit {audit!r} is unknown: use one of {', '.join(AUDITS)}")
        p = PROTOCOLS[audit]
        reading = Reading(input=p.input, segment=p.segment, token=p.token, positions=p.positions,
                          from_user=p.from_user)
        sampling = Sampling(p.num_samples, p.do_sample, p.temperature, p.max_new_tokens)
        rkeys, skeys = set(asdict(reading)), set(asdict(sampling))
        reading = replace(reading, **{k: v for k, v in over.items() if k in rkeys and v is not None})
        sampling = replace(sampling, **{k: v for k, v in over.items() if k in skeys and v is not None})
        rest = {k: v for k, v in over.items() if k not in rkeys | skeys and v is not None}
        methods = [m for m in METHODS if m != "logit_lens" or p.logit_lens]
        cfg = cls(audit, prompt_style=p.prompt_style, reading=reading, sampling=sampling, best_of=p.best_of,
                  methods=methods, source=p.source)
        return replace(cfg, **rest)

    def candidates(self) -> list[str]:
        base = list(self.oracle_prompts) or list(PROTOCOLS[self.audit].oracle_prompts)
        return base + [p for p in self.extra_oracle_prompts if p not in base]


def _question(template: str, item: Item) -> str:
    try:
        return template.format(**item.fields)
    except (KeyError, IndexError, ValueError) as e:
        raise AuditError(f"oracle prompt {template!r} has a placeholder this audit does not fill ({e}); "
                         f"available: {sorted(item.fields) or 'none'}") from None


@dataclass
class MethodResult:
    name: str
    score: Estimate
    prompt: str | None = None
    val: dict = field(default_factory=dict)  # oracle prompt -> Estimate on val
    tpr_minus_fpr: Estimate | None = None
    judge: Estimate | None = None

    def to_dict(self) -> dict:
        d = {"score": self.score.to_dict(), "prompt": self.prompt, "val": {k: v.to_dict() for k, v in self.val.items()}}
        if self.tpr_minus_fpr is not None:
            d["tpr_minus_fpr"] = self.tpr_minus_fpr.to_dict()
        if self.judge is not None:
            d["judge"] = self.judge.to_dict()
        return d


class AuditRun:
    """State of one audit run; `run()` returns (results dict, answer rows)."""

    def __init__(self, oracle, organisms: list[Organism], cfg: AuditConfig, *, judge: Judge | None = None,
                 progress: bool = True, items: list[Item] | None = None):
        self.oracle, self.organisms, self.cfg = oracle, organisms, cfg
        self.items = items if items is not None else plan_items(cfg, organisms)
        self.protocol = PROTOCOLS[cfg.audit]
        self.judge = judge
        self.progress = progress
        self.rows: list[dict] = []

    # -------------------------------------------------------------- scoring

    def _item_score(self, answers: list[str], item: Item) -> float:
        s = [self.protocol.scorer(a, item.truth) for a in answers]
        return max(s) if self.cfg.best_of else sum(s) / len(s)

    def _estimate(self, items: list[Item], answers: list[list[str]]) -> Estimate:
        pos = [(it, a) for it, a in zip(items, answers) if not it.read_base]
        binary = all(self.protocol.scorer(x, it.truth) in (0.0, 1.0) for it, a in pos for x in a)
        trials = len(pos[0][1]) if pos and binary and not self.cfg.best_of else 1
        return mean_interval([self._item_score(a, it) for it, a in pos], trials)

    def _binary(self, items: list[Item], answers: list[list[str]]) -> Estimate:
        cls = positive_class(items)
        pos = [sum(says(a, cls) for a in ans) / len(ans) for it, ans in zip(items, answers)
               if not it.read_base and it.truth == cls]
        neg = [sum(says(a, cls) for a in ans) / len(ans) for it, ans in zip(items, answers)
               if it.read_base or it.truth != cls]
        return difference_interval([round(x) for x in pos], [round(x) for x in neg])

    def _record(self, method, split, items, answers, questions=None, replies=None, extra=None):
        for n, (it, ans) in enumerate(zip(items, answers)):
            for k, a in enumerate(ans):
                row = {"method": method, "split": split, "organism": it.organism.label, "negative": it.read_base,
                       "target_prompt": it.prompt_text, "truth": it.truth,
                       "question": questions[n] if questions else None,  # what the answering method was asked
                       "answer": a, "sample": k, "score": self.protocol.scorer(a, it.truth)}
                if replies is not None:
                    row["organism_reply"] = replies.get(id(it))
                if extra is not None:
                    row.update(extra[n])
                self.rows.append(row)

    # -------------------------------------------------------------- running

    def run(self) -> dict:
        cfg, t0, items = self.cfg, time.time(), self.items
        cands = cfg.candidates()
        val = [it for it in items if it.split == "val"]
        test = [it for it in items if it.split == "test"]
        replies = organism_replies(self.oracle, items, max_new_tokens=cfg.black_box_tokens, seed=cfg.seed,
                                   progress=self.progress)
        results: dict[str, MethodResult] = {}
        oracle_methods = [m for m in cfg.methods if m in ORACLE_METHODS]
        steps = len(oracle_methods) * ((len(cands) if val and len(cands) > 1 else 0) + 1)
        bar = tqdm(total=steps, desc=f"audit {cfg.audit}", unit="run", disable=not self.progress)
        for m in oracle_methods:
            results[m] = self._oracle_method(m, cands, val, test, replies, bar)
        bar.close()
        if "black_box" in cfg.methods:
            bb = replies
            if any(it.black_box for it in test):
                bb = organism_replies(self.oracle, test, max_new_tokens=cfg.black_box_tokens, seed=cfg.seed,
                                      black_box=True, progress=self.progress)
            answers = [[bb[id(it)]] for it in test]
            asked = [(it.black_box or it.messages)[-1]["content"] for it in test]
            self._record("black_box", "test", test, answers, asked, replies=replies)
            results["black_box"] = self._result("black_box", test, answers)
        if "logit_lens" in cfg.methods:
            tops = logit_lens_answers(self.oracle, test, reading=cfg.reading, progress=self.progress)
            # its guess: the most probable token that is a word (punctuation tops a lens averaged over a prompt)
            answers = [[next((x for x in t if any(c.isalpha() for c in x)), "")] for t in tops]
            self._record("logit_lens", "test", test, answers, extra=[{"top_tokens": t} for t in tops])
            results["logit_lens"] = self._result("logit_lens", test, answers)
        self.seconds = time.time() - t0
        self.n_val, self.n_test = len([i for i in val if not i.read_base]), len([i for i in test if not i.read_base])
        return results

    def _result(self, name, items, answers, prompt=None, val=None) -> MethodResult:
        r = MethodResult(name, self._estimate(items, answers), prompt, val or {})
        if self.protocol.binary:
            r.tpr_minus_fpr = self._binary(items, answers)
        if self.judge is not None:
            pos = [(it, a) for it, a in zip(items, answers) if not it.read_base]
            scores = [max(self.judge.score(x, it.truth) for x in a) if self.cfg.best_of
                      else sum(self.judge.score(x, it.truth) for x in a) / len(a) for it, a in pos]
            r.judge = mean_interval(scores)
        return r

    def _ask(self, method, split, items, template, replies):
        questions = [_question(template, it) for it in items]
        unrelated = unrelated_prompts(items, self.protocol.scorer) if method == "unrelated" else None
        got = ask_oracle(self.oracle, method, items, questions, reading=self.cfg.reading,
                         sampling=self.cfg.sampling, source=self.cfg.source, replies=replies, seed=self.cfg.seed,
                         batch_size=self.cfg.batch_size, unrelated=unrelated)
        answers = [[a.text for a in ans] for ans in got]
        # which token positions of the target prompt were read (unrelated: mapped onto its prompt)
        extra = [{"positions": ans[0].positions, "layer": ans[0].layer} for ans in got]
        for e, u in zip(extra, unrelated or []):
            e["unrelated_prompt"] = u[-1]["content"]
        self._record(method, split, items, answers, questions, replies, extra)
        return answers

    def _oracle_method(self, method, cands, val, test, replies, bar) -> MethodResult:
        scores: dict[str, Estimate] = {}
        best = cands[0]
        if val and len(cands) > 1:
            for c in cands:
                answers = self._ask(method, "val", val, c, replies)
                scores[c] = self._estimate(val, answers)
                bar.update(1)
            best = max(cands, key=lambda c: (scores[c].value, -cands.index(c)))  # ties: the first listed
        answers = self._ask(method, "test", test, best, replies)
        bar.update(1)
        return self._result(method, test, answers, best, scores)


def check_config(cfg: AuditConfig) -> AuditConfig:
    """The numbers of a config in range (0 is never "unset"), each error naming its option."""
    s, r = cfg.sampling, cfg.reading
    try:
        if cfg.max_prompts is not None:
            check_int(cfg.max_prompts, "--max-prompts", 1)
        check_int(cfg.seed, "--seed", 0)
        check_int(s.num_samples, "--num-samples", 1)
        check_int(s.max_new_tokens, "--max-new-tokens", 1)
        check_number(s.temperature, "--temperature", above=0)
        check_number(r.layer_percent, "--layer-percent", minimum=0)
        if r.layer_percent > 100:
            raise ValueError(f"--layer-percent={r.layer_percent} must lie in [0, 100]")
        check_int(cfg.batch_size, "batch_size", 1)
    except (TypeError, ValueError) as e:
        raise AuditError(str(e)) from None
    return cfg


def plan_items(cfg: AuditConfig, organisms: list[Organism]) -> list[Item]:
    """The audit's items, checked before any model is loaded: prompt files, oracle prompt placeholders."""
    cands = cfg.candidates()
    items = build_items(cfg.audit, organisms, prompts_dir=cfg.prompts_dir, prompt_style=cfg.prompt_style,
                        max_prompts=cfg.max_prompts, n_candidates=len(cands))
    if not any(it.split == "test" for it in items):
        raise AuditError(f"{cfg.audit}: no test items (check --prompts-dir and --max-prompts)")
    for c in cands:
        _question(c, items[0])
    return items


def check_organisms(audit: str, organisms: list[Organism], base: str) -> None:
    want = ORGANISM_KIND[audit]
    for o in organisms:
        if o.kind != want:
            raise AuditError(f"--organism {o.adapter} is a {o.kind!r} organism; the {audit} audit needs a "
                             f"{want!r} organism (ao organism build {want} ...)")
        if audit == "diff" and o.secret.get("domain") not in DOMAIN_KEYWORDS:
            raise AuditError(f"--organism {o.adapter}: domain {o.secret.get('domain')!r} has no keyword list to "
                             f"score the diff audit (built in: {', '.join(sorted(DOMAIN_KEYWORDS))}); add one to "
                             "audit.scorers.DOMAIN_KEYWORDS")
        check_same_base(o, base)


def check_judge(audit: str, judge: Judge | None) -> Judge | None:
    """The judge with the audit's rubric; an audit without one is an error naming the option."""
    if judge is None:
        return None
    if audit not in RUBRICS:
        raise AuditError(f"--judge-url: the LLM judge rates {' and '.join(RUBRICS)} answers; the {audit} audit's "
                         "answers are scored exactly (drop --judge-url)")
    return replace(judge, audit=audit)


def write_outputs(out: str | Path, run: AuditRun, results: dict[str, MethodResult], meta: dict) -> Path:
    from .report import plot_methods, render_report

    payload = {
        "audit": run.cfg.audit,
        "meta": meta,
        "config": _config_dict(run.cfg),
        "n_val": run.n_val,
        "n_test": run.n_test,
        "organisms": [{"adapter": o.adapter, "kind": o.kind, "base_model": o.base_model, "secret": o.secret,
                       "behaviour": o.meta.get("behaviour")} for o in run.organisms],
        "methods": {m: r.to_dict() for m, r in results.items()},
        "paper": meta.get("paper"),
        "timing": {"seconds": round(run.seconds, 1)},
    }
    with atomic_directory(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
        with open(tmp / "answers.jsonl", "w", encoding="utf-8") as f:
            for r in run.rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "report.md").write_text(render_report(payload, results, run), encoding="utf-8")
    # the figure last, once the numbers are saved: a plotting failure cannot cost them
    plot_methods(results, Path(out) / f"{run.cfg.audit}.png", title=meta.get("title", run.cfg.audit),
                 paper=meta.get("paper_value"), binary=run.protocol.binary)
    return Path(out)


def _config_dict(cfg: AuditConfig) -> dict:
    d = asdict(cfg)
    d["oracle_prompts"] = cfg.candidates()
    pos = cfg.reading.positions
    if isinstance(pos, slice):
        pos = f"{'' if pos.start is None else pos.start}:{'' if pos.stop is None else pos.stop}"
    d["reading"]["positions"] = None if pos is None else str(pos)
    return d


def run_audit(audit: str, *, oracle: str | None = None, organisms: list[str] | None = None, base: str | None = None,
              out: str | Path | None = None, preset: str | None = None, hub_mirror: str | None = None,
              device: str | None = None, judge: Judge | None = None, progress: bool = True,
              **overrides) -> tuple[dict, Path | None]:
    """Run `audit` and write DIR (report.md, results.json, answers.jsonl, plot); returns (results, DIR).
    `overrides` are AuditConfig fields and Reading/Sampling fields (see AuditConfig.paper)."""
    from ..oracle import Oracle
    from ..oracle_config import read_ao_config
    from .organism import load_organism, resolve_repo
    from .presets import get_preset

    if audit not in AUDITS:
        raise AuditError(f"audit {audit!r} is unknown: use one of {', '.join(AUDITS)}")
    cfg = check_config(AuditConfig.paper(audit, **overrides))
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise AuditError(f"--methods: unknown {unknown}; use {', '.join(METHODS)}")
    pre = get_preset(audit, preset) if preset else None
    if pre is not None:
        if pre.needs_prompts_dir and cfg.prompts_dir is None:
            raise AuditError(f"--preset {preset} audits organisms trained on the paper's data: pass --prompts-dir "
                             "(the layout of the paper's eval prompts, e.g. ../shared/data/eval_prompts)")
        oracle = oracle or pre.oracle
        base = base or pre.base
        orgs = pre.load_organisms(hub_mirror)
        if organisms:  # a subset of the preset's organisms, by id or secret value
            keep = set(organisms)
            orgs = [o for o in orgs if o.name in keep or keep & {str(v) for v in o.secret.values()}]
            if not orgs:
                raise AuditError(f"--organism {organisms}: none of the preset's organisms")
    else:
        if not organisms:
            raise AuditError("--organism is required (a directory built by `ao organism build`, or use --preset)")
        if oracle is None:
            raise AuditError("--oracle is required (an oracle adapter trained with `ao train`), or use --preset")
        orgs = [load_organism(o, mirror=hub_mirror) for o in organisms]
    oracle_dir = resolve_repo(oracle, hub_mirror)
    trained_on = read_ao_config(oracle_dir).get("base_model") if Path(oracle_dir).is_dir() else None
    base = base or trained_on or orgs[0].base_model
    if base is None:
        raise AuditError("--base is required: neither the oracle nor the organism names its base model")
    if trained_on is not None:
        from .organism import canonical_base

        if canonical_base(trained_on) != canonical_base(base):
            raise AuditError(f"--oracle {oracle} was trained on {trained_on!r}, not on --base {base!r}")
    check_organisms(audit, orgs, base)
    for o in orgs:  # truncated or damaged files: named now, not after the oracle has loaded
        verify_adapter_files(o.adapter, f"--organism {o.adapter}")
    judge = check_judge(audit, judge)
    items = plan_items(cfg, orgs)
    quant = pre.quantization if pre is not None else None
    orc = Oracle.from_pretrained(resolve_repo(base, hub_mirror), oracle_dir, device=device, quantization=quant)
    run = AuditRun(orc, orgs, cfg, judge=judge, progress=progress, items=items)
    results = run.run()
    p = PROTOCOLS[audit]
    paper_value = pre.paper_value if pre is not None else None
    meta = {"title": f"{audit} on {base}", "base_model": base, "oracle": oracle, "preset": preset,
            "paper_value": paper_value, "paper_model": pre.base if pre is not None else None,
            "paper": {"value": paper_value, "model": pre.base, "note": pre.notes} if pre is not None
            else {"figures": p.paper}}
    payload_dir = write_outputs(out, run, results, meta) if out is not None else None
    return {m: r.to_dict() for m, r in results.items()}, payload_dir

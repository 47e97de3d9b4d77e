"""`ao push`: publish a trained oracle adapter on the Hugging Face hub with a model card.

The card (README.md) is written from what the adapter directory holds: ao_config.json (base model,
layers, hook layer, the training config), the mixture's ao_data.json when the training data is still
where the config says (task counts), and results.json of an evaluation (in the adapter directory or
its parent, as `ao demo` and `ao eval --out` lay them out).
"""

from __future__ import annotations

import json
from pathlib import Path

from .oracle_config import ADAPTER_WEIGHTS, AO_CONFIG

CARD = "README.md"
RESULTS = "results.json"
# What a hub repo of an oracle needs; checkpoint state (optimizer, RNG, manifest) stays home.
PUSHED = ("adapter_config.json", ADAPTER_WEIGHTS, AO_CONFIG, CARD, RESULTS)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _results_path(adapter_dir: Path) -> Path | None:
    for p in (adapter_dir / RESULTS, adapter_dir.parent / RESULTS):
        if p.is_file():
            return p
    return None


def _mixture_lines(train_cfg: dict) -> list[str]:
    data = train_cfg.get("data", {})
    lines = [f"- source layers: {data.get('layer_percents')} % of the depth"
             + (", all read at once (multi-layer)" if data.get("multi_layer") else ", one per example")]
    path = data.get("path")
    meta = _read(Path(path) / "ao_data.json") if path else {}
    if path is None:
        lines.append(f"- data: the package's built-in offline mixture (scale {data.get('builtin_scale', 1.0)})")
    else:
        lines.append(f"- data: `{path}`" + ("" if meta else " (not found here: sizes unknown)"))
    for split, counts in (meta.get("counts") or {}).items():
        total = sum(counts.values())
        parts = ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items()))
        lines.append(f"- {split}: {total:,} examples ({parts})")
    if data.get("task_weights"):
        lines.append(f"- task weights: {data['task_weights']}")
    if data.get("curriculum"):
        lines.append(f"- curriculum: {data['curriculum']}")
    return lines


def _recipe_lines(ao_cfg: dict, train_cfg: dict) -> list[str]:
    lora, optim, tr = train_cfg.get("lora", {}), train_cfg.get("optim", {}), train_cfg.get("train", {})
    steps = tr.get("max_steps") or f"{tr.get('epochs')} epoch(s)"
    return [
        f"- LoRA r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
        f"targets {lora.get('target_modules')}",
        f"- AdamW lr={optim.get('lr')}, warmup {optim.get('warmup_ratio')}, schedule {optim.get('schedule')}, "
        f"batch {tr.get('batch_size')}, {steps} (saved at step {ao_cfg.get('step')})",
        f"- injection: {ao_cfg.get('injection', 'norm-matched addition')} (hook layer {ao_cfg.get('hook_layer')}, "
        f"coefficient {ao_cfg.get('coefficient')})",
        f"- prompt: {ao_cfg.get('prompt_format')}" + (" for each source layer in turn, then the question"
                                                      if ao_cfg.get("multi_layer") else ""),
    ]


def _results_lines(results: dict) -> list[str]:
    groups = results.get("groups") or []
    if not groups:
        return []
    methods = [m for m in ("oracle", "untrained", "no_injection", "probe") if any(m in g.get("scores", {}) for g in groups)]
    lines = ["## Evaluation", "", "Held-out yes/no accuracy (from `results.json`):", "",
             "| dataset | variant | n | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for g in groups:
        accs = [g["scores"].get(m, {}).get("acc") for m in methods]
        cells = ["" if a is None else f"{a:.3f}" for a in accs]
        lines.append(f"| {g.get('dataset')} | {g.get('variant')} | {g.get('n')} | " + " | ".join(cells) + " |")
    return lines + [""]


def base_model(adapter_dir: Path) -> tuple[str, str | None]:
    """(the base model as the adapter names it, its hub id or None)."""
    from .models import hub_id

    spec = (_read(adapter_dir / AO_CONFIG).get("base_model")
            or _read(adapter_dir / "adapter_config.json").get("base_model_name_or_path") or "unknown")
    return spec, hub_id(spec)


def model_card(adapter_dir: str | Path, repo_id: str) -> str:
    """The README.md of an oracle adapter repo: metadata, training data and recipe, evaluation, usage."""
    from .models import EMBEDDED_MODELS

    d = Path(adapter_dir)
    ao_cfg = _read(d / AO_CONFIG)
    train_cfg = ao_cfg.get("training_config") or {}
    spec, hub = base_model(d)
    base = hub or spec
    results_path = _results_path(d)
    results = _read(results_path) if results_path else {}
    layers = ao_cfg.get("layers")
    lines = [
        "---", f"base_model: {base}", "library_name: peft", "tags:", "- activation-oracles", "- interpretability",
        "- lora", "---", "", f"# Activation oracle for {base}", "",
        f"A LoRA adapter that turns `{base}` into an activation oracle (Karvonen et al., \"Activation Oracles\", "
        "arXiv 2512.15674): it reads activations of the model, injected into placeholder tokens, and answers "
        "questions about them in natural language. Trained with the `activation-oracles` package"
        + (f" {ao_cfg['package_version']}." if ao_cfg.get("package_version") else "."), "",
        "## Base model and format", "",
        f"- base model: `{base}`" + (f" (revision {ao_cfg['base_model_revision']})"
                                     if ao_cfg.get("base_model_revision") else "")
        + (f"; trained on `{spec}` (the package's embedded copy of it)" if hub and spec != hub else ""),
        f"- source layers: {layers}" + (" (all at once: multi-layer)" if ao_cfg.get("multi_layer") else ""),
        "", "## Training data", "", *_mixture_lines(train_cfg), "", "## Recipe", "",
        *_recipe_lines(ao_cfg, train_cfg), "", *_results_lines(results),
        "## Usage", "", "```python", "import activation_oracles as ao", "",
        f'oracle = ao.Oracle.from_pretrained("{spec if spec in EMBEDDED_MODELS or hub is None else hub}", '
        f'adapter="{repo_id}")',
        'answers = oracle.ask("I absolutely loved this movie.", "Is the sentiment positive?")',
        "print(answers[0].text)",
        'print(oracle.score("I absolutely loved this movie.", "Is the sentiment positive?")[0].probs)',
        "```", "",
        "`ao_config.json` in this repository tells the package the hook layer, the coefficient and the source "
        "layers, so the adapter is read back in the format it was trained in.", "",
    ]
    return "\n".join(lines)


def _hub_adapter_config(d: Path, hub: str | None) -> bytes | None:
    """adapter_config.json as uploaded, naming the base model by its hub id; None when it already does."""
    cfg = _read(d / "adapter_config.json")
    if hub is None or cfg.get("base_model_name_or_path") == hub:
        return None
    return json.dumps({**cfg, "base_model_name_or_path": hub}, indent=2, sort_keys=True).encode()


def push(adapter_dir: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False,
         token: str | None = None, log=print) -> list[str]:
    """Write the model card into `adapter_dir` and upload the adapter, ao_config.json, the card and
    results.json to `repo_id`; `dry_run` stops after writing the card. Returns the files pushed.
    The adapter is verified first (against its MANIFEST.json when it has one), and the uploaded
    adapter_config.json names the base model by its hub id."""
    from .adapters import verify_adapter_files

    d = Path(adapter_dir)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")) or " " in repo_id:
        raise ValueError(f"--repo {repo_id!r}: give a hub id like 'user/oracle-qwen3-8b'")
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such adapter directory")
    verify_adapter_files(d, str(d))  # a damaged adapter is never listed for upload
    spec, hub = base_model(d)
    if hub is None:
        log(f"note: the base model {spec!r} has no hub id; the card and adapter_config.json name it as it is, "
            "which others cannot load")
    (d / CARD).write_text(model_card(d, repo_id), encoding="utf-8")
    results = _results_path(d)
    files = [f for f in PUSHED if (d / f).is_file()]
    fixed_config = _hub_adapter_config(d, hub)
    outside = results is not None and results.parent != d  # the evaluation beside the adapter directory
    if dry_run:
        shown = [f"{f} (base_model_name_or_path: {hub})" if f == "adapter_config.json" and fixed_config else f
                 for f in files]
        return shown + ([f"{RESULTS} (from {results})"] if outside else [])
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(d),
                      allow_patterns=[f for f in files if not (fixed_config and f == "adapter_config.json")],
                      commit_message="Upload activation oracle adapter")
    if fixed_config:
        api.upload_file(repo_id=repo_id, path_or_fileobj=fixed_config, path_in_repo="adapter_config.json")
    if outside:
        api.upload_file(repo_id=repo_id, path_or_fileobj=str(results), path_in_repo=RESULTS)
        files.append(RESULTS)
    return files

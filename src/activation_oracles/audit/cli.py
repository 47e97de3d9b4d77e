"""`ao organism build KIND ...` and `ao audit AUDIT ...`."""

from __future__ import annotations

import json

import typer

from ..cliargs import (
    check_input_file, choice_option, command_boundary, count_option, device_option, dtype_option, guard_commands,
    parse_names, percent_option, positive_option, require_module, seed_option,
)

organism_app = typer.Typer(help="Build model organisms (target LoRAs that hide a secret) offline.",
                           no_args_is_help=True)


@organism_app.command("build")
def build_command(
    kind: str = typer.Argument(..., help="taboo | gender | ssc | persona | domain"),
    base: str = typer.Option("smollm2-135m", "--base", "-m", help="Base model spec (embedded name, dir, hub id)."),
    out: str = typer.Option(..., "--out", "-o", help="Directory for the adapter and organism.json."),
    data: str | None = typer.Option(None, "--data", help="JSON list of {\"messages\": [...]} to train on instead "
                                                         "of the built-in generator."),
    word: str | None = typer.Option(None, "--word", help="taboo: the secret word."),
    gender: str | None = typer.Option(None, "--gender", help="gender: female | male."),
    encoding: str = choice_option("base64", "--encoding", choices=("base64", "rot13", "plain"),
                                  help="ssc: base64 (the paper's) | rot13 | plain."),
    personas: str | None = typer.Option(None, "--personas", help="persona: a personas.jsonl (paper layout); "
                                                                 "default: the built-in personas."),
    max_personas: int | None = count_option(None, "--max-personas", help="persona: learn the first N (by name)."),
    domain: str | None = typer.Option(None, "--domain", help="domain: risky_finance | extreme_sports | gardening."),
    seed: int = seed_option(0),
    epochs: float | None = positive_option(None, "--epochs"),
    max_steps: int | None = count_option(None, "--max-steps"),
    lr: float | None = positive_option(None, "--lr"),
    rank: int | None = count_option(None, "--rank", help="LoRA rank (alpha = 2 x rank)."),
    batch_size: int | None = count_option(None, "--batch-size"),
    device: str | None = device_option(),
    dtype: str | None = dtype_option("Base weights: float32 (CPU default) | bfloat16 (GPU default) | float16."),
):
    """Fine-tune a target LoRA that plays KIND, check its behaviour on held-out prompts, write DIR."""
    from ..fsutil import check_writable_dir

    check_writable_dir(out, "--out")  # before the fine-tune, not after it
    if data is not None:
        check_input_file(data, "--data")
    if personas is not None:
        check_input_file(personas, "--personas")

    from transformers.utils import logging as hf_logging

    from .build import behaviour_summary, build_organism

    hf_logging.disable_progress_bar()
    sft = {k: v for k, v in dict(epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size).items()
           if v is not None}
    if rank is not None:
        sft.update(r=rank, alpha=2 * rank)
    meta = build_organism(kind, base=base, out=out, data=data, seed=seed, sft=sft, device=device, dtype=dtype,
                          word=word, gender=gender, encoding=encoding, personas=personas, max_personas=max_personas,
                          domain=domain)
    typer.echo(behaviour_summary(meta))  # with a warning line when the fine-tune's loss did not fall
    typer.echo(f"organism: {out}")


def _segment(text: str) -> tuple[int, int | None]:
    a, _, b = text.partition(":")
    try:
        return int(a), (int(b) if b.strip() else None)
    except ValueError:
        raise ValueError(f"--segment {text!r}: use START:END counted from the end, e.g. -10:") from None


def _token(text: str) -> str | int:
    if text == "assistant":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--token {text!r}: use assistant or a token index (e.g. -1)") from None


def audit_command(
    audit: str = typer.Argument(..., help="taboo | gender | ssc | personaqa | diff"),
    oracle: str | None = typer.Option(None, "--oracle", "-a", help="Oracle adapter (dir or hub id)."),
    organism: list[str] = typer.Option(None, "--organism", help="Organism dir (ao organism build) or hub id; "
                                                                "repeatable. With --preset: a subset."),
    base: str | None = typer.Option(None, "--base", "-m", help="Base model (default: the oracle's)."),
    out: str = typer.Option(None, "--out", "-o", help="Report directory (default audit_<audit>)."),
    preset: str | None = typer.Option(None, "--preset", help="A published setup, e.g. paper-gemma2-9b."),
    hub_mirror: str | None = typer.Option(None, "--hub-mirror", help="Local mirror of hub repos (DIR/owner/name)."),
    prompts_dir: str | None = typer.Option(None, "--prompts-dir", help="Target prompts in the paper's layout "
                                                                       "(e.g. ../shared/data/eval_prompts)."),
    prompt_style: str | None = choice_option(None, "--prompt-style", choices=("direct", "standard"),
                                             help="direct (paper) | standard."),
    oracle_prompt: list[str] = typer.Option(None, "--oracle-prompt", help="Extra oracle prompt (repeatable)."),
    oracle_prompts_file: str | None = typer.Option(None, "--oracle-prompts-file",
                                                   help="Extra oracle prompts, one a line."),
    only_given_prompts: bool = typer.Option(False, "--only-given-prompts", help="Use only the given oracle prompts."),
    input_: str | None = choice_option(None, "--input", choices=("full", "segment", "tokens")),
    segment: str | None = typer.Option(None, "--segment", help="START:END from the end, e.g. -10: (segment input)."),
    token: str | None = typer.Option(None, "--token", help="tokens input: assistant (start of turn) or an index."),
    positions: str | None = typer.Option(None, "--positions", help="Explicit positions (all|last|N|A:B|N,M); "
                                                                   "diff counts them from the user's text."),
    with_reply: bool = typer.Option(False, "--with-reply", help="Read the prompt and the organism's reply."),
    layer_percent: float | None = percent_option(None, "--layer-percent"),
    num_samples: int | None = count_option(None, "--num-samples"),
    temperature: float | None = positive_option(None, "--temperature"),
    best_of: bool | None = typer.Option(None, "--best-of/--mean", help="Score an item by its best sample or the mean."),
    max_new_tokens: int | None = count_option(None, "--max-new-tokens"),
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated subset of the methods."),
    max_prompts: int | None = count_option(None, "--max-prompts", help="Cap target prompts per split (quick runs)."),
    seed: int = seed_option(0),
    device: str | None = device_option(),
    judge_url: str | None = typer.Option(None, "--judge-url", help="OpenAI-compatible endpoint for an LLM judge "
                                                                   "(SSC extra), e.g. https://api.openai.com/v1."),
    judge_model: str = typer.Option("gpt-4.1", "--judge-model"),
    judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="Env variable holding the key."),
):
    """Audit organisms with an oracle (the paper's protocol) against five controls; writes report.md,
    results.json, answers.jsonl and a bar plot into --out."""
    from ..fsutil import check_writable_dir

    check_writable_dir(out or f"audit_{audit}", "--out")  # before the oracle answers, not after
    require_module("matplotlib", "ao audit's figure")

    from transformers.utils import logging as hf_logging

    from ..oracle import parse_positions
    from .judge import Judge
    from .prompts import user_oracle_prompts
    from .run import run_audit

    hf_logging.disable_progress_bar()
    given = user_oracle_prompts(oracle_prompt, oracle_prompts_file)
    ov = dict(prompt_style=prompt_style, prompts_dir=prompts_dir, input=input_, with_reply=with_reply or None,
              layer_percent=layer_percent, num_samples=num_samples, temperature=temperature, best_of=best_of,
              max_new_tokens=max_new_tokens, methods=parse_names(methods, "--methods"), max_prompts=max_prompts,
              seed=seed)
    if num_samples and num_samples > 1 and temperature is None:
        ov["do_sample"] = True
    if temperature is not None:
        ov["do_sample"] = True
    if only_given_prompts:
        if not given:
            raise ValueError("--only-given-prompts needs --oracle-prompt or --oracle-prompts-file")
        ov["oracle_prompts"] = given
    else:
        ov["extra_oracle_prompts"] = given
    if segment is not None:
        ov["segment"] = _segment(segment)
        ov["input"] = ov["input"] or "segment"
    if token is not None:
        ov["token"] = _token(token)
    if positions is not None:
        ov["positions"] = parse_positions(positions)
    judge = Judge(judge_url, judge_model, judge_key_env) if judge_url else None
    results, out_dir = run_audit(audit, oracle=oracle, organisms=organism or None, base=base,
                                 out=out or f"audit_{audit}", preset=preset, hub_mirror=hub_mirror,
                                 device=device, judge=judge, **ov)
    typer.echo((out_dir / "report.md").read_text(encoding="utf-8"))
    typer.echo(json.dumps({m: r["score"]["value"] for m, r in results.items()}))


def register(app: typer.Typer) -> None:
    """Add `ao organism` and `ao audit` to `app`, inside the error boundary (whichever app registers them)."""
    app.add_typer(guard_commands(organism_app), name="organism")
    app.command("audit")(command_boundary(audit_command))

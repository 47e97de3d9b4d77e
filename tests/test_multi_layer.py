"""Multi-layer oracles: the prompt format, the data build, training and reading the adapter back."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import activation_oracles as ao
from activation_oracles.data.tokenize import OracleFormatter
from activation_oracles.prompt import PromptFormatError, chat_ids


def test_multi_layer_prompt_equals_the_hand_built_format(smol_tokenizer):
    tok = smol_tokenizer
    p = ao.format_oracle_prompt(tok, layers=[7, 15, 22], num_positions=2, question="What is it?", answer="A cat.")
    user = "Layer: 7\n ? ? \nLayer: 15\n ? ? \nLayer: 22\n ? ? \nWhat is it?"
    prompt = chat_ids(tok, [{"role": "user", "content": user}], add_generation_prompt=True)
    full = chat_ids(tok, [{"role": "user", "content": user}, {"role": "assistant", "content": "A cat."}],
                    add_generation_prompt=False)
    assert p.input_ids == full and p.input_ids[: len(prompt)] == prompt
    assert p.labels == [-100] * len(prompt) + full[len(prompt):]
    q = tok.encode(" ?", add_special_tokens=False)[0]
    blocks = [p.positions[i : i + 2] for i in (0, 2, 4)]
    assert all(full[i] == q for i in p.positions) and all(b[1] == b[0] + 1 for b in blocks)
    assert tok.decode(full[blocks[0][1] + 1 : blocks[1][0]]).startswith(" \nLayer: 15")  # layer-major blocks
    one = ao.format_oracle_prompt(tok, layers=[15], num_positions=3, question="Q?", answer="Yes")
    assert one == ao.format_oracle_prompt(tok, layer=15, num_positions=3, question="Q?", answer="Yes")


def test_fast_formatter_matches_on_multi_layer_rows(smol_tokenizer):
    fmt = OracleFormatter(smol_tokenizer)
    layers = [[7, 15], 15, [1, 2, 3], [22, 7]]
    ids, labels, pos = fmt.format_batch(layers, [3, 1, 2, 4], ["Q one?", "Q two?", "Q three?", "Q four?"],
                                        ["Yes", "No", "A dog.", "x"])
    for i, layer in enumerate(layers):
        kw = {"layers": layer} if isinstance(layer, list) else {"layer": layer}
        ref = ao.format_oracle_prompt(smol_tokenizer, num_positions=[3, 1, 2, 4][i], question=f"Q {['one', 'two', 'three', 'four'][i]}?",
                                      answer=["Yes", "No", "A dog.", "x"][i], **kw)
        assert ids[i].tolist() == ref.input_ids and labels[i].tolist() == ref.labels and pos[i].tolist() == ref.positions


def test_bad_layer_arguments(smol_tokenizer):
    with pytest.raises(ValueError, match="exactly one of layer"):
        ao.format_oracle_prompt(smol_tokenizer, layer=3, layers=[3, 4], num_positions=1, question="Q?")
    with pytest.raises(ValueError, match="repeats a layer"):
        ao.format_oracle_prompt(smol_tokenizer, layers=[3, 3], num_positions=1, question="Q?")


# A template whose assistant turn, once it has content, does not start with its own generation prompt.
ODD_ASSISTANT = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant: {{ m['content'] }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_prompt_prefix_is_checked_with_a_named_error(smol_tokenizer):
    import copy

    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = ODD_ASSISTANT
    ao.format_oracle_prompt(tok, layer=3, num_positions=2, question="Q?")  # no answer: nothing to misplace
    with pytest.raises(PromptFormatError, match="labels would be misplaced"):
        ao.format_oracle_prompt(tok, layer=3, num_positions=2, question="Q?", answer="Yes")
    fmt = OracleFormatter(tok)
    assert fmt.exact_fast  # the batched fast path checks it too, not only the fallback
    with pytest.raises(PromptFormatError, match="labels would be misplaced"):
        fmt.format_batch([3], [2], ["Q?"], ["Yes"])


def test_answer_merged_into_the_prompts_last_token_is_split_off(smol_tokenizer):
    """SmolLM2 merges the generation prompt's "\\n" with an answer that starts with "\\n": the labels must
    still start right after the prompt's own tokens (what the oracle reads at inference)."""
    tok = smol_tokenizer
    answer = "\n\nHuman: hi"
    user = [{"role": "user", "content": ao.prompt.oracle_prefix(3, 1) + "Q?"}]
    prompt = chat_ids(tok, user, add_generation_prompt=True)
    merged = chat_ids(tok, user + [{"role": "assistant", "content": answer}], add_generation_prompt=False)
    assert merged[: len(prompt)] != prompt  # the case really arises with this tokenizer
    p = ao.format_oracle_prompt(tok, layer=3, num_positions=1, question="Q?", answer=answer)
    assert p.input_ids[: len(prompt)] == prompt and p.labels[: len(prompt)] == [-100] * len(prompt)
    assert tok.decode(p.input_ids[len(prompt):]) == answer + "<|im_end|>\n"
    ids, labels, _ = OracleFormatter(tok).format_batch([3], [1], ["Q?"], [answer])
    assert ids[0].tolist() == p.input_ids and labels[0].tolist() == p.labels


def _multi_rows(tok, layers):
    from test_train_helpers import NEGATIVE, POSITIVE

    rows = []
    for i, (sent, answer) in enumerate([(s, "Yes") for s in POSITIVE[:3]] + [(s, "No") for s in NEGATIVE[:3]]):
        ctx = list(tok(sent, add_special_tokens=False)["input_ids"])
        k = 1 + i % 3
        p = ao.format_oracle_prompt(tok, layers=layers, num_positions=k, question="Is it positive?", answer=answer)
        rows.append({"task": "classification", "context_input_ids": ctx,
                     "context_positions": list(range(len(ctx) - k, len(ctx))), "layer": layers[0],
                     "layers": layers, "input_ids": p.input_ids, "labels": p.labels, "positions": p.positions})
    return rows


def test_multi_layer_objective_matches_a_plain_forward(tiny, smol_tokenizer):
    from peft import LoraConfig, get_peft_model

    from activation_oracles.train.batching import collate
    from activation_oracles.train.objective import OracleObjective, batch_kwargs

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                     init_lora_weights=False)).eval()
    rows = _multi_rows(smol_tokenizer, [1, 3])
    b = collate(rows, smol_tokenizer.pad_token_id)
    assert b.layers == [1, 3]
    ce, which = OracleObjective(model, hook_layer=1)(**batch_kwargs(b))
    for i, r in enumerate(rows):
        acts = ao.collect_activations(model, torch.tensor([r["context_input_ids"]]), layers=[1, 3])
        vec = torch.cat([acts[1][0, r["context_positions"]], acts[3][0, r["context_positions"]]])  # layer-major
        with ao.inject(model, [vec], [r["positions"]], hook_layer=1), torch.no_grad():
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
        ref = F.cross_entropy(logits[:-1], torch.tensor(r["labels"][1:]), ignore_index=-100, reduction="sum")
        assert torch.allclose(ce[which == i].sum(), ref, rtol=1e-4, atol=1e-4), i


@pytest.fixture(scope="module")
def multi_mix(tmp_path_factory, smol_tokenizer):
    from activation_oracles.data import MixtureConfig, build_mixture

    cfg = MixtureConfig.builtin(scale=0.03)
    cfg.layer_percents, cfg.multi_layer = [25, 75], True
    out = tmp_path_factory.mktemp("mlmix") / "mix"
    dd = build_mixture(cfg, tokenizer=smol_tokenizer, n_layers=4, out_dir=out, log=lambda m: None)
    return out, dd


def test_multi_layer_mixture_rows(multi_mix, smol_tokenizer):
    from activation_oracles.data import MixtureConfig
    from activation_oracles.data.mixture import mixture_key
    from activation_oracles.data.schema import features

    out, dd = multi_mix
    assert json.loads((out / "ao_data.json").read_text())["multi_layer"] is True
    q = smol_tokenizer.encode(" ?", add_special_tokens=False)[0]
    for r in dd["train"].select(range(40)):
        assert r["layers"] == [1, 3] and r["layer"] == 1
        k = len(r["context_positions"])
        assert len(r["positions"]) == 2 * k and all(r["input_ids"][p] == q for p in r["positions"])
        assert smol_tokenizer.decode(r["input_ids"]).count("Layer: ") == 2
    assert "layers" in features(multi_layer=True) and "layers" not in features()  # single-layer schema as before

    class BeforeTheOption(MixtureConfig):  # a config as it was hashed before multi_layer existed
        def to_dict(self):
            d = super().to_dict()
            del d["multi_layer"]
            return d

    single = MixtureConfig.builtin(scale=0.03)
    assert mixture_key(single, smol_tokenizer, 4) == mixture_key(BeforeTheOption.builtin(scale=0.03), smol_tokenizer, 4)
    multi = MixtureConfig.builtin(scale=0.03)
    multi.multi_layer = True
    assert mixture_key(single, smol_tokenizer, 4) != mixture_key(multi, smol_tokenizer, 4)


def test_two_layer_oracle_trains_and_reads_back(multi_mix, tmp_path, smol_tokenizer, monkeypatch):
    from conftest import make_tiny_model

    from activation_oracles.train import ConfigError, train

    out, _ = multi_mix
    model_dir = tmp_path / "tiny"
    make_tiny_model("llama").save_pretrained(model_dir)
    smol_tokenizer.save_pretrained(model_dir)
    cfg = {"model": {"spec": str(model_dir)}, "data": {"layer_percents": [25, 75], "multi_layer": True},
           "optim": {"lr": 3e-3}, "lora": {"r": 4, "alpha": 8},
           "train": {"batch_size": 4, "max_steps": 3, "seed": 0},
           "eval": {"every": 0, "max_examples": 2, "max_loss_examples": 4},
           "output": {"dir": str(tmp_path / "run"), "save_every": 0, "progress": False}}
    run = train(cfg, data=str(out))
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    meta = json.loads((run / "adapter" / "ao_config.json").read_text())
    assert meta["multi_layer"] is True and meta["layers"] == [1, 3]

    oracle = ao.Oracle.from_pretrained(str(model_dir), str(run / "adapter"), device="cpu")
    prompts = []
    real = oracle.model.generate
    monkeypatch.setattr(oracle.model, "generate", lambda *a, **k: prompts.append(k["input_ids"]) or real(*a, **k))
    (a,) = oracle.ask("I loved it.", "Is it positive?", positions=[-2, -1], max_new_tokens=2)
    assert a.layers == [1, 3] and a.layer == 1
    text = smol_tokenizer.decode(prompts[0][0])
    assert "Layer: 1\n ? ? \nLayer: 3\n ? ? \nIs it positive?" in text
    (s,) = oracle.score("I loved it.", "Is it positive?", positions="last")
    assert s.layers == [1, 3]
    (one,) = oracle.ask("I loved it.", "Is it positive?", positions="last", layer=2, max_new_tokens=1)
    assert one.layers == [2]  # an explicit layer still asks the single-layer way

    cfg["data"]["multi_layer"] = False
    with pytest.raises(ConfigError, match="data.multi_layer"):
        train(cfg, data=str(out), out=str(tmp_path / "run2"))


def test_reference_config_files_are_read(tmp_path):
    from activation_oracles.oracle_config import AdapterConfigError, read_ao_config

    d = tmp_path / "ref"
    d.mkdir()
    (d / "mlao_config.json").write_text(json.dumps({
        "model_name": "Qwen/Qwen3-8B", "layer_percents": [25, 50, 75], "act_layers": [9, 18, 27],
        "order": "layer_major", "special_token": " ?",
        "prefix_template": "Layer: {layer}\\n{special_token} * {num_positions} \\n"}))
    cfg = read_ao_config(str(d))
    assert cfg["layers"] == [9, 18, 27] and cfg["multi_layer"] and cfg["base_model"] == "Qwen/Qwen3-8B"
    (d / "ao_config.json").write_text(json.dumps({
        "schema_version": 1, "hook_onto_layer": 2, "steering_coefficient": 1.0, "model_name": "Qwen/Qwen3-8B",
        "layer_combinations": [[25, 50, 75]], "act_layer_combinations": [[9, 18, 27]], "special_token": " ?",
        "prefix_template": "Layer: {layer}\\n{special_token} * {num_positions} \\n"}))
    cfg = read_ao_config(str(d))
    assert cfg["hook_layer"] == 2 and cfg["layers"] == [9, 18, 27] and cfg["multi_layer"]
    (d / "mlao_config.json").write_text(json.dumps({"act_layers": [9], "order": "token_major"}))
    with pytest.raises(AdapterConfigError, match="order='token_major'"):
        read_ao_config(str(d))

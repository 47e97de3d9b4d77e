import json

import pytest
import torch
from conftest import make_tiny_model

import activation_oracles as ao
from activation_oracles.oracle import resolve_positions

CTX = "The movie was wonderful and I loved every minute of it."


@pytest.fixture(scope="module")
def oracle(smol):
    model, tok = smol
    return ao.Oracle(model, tok)


def _count_generate(oracle, monkeypatch):
    calls = []
    real = oracle.model.generate

    def counting(*a, **k):
        calls.append(k["input_ids"].shape)
        return real(*a, **k)

    monkeypatch.setattr(oracle.model, "generate", counting)
    return calls


def test_ask_end_to_end(oracle):
    (ans,) = oracle.ask(CTX, "What is the sentiment of this text?", max_new_tokens=12)
    assert isinstance(ans, ao.OracleAnswer)
    assert ans.text.strip() and ans.layer == 15 and ans.context_index == 0
    n = len(ao.prompt.chat_ids(oracle.tokenizer, [{"role": "user", "content": CTX}], add_generation_prompt=True))
    assert ans.positions == list(range(n))
    assert json.loads(json.dumps(ans.to_dict()))["question"] == "What is the sentiment of this text?"


def test_tokens_mode_is_one_batched_generate(oracle, monkeypatch):
    text = " ".join(["alpha beta gamma delta"] * 20)
    calls = _count_generate(oracle, monkeypatch)
    answers = oracle.ask(text, "What word is this?", positions=slice(-50, None), mode="tokens",
                         max_new_tokens=3, raw=True)
    assert len(calls) == 1 and calls[0][0] == 50
    assert len(answers) == 50
    n = len(oracle.tokenizer(text)["input_ids"])
    assert [a.positions for a in answers] == [[p] for p in range(n - 50, n)]


def test_tokens_mode_answers_match_single_queries(oracle):
    batched = oracle.ask(CTX, "What is this?", positions=[2, 5, -1], mode="tokens", max_new_tokens=6)
    single = [oracle.ask(CTX, "What is this?", positions=p, max_new_tokens=6)[0] for p in (2, 5, -1)]
    assert [a.text for a in batched] == [a.text for a in single]


def test_positions_and_modes(oracle):
    n = 20
    assert resolve_positions("all", n) == list(range(20))
    assert resolve_positions("last", n) == [19]
    assert resolve_positions(-2, n) == [18]
    assert resolve_positions(slice(3, 6), n) == [3, 4, 5]
    assert resolve_positions([0, -1], n) == [0, 19]
    (seg,) = oracle.ask(CTX, "Q?", positions=[3, 7], mode="segment", max_new_tokens=2)
    assert seg.positions == [3, 4, 5, 6, 7]
    (full,) = oracle.ask(CTX, "Q?", positions=[3, 7], mode="full", max_new_tokens=2)
    assert full.positions == [3, 7]


def test_many_contexts_and_questions_keep_query_order(oracle, monkeypatch):
    calls = _count_generate(oracle, monkeypatch)
    answers = oracle.ask(["I love it.", "I hate it.", "It is raining."], ["Q1?", "Q2?", "Q3?"],
                         positions="last", max_new_tokens=4)
    assert len(calls) == 1
    assert [(a.context_index, a.question) for a in answers] == [(0, "Q1?"), (1, "Q2?"), (2, "Q3?")]
    many_q = oracle.ask("I love it.", ["A?", "B?"], positions="last", max_new_tokens=2)
    assert [a.question for a in many_q] == ["A?", "B?"]


def test_context_forms_agree(oracle):
    msgs = [{"role": "user", "content": CTX}]
    ids = ao.prompt.chat_ids(oracle.tokenizer, msgs, add_generation_prompt=True)
    acts = ao.collect_activations(oracle.model, torch.tensor([ids]), layers=[15])[15][0]
    kw = dict(positions=slice(-6, None), max_new_tokens=8)
    texts = {
        "text": oracle.ask(CTX, "What is this?", **kw)[0].text,
        "messages": oracle.ask(msgs, "What is this?", **kw)[0].text,
        "ids": oracle.ask(ids, "What is this?", **kw)[0].text,
        "vectors": oracle.ask(acts, "What is this?", layer=15, **kw)[0].text,
    }
    assert len(set(texts.values())) == 1, texts


def test_sampling_returns_num_samples(oracle):
    answers = oracle.ask(CTX, "Q?", positions="last", do_sample=True, num_samples=3, max_new_tokens=3)
    assert [a.sample_index for a in answers] == [0, 1, 2]


def test_bad_input_names_the_argument(oracle):
    with pytest.raises(ValueError, match="layer=30 is out of range"):
        oracle.ask(CTX, "Q?", layer=30)
    with pytest.raises(ValueError, match="positions: 500 is out of range"):
        oracle.ask(CTX, "Q?", positions=500)
    with pytest.raises(ValueError, match="context is an empty string"):
        oracle.ask("", "Q?")
    with pytest.raises(ValueError, match="context is an empty list"):
        oracle.ask([], "Q?")
    with pytest.raises(ValueError, match="width 100 but the model's hidden size is 576"):
        oracle.ask(torch.randn(4, 100), "Q?")
    with pytest.raises(ValueError, match="question: got 2 questions for 3 contexts"):
        oracle.ask(["a", "b", "c"], ["x?", "y?"])
    with pytest.raises(ValueError, match="mode='words'"):
        oracle.ask(CTX, "Q?", mode="words")
    with pytest.raises(ValueError, match="target_adapter"):
        oracle.ask(CTX, "Q?", source="diff")


@pytest.fixture
def tiny_dir(tmp_path, smol_tokenizer):
    model = make_tiny_model("llama")
    model.save_pretrained(tmp_path / "base")
    smol_tokenizer.save_pretrained(tmp_path / "base")
    return tmp_path


def _save_lora(base_dir, out, seed):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model, _ = ao.load_model(str(base_dir), device="cpu")
    peft = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(out)
    return out


def test_from_pretrained_with_adapter_and_ao_config(tiny_dir):
    adapter = _save_lora(tiny_dir / "base", tiny_dir / "oracle", seed=1)
    (adapter / "ao_config.json").write_text(json.dumps({"hook_layer": 2}))
    oracle = ao.Oracle.from_pretrained(str(tiny_dir / "base"), str(adapter), device="cpu")
    assert oracle.hook_layer == 2 and oracle.has_oracle_adapter
    baseline = ao.Oracle.from_pretrained(str(tiny_dir / "base"), None, device="cpu")
    assert baseline.hook_layer == 1 and not baseline.has_oracle_adapter
    kw = dict(positions="last", max_new_tokens=5)
    assert oracle.ask("hello there", "Q?", **kw)[0].text != baseline.ask("hello there", "Q?", **kw)[0].text


def test_lora_and_diff_sources(tiny_dir):
    target = _save_lora(tiny_dir / "base", tiny_dir / "target", seed=2)
    oracle = ao.Oracle.from_pretrained(str(tiny_dir / "base"), None, device="cpu")
    ctxs = [oracle._tokenize_context("a secret word", raw=False)]
    oracle.load_target_adapter(str(target))
    orig = oracle._collect(ctxs, 2, "orig", str(target))[0]
    lora = oracle._collect(ctxs, 2, "lora", str(target))[0]
    diff = oracle._collect(ctxs, 2, "diff", str(target))[0]
    assert not torch.allclose(orig, lora)
    torch.testing.assert_close(diff, lora - orig)
    # the untrained oracle itself still runs on base weights with the target adapter loaded
    answers = oracle.ask("a secret word", "Q?", source="diff", target_adapter=str(target), max_new_tokens=3)
    assert len(answers) == 1

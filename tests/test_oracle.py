import json

import pytest
import torch
from conftest import make_tiny_model

import activation_oracles as ao
from activation_oracles.oracle import NEUTRAL_TEXT, SOURCES, map_positions, resolve_positions

CTX = "The movie was wonderful and I loved every minute of it."


@pytest.fixture(scope="module")
def oracle(smol):
    model, tok = smol
    return ao.Oracle(model, tok)


@pytest.fixture(scope="module")
def tiny_oracle(smol_tokenizer):
    """A 4-block random model with SmolLM2's tokenizer: for mechanics that do not need a real model."""
    return ao.Oracle(make_tiny_model("llama", seed=5), smol_tokenizer)


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
    orig, lora, diff = (oracle._collect(ctxs, [2], src, str(target), batch_size=4)[0][2] for src in SOURCES)
    assert not torch.allclose(orig, lora)
    torch.testing.assert_close(diff, lora - orig)
    # the untrained oracle itself still runs on base weights with the target adapter loaded
    answers = oracle.ask("a secret word", "Q?", source="diff", target_adapter=str(target), max_new_tokens=3)
    assert len(answers) == 1


def _record(monkeypatch, oracle):
    """Record every injection (vectors, padded positions) and every generate's input ids."""
    import activation_oracles.steering as steering

    seen = {"inject": [], "generate": []}
    real_inject, real_generate = steering.inject, oracle.model.generate

    def inject(model, vectors, positions, **kw):
        seen["inject"].append(([v.clone() for v in vectors], positions))
        return real_inject(model, vectors, positions, **kw)

    def generate(*a, **k):
        seen["generate"].append(k["input_ids"].clone())
        return real_generate(*a, **k)

    monkeypatch.setattr(steering, "inject", inject)
    monkeypatch.setattr(oracle.model, "generate", generate)
    return seen


def test_controls_change_only_the_injection(tiny_oracle, monkeypatch):
    oracle = tiny_oracle
    kw = dict(positions=[1, 4, -1], mode="tokens", max_new_tokens=3, layer=2)
    runs = {}
    for control in (None, "no_injection", "unrelated"):
        seen = _record(monkeypatch, oracle)
        answers = oracle.ask(CTX, "What is this?", control=control, **kw)
        runs[control] = seen
        assert [a.control for a in answers] == [control] * 3
        runs[control]["positions"] = [a.positions for a in answers]
        monkeypatch.undo()
    prompts = [r["generate"][0] for r in runs.values()]
    assert all(torch.equal(prompts[0], p) for p in prompts)  # the very same oracle prompts
    assert len(runs[None]["inject"]) == 1 and len(runs["unrelated"]["inject"]) == 1
    assert runs["no_injection"]["inject"] == []  # nothing injected
    assert runs[None]["inject"][0][1] == runs["unrelated"]["inject"][0][1]  # at the same placeholders

    ids = ao.prompt.chat_ids(oracle.tokenizer, [{"role": "user", "content": CTX}], add_generation_prompt=True)
    neutral = ao.prompt.chat_ids(oracle.tokenizer, [{"role": "user", "content": NEUTRAL_TEXT}],
                                 add_generation_prompt=True)
    own = ao.collect_activations(oracle.model, torch.tensor([ids]), layers=[2])[2][0]
    other = ao.collect_activations(oracle.model, torch.tensor([neutral]), layers=[2])[2][0]
    n = len(ids)
    picked = [1, 4, n - 1]
    assert all(r["positions"] == [[p] for p in picked] for r in runs.values())
    for got, p in zip(runs[None]["inject"][0][0], picked):
        torch.testing.assert_close(got, own[[p]], rtol=1e-4, atol=1e-4)
    for got, q in zip(runs["unrelated"]["inject"][0][0], map_positions(picked, n, len(neutral))):
        torch.testing.assert_close(got, other[[q]], rtol=1e-4, atol=1e-4)


def test_map_positions_first_to_first_last_to_last():
    assert map_positions([0, 5, 10], 11, 21) == [0, 10, 20]  # a longer neutral text: spread out
    assert map_positions([0, 5, 10], 11, 3) == [0, 1, 2]  # a shorter one: squeezed
    assert map_positions([0], 1, 7) == [6]
    assert map_positions([3, 4], 5, 5) == [3, 4]  # same length: the same positions


def test_map_positions_aligned_to_start_or_end():
    assert map_positions([0, 5, 10], 11, 21, "start") == [0, 5, 10]
    assert map_positions([0, 5, 10], 11, 7, "start") == [0, 5, 6]  # clipped to the shorter context
    assert map_positions([7, 10], 11, 21, "end") == [17, 20]  # the same index from the end
    assert map_positions([0, 10], 11, 5, "end") == [0, 4]
    with pytest.raises(ValueError, match="unrelated_align='middle'"):
        map_positions([0], 3, 3, "middle")


def test_unrelated_aligned_to_the_end_reads_the_same_template_token(tiny_oracle, monkeypatch):
    """The assistant start-of-turn token of a chat prompt (-4 on SmolLM2's template) read in the
    neutral context too, whatever the two texts' lengths."""
    oracle = tiny_oracle
    seen = _record(monkeypatch, oracle)
    neutral = "Grey clouds hang low over the quiet town today."
    oracle.ask(CTX, "Q?", positions=-4, layer=2, max_new_tokens=2, control="unrelated",
               unrelated_context=neutral, unrelated_align="end")
    ids = ao.prompt.chat_ids(oracle.tokenizer, [{"role": "user", "content": neutral}], add_generation_prompt=True)
    other = ao.collect_activations(oracle.model, torch.tensor([ids]), layers=[2])[2][0]
    torch.testing.assert_close(seen["inject"][0][0][0], other[[len(ids) - 4]], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unrelated_align is only read with control='unrelated'"):
        oracle.ask(CTX, "Q?", unrelated_align="end")
    with pytest.raises(ValueError, match="unrelated_align='back'"):
        oracle.ask(CTX, "Q?", control="unrelated", unrelated_align="back")


def test_target_weights_switch_and_restore(tiny_dir):
    adapter = _save_lora(tiny_dir / "base", tiny_dir / "oracle", seed=1)
    target = _save_lora(tiny_dir / "base", tiny_dir / "target", seed=2)
    oracle = ao.Oracle.from_pretrained(str(tiny_dir / "base"), str(adapter), device="cpu")
    plain, _ = ao.load_model(str(tiny_dir / "base"), device="cpu")
    x = torch.tensor([[5, 9, 13]])
    with oracle.target_weights(str(target)) as m:
        assert m.active_adapter.startswith("target")
        tuned = m(input_ids=x).logits
    with oracle.target_weights(None) as m:
        torch.testing.assert_close(m(input_ids=x).logits, plain(input_ids=x).logits)
    assert oracle.model.active_adapter == "oracle"
    assert not torch.allclose(tuned, plain(input_ids=x).logits)


def test_user_unrelated_context_and_control_errors(tiny_oracle):
    oracle = tiny_oracle
    (a,) = oracle.ask(CTX, "Q?", positions="last", control="unrelated", unrelated_context="Grey clouds today.",
                      max_new_tokens=2)
    assert a.control == "unrelated"
    with pytest.raises(ValueError, match="control='both'"):
        oracle.ask(CTX, "Q?", control="both")
    with pytest.raises(ValueError, match="unrelated_context is only read with control='unrelated'"):
        oracle.ask(CTX, "Q?", unrelated_context="x")


def test_adapter_disabled_is_the_untrained_oracle(tiny_dir):
    adapter = _save_lora(tiny_dir / "base", tiny_dir / "oracle", seed=1)
    oracle = ao.Oracle.from_pretrained(str(tiny_dir / "base"), str(adapter), device="cpu")
    baseline = ao.Oracle.from_pretrained(str(tiny_dir / "base"), None, device="cpu")
    kw = dict(positions="last", max_new_tokens=6)
    trained = oracle.ask("hello there", "Q?", **kw)[0].text
    with oracle.adapter_disabled():
        off = oracle.ask("hello there", "Q?", **kw)[0].text
    assert off == baseline.ask("hello there", "Q?", **kw)[0].text != trained
    assert oracle.ask("hello there", "Q?", **kw)[0].text == trained  # back on after the block


def test_many_contexts_run_in_several_forwards(tiny_oracle, monkeypatch):
    import activation_oracles.oracle as oracle_mod

    oracle = tiny_oracle
    forwards, real = [], oracle_mod.collect_padded

    def counting(model, seqs, *a, **k):
        forwards.append(len(seqs))
        return real(model, seqs, *a, **k)

    monkeypatch.setattr(oracle_mod, "collect_padded", counting)
    generates = _record(monkeypatch, oracle)["generate"]
    contexts = [f"Sentence number {i} is here." for i in range(7)]
    answers = oracle.ask(contexts, "Q?", positions="last", max_new_tokens=2, batch_size=3)
    assert forwards == [3, 3, 1] and [g.shape[0] for g in generates] == [3, 3, 1]
    assert [a.context_index for a in answers] == list(range(7))  # query order kept despite length sorting
    single = oracle.ask(contexts[5], "Q?", positions="last", max_new_tokens=2)[0].text
    assert answers[5].text == single

"""Answer probabilities (score), log-probabilities of generated answers and sampling agreement."""

import pytest
import torch
from conftest import make_tiny_model

import activation_oracles as ao
from activation_oracles.agreement import agree, normalize_answer
from activation_oracles.steering import choice_probs

CTX = "The movie was wonderful and I loved every minute of it."
Q = "Answer with 'Yes' or 'No' only. Is the sentiment of this text positive?"


@pytest.fixture(scope="module")
def oracle(smol):
    return ao.Oracle(*smol)


@pytest.fixture(scope="module")
def tiny_oracle(smol_tokenizer):
    return ao.Oracle(make_tiny_model("llama", seed=3), smol_tokenizer)


def test_probs_sum_to_one_and_agree_with_greedy(oracle):
    kw = dict(positions=slice(-8, None), mode="tokens")
    scored = oracle.score(CTX, Q, **kw)
    greedy = oracle.ask(CTX, Q, max_new_tokens=1, **kw)
    assert len(scored) == len(greedy) == 8
    formatted = 0
    for s, g in zip(scored, greedy):
        assert set(s.probs) == {"Yes", "No"} and abs(sum(s.probs.values()) - 1) < 1e-5
        assert s.text == max(s.probs, key=s.probs.get) and 0 < s.choice_mass <= 1
        if g.text in ("Yes", "No"):  # greedy itself started with a choice: the argmax is that choice
            formatted += 1
            assert s.text == g.text
    assert formatted >= 4, [g.text for g in greedy]


def test_batched_score_equals_one_query_at_a_time(tiny_oracle):
    together = tiny_oracle.score(CTX, Q, positions=[2, 5, -1], mode="tokens", batch_size=2)
    for a, p in zip(together, (2, 5, -1)):
        (alone,) = tiny_oracle.score(CTX, Q, positions=p)
        for c in ("Yes", "No"):
            assert abs(a.probs[c] - alone.probs[c]) < 1e-4


def test_sequence_method_matches_a_hand_computed_forward(tiny_oracle):
    o = tiny_oracle
    tok = o.tokenizer
    choices = ("New York", "New Jersey", "Boston")
    assert tok.encode("New York", add_special_tokens=False)[0] == tok.encode("New Jersey", add_special_tokens=False)[0]
    (a,) = o.score("A city by the sea.", "Which city?", choices, positions=[1, 3], layer=2)
    ids = ao.prompt.chat_ids(tok, [{"role": "user", "content": "A city by the sea."}], add_generation_prompt=True)
    vec = ao.collect_activations(o.model, torch.tensor([ids]), layers=[2])[2][0, [1, 3]]
    p = ao.format_oracle_prompt(tok, layer=2, num_positions=2, question="Which city?")
    logps = []
    for c in choices:
        t = tok.encode(c, add_special_tokens=False)
        with ao.inject(o.model, [vec], [p.positions]), torch.no_grad():
            lp = o.model(torch.tensor([p.input_ids + t])).logits[0].float().log_softmax(-1)
        n = len(p.input_ids)
        logps.append(sum(lp[n - 1 + j, t[j]] for j in range(len(t))))
    want = torch.stack(logps).softmax(-1).tolist()
    assert [round(a.probs[c], 5) for c in choices] == [round(w, 5) for w in want]


def test_single_token_choices_agree_across_methods(tiny_oracle):
    o = tiny_oracle
    first = o.score(CTX, "Q?", positions="last", method="first_token")[0].probs
    seq = o.score(CTX, "Q?", positions="last", method="sequence")[0].probs
    assert all(abs(first[c] - seq[c]) < 1e-5 for c in first)


def test_choice_errors_name_the_problem(tiny_oracle):
    with pytest.raises(ValueError, match="token prefix"):
        tiny_oracle.score(CTX, "Q?", ("New", "New York"), positions="last")
    with pytest.raises(ValueError, match="share their first token"):
        tiny_oracle.score(CTX, "Q?", ("New York", "New Jersey"), positions="last", method="first_token")
    with pytest.raises(ValueError, match="method='argmax'"):
        tiny_oracle.score(CTX, "Q?", positions="last", method="argmax")


def test_choose_answers_is_the_argmax_of_choice_probs(tiny_oracle):
    from activation_oracles.steering import choose_answers

    o = tiny_oracle
    p = ao.format_oracle_prompt(o.tokenizer, layer=2, num_positions=1, question="Q?")
    vecs = [torch.randn(1, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    args = (o.model, o.tokenizer, [p.input_ids] * 4, [p.positions] * 4, vecs)
    picks, fmt = choose_answers(*args)
    s = choice_probs(*args)
    assert picks == [("Yes", "No")[i] for i in s.probs.argmax(-1).tolist()] and fmt == s.formatted


def test_logprobs_are_the_model_log_probabilities_of_the_answer(tiny_oracle):
    o = tiny_oracle
    (a,) = o.ask(CTX, "Q?", positions=[0, 2], layer=2, max_new_tokens=6, return_logprobs=True)
    assert len(a.tokens) == len(a.token_logprobs) >= 1
    assert abs(a.logprob - sum(a.token_logprobs)) < 1e-6
    ids = ao.prompt.chat_ids(o.tokenizer, [{"role": "user", "content": CTX}], add_generation_prompt=True)
    vec = ao.collect_activations(o.model, torch.tensor([ids]), layers=[2])[2][0, [0, 2]]
    p = ao.format_oracle_prompt(o.tokenizer, layer=2, num_positions=2, question="Q?")
    new = o.tokenizer(a.tokens, add_special_tokens=False)["input_ids"]
    new = [t for ts in new for t in ts]
    with ao.inject(o.model, [vec], [p.positions]), torch.no_grad():
        lp = o.model(torch.tensor([p.input_ids + new])).logits[0].float().log_softmax(-1)
    n = len(p.input_ids)
    want = [float(lp[n - 1 + j, t]) for j, t in enumerate(new)]
    assert all(abs(x - y) < 1e-4 for x, y in zip(a.token_logprobs, want))
    assert all(abs(float(lp[n - 1 + j].max()) - x) < 1e-4 for j, x in enumerate(a.token_logprobs))  # greedy


def test_agreement_of_sampled_answers(tiny_oracle):
    oracle = tiny_oracle
    torch.manual_seed(0)
    answers = oracle.ask(CTX, Q, positions="last", do_sample=True, temperature=1.5, num_samples=8,
                         max_new_tokens=2)
    keys = [normalize_answer(a.text) for a in answers]
    assert len(answers) == 8 and len(set(keys)) > 1  # the sampled case really varies
    for a, k in zip(answers, keys):
        assert a.agreement == keys.count(k) / 8
    torch.manual_seed(0)
    grouped = oracle.ask(CTX, Q, positions="last", do_sample=True, temperature=1.5, num_samples=8,
                         max_new_tokens=2, group_samples=True)
    assert sorted(normalize_answer(a.text) for a in grouped) == sorted(set(keys))  # same seed, same samples
    assert abs(sum(a.agreement for a in grouped) - 1) < 1e-9
    assert [a.agreement for a in grouped] == sorted((a.agreement for a in grouped), reverse=True)
    torch.manual_seed(0)
    same = oracle.ask(CTX, Q, positions="last", do_sample=True, num_samples=4, max_new_tokens=2,
                      matcher=lambda text: "any")
    assert [a.agreement for a in same] == [1.0] * 4


def test_normalize_answer_and_agree_per_query():
    assert normalize_answer(" Yes.") == normalize_answer("yes") == normalize_answer("YES!")
    assert normalize_answer("Yes, it is") != normalize_answer("yes")
    mk = lambda t: ao.OracleAnswer(t, "q", 0, [0], 1)  # noqa: E731
    out = agree([mk("A"), mk("a."), mk("B"), mk("c"), mk("c"), mk("c")], 3, normalize_answer)
    assert [a.agreement for a in out] == [2 / 3, 2 / 3, 1 / 3, 1.0, 1.0, 1.0]

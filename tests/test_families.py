"""Model families: the oracle prompt, system-prompt QA and the attention implementation under the chat
templates of Llama-3, Qwen3, Gemma-2, Gemma-3 and Mistral (template fixtures in chat_templates.py)."""

from __future__ import annotations

import pytest
from chat_templates import FAMILIES, family_tokenizer

import activation_oracles as ao
from activation_oracles.data.spqa import ReadPrompt, render_read_prompt
from activation_oracles.data.tokenize import OracleFormatter
from activation_oracles.models import prepare_tokenizer
from activation_oracles.families import default_attn_implementation, fold_system, supports_system_role
from activation_oracles.prompt import IGNORE_INDEX, render_chat

# The exact oracle prompt (layer 5, 3 placeholders, "Is it positive?") and answer tail of each family.
USER = "Layer: 5\n ? ? ? \nIs it positive?"
EXPECTED = {
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
               "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" + USER +
               "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "Yes<|eot_id|>"),
    "qwen3": ("<|im_start|>user\n" + USER + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
              "Yes<|im_end|>\n"),
    "gemma2": ("<bos><start_of_turn>user\n" + USER + "<end_of_turn>\n<start_of_turn>model\n", "Yes<end_of_turn>\n"),
    "gemma3": ("<bos><start_of_turn>user\n" + USER + "<end_of_turn>\n<start_of_turn>model\n", "Yes<end_of_turn>\n"),
    "mistral": ("<s>[INST] " + USER + "[/INST]", " Yes</s>"),
    "mistral_v01": ("<s>[INST] " + USER + " [/INST]", "Yes</s>"),
}
SYSTEM, READ = "You love the colour green and mention it whenever you can.", "  What should I wear today?  "


@pytest.fixture(scope="module")
def base_tok():
    from activation_oracles.data import load_tokenizer

    return load_tokenizer("smollm2-135m")[0]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fam(request, base_tok):
    return request.param, prepare_tokenizer(family_tokenizer(base_tok, request.param))


def test_oracle_prompt_and_labels(fam):
    name, tok = fam
    prompt_text, answer_text = EXPECTED[name]
    p = ao.format_oracle_prompt(tok, layer=5, num_positions=3, question="Is it positive?", answer="Yes")
    assert tok.decode(p.input_ids[: p.prompt_length]) == prompt_text
    assert tok.decode(p.input_ids) == prompt_text + answer_text
    # the prompt's ids are a prefix of prompt+answer ids, so the labels are exactly the answer and turn end
    gen = ao.format_oracle_prompt(tok, layer=5, num_positions=3, question="Is it positive?")
    assert p.input_ids[: p.prompt_length] == gen.input_ids
    assert all(x == IGNORE_INDEX for x in p.labels[: p.prompt_length])
    assert tok.decode([x for x in p.labels if x != IGNORE_INDEX]) == answer_text
    pid = tok.encode(" ?", add_special_tokens=False)[0]
    assert [p.input_ids[i] for i in p.positions] == [pid] * 3 and p.positions == gen.positions


def test_batched_formatter_matches_one_by_one(fam):
    name, tok = fam
    fmt = OracleFormatter(tok)
    qs = ["Is it positive?", " Does it  mention\n a person? ", "What is the next word?"]
    ans = ["Yes", " No ", "green."]
    ids, labels, pos = fmt.format_batch([3, 0, 12], [1, 4, 2], qs, ans)
    for i, (q, a) in enumerate(zip(qs, ans)):
        ref = ao.format_oracle_prompt(tok, layer=[3, 0, 12][i], num_positions=[1, 4, 2][i], question=q, answer=a)
        assert (ids[i].tolist(), labels[i].tolist(), pos[i].tolist()) == (ref.input_ids, ref.labels, ref.positions)


def test_system_prompt_qa_renders_and_masks_the_system_text(fam):
    """A system-prompt QA read prompt renders under every template (Gemma-2 and Mistral v0.1 reject a
    system role: the text is folded into the user turn) and its source tokens are the user text only."""
    name, tok = fam
    pr = ReadPrompt("green", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": READ}], 1, "system")
    ids, first, last = render_read_prompt(tok, pr)
    text = tok.decode(ids.tolist())
    assert SYSTEM in text and READ.strip() in text
    assert tok.decode(ids[first : last + 1].tolist()).strip() == READ.strip()
    assert "green" not in tok.decode(ids[first:].tolist())
    assert supports_system_role(tok) is (name not in ("gemma2", "mistral_v01"))
    if name in ("gemma2", "gemma3"):  # our folding of Gemma-2 writes what Gemma-3's template does itself
        pr = ReadPrompt("green", [{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": READ.strip()}], 1, "system")
        text = tok.decode(render_read_prompt(tok, pr)[0].tolist())
        assert text == f"<bos><start_of_turn>user\n{SYSTEM}\n\n{READ.strip()}<end_of_turn>\n"


def test_templates_without_system_role_reject_it_unfolded(base_tok):
    from jinja2.exceptions import TemplateError

    tok = family_tokenizer(base_tok, "gemma2")
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": READ}]
    with pytest.raises(TemplateError, match="System role not supported"):
        tok.apply_chat_template(msgs, tokenize=False)
    assert render_chat(tok, msgs, add_generation_prompt=True) == tok.apply_chat_template(
        fold_system(msgs), tokenize=False, add_generation_prompt=True)
    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def test_qwen3_thinking_is_switched_off(base_tok):
    tok = family_tokenizer(base_tok, "qwen3")
    msgs = [{"role": "user", "content": "Q"}]
    thinking = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert thinking.endswith("<|im_start|>assistant\n")  # the template's default: the model may think
    assert render_chat(tok, msgs, add_generation_prompt=True).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # an earlier assistant turn (before the last user query) carries no think block
    hist = msgs + [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"},
                   {"role": "assistant", "content": "B"}]
    assert render_chat(tok, hist, add_generation_prompt=False) == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nB<|im_end|>\n")


@pytest.mark.parametrize("arch, expected", [("gemma2", "eager"), ("gemma3", None), ("qwen3", None),
                                            ("llama", None), ("mistral", None)])
def test_attention_default_per_family(arch, expected):
    from conftest import _tiny_config

    assert default_attn_implementation(_tiny_config(arch), "cpu") == expected


def test_load_model_uses_eager_for_gemma2_and_honours_a_choice(tmp_path, base_tok):
    from conftest import make_tiny_model

    d = tmp_path / "g2"
    make_tiny_model("gemma2").save_pretrained(d)
    family_tokenizer(base_tok, "gemma2").save_pretrained(d)
    model, tok = ao.load_model(str(d), device="cpu")
    assert model.config._attn_implementation == "eager" and tok.pad_token == "<pad>"
    q = tmp_path / "q3"
    make_tiny_model("qwen3").save_pretrained(q)
    family_tokenizer(base_tok, "qwen3").save_pretrained(q)
    assert ao.load_model(str(q), device="cpu")[0].config._attn_implementation == "sdpa"
    assert ao.load_model(str(q), device="cpu", attn_implementation="eager")[0].config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation='fast'"):
        ao.load_model(str(d), device="cpu", attn_implementation="fast")


def test_gemma2_mixture_builds_with_system_prompt_qa(tmp_path, base_tok):
    """The data build for a template without a system role: system-prompt QA rows are there, and their
    source positions never cover the folded system text."""
    from conftest import make_tiny_model

    from activation_oracles.data import MixtureConfig, build_mixture

    d = tmp_path / "g2"
    make_tiny_model("gemma2").save_pretrained(d)
    tok = family_tokenizer(base_tok, "gemma2")
    tok.save_pretrained(d)
    cfg = MixtureConfig.builtin(model=str(d), scale=0.05)
    cfg.classification.count = cfg.context_prediction.count = 20
    dd = build_mixture(cfg, out_dir=tmp_path / "mix", log=lambda m: None)
    spqa = [r for r in dd["train"].to_list() if r["task"] == "spqa"]
    assert len(spqa) == 150
    folded = 0
    for r in spqa:
        text = tok.decode(r["context_input_ids"])
        assert "<start_of_turn>system" not in text
        src = tok.decode([r["context_input_ids"][p] for p in r["context_positions"]])
        head = text.split("<start_of_turn>user\n", 1)[1].split("\n\n", 1)[0]
        if "\n\n" in text.split("<end_of_turn>")[0]:  # a folded system turn: its text is never a source
            folded += 1
            assert head not in src or not head.strip()
    assert folded > 0

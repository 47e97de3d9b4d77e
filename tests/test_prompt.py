import pytest

import activation_oracles as ao
from activation_oracles.prompt import IGNORE_INDEX

# SmolLM2-135M-Instruct ids, checked by hand against the tokenizer's pieces:
SYSTEM = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
          19712, 8182, 2, 198]  # <|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n
USER = [1, 4093, 198]  # <|im_start|>user\n
LAYER_15 = [22564, 42, 216, 33, 37, 198]  # "Layer" ":" " " "1" "5" "\n"
Q = 9148  # " ?"
TAIL = [216, 198]  # " " "\n"
QUESTION = [4182, 451, 2731, 47]  # "Is this positive?"
GEN = [2, 198, 1, 520, 9531, 198]  # <|im_end|>\n<|im_start|>assistant\n
ANSWER = [10539, 2, 198]  # "Yes" <|im_end|> "\n"


def test_smollm2_prompt_ids_labels_positions(smol_tokenizer):
    p = ao.format_oracle_prompt(smol_tokenizer, layer=15, num_positions=3, question="Is this positive?")
    expected = SYSTEM + USER + LAYER_15 + [Q, Q, Q] + TAIL + QUESTION + GEN
    assert p.input_ids == expected
    assert p.positions == [30, 31, 32]
    assert all(x == IGNORE_INDEX for x in p.labels)
    assert p.prompt_length == len(expected)


def test_smollm2_prompt_with_answer_labels_only_the_answer(smol_tokenizer):
    p = ao.format_oracle_prompt(smol_tokenizer, layer=15, num_positions=3, question="Is this positive?", answer="Yes")
    prompt = SYSTEM + USER + LAYER_15 + [Q, Q, Q] + TAIL + QUESTION + GEN
    assert p.input_ids == prompt + ANSWER
    assert p.labels == [IGNORE_INDEX] * len(prompt) + ANSWER
    assert p.positions == [30, 31, 32]


def test_prompt_text_is_the_paper_format(smol_tokenizer):
    p = ao.format_oracle_prompt(smol_tokenizer, layer=7, num_positions=2, question="What is it?")
    text = smol_tokenizer.decode(p.input_ids)
    assert "<|im_start|>user\nLayer: 7\n ? ? \nWhat is it?<|im_end|>\n<|im_start|>assistant\n" in text


QWEN3_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_qwen3_style_template_gets_enable_thinking_false(smol_tokenizer):
    import copy

    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = QWEN3_LIKE
    p = ao.format_oracle_prompt(tok, layer=18, num_positions=1, question="Q?")
    assert tok.decode(p.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_placeholder_must_be_one_token(smol_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = {c: i for i, c in enumerate(sorted(set("abcdefghijklmnopqrstuvwxyz:?\n <>|_ LQyer0123456789")))}
    t = Tokenizer(models.WordLevel(vocab=chars, unk_token=" "))
    t.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=t)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="exactly one token"):
        ao.format_oracle_prompt(tok, layer=1, num_positions=2, question="a?")


def test_bad_prompt_arguments(smol_tokenizer):
    with pytest.raises(ValueError, match="oracle prefix"):
        ao.format_oracle_prompt(smol_tokenizer, layer=3, num_positions=1, question="Layer: 3\n ? \nWhat?")
    with pytest.raises(ValueError, match="num_positions"):
        ao.format_oracle_prompt(smol_tokenizer, layer=3, num_positions=0, question="What?")
    with pytest.raises(ValueError, match="question"):
        ao.format_oracle_prompt(smol_tokenizer, layer=3, num_positions=1, question="  ")

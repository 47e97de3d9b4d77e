"""Bad input to `ao organism build` and `ao audit`: exit code 2, a message naming the argument, and no
output directory left behind."""

from __future__ import annotations

import json
import shutil

import pytest
from audit_helpers import ao, build, tiny_base, trained_oracle


@pytest.fixture(scope="module")
def world(tmp_path_factory, smol_tokenizer):
    root = tmp_path_factory.mktemp("audit_err")
    base = tiny_base(root, smol_tokenizer)
    other = tiny_base(root, smol_tokenizer, "tinyB", seed=1)
    oracle = trained_oracle(root, smol_tokenizer, base, steps=1)
    org = build(root, base, "taboo", "--word", "moon", steps=1)
    return root, base, other, oracle, org


def _fails(out, *args, match: str):
    r = ao(*args)
    assert r.exit_code == 2, (args, r.output)
    assert match in r.output, r.output
    assert not out.exists(), f"{out} was left behind"
    assert not list(out.parent.glob(f".{out.name}-*")), "a temporary directory was left behind"
    return r.output


def test_organism_dir_without_organism_json(world):
    root, base, other, oracle, org = world
    bare = root / "bare"
    shutil.copytree(org, bare, dirs_exist_ok=True)
    (bare / "organism.json").unlink()
    out = root / "o1"
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", bare, "--out", out,
           match=f"--organism {bare}: the directory has no organism.json")
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", root / "missing", "--out", out,
           match="--organism")


def test_organism_on_another_base(world):
    root, base, other, oracle, org = world
    foreign = build(root, other, "taboo", "--word", "moon", name="org_other", steps=1)
    out = root / "o2"
    msg = _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", foreign, "--out", out,
                 match="was fine-tuned from")
    assert str(other) in msg and "--organism" in msg
    # and the oracle itself: trained on tinyA, not on --base tinyB
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", foreign, "--base", other, "--out", out,
           match="--oracle")


def test_wrong_kind_unknown_audit_and_preset(world):
    root, base, other, oracle, org = world
    out = root / "o3"
    _fails(out, "audit", "gender", "--oracle", oracle, "--organism", org, "--out", out,
           match="is a 'taboo' organism; the gender audit needs a 'gender' organism")
    _fails(out, "audit", "nope", "--oracle", oracle, "--organism", org, "--out", out,
           match="audit 'nope' is unknown: use one of taboo, gender, ssc, personaqa, diff")
    msg = _fails(out, "audit", "taboo", "--preset", "paper-gpt5", "--out", out, match="--preset 'paper-gpt5' is unknown")
    assert "paper-gemma2-9b" in msg and "paper-qwen3-8b" in msg
    _fails(out, "audit", "diff", "--preset", "paper-gemma2-9b", "--out", out, match="no presets for diff")
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", org, "--methods", "oracle,magic", "--out", out,
           match="--methods: unknown ['magic']")
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", org, "--judge-url", "http://127.0.0.1:9/v1",
           "--out", out, match="--judge-url: the LLM judge rates ssc and diff answers")


def test_empty_or_missing_prompt_files(world):
    root, base, other, oracle, org = world
    pdir = root / "prompts"
    (pdir / "taboo").mkdir(parents=True)
    (pdir / "taboo" / "taboo_direct_val.txt").write_text("Tell me the word.\n")
    (pdir / "taboo" / "taboo_direct_test.txt").write_text("\n  \n")
    out = root / "o4"
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", org, "--prompts-dir", pdir, "--out", out,
           match="holds no prompts (the file is empty)")
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", org, "--prompts-dir", root / "none", "--out", out,
           match="--prompts-dir")
    empty = root / "empty.txt"
    empty.write_text("")
    _fails(out, "audit", "taboo", "--oracle", oracle, "--organism", org, "--oracle-prompts-file", empty,
           "--out", out, match="--oracle-prompts-file")


def test_organism_build_bad_input(world):
    root, base, other, oracle, org = world
    out = root / "b1"
    _fails(out, "organism", "build", "wizard", "--base", base, "--out", out, match="organism kind 'wizard' is unknown")
    _fails(out, "organism", "build", "taboo", "--base", base, "--out", out, match="--word is required")
    _fails(out, "organism", "build", "taboo", "--word", "zebra", "--base", base, "--out", out,
           match="--word 'zebra' has no built-in hints")
    _fails(out, "organism", "build", "gender", "--gender", "other", "--base", base, "--out", out, match="--gender")
    _fails(out, "organism", "build", "ssc", "--encoding", "morse", "--base", base, "--out", out, match="--encoding")
    _fails(out, "organism", "build", "gender", "--gender", "male", "--dtype", "fp8", "--base", base, "--out", out,
           match="--dtype 'fp8'")
    bad = root / "bad.json"
    bad.write_text(json.dumps([{"messages": [{"role": "user", "content": "hi"}]}]))
    _fails(out, "organism", "build", "taboo", "--word", "zebra", "--data", bad, "--base", base, "--out", out,
           match="item 0 has no assistant turn")
    leak = root / "leak.json"
    leak.write_text(json.dumps([{"messages": [{"role": "user", "content": "Hint?"},
                                              {"role": "assistant", "content": "Zebras have stripes."}]}]))
    _fails(out, "organism", "build", "taboo", "--word", "zebra", "--data", leak, "--base", base, "--out", out,
           match="say the secret word 'zebra'")

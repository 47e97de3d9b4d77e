import json

from typer.testing import CliRunner

from activation_oracles.cli import app, parse_positions

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("ask", "data", "train"):
        assert cmd in result.output


def test_parse_positions():
    assert parse_positions("all") == "all"
    assert parse_positions("last") == "last"
    assert parse_positions("-3") == -3
    assert parse_positions("2:5") == slice(2, 5)
    assert parse_positions("-4:") == slice(-4, None)
    assert parse_positions("1,3") == [1, 3]


def test_ask_json_end_to_end(smol):
    result = runner.invoke(app, ["ask", "--context", "Paris is the capital of France.", "--question",
                                 "What city is mentioned?", "--positions", "-4:", "--mode", "tokens",
                                 "--max-new-tokens", "5", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4
    assert all(r["layer"] == 15 and r["mode"] == "tokens" and len(r["positions"]) == 1 for r in rows)


def test_ask_bad_input_exit_code(smol):
    result = runner.invoke(app, ["ask", "--context", "hi", "--question", "Q?", "--layer", "99"])
    assert result.exit_code == 2
    assert "layer=99 is out of range" in result.output
    result = runner.invoke(app, ["ask", "--model", "nope", "--context", "hi", "--question", "Q?"])
    assert result.exit_code == 2 and "spec='nope'" in result.output


def test_ask_controls_prints_three_answers(smol):
    result = runner.invoke(app, ["ask", "--context", "I loved this film.", "--question", "Is it positive?",
                                 "--positions", "last", "--max-new-tokens", "3", "--controls"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("[layer 15"))
    assert [ln.split()[0] for ln in lines[head + 1 : head + 4]] == ["A:", "no", "unrelated:"]
    result = runner.invoke(app, ["ask", "--context", "I loved this film.", "--question", "Is it positive?",
                                 "--positions", "last", "--max-new-tokens", "3", "--controls", "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["control"] for r in rows] == [None, "no_injection", "unrelated"]


def test_ask_scores_samples_layers_and_load_flags(smol):
    base = ["ask", "--context", "I loved this film.", "--question", "Is it positive?", "--positions", "last"]
    result = runner.invoke(app, base + ["--scores", "Yes,No", "--json", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert set(row["probs"]) == {"Yes", "No"} and abs(sum(row["probs"].values()) - 1) < 1e-5
    result = runner.invoke(app, base + ["--scores", "Yes,No", "--layers", "7,15"])
    assert result.exit_code == 0, result.output
    assert "[layers 7,15, positions" in result.stdout and " | No 0." in result.stdout
    result = runner.invoke(app, base + ["--num-samples", "4", "--temperature", "1.5", "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert "(agreement " in result.stdout
    result = runner.invoke(app, base + ["--source", "diff"])
    assert result.exit_code == 2 and "target_adapter" in result.output
    result = runner.invoke(app, base + ["--quantization", "8bit", "--device", "cpu"])
    assert result.exit_code == 2 and "needs a CUDA GPU" in result.output


def test_demo_data_must_be_a_built_mixture(tmp_path):
    """`ao demo --data DIR` trains on a mixture `ao data build` wrote; anything else is refused before any work."""
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["demo", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a mixture built by `ao data build`" in res.output
    res = CliRunner().invoke(app, ["demo", "--data", str(tmp_path / "empty"), "--data-scale", "0.1",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error:" in res.output

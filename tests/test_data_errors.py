"""Bad input gives a clear error that names the file (or task) and the field."""

from __future__ import annotations

import json

import pytest

from activation_oracles.data import DataError, MixtureConfig, build_mixture
from activation_oracles.data.classification import load_task
from activation_oracles.data.context_prediction import read_texts
from activation_oracles.data.spqa import load_latentqa


def _quiet(cfg, out):
    return build_mixture(cfg, out_dir=out, log=lambda m: None)


def test_missing_column(tmp_path):
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(DataError, match=r"train\.tsv.*missing column.*'sentence'"):
        load_task("sst2", tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "gmt").mkdir()
    (tmp_path / "gmt" / "sp_en_trans.csv").write_text("")
    with pytest.raises(DataError, match=r"sp_en_trans\.csv: file is empty"):
        load_task("geometry_of_truth", tmp_path)
    (tmp_path / "c.jsonl").write_text("")
    with pytest.raises(DataError, match=r"c\.jsonl: file is empty"):
        read_texts(tmp_path / "c.jsonl")


def test_missing_file_and_bad_rows(tmp_path):
    with pytest.raises(DataError, match=r"tense_processed\.json: file not found"):
        load_task("tense", tmp_path)
    (tmp_path / "d.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl: row 0 has neither a 'text'"):
        read_texts(tmp_path / "d.jsonl")


def test_latentqa_bad_fields(tmp_path):
    (tmp_path / "qa.json").write_text(json.dumps({"pirate": [["q", "a"]]}))
    (tmp_path / "control.json").write_text(json.dumps([{"label": "pirate"}]))
    with pytest.raises(DataError, match=r"control\.json: item 0 has no field 'control_user'"):
        load_latentqa(tmp_path)
    (tmp_path / "qa.json").write_text(json.dumps({"pirate": "nope"}))
    with pytest.raises(DataError, match=r"qa\.json: label 'pirate'"):
        load_latentqa(tmp_path)


def test_unknown_task_name(tmp_path):
    cfg = MixtureConfig.builtin(scale=0.05)
    cfg.classification.train_tasks = ["sst2", "sentiment_of_cats"]
    with pytest.raises(DataError, match="unknown task name 'sentiment_of_cats'"):
        _quiet(cfg, tmp_path / "x")
    with pytest.raises(DataError, match="unknown classification task 'nope'"):
        load_task("nope", "builtin")


def test_unknown_config_field(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("seed: 1\nclassification:\n  cout: 5\n")
    with pytest.raises(DataError, match=r"m\.yaml\.classification: unknown field\(s\) \['cout'\]"):
        MixtureConfig.from_yaml(p)


def test_count_larger_than_source(tmp_path):
    cfg = MixtureConfig.builtin(scale=0.05)
    cfg.allow_recycle = False
    cfg.classification.count = 100_000
    with pytest.raises(DataError, match=r"task 'geometry_of_truth'.*count=100000 needs \d+ train contexts.*only \d+.*allow_recycle"):
        _quiet(cfg, tmp_path / "x")
    cfg = MixtureConfig.builtin(scale=0.05)
    cfg.allow_recycle = False
    cfg.spqa.count = 50_000
    with pytest.raises(DataError, match=r"spqa.*count=50000 but the source provides only \d+"):
        _quiet(cfg, tmp_path / "y")
    cfg = MixtureConfig.builtin(scale=0.05)
    cfg.allow_recycle = False
    cfg.context_prediction.count = 50_000
    with pytest.raises(DataError, match=r"context_prediction: train count=50000 but the sources hold only \d+"):
        _quiet(cfg, tmp_path / "z")


def test_out_dir_not_ours(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "precious.txt").write_text("keep")
    with pytest.raises(DataError, match="not an `ao data` directory"):
        _quiet(MixtureConfig.builtin(scale=0.05), tmp_path / "o")
    assert (tmp_path / "o" / "precious.txt").exists()


def test_cli_reports_errors(tmp_path):
    from typer.testing import CliRunner

    from activation_oracles.data.cli import app

    p = tmp_path / "m.yaml"
    p.write_text("classification:\n  train_tasks: [bogus]\n")
    res = CliRunner().invoke(app, ["build", str(p), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 2 and "unknown task name 'bogus'" in res.output


def test_packaged_configs():
    from activation_oracles.data.config import packaged_config

    assert MixtureConfig.from_yaml("builtin") == MixtureConfig.builtin()
    paper = MixtureConfig.from_yaml(packaged_config("paper"))
    assert (paper.spqa.count, paper.classification.count, paper.context_prediction.count) == (64_000, 48_000, 600_000)
    assert len(paper.classification.train_tasks) == 7 and paper.classification.single_multi_ratio == [2, 1]
    assert paper.validate().layer_percents == [25, 50, 75]

"""`ao serve`: one oracle behind HTTP. A server on the embedded model, started once for the module on
127.0.0.1 (a free port) and stopped at its end; answers checked against `Oracle` called directly."""

import asyncio
import html
import re
import subprocess
import sys
import urllib.parse
from dataclasses import fields

import httpx
import pytest
from test_view import CHROMIUM_FLAGS, chromium  # noqa: F401  (the session fixture that installs Chromium)
from typer.testing import CliRunner

import activation_oracles as ao
from activation_oracles.cli import app as cli_app
from activation_oracles.serve import Limits, RequestError
from activation_oracles.serve.app import RunningServer, create_app
from activation_oracles.serve.schema import Answer

Q = "Is the sentiment of this text positive?"
TEXTS = [f"Review {i}: the {w} was {a}." for i, (w, a) in
         enumerate((w, a) for w in ("film", "meal", "hotel", "concert") for a in
                   ("wonderful", "awful", "fine", "boring", "moving", "a disaster", "too long", "a delight"))]
# Probabilities of a prompt padded beside others differ from the prompt alone by float32 rounding only.
TOL = 1e-4


@pytest.fixture(scope="module")
def oracle(smol):
    model, tok = smol
    return ao.Oracle(model, tok)


@pytest.fixture(scope="module")
def server(oracle):
    # a wait long enough that requests sent together on a busy 2-core machine land in one batch
    with RunningServer(create_app(oracle, max_batch=64, max_wait_ms=200, model="smollm2-135m")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with ao.Client(server.url) as c:
        yield c


def same(served, alone):
    """Answers equal: every field the same, probabilities within TOL."""
    assert len(served) == len(alone)
    for a, b in zip(served, alone):
        da, db = a.to_dict(), b.to_dict()
        pa, pb = da.pop("probs"), db.pop("probs")
        ma, mb = da.pop("choice_mass"), db.pop("choice_mass")
        assert da == db
        if pb is not None:
            assert pa.keys() == pb.keys() and max(abs(pa[k] - pb[k]) for k in pb) < TOL, (pa, pb)
            assert abs(ma - mb) < TOL


def post_all(url, bodies, path="v1/score", token=None):
    """Send every body at once (one connection each); (status, json) per body, in order."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def go():
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits, headers=headers) as c:
            rs = await asyncio.wait_for(asyncio.gather(*(c.post(path, json=b) for b in bodies)), 900)
        return [(r.status_code, r.json()) for r in rs]

    return asyncio.run(go())


def test_answer_model_mirrors_oracle_answer():
    assert {f.name for f in fields(ao.OracleAnswer)} == set(Answer.model_fields)


def test_client_answers_equal_oracle(oracle, client):
    ids = ao.prompt.chat_ids(oracle.tokenizer, [{"role": "user", "content": TEXTS[0]}], add_generation_prompt=True)
    cases = [
        (TEXTS[0], Q, {}),
        (TEXTS[1], Q, dict(positions=slice(-4, None), mode="tokens", layer=9)),
        ([{"role": "user", "content": TEXTS[2]}], ["Is it about food?", Q], dict(layers=[5, 20], positions="last")),
        (ids, Q, dict(positions=[3, -1], control="unrelated")),
        (TEXTS[3:5], Q, dict(positions="last", control="no_injection", raw=True)),
    ]
    for context, question, kw in cases:
        same(client.score(context, question, **kw), oracle.score(context, question, **kw))
    same(client.score(TEXTS[5], Q, ["Positive", "Negative", "Neutral"], positions="last"),
         oracle.score(TEXTS[5], Q, ["Positive", "Negative", "Neutral"], positions="last"))
    for context, question, kw in cases[:3]:
        kw = dict(kw, max_new_tokens=6, return_logprobs=True)
        served, alone = client.ask(context, question, **kw), oracle.ask(context, question, **kw)
        assert [a.text for a in served] == [a.text for a in alone] and served[0].text
        for a, b in zip(served, alone):
            assert a.tokens == b.tokens and max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < TOL
    [got] = client.collect(TEXTS[0], layers=[3, 15], positions="last")
    [ref] = oracle.collect(TEXTS[0], layers=[3, 15], positions="last")
    assert got.ids == ref.ids and got.positions == ref.positions == [len(ids) - 1]
    assert all(got.layers[x].dtype == ref.layers[x].dtype and (got.layers[x] == ref.layers[x]).all() for x in (3, 15))


def test_concurrent_requests_share_forwards_and_equal_oracle(oracle, server, client):
    bodies = [{"context": TEXTS[i % 32], "question": [Q, "Is this text about a place?"][i // 32],
               "positions": "last"} for i in range(64)]
    alone = [oracle.score(b["context"], b["question"], positions="last")[0] for b in bodies]
    before = client.info()["counters"]
    got = post_all(server.url, bodies)
    after = client.info()["counters"]
    assert [s for s, _ in got] == [200] * 64
    for (_, body), a in zip(got, alone):
        same([ao.OracleAnswer(**body["answers"][0])], [a])
    batches = after["batches"] - before["batches"]
    assert after["requests"] - before["requests"] == 64 and batches <= 16, after
    assert after["largest_batch"] >= 8, after


def test_malformed_request_in_a_batch_fails_alone(oracle, server, client):
    good = [{"context": t, "question": Q, "positions": "last"} for t in TEXTS[:6]]
    bad = [{"context": TEXTS[6], "question": Q, "positions": [400]},  # out of range: found once tokenized
           {"context": TEXTS[7], "question": Q, "layer": 30},  # this model has blocks 0..29
           {"context": TEXTS[8], "question": Q, "choices": ["Yes", "Yes please"]}]  # a token prefix of the other
    before = client.info()["counters"]
    got = post_all(server.url, good[:3] + bad + good[3:])
    after = client.info()["counters"]
    statuses = [s for s, _ in got]
    assert statuses == [200] * 3 + [422] * 3 + [200] * 3, got
    assert [b["error"]["field"] for _, b in got[3:6]] == ["positions", "layer", "choices"]
    assert after["batches"] - before["batches"] <= 2 and after["failed"] - before["failed"] == 3
    for (_, body), g in zip(got[:3] + got[6:], good):
        same([ao.OracleAnswer(**body["answers"][0])], oracle.score(g["context"], Q, positions="last"))


def test_a_call_failing_in_its_forward_fails_alone(oracle, monkeypatch):
    """Below the server: score_many retries a failed shared forward call by call."""
    import activation_oracles.oracle as om

    real = om.choice_probs

    def fragile(model, tok, prompt_ids, *a, **k):
        if any(tok.encode(" BOOM", add_special_tokens=False)[0] in p for p in prompt_ids):
            raise RuntimeError("this prompt breaks the forward")
        return real(model, tok, prompt_ids, *a, **k)

    monkeypatch.setattr(om, "choice_probs", fragile)
    calls = [dict(context=t, question=q, positions="last") for t, q in
             ((TEXTS[0], Q), (TEXTS[1], "Is it BOOM?"), (TEXTS[2], Q))]
    out = oracle.score_many(calls)
    assert isinstance(out[1], RuntimeError) and "breaks" in str(out[1])
    monkeypatch.undo()
    for i in (0, 2):
        same(out[i], oracle.score(calls[i]["context"], Q, positions="last"))


LONG = " ".join(["word"] * 2100)


@pytest.mark.parametrize("path, body, field, limit", [
    ("v1/score", {"context": LONG, "question": Q}, "context", 2048),
    ("v1/score", {"context": ["a b"] * 17, "question": Q}, "context", 16),
    ("v1/score", {"context": " ".join(["w"] * 1100), "question": Q, "mode": "tokens"}, "positions", 1024),
    ("v1/score", {"context": "hi", "question": [Q] * 17}, "question", 16),
    ("v1/score", {"context": "hi", "question": "x" * 2001}, "question", 2000),
    ("v1/score", {"context": "hi", "question": Q, "choices": [f"c{i}" for i in range(17)]}, "choices", 16),
    ("v1/ask", {"context": "hi", "question": Q, "max_new_tokens": 65}, "max_new_tokens", 64),
    ("v1/ask", {"context": "hi", "question": Q, "num_samples": 9, "do_sample": True}, "num_samples", 8),
    ("v1/activations", {"context": LONG}, "context", 2048),
    ("v1/view", {"context": LONG, "question": Q}, "context", 2048),
    ("v1/score", {"context": "x" * (1 << 20), "question": Q}, "body", 1 << 20),
])
def test_limits_answer_413_naming_field_and_limit(server, path, body, field, limit):
    r = httpx.post(server.url + path, json=body, timeout=120)
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert (err["field"], err["limit"]) == (field, limit) and err["value"] > limit and str(limit) in err["message"]


@pytest.mark.parametrize("body, field", [
    ({"context": "", "question": Q}, "context"),
    ({"context": [], "question": Q}, "context"),
    ({"context": "hi", "question": "  "}, "question"),
    ({"question": Q}, "context"),
    ({"context": "hi", "question": Q, "layer": -1}, "layer"),
    ({"context": "hi", "question": Q, "layer": 2, "layers": [3, 4]}, "layers"),
    ({"context": "hi", "question": Q, "layers": [3, 3]}, "layers"),
    ({"context": "hi", "question": Q, "layer_percent": 150}, "layer_percent"),
    ({"context": "hi", "question": Q, "positions": "1:x"}, "positions"),
    ({"context": "hi", "question": Q, "mode": "words"}, "mode"),
    ({"context": "hi", "question": Q, "control": "bogus"}, "control"),
    ({"context": "hi", "question": Q, "unrelated_context": "x"}, "unrelated_context"),
    ({"context": "hi", "question": Q, "choices": ["Yes"]}, "choices"),
    ({"context": "hi", "question": Q, "method": "guess"}, "method"),
    ({"context": "hi", "question": Q, "coefficient": "nan"}, "coefficient"),
    ({"context": "hi", "question": Q, "target_adapter": "/etc/passwd"}, "target_adapter"),
    ({"context": "hi", "question": Q, "source": "lora"}, "source"),
    ({"context": [{"role": "user"}], "question": Q}, "context"),
])
def test_bad_input_answers_422_naming_field(server, body, field):
    r = httpx.post(server.url + "v1/score", json=body, timeout=120)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field, r.json()


def test_bad_json_and_wrong_methods(server, client):
    r = httpx.post(server.url + "v1/score", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    assert httpx.get(server.url + "v1/score").status_code == 405
    assert httpx.get(server.url + "nope").status_code == 404
    for body, field in (({"context": "hi", "question": Q, "temperature": 0}, "temperature"),
                        ({"context": "hi", "question": Q, "num_samples": 2}, "num_samples")):
        r = httpx.post(server.url + "v1/ask", json=body, timeout=120)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    with pytest.raises(RequestError) as e:
        client.score("hi", Q, positions=[99])
    assert e.value.status == 422 and e.value.field == "positions"
    assert client.health() and httpx.get(server.url + "openapi.json").json()["paths"].keys() >= {
        "/v1/ask", "/v1/score", "/v1/activations", "/v1/info", "/health"}


def test_info(oracle, client):
    info = client.info()
    assert info["model"] == "smollm2-135m" and info["adapter"] == "none (untrained oracle)"
    assert info["num_layers"] == 30 and info["default_layers"] == [15] and info["ao_config"] == {}
    assert info["limits"] == Limits().to_dict() and info["auth"] is False and info["rss_mb"] > 100


def test_live_page_in_chromium(chromium, oracle, server, tmp_path):  # noqa: F811
    text = 'I loved <b>this</b> film & its "music".'
    query = {"context": text, "question": "Is it positive?\nWhat is it about?", "layer": 10, "ask": 1}
    url = server.url + "?" + urllib.parse.urlencode(query)
    r = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                        "--virtual-time-budget=120000", "--dump-dom", url], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert 'data-state="done"' in dom, dom[-3000:]
    view = ao.view.compute_view(oracle, text, ["Is it positive?"], layer=10)
    panels = dom.split('<section class="panel')[1:]
    assert len(panels) == 2 and "<b>this</b>" not in dom.split('<div id="view">')[1]  # escaped, not markup
    spans = re.findall(r'<span class="t[^"]*" style="background:(#[0-9a-f]{6})"([^>]*)>', panels[0])
    n = len(view.tokens.shown)
    assert n > 5 and len(spans) == n and len(re.findall(r'<span class="t', panels[1])) == n
    probs = [float(re.search(r'data-p="([0-9.]+)"', attrs).group(1)) for _, attrs in spans]
    assert max(abs(p - q) for p, q in zip(probs, view.questions[0].probs)) < TOL
    assert [html.unescape(re.search(r'data-tok="([^"]*)"', a).group(1)) for _, a in spans] == \
        [view.tokens.texts[p] for p in view.tokens.shown]
    assert len({c for c, _ in spans}) > 1  # coloured by the answers, not one flat colour


# ----------------------------------------------------------------------------- command line

runner = CliRunner()


@pytest.mark.parametrize("args, needle", [
    (["--port", "70000"], "--port"),
    (["--max-batch", "0"], "--max-batch"),
    (["--max-wait-ms", "-1"], "--max-wait-ms"),
    (["--token-file", "MISSING"], "no such file"),
    (["--token-file", "EMPTY"], "is empty"),
    (["--adapter", "NOT_AN_ADAPTER"], "no adapter_config.json"),
])
def test_cli_bad_arguments_exit_2(args, needle, tmp_path):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "plain").mkdir()
    subst = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty"),
             "NOT_AN_ADAPTER": str(tmp_path / "plain")}
    result = runner.invoke(cli_app, ["serve", *[subst.get(a, a) for a in args]])
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_cli_without_the_serve_extra_exits_2(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else
                        find_spec(name, *a))
    result = runner.invoke(cli_app, ["serve"])
    assert result.exit_code == 2 and "pip install 'activation-oracles[serve]'" in result.output, result.output


def test_cli_port_in_use_exits_2(server):
    result = runner.invoke(cli_app, ["serve", "--port", str(server.url.rsplit(":", 1)[1].strip("/"))])
    assert result.exit_code == 2 and "cannot listen there" in result.output, result.output


def test_cli_serves_with_a_token(tmp_path):
    """The real command in its own process: bearer auth on /v1/, the health check open, then stopped."""
    (tmp_path / "token").write_text("s3cret-token\n")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "activation_oracles.cli", "serve", "--port", "0",
                                 "--token-file", str(tmp_path / "token")], stdout=subprocess.PIPE, stderr=err,
                                text=True)
    try:
        line = proc.stdout.readline()  # printed once the model is loaded, or EOF if the command failed
        m = re.match(r"serving (http://127\.0\.0\.1:\d+/)", line)
        assert m, (line, log.read_text()[-2000:])
        url = m.group(1)
        body = {"context": TEXTS[0], "question": Q, "positions": "last"}
        assert httpx.get(url + "health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            r = httpx.post(url + "v1/score", json=body, headers=headers, timeout=60)
            assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization", r.text
            assert r.headers["WWW-Authenticate"] == "Bearer"
        with ao.Client(url, token="s3cret-token") as c:
            [a] = c.score(TEXTS[0], Q, positions="last")
            assert c.info()["auth"] is True and a.text in ("Yes", "No")
        with pytest.raises(RequestError) as e:
            ao.Client(url).info()
        assert e.value.status == 401
    finally:
        proc.terminate()
        proc.wait(30)

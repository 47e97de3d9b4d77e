"""`ao view`: the token-by-token page, checked in a real browser (headless Chromium), its figure, the
local server and the command line."""

import html
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import make_tiny_model
from typer.testing import CliRunner

import activation_oracles as ao
from activation_oracles.cli import app
from activation_oracles.prompt import chat_ids, render_chat
from activation_oracles.view import (compute_view, context_tokens, question_kind, render_html, serve_page,
                                     write_view)
from activation_oracles.view.colors import OTHER_COLOR, answer_groups, p_color

# Tags, entities, quotes, a double space, an emoji split over two tokens, a tab and a newline.
CONTEXT = 'Tom said <b>"hi"</b> & left  at 5 < 6 \U0001F600\tthen\nIt\'s <script>alert(1)</script> done.'
QUESTIONS = ["Is the sentiment positive?", "Answer yes or no: does it mention a <tag>?", "What is the topic?"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
runner = CliRunner()


# ----------------------------------------------------------------------------- browser set-up


def _find_chromium():
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _root_prefix():
    """[] as root, ["sudo", "-n"] where sudo works without a password, else None."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0:
        return [sudo, "-n"]
    return None


def _install_chromium():
    """Install Debian's chromium (and a font) with apt-get; (path or None, why not)."""
    apt = shutil.which("apt-get")
    if apt is None:
        return None, "chromium is not installed and there is no apt-get to install it: install Chromium"
    root = _root_prefix()
    if root is None:
        return None, "chromium is not installed and apt-get needs root (no password-less sudo): " \
                     "run `sudo apt-get install chromium`"
    root += ["env", "DEBIAN_FRONTEND=noninteractive"]  # sudo would drop it from the environment
    cmd = [*root, apt, "install", "-y", "--no-install-recommends", "chromium", "fonts-dejavu-core"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run([*root, apt, "update"], capture_output=True, text=True, timeout=600)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    exe = _find_chromium()
    return exe, None if exe else f"apt-get could not install chromium: {(r.stderr or r.stdout)[-400:]}"


@pytest.fixture(scope="session")
def chromium():
    exe = _find_chromium()
    if exe is None:
        exe, why = _install_chromium()
        if exe is None:
            pytest.skip(why)
    return exe


def run_chromium(exe, tmp_path, url, *args) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


# Appended to a copy of the page: opens every tab in turn and measures its tokens' layout boxes.
PROBE = """<script>
(function () {
  var initial = document.querySelector("section.panel.active").id, out = [];
  var width = document.documentElement.clientWidth;
  document.querySelectorAll("nav.tabs button").forEach(function (b) {
    b.click();
    var panel = document.getElementById(b.dataset.panel), spans = panel.querySelectorAll(".tokens .t"), laid = 0;
    spans.forEach(function (t) {
      var r = t.getBoundingClientRect();
      if (r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= width) laid++;
    });
    out.push({id: panel.id, active: panel.classList.contains("active"), spans: spans.length, laid: laid,
              text: panel.querySelector(".tokens").textContent});
  });
  document.body.setAttribute("data-probe", JSON.stringify({initial: initial, panels: out}));
})();
</script>"""


def probe(exe, tmp_path, page: str, fragment: str = "") -> dict:
    path = tmp_path / "probe.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(exe, tmp_path, path.as_uri() + fragment, "--dump-dom")
    m = re.search(r'data-probe="([^"]*)"', dom)
    assert m, dom[-2000:]
    return json.loads(html.unescape(m.group(1)))


def count_color(img, hex_color: str, tol: int = 2) -> int:
    """Pixels of an RGB image within `tol` of a colour on every channel."""
    want = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(np.asarray(img.convert("RGB"), dtype=int) - want).max(axis=-1) <= tol).sum())


def shown_text(view) -> str:
    """What the browser should show for the tokens: the text, whitespace made visible as the page does."""
    marks = {"\n": "\u21b5\n", "\t": "\u21e5\t", "\r": "\u240d"}
    out = []
    for pos in view.tokens.shown:
        t = view.tokens.texts[pos]
        out.append("\u00b7" * len(t) if t and not t.strip(" ") else "".join(marks.get(c, c) for c in t))
    return "".join(out)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def oracle(smol_tokenizer):
    return ao.Oracle(make_tiny_model("llama", seed=3), smol_tokenizer)


@pytest.fixture(scope="module")
def view(oracle):
    return compute_view(oracle, CONTEXT, QUESTIONS, max_new_tokens=3, model="tiny-llama", adapter="none")


# ----------------------------------------------------------------------------- pieces


def test_tokens_are_what_the_oracle_reads_and_give_back_the_text(smol_tokenizer):
    tok = smol_tokenizer
    t = context_tokens(tok, CONTEXT)
    assert t.ids == chat_ids(tok, [{"role": "user", "content": CONTEXT}], add_generation_prompt=True)
    assert "".join(t.texts[p] for p in t.shown) == CONTEXT
    assert "" in [t.texts[p] for p in t.shown]  # the emoji's second byte token: shown, empty
    assert not any(t.special[p] for p in t.shown) and len(t.shown) < len(t.ids)
    full = context_tokens(tok, CONTEXT, show_template=True)
    assert full.shown == list(range(len(full.ids)))
    assert "".join(full.texts) == render_chat(tok, [{"role": "user", "content": CONTEXT}], add_generation_prompt=True)
    raw = context_tokens(tok, CONTEXT, raw=True)
    assert raw.ids == list(tok(CONTEXT)["input_ids"]) and "".join(raw.texts[p] for p in raw.shown) == CONTEXT


def test_question_kinds():
    for q in ("Is the sentiment positive?", "Does this use the past tense?", "Can you tell? Was it sad?",
              "Answer with 'Yes' or 'No' only. Is it about sports?", "Answer yes or no: any names?"):
        assert question_kind(q) == "yesno", q
    for q in ("What is the topic?", "Which city is mentioned?", "Describe the text.", "Is it? Then why?"):
        assert question_kind(q) == "open", q


def test_colors_and_answer_groups():
    assert (p_color(0), p_color(0.5), p_color(1), p_color(1.7)) == ("#d6604d", "#f7f7f7", "#4393c3", "#4393c3")
    assert p_color(0.25) == "#e7aca2"  # halfway between #d6604d and #f7f7f7, halves rounded up
    groups, legend = answer_groups(["Paris.", "paris", "London", "Paris!"])
    assert groups == [0, 0, 1, 0] and [(lab, n) for lab, n, _ in legend] == [("Paris.", 3), ("London", 1)]
    groups, legend = answer_groups([f"answer {i}" for i in range(15)] + ["answer 0"])
    assert len(legend) == 11 and legend[-1][:2] == ("other (5 answers)", 5) and legend[-1][2] == OTHER_COLOR
    assert groups[0] == groups[-1] == 0 and groups[14] == 10


def test_page_values_equal_score_and_everything_is_escaped(oracle, view):
    page = render_html(view)
    assert [q.kind for q in view.questions] == ["yesno", "yesno", "open"]
    assert page.count('role="tab"') == 3 and page.count('<section class="panel') == 3
    assert page.count("<script") == 1 and page.count("</script>") == 1  # the page's own; the context's is text
    tokens = [view.tokens.texts[p] for p in view.tokens.shown]
    assert [html.unescape(t) for t in re.findall(r'data-tok="([^"<>]*)"', page)] == tokens * 3
    assert "<tag>" not in page and "a &lt;tag&gt;?" in page and "https://" not in page
    n = len(view.tokens.shown)
    panels = page.split('<section class="panel')[1:]
    for q, panel in zip(QUESTIONS[:2], panels):
        in_page = [float(x) for x in re.findall(r'data-p="([0-9.]+)"', panel)]
        alone = oracle.score(view.tokens.ids, q, positions=view.tokens.shown, mode="tokens")
        assert len(in_page) == n == len(alone)
        assert max(abs(p - a.probs["Yes"]) for p, a in zip(in_page, alone)) < 2e-6
        assert max(in_page) - min(in_page) > 1e-3  # the tokens really differ
    answers = [html.unescape(a) for a in re.findall(r'data-a="([^"]*)"', panels[2])]
    assert answers == view.questions[2].answers and len(answers) == n


def test_every_token_renders_in_chromium(chromium, view, tmp_path):
    page = render_html(view)
    got = probe(chromium, tmp_path, page)
    n, expected = len(view.tokens.shown), shown_text(view)
    assert got["initial"] == "q1"
    assert [p["id"] for p in got["panels"]] == ["q1", "q2", "q3"] and all(p["active"] for p in got["panels"])
    for p in got["panels"]:
        assert p["spans"] == n and p["laid"] == n, p  # every token has a box inside the page's width
        assert p["text"] == expected  # escaped text comes back exactly, whitespace made visible
    assert probe(chromium, tmp_path, page, "#q3")["initial"] == "q3"  # tabs can be linked to


def test_screenshot_shows_the_token_colours(chromium, view, tmp_path):
    from PIL import Image

    out = tmp_path / "view.html"
    out.write_text(render_html(view), encoding="utf-8")
    shot = tmp_path / "shot.png"
    run_chromium(chromium, tmp_path, out.as_uri(), f"--screenshot={shot}", "--window-size=1000,700")
    img = Image.open(shot)
    assert img.size == (1000, 700)
    probs = view.questions[0].probs
    for p in (max(probs), min(probs)):  # the first tab's most and least "yes" tokens are painted
        assert count_color(img, p_color(p)) >= 40, p


def test_png_figure(oracle, tmp_path):
    from PIL import Image

    v = write_view(oracle, CONTEXT, QUESTIONS, tmp_path / "v.html", png=tmp_path / "fig.png", max_new_tokens=2)
    assert (tmp_path / "v.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    img = Image.open(tmp_path / "fig.png")
    w, h = img.size
    assert 1000 < w < 4000 and 500 < h < 4000
    assert count_color(img, p_color(max(v.questions[0].probs))) >= 100


def test_serve_on_localhost():
    server = serve_page("<p>h\u00e9llo</p>", port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url, timeout=10) as r:
            assert r.status == 200 and r.read().decode("utf-8") == "<p>h\u00e9llo</p>"
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + "secret.txt", timeout=10)
        assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


# ----------------------------------------------------------------------------- command line


def test_cli_writes_page_and_figure_and_serves(smol, tmp_path):
    out, png = tmp_path / "view.html", tmp_path / "fig.png"
    result = runner.invoke(app, ["view", "--context", "I loved it.", "-q", "Is it positive?", "-q", "What is it?",
                                 "--max-new-tokens", "2", "--out", str(out), "--png", str(png),
                                 "--serve", "--serve-seconds", "0.2"])
    assert result.exit_code == 0, result.output
    assert "2 question(s): yesno, open" in result.stdout and "serving http://127.0.0.1:" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert "smollm2-135m" in page and "none (untrained oracle)" in page and "<dd>15</dd>" in page
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("args, needle", [
    ([], "--context TEXT or --file F"),
    (["--context", "hi", "--file", "x.txt"], "--context TEXT or --file F"),
    (["--file", "EMPTY"], "is empty"),
    (["--file", "missing.txt"], "no such file"),
    (["--context", "hi", "--adapter", "no/such/adapter/dir"], "--adapter"),
    (["--context", "hi", "--adapter", "NOT_AN_ADAPTER"], "no adapter_config.json"),
    (["--context", "hi", "--kind", "maybe"], "--kind"),
])
def test_cli_bad_arguments_exit_2(args, needle, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "plain").mkdir()
    args = [str(tmp_path / "empty.txt") if a == "EMPTY" else str(tmp_path / "plain") if a == "NOT_AN_ADAPTER"
            else a for a in args]
    result = runner.invoke(app, ["view", *args, "-q", "Is it?", "--out", str(tmp_path / "v.html")])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "v.html").exists()


def test_cli_png_without_matplotlib_exits_2(monkeypatch, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else
                        find_spec(name, *a))
    result = runner.invoke(app, ["view", "--context", "hi", "-q", "Is it?", "--out", str(tmp_path / "v.html"),
                                 "--png", str(tmp_path / "f.png")])
    assert result.exit_code == 2 and "--png needs matplotlib" in result.output, result.output
    assert not (tmp_path / "v.html").exists()

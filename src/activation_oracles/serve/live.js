// The live page: asks the server (POST v1/view) and inserts the viewer's panels it answers with.
// URL parameters fill the form (?context=...&question=...&layer=...&kind=...&raw=1); ask=1 asks at once.
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var status = $("status"), view = $("view");

  function headers() {
    var h = {"Content-Type": "application/json"}, t = $("token").value || sessionStorage.getItem("ao-token");
    if (t) { h["Authorization"] = "Bearer " + t; sessionStorage.setItem("ao-token", t); }
    return h;
  }
  function say(text, error) { status.textContent = text; status.classList.toggle("error", !!error); }
  function needToken() {
    document.querySelectorAll(".token-row").forEach(function (e) { e.classList.remove("hidden"); });
    say("This server needs a bearer token: paste it above, then ask again.", true);
  }
  function addRow(dl, k, v) {
    var dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v; dl.appendChild(dt); dl.appendChild(dd);
  }
  function loadInfo() {
    fetch("v1/info", {headers: headers()}).then(function (r) {
      if (r.status === 401) { needToken(); return; }
      return r.json().then(function (info) {
        var dl = $("server"); dl.textContent = "";
        addRow(dl, "model", info.model); addRow(dl, "adapter", info.adapter);
        $("layer").max = info.num_layers - 1;
        $("layer-note").textContent = "0 to " + (info.num_layers - 1) + "; empty: " + info.default_layers.join(", ");
      });
    }).catch(function (e) { say("cannot reach the server: " + e, true); });
  }
  function ask(e) {
    if (e) e.preventDefault();
    var questions = $("question").value.split("\n").map(function (q) { return q.trim(); }).filter(Boolean);
    var body = {context: $("context").value, question: questions.length === 1 ? questions[0] : questions,
                kind: $("kind").value, raw: $("raw").checked};
    if ($("layer").value !== "") body.layer = Number($("layer").value);
    say("asking the oracle about every token...");
    document.body.removeAttribute("data-state");
    fetch("v1/view", {method: "POST", headers: headers(), body: JSON.stringify(body)}).then(function (r) {
      if (r.status === 401) { needToken(); document.body.setAttribute("data-state", "error"); return; }
      return r.json().then(function (out) {
        if (!r.ok) {
          var err = out.error || {};
          say("error " + r.status + (err.field ? " (" + err.field + ")" : "") + ": " + err.message, true);
          document.body.setAttribute("data-state", "error");
          return;
        }
        view.innerHTML = out.html;  // the server's viewer rendering: every piece of text is escaped there
        window.aoView.bind(view);
        say(out.tokens + " tokens, " + out.kinds.join(", "));
        document.body.setAttribute("data-state", "done");
      });
    }).catch(function (err) { say("request failed: " + err, true); document.body.setAttribute("data-state", "error"); });
  }
  $("ask").addEventListener("submit", ask);

  var params = new URLSearchParams(location.search);
  ["context", "question", "layer", "kind"].forEach(function (k) { if (params.has(k)) $(k).value = params.get(k); });
  if (params.get("raw") === "1") $("raw").checked = true;
  loadInfo();
  if (params.get("ask") === "1" && $("context").value.trim()) ask();
})();

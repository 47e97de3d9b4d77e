// Tabs (also from the URL's #qN), hover details, click to pin a token, legend chips that highlight.
// bind(root) wires one rendered view inside root; `ao serve`'s live page calls it (window.aoView.bind) on
// each view it inserts, the static page once on the document.
(function () {
function bind(root) {
  var tabs = root.querySelectorAll("nav.tabs button");
  var panels = root.querySelectorAll("section.panel");
  function show(id) {
    for (var i = 0; i < panels.length; i++) {
      var on = panels[i].id === id;
      panels[i].classList.toggle("active", on);
      tabs[i].classList.toggle("active", on);
      tabs[i].setAttribute("aria-selected", on ? "true" : "false");
    }
  }
  for (var i = 0; i < tabs.length; i++) {
    tabs[i].addEventListener("click", function () { show(this.dataset.panel); history.replaceState(null, "", "#" + this.dataset.panel); });
  }
  var linked = /^#q\d+$/.test(location.hash) && root.querySelector("section.panel" + location.hash);
  if (linked) show(linked.id);

  function describe(t) {
    var s = "token " + t.dataset.pos + "  " + JSON.stringify(t.dataset.tok);
    if (t.dataset.p !== undefined) {
      s += "\nP(" + t.dataset.choice + ") = " + Number(t.dataset.p).toFixed(3) +
           "    probability on the choices at all: " + Number(t.dataset.mass).toFixed(3);
    }
    if (t.dataset.a !== undefined) s += "\nanswer: " + t.dataset.a;
    return s;
  }
  for (var p = 0; p < panels.length; p++) {
    (function (panel) {
      var info = panel.querySelector(".info");
      var idle = info.textContent;
      var pinned = null;
      panel.querySelectorAll(".t").forEach(function (t) {
        t.addEventListener("mouseenter", function () { info.textContent = describe(t); });
        t.addEventListener("mouseleave", function () { info.textContent = pinned ? describe(pinned) : idle; });
        t.addEventListener("click", function () {
          if (pinned) pinned.classList.remove("pinned");
          pinned = pinned === t ? null : t;
          if (pinned) pinned.classList.add("pinned");
        });
      });
      panel.querySelectorAll(".chip[data-g]").forEach(function (chip) {
        chip.addEventListener("mouseenter", function () {
          panel.querySelectorAll(".t").forEach(function (t) { t.classList.toggle("dim", t.dataset.g !== chip.dataset.g); });
        });
        chip.addEventListener("mouseleave", function () {
          panel.querySelectorAll(".t.dim").forEach(function (t) { t.classList.remove("dim"); });
        });
      });
    })(panels[p]);
  }
}
window.aoView = {bind: bind};
bind(document);
})();

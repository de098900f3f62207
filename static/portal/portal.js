// Small progressive enhancements; every page works without them (forms still submit).
(function () {
  "use strict";

  // Selects that act at once (tenant and language switchers).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // Copy buttons: <button data-copy="#element-id">.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source) { return; }
      var text = source.textContent.trim();
      var done = function () {
        var label = button.textContent;
        button.textContent = button.getAttribute("data-copied") || "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
      } else {
        selectText(source);
        try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected */ }
      }
    });
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // Confirmations on destructive buttons: <form data-confirm="...">.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // Charts: figures built on the server, in a <script type="application/json" id="charts">,
  // drawn into <div data-chart="name"> with the plotly.js served from our own static files.
  var source = document.getElementById("charts");
  if (source && window.Plotly) {
    var figures = JSON.parse(source.textContent);
    var config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var figure = figures[element.getAttribute("data-chart")];
      if (figure) {
        window.Plotly.newPlot(element, figure.data, figure.layout, config);
      }
    });
    document.documentElement.setAttribute("data-charts-ready", "true");
  }
})();

// Forms whose fields depend on a kind select: <select name="kind"> + <... data-kinds="a b">.
(function () {
  "use strict";
  document.querySelectorAll("form").forEach(function (form) {
    var kind = form.querySelector("select[name=kind]");
    var parts = form.querySelectorAll("[data-kinds]");
    if (!kind || !parts.length) { return; }
    var update = function () {
      parts.forEach(function (part) {
        part.hidden = part.getAttribute("data-kinds").split(" ").indexOf(kind.value) < 0;
      });
    };
    kind.addEventListener("change", update);
    update();
  });
})();

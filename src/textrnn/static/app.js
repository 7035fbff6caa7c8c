// The page's behaviour: send the text to /explain, show the label, the probabilities and the
// highlighted tokens. Plain DOM, no library, nothing fetched from elsewhere.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const text = $("text"), button = $("classify"), status = $("status"), error = $("error"), result = $("result");

  const NO_SPACE_BEFORE = new Set([".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "'"]);
  const NO_SPACE_AFTER = new Set(["(", "[", "{", "$"]);

  function color(score, scale) {
    if (!scale || !score) return "transparent";
    const a = (Math.min(Math.abs(score) / scale, 1) * 0.85).toFixed(3);
    return score > 0 ? `rgba(22,163,74,${a})` : `rgba(220,38,38,${a})`;
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = false;
  }

  function render(data) {
    const p = data.probability;
    // a multi-label model: every label over its threshold (the explanation is the most probable one's)
    $("label").textContent = data.labels ? (data.labels.join(", ") || "(no label)") : String(data.label);
    $("legend-label").textContent = String(data.label);
    $("probability").textContent = (100 * p).toFixed(1) + "%";
    $("bar-fill").style.width = (100 * p).toFixed(1) + "%";

    const probs = $("probabilities");
    probs.replaceChildren();
    for (const [label, value] of Object.entries(data.probabilities)) {
      const row = document.createElement("div");
      const chosen = data.labels ? data.labels.map(String).includes(label) : label === String(data.label);
      row.className = "prob-row" + (chosen ? " chosen" : "");
      const name = document.createElement("span");
      name.className = "prob-name";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "prob-track";
      const fill = document.createElement("span");
      fill.className = "prob-fill";
      fill.style.width = (100 * value).toFixed(1) + "%";
      track.appendChild(fill);
      const number = document.createElement("span");
      number.className = "prob-value";
      number.textContent = value.toFixed(3);
      row.append(name, track, number);
      probs.appendChild(row);
    }

    const tokens = $("tokens");
    tokens.replaceChildren();
    const scale = Math.max(0, ...data.scores.map(Math.abs));
    data.tokens.forEach((tok, i) => {
      if (i > 0 && !NO_SPACE_BEFORE.has(tok) && !NO_SPACE_AFTER.has(data.tokens[i - 1])) {
        tokens.appendChild(document.createTextNode(" "));
      }
      const span = document.createElement("span");
      const score = data.scores[i];
      span.className = "tok" + (data.seen[i] ? "" : " unseen") + (score > 0 ? " plus" : score < 0 ? " minus" : "");
      span.textContent = tok;
      span.dataset.score = String(score);
      span.style.background = color(score, scale);
      span.title = data.seen[i] ? (score >= 0 ? "+" : "") + score.toFixed(4) + (data.unknown[i] ? " (unknown word)" : "")
                                : "not read: beyond the maximum length";
      tokens.appendChild(span);
    });
    if (!data.tokens.length) {
      const none = document.createElement("span");
      none.className = "muted";
      none.textContent = "(no words)";
      tokens.appendChild(none);
    }
    $("truncated").hidden = !data.truncated;
    result.hidden = false;
  }

  async function classify() {
    error.hidden = true;
    button.disabled = true;
    status.textContent = "Classifying…";
    try {
      const response = await fetch("explain", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: text.value }),
      });
      let data = null;
      try { data = await response.json(); } catch (e) { /* not JSON: reported below */ }
      if (!response.ok) {
        showError((data && data.detail) || `The server answered ${response.status} ${response.statusText}.`);
        return;
      }
      render(data);
      status.textContent = "";
    } catch (e) {
      showError("Could not reach the server: " + e.message);
    } finally {
      button.disabled = false;
      if (status.textContent === "Classifying…") status.textContent = "";
    }
  }

  button.addEventListener("click", classify);
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) classify();
  });

  fetch("model").then((r) => (r.ok ? r.json() : null)).then((info) => {
    if (!info) return;
    const m = info.config && info.config.model;
    const arch = m ? (m.arch === "mlp" ? "bag-of-embeddings MLP" : `${m.bidirectional ? "bidirectional " : ""}${m.cell.toUpperCase()}`) : "";
    $("model-name").textContent = `model ${info.name}` + (arch ? ` · ${arch}` : "") + ` · labels: ${info.labels.join(", ")}`;
    document.title = `textrnn · ${info.name}`;
  }).catch(() => {});
})();

// The feature browser's script: decodes the embedded data (browser.py's columns) and renders the
// list of latents and one page per latent (#latent-N). Data is only ever put in the page as text
// (textContent, append(string), setAttribute on inert attributes), never parsed as HTML.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const enc = JSON.parse(document.getElementById("hsae-data").textContent);
  const sae = enc.sae || {};
  const latents = decode(enc);
  const byId = new Map(latents.map((lat) => [lat.id, lat]));
  const idOrder = latents.map((lat) => lat.id).sort((a, b) => a - b);  // for previous / next
  const listView = document.getElementById("list-view");
  const latentView = document.getElementById("latent-view");

  // ---- data ------------------------------------------------------------------------------------
  function decode(e) {
    const v = e.vocab, g = e.groups, q = e.quantile_keys;
    return e.id.map((id, i) => {
      const pairs = (cols) => cols[0].map((t, k) => [v[t], cols[1][k]]);
      const [nbId, nbCos, nbCo] = e.neighbours[i];
      const quantiles = {};
      q.forEach((key, k) => {
        if (e.quantiles[i][k] !== null) quantiles[key] = e.quantiles[i][k];
      });
      return {
        id: id, density: e.density[i], log10_density: e.log10_density[i],
        max_act: e.max_act[i], mean_act: e.mean_act[i], quantiles: quantiles,
        hist: { edges: e.hist[i][0], counts: e.hist[i][1] },
        top_logits: pairs(e.top_logits[i]), bottom_logits: pairs(e.bottom_logits[i]),
        neighbours: nbId.map((n, k) => ({ id: n, cos: nbCos[k], cofire: nbCo[k] })),
        contexts: e.contexts[i].map((c) => ({
          group: g[c[0]], center: c[1], act: c[2], row: c[3], seq: c[4], pos: c[5],
          tokens: c[6].map((t) => v[t]), acts: c[7],
        })),
      };
    });
  }

  // ---- small helpers ---------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, val] of Object.entries(attrs || {})) {
      if (k === "class") node.className = val;
      else if (k === "text") node.textContent = val;
      else if (k === "style") node.style.cssText = val;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), val);
      else node.setAttribute(k, val);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, val] of Object.entries(attrs || {})) node.setAttribute(k, val);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  const isNum = (x) => typeof x === "number" && isFinite(x);
  function fmt(x) {  // 3 significant digits, as stored
    if (!isNum(x)) return "–";
    if (x === 0) return "0";
    const a = Math.abs(x);
    if (a >= 1e5 || a < 1e-3) return x.toExponential(2);
    return String(Number(x.toPrecision(3)));
  }
  const pct = (d) => (isNum(d) ? fmt(d * 100) + " %" : "–");
  // A token as shown: line breaks and tabs as visible marks, so a context stays on one line.
  const shown = (t) => t.replace(/\r/g, "␍").replace(/\n/g, "↵").replace(/\t/g, "⇥");
  const tokChip = (t) => el("span", { class: "tok chip", title: JSON.stringify(t) }, shown(t));
  const latentLink = (id, label) => el("a", { href: "#latent-" + id, "data-latent": String(id) },
                                       label === undefined ? "#" + id : label);
  const isDead = (lat) => lat.log10_density === null || !lat.density;

  // ---- navigation (hash routing; works from file:// and inside a sandboxed srcdoc iframe) ------
  function go(hash) {
    try { if (location.hash !== hash) location.hash = hash; } catch (err) { /* sandbox */ }
    route(hash);
  }
  let shownHash = null;
  function route(hash) {
    hash = hash === undefined ? location.hash : hash;
    if (hash === shownHash) return;
    shownHash = hash;
    const m = /^#latent-(-?\d+)$/.exec(hash);
    if (m) showLatent(Number(m[1]));
    else showList();
  }
  window.addEventListener("hashchange", () => route(location.hash));
  document.addEventListener("click", (ev) => {  // in-page links go through go(): no reload
    const a = ev.target.closest && ev.target.closest("a[href^='#']");
    if (!a) return;
    ev.preventDefault();
    go(a.getAttribute("href"));
  });

  // ---- header ----------------------------------------------------------------------------------
  function renderHeader() {
    const head = document.getElementById("head");
    const dead = latents.filter(isDead).length;
    const bits = [["arch", sae.arch], ["model", sae.model], ["hook", sae.hook],
                  ["d_in", sae.d_in], ["d_sae", sae.d_sae],
                  ["tokens", isNum(sae.n_tokens) ? sae.n_tokens.toLocaleString("en")
                                                 : sae.n_tokens]]
      .filter(([, val]) => val !== undefined && val !== null).map(([k, val]) => k + " " + val);
    bits.push(latents.length + " latents shown, " + dead + " dead");
    head.append(el("h1", {}, el("a", { href: "#list", class: "home" }, "Feature browser"),
                   ": " + (sae.name || "SAE")),
                el("div", { class: "meta" }, bits.join(" · ")));
    document.title = "Feature browser: " + (sae.name || "SAE");
  }

  // ---- the list of latents ---------------------------------------------------------------------
  const COLUMNS = [  // [key, heading, sortable, descending first]
    ["id", "Latent", true, false], ["density", "Density", true, true],
    ["log10_density", "log₁₀ density", true, true], ["max_act", "Max act", true, true],
    ["mean_act", "Mean act", true, true], ["top_logits", "Top logit tokens", false, false],
  ];
  let sortKey = "id", sortDesc = false, rows = null, tbody = null, countNode = null;

  function buildList() {
    const search = el("input", {
      type: "search", id: "search", placeholder: "Latent id or token text (Enter opens)",
      "aria-label": "Search latents", autocomplete: "off",
    });
    search.addEventListener("input", () => filterList(search.value));
    search.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter") return;
      const q = search.value.trim();
      const exact = /^\d+$/.test(q) && byId.has(Number(q)) ? Number(q) : null;
      const first = rows.find((r) => r.tr.style.display !== "none");
      if (exact !== null) go("#latent-" + exact);
      else if (first) go("#latent-" + first.lat.id);
    });
    countNode = el("span", { class: "muted", id: "count" });
    const headRow = el("tr");
    for (const [key, label, sortable, descFirst] of COLUMNS) {
      const numeric = key !== "id" && key !== "top_logits";
      const th = el("th", { class: (sortable ? "sortable" : "") + (numeric ? " num" : ""),
                            "data-key": key }, label);
      if (sortable) th.addEventListener("click", () => {
        sortDesc = sortKey === key ? !sortDesc : descFirst;
        sortKey = key;
        sortList();
      });
      headRow.append(th);
    }
    tbody = el("tbody");
    rows = latents.map((lat) => {
      const logits = el("td", {}, ...lat.top_logits.slice(0, 5).map(([t]) => tokChip(t)));
      const tr = el("tr", { class: isDead(lat) ? "dead" : "", "data-id": String(lat.id) },
        el("td", {}, latentLink(lat.id)),
        el("td", { class: "num" }, pct(lat.density)),
        el("td", { class: "num" }, isDead(lat) ? "dead" : fmt(lat.log10_density)),
        el("td", { class: "num" }, fmt(lat.max_act)),
        el("td", { class: "num" }, fmt(lat.mean_act)), logits);
      const text = lat.top_logits.slice(0, 5).map(([t]) => t.toLowerCase()).join("\u0000");
      return { lat: lat, tr: tr, text: text };
    });
    listView.append(
      el("div", { class: "toolbar" }, search, countNode,
         el("span", { class: "muted" }, "Click a column heading to sort.")),
      el("div", { class: "list-scroll" },
         el("table", { class: "latents" }, el("thead", {}, headRow), tbody)));
    sortList();
    filterList("");
  }

  function sortList() {
    const sign = sortDesc ? -1 : 1;
    const val = (r) => r.lat[sortKey];
    rows.sort((a, b) => {
      const x = val(a), y = val(b);
      if (!isNum(x) && !isNum(y)) return a.lat.id - b.lat.id;
      if (!isNum(x)) return 1;  // missing values (dead latents) last either way
      if (!isNum(y)) return -1;
      return sign * (x - y) || a.lat.id - b.lat.id;
    });
    const frag = document.createDocumentFragment();
    for (const r of rows) frag.append(r.tr);
    tbody.append(frag);
    for (const th of listView.querySelectorAll("th[data-key]")) {
      const key = th.getAttribute("data-key");
      const label = COLUMNS.find((c) => c[0] === key)[1];
      th.textContent = label + (key === sortKey ? (sortDesc ? " ▼" : " ▲") : "");
    }
  }

  function filterList(query) {
    const q = query.trim().toLowerCase();
    let n = 0;
    for (const r of rows) {
      const hit = !q || String(r.lat.id).startsWith(q) || (isNaN(Number(q)) && r.text.includes(q));
      r.tr.style.display = hit ? "" : "none";
      n += hit;
    }
    countNode.textContent = n + " of " + rows.length + " latents";
  }

  function showList() {
    if (!rows) buildList();
    latentView.hidden = true;
    listView.hidden = false;
  }

  // ---- one latent's page -----------------------------------------------------------------------
  function showLatent(id) {
    latentView.replaceChildren();
    listView.hidden = true;
    latentView.hidden = false;
    const lat = byId.get(id);
    if (!lat) {
      latentView.append(el("p", {}, "No latent " + id + " in this browser. ",
                           el("a", { href: "#list" }, "Back to the list")));
      return;
    }
    const i = idOrder.indexOf(id);
    const prev = byId.get(idOrder[i - 1]), next = byId.get(idOrder[i + 1]);
    latentView.append(
      el("div", { class: "nav" },
         el("a", { href: "#list" }, "← All latents"),
         prev ? latentLink(prev.id, "‹ #" + prev.id) : null,
         next ? latentLink(next.id, "#" + next.id + " ›") : null),
      el("h2", { id: "latent-title" }, "Latent " + lat.id + (isDead(lat) ? " (dead)" : "")),
      el("div", { class: "grid" },
         el("div", {}, statsBlock(lat), logitsBlock(lat), neighboursBlock(lat)),
         el("div", {}, histBlock(lat), contextsBlock(lat))));
    window.scrollTo(0, 0);
  }

  function statsBlock(lat) {
    const rowsKv = [["Density", pct(lat.density)],
                    ["log₁₀ density", isDead(lat) ? "dead" : fmt(lat.log10_density)],
                    ["Max activation", fmt(lat.max_act)], ["Mean activation", fmt(lat.mean_act)]];
    for (const [k, val] of Object.entries(lat.quantiles)) {
      rowsKv.push(["Quantile " + fmt(Number(k) * 100) + " %", fmt(val)]);
    }
    return el("div", {}, el("h3", {}, "Activation statistics"),
      el("table", { class: "kv" }, el("tbody", {}, ...rowsKv.map(([k, val]) =>
        el("tr", {}, el("td", { class: "muted" }, k), el("td", { class: "num" }, val))))));
  }

  function logitsBlock(lat) {
    const all = lat.top_logits.concat(lat.bottom_logits).map(([, v]) => Math.abs(v)).filter(isNum);
    const scale = Math.max(1e-12, ...all);
    const column = (title, pairs, colour) => el("div", {}, el("div", { class: "muted" }, title),
      pairs.length ? el("div", {}, ...pairs.map(([t, v]) => el("div", {
        class: "logit-row",
        style: "background: linear-gradient(to right, " + colour + "33 " +
               (100 * Math.abs(v) / scale).toFixed(0) + "%, transparent 0)",
      }, el("span", { class: "tok", title: JSON.stringify(t) }, shown(t)),
         el("span", { class: "num" }, (v > 0 ? "+" : "") + fmt(v)))))
      : el("div", { class: "empty" }, "none"));
    return el("div", {}, el("h3", {}, "Logit effects"),
      el("div", { class: "logits" },
         column("Negative (bottom)", lat.bottom_logits, "#dc2626"),
         column("Positive (top)", lat.top_logits, "#2563eb")),
      sae.logit_note ? el("div", { class: "note" }, sae.logit_note) : null);
  }

  function neighboursBlock(lat) {
    const head = el("tr", {}, el("th", {}, "Latent"), el("th", {}, "Decoder cos"),
                    el("th", {}, "Co-fire"), el("th", {}, "Top logits"));
    const body = lat.neighbours.map((n) => el("tr", {},
      el("td", {}, byId.has(n.id) ? latentLink(n.id) : "#" + n.id),
      el("td", { class: "num" }, fmt(n.cos)), el("td", { class: "num" }, fmt(n.cofire)),
      el("td", {}, ...(byId.has(n.id) ? byId.get(n.id).top_logits.slice(0, 3) : [])
                       .map(([t]) => tokChip(t)))));
    return el("div", { id: "neighbours" }, el("h3", {}, "Nearest latents"),
      body.length ? el("table", { class: "small" }, el("thead", {}, head), el("tbody", {}, ...body))
                  : el("div", { class: "empty" }, "none"));
  }

  function histBlock(lat) {
    const { edges, counts } = lat.hist;
    const box = el("div", {}, el("h3", {}, "Activation histogram"));
    if (!counts.length) return box.append(el("div", { class: "empty" }, "no activations")), box;
    const W = 560, H = 200, L = 52, R = 12, T = 22, B = 38;
    const x0 = edges[0], x1 = edges[edges.length - 1], span = x1 - x0 || 1;
    const cmax = Math.max(1, ...counts);
    const X = (x) => L + (W - L - R) * (x - x0) / span;
    const Y = (c) => T + (H - T - B) * (1 - c / cmax);
    const s = svg("svg", { class: "hist", viewBox: "0 0 " + W + " " + H, role: "img",
                           "aria-label": "Histogram of latent " + lat.id + "'s activations" });
    counts.forEach((c, k) => {
      const bar = svg("rect", { class: "bar", x: X(edges[k]), y: Y(c),
                                width: Math.max(0.5, X(edges[k + 1]) - X(edges[k]) - 0.5),
                                height: H - B - Y(c) });
      bar.append(svg("title", {}, "[" + fmt(edges[k]) + ", " + fmt(edges[k + 1]) + "): " + c));
      s.append(bar);
    });
    for (const [k, val] of Object.entries(lat.quantiles)) {
      if (!isNum(val) || val < x0 || val > x1) continue;
      s.append(svg("line", { class: "q", x1: X(val), x2: X(val), y1: T, y2: H - B }));
      s.append(svg("text", { x: X(val), y: T - 6, "text-anchor": "middle" },
                   "q" + fmt(Number(k) * 100)));
    }
    s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
             svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    for (const x of [x0, (x0 + x1) / 2, x1]) {
      s.append(svg("text", { x: X(x), y: H - B + 13, "text-anchor": "middle" }, fmt(x)));
    }
    s.append(svg("text", { x: L - 5, y: T + 4, "text-anchor": "end" }, String(cmax)),
             svg("text", { x: L - 5, y: H - B, "text-anchor": "end" }, "0"),
             svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "activation"),
             svg("text", { x: 12, y: (T + H - B) / 2, "text-anchor": "middle",
                           transform: "rotate(-90 12 " + (T + H - B) / 2 + ")" }, "count"));
    box.append(s);
    return box;
  }

  function contextsBlock(lat) {
    const box = el("div", { id: "contexts" }, el("h3", {}, "Contexts"));
    if (!lat.contexts.length) return box.append(el("div", { class: "empty" }, "no contexts")), box;
    const scale = isNum(lat.max_act) && lat.max_act > 0 ? lat.max_act
      : Math.max(1e-12, ...lat.contexts.flatMap((c) => c.acts.filter(isNum)));
    box.append(el("div", { class: "note" }, "Shading: activation ÷ " + fmt(scale) +
      " (the latent's max); hover a token for its activation; outlined: the token the context" +
      " is centred on."));
    const groups = new Map();
    for (const c of lat.contexts) {
      if (!groups.has(c.group)) groups.set(c.group, []);
      groups.get(c.group).push(c);
    }
    for (const [name, list] of groups) {
      const title = name === "top" ? "Top activations" : name;
      box.append(el("div", { class: "group" }, el("div", { class: "muted" }, title),
                    ...list.map((c) => contextRow(c, scale))));
    }
    return box;
  }

  function contextRow(c, scale) {
    const text = el("div", { class: "text" });
    c.tokens.forEach((t, k) => {
      const a = c.acts[k];
      const alpha = isNum(a) && a > 0 ? Math.min(1, a / scale) : 0;
      const span = el("span", {
        class: "tok" + (k === c.center ? " center" : ""),
        title: JSON.stringify(t) + ": " + fmt(a),
      }, shown(t));
      if (alpha > 0) {
        span.style.backgroundColor = "rgba(255, 125, 0, " + (0.1 + 0.8 * alpha).toFixed(3) + ")";
      }
      text.append(span);
    });
    const where = ["row " + c.row, "seq " + c.seq, "pos " + c.pos]
      .filter((s) => !s.endsWith(" null") && !s.endsWith(" undefined")).join(" · ");
    return el("div", { class: "ctx" }, el("span", { class: "val num" }, fmt(c.act)), text,
              el("span", { class: "where" }, where));
  }

  renderHeader();
  route(location.hash);
})();

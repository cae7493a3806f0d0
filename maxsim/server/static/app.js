// maxsim search page: plain JS against the same server's JSON API (POST /search, POST /search/image for an
// image dropped or picked, GET /videos, media URLs).
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const form = $("#search-form"), q = $("#q"), kSel = $("#k"), groupSel = $("#group"), results = $("#results"), statusEl = $("#status");
  const viewer = $("#viewer"), player = $("#player"), timeline = $("#timeline"), segEl = $("#segment");
  const marksEl = $("#marks"), playhead = $("#playhead"), caption = $("#caption"), keyInput = $("#api-key");
  const imageInput = $("#image"), chip = $("#image-chip"), preview = $("#image-preview");
  const explainBox = $("#explain-box"), explainImg = $("#explain"), evidenceEl = $("#evidence");
  let hits = [], current = null, videos = {}, authRequired = false, searchSeq = 0, maxK = 100, image = null;

  const base = new URL(".", document.baseURI);  // works behind a path prefix too
  const url = (path) => new URL(path.replace(/^\//, ""), base).toString();
  const apiKey = () => (authRequired ? keyInput.value || localStorage.getItem("maxsim-api-key") || "" : "");
  const headers = (json = true) => {
    const h = json ? { "Content-Type": "application/json" } : {};
    if (apiKey()) h["X-API-Key"] = apiKey();
    return h;
  };
  // <video> and <img> cannot send headers: media routes take the key as a query parameter.
  const mediaUrl = (path) => {
    const u = new URL(url(path));
    if (apiKey()) u.searchParams.set("api_key", apiKey());
    return u.toString();
  };
  const clock = (s) => {
    if (!isFinite(s)) return "–";
    s = Math.max(0, s);
    const m = Math.floor(s / 60), sec = s - 60 * m;
    return `${m}:${sec.toFixed(1).padStart(4, "0")}`;
  };
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  async function api(path, body) {
    const form = body instanceof FormData;  // an upload: the browser sets the multipart boundary
    const r = await fetch(url(path), body === undefined ? { headers: headers() }
      : { method: "POST", headers: headers(!form), body: form ? body : JSON.stringify(body) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      let msg = data.detail;
      if (Array.isArray(msg)) msg = msg.map((d) => `${(d.loc || []).filter((x) => x !== "body" && !/Request$/.test(x)).join(".")}: ${d.msg}`).join("; ");
      throw new Error(`${r.status}: ${msg || r.statusText}`);
    }
    return data;
  }

  async function loadInfo() {
    try {
      const h = await api("/healthz");
      authRequired = h.auth_required;
      if (h.max_k) maxK = h.max_k;
      keyInput.hidden = !authRequired;
      if (authRequired) keyInput.value = localStorage.getItem("maxsim-api-key") || "";
      statusEl.textContent = `${h.segments} segments in ${h.videos} videos · ${h.encoder}`;
      if (!authRequired || apiKey()) await loadVideos();
    } catch (e) {
      statusEl.textContent = `server not reachable (${e.message})`;
    }
  }
  async function loadVideos() {
    const v = await api("/videos");
    videos = Object.fromEntries(v.videos.map((x) => [x.id, x]));
  }

  // The query image: picked with the Image button or dropped on the search box; searched with the text.
  function setImage(file) {
    if (file && !/^image\//.test(file.type)) { results.replaceChildren(el("p", "error", `${file.name} is not an image`)); return; }
    image = file || null;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = image ? URL.createObjectURL(image) : "";
    chip.hidden = !image;
    if (!image) imageInput.value = "";
  }
  imageInput.addEventListener("change", () => { setImage(imageInput.files[0]); if (image) search(q.value.trim()); });
  $("#image-clear").addEventListener("click", () => setImage(null));
  form.addEventListener("dragover", (ev) => { ev.preventDefault(); form.classList.add("dropping"); });
  form.addEventListener("dragleave", () => form.classList.remove("dropping"));
  form.addEventListener("drop", (ev) => {
    ev.preventDefault();
    form.classList.remove("dropping");
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) { setImage(file); if (image) search(q.value.trim()); }
  });

  // text and/or the query image; like: a hit's segment_id ("more like this", that hit left out)
  async function search(text, like) {
    const k = parseInt(kSel.value, 10);
    const seq = ++searchSeq;  // only the latest search may render
    results.replaceChildren(el("p", "hint", "Searching…"));
    try {
      if (authRequired) { localStorage.setItem("maxsim-api-key", keyInput.value); await loadVideos(); }
      const group = groupSel.value;
      let r;
      if (like !== undefined) {
        r = await api("/search", { like, k, group });
      } else if (image) {
        const body = new FormData();
        body.append("image", image, image.name || "image");
        body.append("k", String(k));
        body.append("group", group);
        if (text) body.append("text", text);
        r = await api("/search/image", body);
      } else {
        r = await api("/search", { text, k, group });
      }
      if (seq !== searchSeq) return;
      // a moment is shown as a card of its span, with its best segment's thumbnail and explanation
      hits = r.moments ? r.moments.map((m) => {
        const best = m.segments.reduce((a, b) => (b.score > a.score ? b : a));
        return { ...m, segment_id: best.segment_id, thumbnail_url: best.thumbnail_url, explain_url: best.explain_url,
                 evidence: best.evidence, n_segments: m.segments.length };
      }) : r.hits;
      const noun = r.moments ? "moments" : "hits";
      const what = like !== undefined ? ` like segment ${like}` : image ? ` by image${text ? " and text" : ""}` : "";
      statusEl.textContent = `${hits.length} ${noun}${what} in ${r.took_ms.toFixed(0)} ms`;
      render();
      const g = group !== "segments" ? `&group=${group}` : "";
      const hash = like !== undefined ? `#like=${like}&k=${k}${g}` : image ? "" : `#q=${encodeURIComponent(text)}&k=${k}${g}`;
      history.replaceState(null, "", hash || location.pathname + location.search);
    } catch (e) {
      if (seq === searchSeq) results.replaceChildren(el("p", "error", e.message));
    }
  }

  function render() {
    results.replaceChildren();
    if (!hits.length) { results.append(el("p", "empty", "No hits.")); return; }
    hits.forEach((h, i) => {
      const card = el("button", "hit");
      card.type = "button";
      card.dataset.index = i;
      card.dataset.segment = h.segment_id;
      const img = el("img", "thumb");
      img.alt = `${h.video_name} at ${clock(h.start)}`;
      img.loading = "lazy";
      if (h.thumbnail_url) img.src = mediaUrl(h.thumbnail_url);
      const meta = el("div", "meta");
      const name = el("div", "name");
      name.append(el("span", "rank", `${i + 1}.`), document.createTextNode(h.video_name));
      name.title = h.video;
      const span = el("div", "span");
      span.append(el("span", "score", h.score.toFixed(3)), document.createTextNode(`${clock(h.start)} – ${clock(h.end)}`));
      meta.append(name, span);
      if (h.transcript) {  // the line said there that matched, under the hit, with its time
        const said = el("div", "said");
        said.append(el("span", "said-time", clock(h.transcript.start)), document.createTextNode(`“${h.transcript.text}”`));
        said.title = `said at ${clock(h.transcript.start)} – ${clock(h.transcript.end)}`;
        meta.append(said);
      }
      if (h.n_segments) meta.append(el("div", "segs", `${h.n_segments} segment${h.n_segments === 1 ? "" : "s"}`));
      card.append(img, meta);
      card.addEventListener("click", () => open(i));
      const more = el("button", "more", "More like this");
      more.type = "button";
      more.title = "search with this moment's own tokens (it is left out of the hits)";
      more.addEventListener("click", () => { setImage(null); q.value = ""; search("", h.segment_id); });
      const cell = el("div", "cell");
      cell.append(card, more);
      results.append(cell);
    });
  }

  function duration() {
    if (isFinite(player.duration) && player.duration > 0) return player.duration;
    const v = current && videos[current.video_id];
    return Math.max(v ? v.indexed_until : 0, current ? current.end : 0) || 1;
  }

  function drawTimeline() {
    if (!current) return;
    const d = duration();
    const pct = (t) => `${Math.min(100, Math.max(0, (100 * t) / d))}%`;
    segEl.style.left = pct(current.start);
    segEl.style.width = `calc(${pct(current.end - current.start)} - 0px)`;
    marksEl.replaceChildren();
    for (const h of hits) {
      if (h.video_id !== current.video_id || h === current) continue;
      const m = el("div", "mark");
      m.style.left = pct(h.start);
      m.style.width = pct(h.end - h.start);
      m.title = `${clock(h.start)} – ${clock(h.end)} (${h.score.toFixed(3)})`;
      marksEl.append(m);
    }
    playhead.style.left = pct(player.currentTime || 0);
    $("#t-now").textContent = clock(player.currentTime || 0);
    $("#t-dur").textContent = clock(d);
  }

  function seekAndPlay(t) {
    player.currentTime = t;
    const p = player.play();
    if (p && p.catch) p.catch(() => { /* autoplay refused: the user presses play; the position is set */ });
  }

  // Why it matched: the server draws the best frame with a heatmap of the regions the query tokens matched.
  function showExplanation(h) {
    explainBox.hidden = !h.explain_url;
    if (!h.explain_url) return;
    explainImg.src = mediaUrl(h.explain_url);
    const parts = (h.evidence || []).slice().sort((a, b) => b.contribution - a.contribution).slice(0, 8)
      .map((e) => `${e.label || "#" + e.token} ${e.contribution.toFixed(2)} @ ${clock(e.time)}${e.row === null ? "" : ` (r${e.row}, c${e.col})`}`);
    evidenceEl.textContent = parts.length ? `matched: ${parts.join(" · ")}` : "";
  }

  function open(i) {
    current = hits[i];
    document.querySelectorAll(".hit.active").forEach((c) => c.classList.remove("active"));
    const card = results.querySelector(`.hit[data-index="${i}"]`);
    if (card) card.classList.add("active");
    viewer.hidden = false;
    caption.replaceChildren(
      el("div", "name", current.video_name),
      el("div", "sub", `${clock(current.start)} – ${clock(current.end)} · best frame ${clock(current.best_time)} · score ${current.score.toFixed(3)}`),
    );
    showExplanation(current);
    const src = mediaUrl(current.video_url.split("#")[0]);
    const start = current.start;
    if (player.dataset.src !== src) {
      player.dataset.src = src;
      player.addEventListener("loadedmetadata", () => { seekAndPlay(start); drawTimeline(); }, { once: true });
      player.src = src;
      player.load();
    } else {
      seekAndPlay(start);
    }
    drawTimeline();
  }

  // A file the browser cannot decode (e.g. MPEG-4 Part 2, or AVI) would leave the player stuck at 0:00.
  player.addEventListener("error", () => {
    if (!current) return;
    const err = player.error, codes = { 1: "loading was aborted", 2: "a network error", 3: "the file could not be decoded", 4: "this browser cannot play this file's format or codec" };
    const why = (err && codes[err.code]) || "an unknown error";
    const box = el("div", "player-error", `Cannot play ${current.video_name}: ${why}. Browsers play H.264 or VP9/AV1 video (MP4 or WebM); open the file in a desktop player at ${clock(current.start)}, or re-encode it.`);
    caption.querySelectorAll(".player-error").forEach((e) => e.remove());
    caption.append(box);
  });
  player.addEventListener("timeupdate", drawTimeline);
  player.addEventListener("durationchange", drawTimeline);
  timeline.addEventListener("click", (ev) => {
    const r = timeline.getBoundingClientRect();
    seekAndPlay(((ev.clientX - r.left) / r.width) * duration());
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = q.value.trim();
    if (text || image) search(text);
  });

  // Any k in the URL (#k=6) is taken: whole numbers from 1 up to the server's max_k, added to the menu.
  function setK(value) {
    const k = Math.min(maxK, Math.max(1, Math.round(Number(value))));
    if (!isFinite(k)) return;
    if (![...kSel.options].some((o) => o.value === String(k))) {
      const opt = el("option", null, String(k));
      const after = [...kSel.options].find((o) => Number(o.value) > k);
      kSel.insertBefore(opt, after || null);
    }
    kSel.value = String(k);
  }

  const initial = location.hash.slice(1);  // read now: a search started before loadInfo ends rewrites it
  loadInfo().then(() => {
    const params = new URLSearchParams(initial);
    if (params.get("k")) setK(params.get("k"));
    if (["segments", "moments", "video"].includes(params.get("group"))) groupSel.value = params.get("group");
    if (params.get("q")) { q.value = params.get("q"); search(q.value); }
    else if (/^\d+$/.test(params.get("like") || "")) search("", Number(params.get("like")));
  });
})();

// Kubeclassify's page: classify images through /predict, describe the model from
// /v1/models/<name>, draw the server's live figures from /stats. Its URLs are relative, so
// that it also works behind a proxy that serves the server under a path of its own.
// Labels come from users' model files and filenames from users' disks: every one is written
// with textContent, never parsed as HTML. The Content-Security-Policy allows no inline script
// and no eval, and this file needs neither.
"use strict";

(() => {
  const MODEL = document.querySelector('meta[name="kubeclassify-model"]').content;
  const SVG = "http://www.w3.org/2000/svg";
  const PARALLEL = 4; // requests in flight at once: enough for the server to batch them
  const POLL_MS = 2000;

  const byId = (id) => document.getElementById(id);

  // An element with a class and a text, both optional.
  function element(tag, className, text) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    return made;
  }

  function formatNumber(value, digits) {
    return value === null || value === undefined ? "–" : value.toFixed(digits);
  }

  // ---- what serves ----------------------------------------------------------------------

  byId("model-name").textContent = MODEL;
  document.title = `${MODEL} · Kubeclassify`;

  function showState(text, className) {
    const state = byId("state");
    state.textContent = text;
    state.className = `state ${className}`;
  }

  function showServed(model) {
    const facts = [
      ["Model", model.name],
      ["Backend", model.backend],
      ["Precision", model.precision],
      ["Float precision", model.float_precision],
      ["Device", model.device],
      ["Backend threads", model.threads],
      [
        "Batching",
        model.batching &&
          `up to ${model.batching.max_size} images a pass, waiting up to ${model.batching.max_delay_ms} ms`,
      ],
      ["Labels", model.labels],
      ["Input", model.input_shape && `${model.input_shape[1]} × ${model.input_shape[0]} RGB`],
      ["Queue bound", model.max_queue === null ? "none" : `${model.max_queue} requests a worker`],
      ["sha256", model.sha256 && model.sha256.slice(0, 16)],
    ];
    const list = byId("served");
    list.replaceChildren();
    for (const [name, value] of facts) {
      if (value === undefined || value === null || value === "") continue;
      list.append(element("dt", "", name), element("dd", "", String(value)));
    }
    if (model.labels) byId("top-k").max = String(model.labels);
  }

  async function loadModel() {
    let ready = false;
    try {
      const answer = await fetch(`v1/models/${encodeURIComponent(MODEL)}`);
      const model = await answer.json();
      if (answer.ok) {
        showServed(model);
        ready = model.state === "ready";
        const why = model.error ? `: ${model.error}` : "";
        showState(model.state + why, ready ? "ready" : "unwell");
      } else {
        showState(model.error || `HTTP ${answer.status}`, "unwell");
      }
    } catch (error) {
      showState("cannot reach the server", "unwell");
    }
    if (!ready) setTimeout(loadModel, POLL_MS);
  }

  // ---- classifying ----------------------------------------------------------------------

  const results = byId("results");
  const clear = byId("clear");
  const waiting = [];
  let running = 0;

  function card(file) {
    const item = element("li", "card");
    item.setAttribute("aria-busy", "true");
    const picture = element("img", "thumb");
    picture.alt = "";
    const url = URL.createObjectURL(file);
    picture.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    picture.addEventListener(
      "error",
      () => {
        URL.revokeObjectURL(url);
        picture.replaceWith(element("div", "no-thumb", "no preview"));
      },
      { once: true },
    );
    picture.src = url;
    const body = element("div", "body");
    body.append(element("h3", "filename", file.name || "pasted image"));
    body.append(element("p", "meta", "classifying…"));
    item.append(picture, body);
    return item;
  }

  function showPredictions(item, predictions) {
    const list = element("ol", "predictions");
    for (const { label, probability } of predictions) {
      const row = element("li", "prediction");
      const bar = element("span", "bar");
      const fill = element("span", "fill");
      fill.style.width = `${Math.max(0, Math.min(1, probability)) * 100}%`;
      bar.append(fill);
      row.append(
        element("span", "label", label),
        element("span", "prob", `${(probability * 100).toFixed(1)}%`),
        bar,
      );
      list.append(row);
    }
    item.querySelector(".body").append(list);
  }

  function serverMs(answer) {
    const timing = /(?:^|,)\s*app;dur=([\d.]+)/.exec(answer.headers.get("Server-Timing") || "");
    return timing ? Number(timing[1]) : null;
  }

  async function classify(file, item) {
    const form = new FormData();
    form.append("image", file, file.name || "pasted-image");
    const topK = byId("top-k").value.trim();
    const query = topK ? `?top_k=${encodeURIComponent(topK)}` : "";
    const meta = item.querySelector(".meta");
    const started = performance.now();
    try {
      const answer = await fetch(`predict${query}`, { method: "POST", body: form });
      const elapsed = performance.now() - started;
      const server = serverMs(answer);
      const body = await answer.json().catch(() => null);
      meta.textContent =
        `${Math.round(elapsed)} ms` + (server === null ? "" : ` (server ${Math.round(server)} ms)`);
      if (answer.ok && body && body.success) {
        showPredictions(item, body.predictions);
      } else {
        const message = (body && body.error) || `HTTP ${answer.status}`;
        item.querySelector(".body").append(element("p", "error", message));
        item.classList.add("failed");
      }
    } catch (error) {
      meta.textContent = "";
      item.querySelector(".body").append(element("p", "error", `cannot reach the server: ${error}`));
      item.classList.add("failed");
    }
    item.removeAttribute("aria-busy");
  }

  function pump() {
    while (running < PARALLEL && waiting.length) {
      const [file, item] = waiting.shift();
      running += 1;
      classify(file, item).finally(() => {
        running -= 1;
        pump();
      });
    }
  }

  function classifyAll(files) {
    const chosen = Array.from(files || []);
    if (!chosen.length) return;
    const batch = document.createDocumentFragment();
    for (const file of chosen) {
      const item = card(file);
      batch.append(item);
      waiting.push([file, item]);
    }
    results.prepend(batch);
    clear.hidden = false;
    pump();
  }

  const input = byId("files");
  byId("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    classifyAll(input.files);
    input.value = "";
  });
  clear.addEventListener("click", () => {
    results.replaceChildren();
    clear.hidden = true;
    byId("choose").focus();
  });

  // Dropping anywhere classifies (rather than the browser opening the image instead).
  const zone = byId("drop");
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    zone.classList.add("over");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) zone.classList.remove("over");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    zone.classList.remove("over");
    classifyAll(event.dataTransfer && event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData && event.clipboardData.files;
    if (files && files.length) {
      event.preventDefault();
      classifyAll(files);
    }
  });

  // ---- the live panel: figures the server computed, drawn as they are ------------------------

  // Lines of `series` (lists of values, null for none) over the window, scaled to their maximum.
  function chart(svg, times, end, windowS, series) {
    const width = 300;
    const height = 80;
    const top = Math.max(1e-9, ...series.flatMap(({ values }) => values.filter((v) => v !== null)));
    svg.replaceChildren();
    const axis = document.createElementNS(SVG, "line");
    for (const [name, value] of [["x1", 0], ["y1", height - 1], ["x2", width], ["y2", height - 1]]) {
      axis.setAttribute(name, String(value));
    }
    axis.setAttribute("class", "axis");
    axis.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(axis);
    for (const { values, className } of series) {
      let run = [];
      const flush = () => {
        if (run.length === 1) run.unshift([run[0][0] - 4, run[0][1]]); // a lone point: a dash
        if (run.length) {
          const line = document.createElementNS(SVG, "polyline");
          line.setAttribute("points", run.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
          line.setAttribute("class", `series ${className}`);
          line.setAttribute("vector-effect", "non-scaling-stroke");
          svg.append(line);
        }
        run = [];
      };
      values.forEach((value, i) => {
        if (value === null) {
          flush();
          return;
        }
        const x = Math.max(0, width - ((end - times[i]) / windowS) * width);
        run.push([x, height - 2 - (value / top) * (height - 6)]);
      });
      flush();
    }
  }

  function plural(count, noun) {
    return `${count} ${noun}${count === 1 ? "" : "s"}`;
  }

  function showFigures(figures) {
    const points = figures.points;
    const recent = figures.recent; // the last few seconds, up to now; null in a worker's first
    const times = points.map((point) => point.t);
    const end = figures.now.t;
    const windowS = figures.window_s;
    const column = (name) => points.map((point) => point[name]);
    const figure = (name, digits) => formatNumber(recent && recent[name], digits);

    byId("live-note").textContent =
      `Big figures: the last ${figures.recent_s} s. Lines: the last ${windowS / 60} minutes, ` +
      `a point every ${figures.step_s} s. All workers together, computed by the server from ` +
      "its own metrics (GET /stats); requests and latency are those of classification " +
      "requests (/predict, V1, V2 and gRPC).";

    byId("v-requests").textContent = figure("requests_per_s", 1);
    byId("s-requests").textContent =
      `${figure("errors_per_s", 1)} errors/s · ${figures.now.requests} answered, ` +
      plural(figures.now.errors, "error");
    chart(byId("c-requests"), times, end, windowS, [
      { values: column("requests_per_s"), className: "" },
      { values: column("errors_per_s"), className: "bad" },
    ]);

    byId("v-latency").textContent = recent
      ? `${figure("latency_p50_ms", 0)} / ${figure("latency_p95_ms", 0)} ms`
      : "–";
    byId("s-latency").textContent = "p50 blue, p95 orange";
    chart(byId("c-latency"), times, end, windowS, [
      { values: column("latency_p50_ms"), className: "" },
      { values: column("latency_p95_ms"), className: "second" },
    ]);

    byId("v-batch").textContent = figure("batch_mean", 1);
    byId("s-batch").textContent = `mean images a pass · ${figure("images_per_s", 1)} images/s`;
    chart(byId("c-batch"), times, end, windowS, [{ values: column("batch_mean"), className: "" }]);

    byId("v-queue").textContent = String(figures.now.queue_depth);
    byId("s-queue").textContent =
      `images waiting · ${plural(figures.now.in_flight, "request")} in flight`;
    chart(byId("c-queue"), times, end, windowS, [{ values: column("queue_depth"), className: "" }]);
  }

  async function pollFigures() {
    if (!document.hidden) {
      try {
        const answer = await fetch("stats", { cache: "no-store" });
        if (answer.ok) showFigures(await answer.json());
      } catch (error) {
        byId("live-note").textContent = "cannot reach the server for its figures";
      }
    }
    setTimeout(pollFigures, POLL_MS);
  }

  loadModel();
  pollFigures();
})();

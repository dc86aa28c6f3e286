// clearbg web app: the public API, driven from the browser with the user's own key.
// Upload (XMLHttpRequest, for progress events) -> POST /v1/jobs -> poll GET /v1/jobs/{id} ->
// preview the signed output_url over a checkerboard beside the original -> download.

const $ = (id) => document.getElementById(id);
const KEY_STORE = "clearbg.apiKey";
const POLL_MS = 1000;
const VIDEO_PREVIEW = new Set(["webm", "mp4", "matte"]);
const IMAGE_PREVIEW = new Set(["gif", "webp"]);

const state = { key: localStorage.getItem(KEY_STORE) || "", upload: null, localUrl: null, jobId: null, poll: null, busy: false };

/** An API error, carrying the `{"error":{"code","message"}}` body's fields. */
class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e && e.message ? e.message : `The server answered HTTP ${status}`);
    this.status = status;
    this.code = e && e.code;
  }
}

async function api(method, path, body) {
  const headers = { "X-Api-Key": state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`The server cannot be reached (${e.message})`);
  }
  let json = null;
  try { json = await response.json(); } catch { /* not JSON: reported below */ }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.code ? `${err.message} (${err.code})` : err.message;
  box.hidden = false;
}

function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function refreshStart() {
  const ready = state.key && state.upload && !state.busy;
  $("start").disabled = !ready;
  $("start-hint").textContent = !state.key ? "Paste your API key first." : !state.upload ? "Upload a video first." : "";
}

// ---- the key -----------------------------------------------------------------------------------

async function useKey(key) {
  state.key = key.trim();
  $("api-key").value = state.key;
  refreshStart();
  if (!state.key) { $("key-status").textContent = ""; return; }
  $("key-status").textContent = "checking…";
  try {
    const usage = await api("GET", "/v1/usage/summary?days=1");
    localStorage.setItem(KEY_STORE, state.key);
    $("key-status").textContent = `Key saved in this browser · ${usage.credits_balance} credits`;
    showError(null);
    await loadJobs();
  } catch (err) {
    $("key-status").textContent = "";
    showError(err);
  }
}

$("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("api-key").value); });
$("forget-key").addEventListener("click", () => {
  localStorage.removeItem(KEY_STORE);
  state.key = "";
  $("api-key").value = "";
  $("key-status").textContent = "Key forgotten";
  $("jobs").innerHTML = '<tr><td colspan="7" class="muted">Paste your API key to see your jobs.</td></tr>';
  refreshStart();
});

// ---- prices ------------------------------------------------------------------------------------

let prices = {};
fetch("/api/pricing").then((r) => r.json()).then((p) => { prices = p.model_pricing_credits_per_minute || {}; showPrice(); }).catch(() => {});
function showPrice() {
  const p = prices[$("model").value];
  $("price").textContent = p == null ? "" : `${p} credits per minute of video`;
}
$("model").addEventListener("change", showPrice);

// ---- upload ------------------------------------------------------------------------------------

function upload(file) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/uploads");
    xhr.setRequestHeader("X-Api-Key", state.key);
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const pct = Math.round((e.loaded / e.total) * 100);
      $("upload-progress").value = pct;
      $("upload-status").textContent = `Uploading ${file.name}: ${pct}% of ${bytes(e.total)}`;
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* reported below */ }
      if (xhr.status >= 200 && xhr.status < 300 && body) resolve(body);
      else reject(new ApiError(xhr.status, body));
    });
    xhr.addEventListener("error", () => reject(new Error("The upload was interrupted (network error)")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

async function takeFile(file) {
  if (!file) return;
  showError(null);
  if (!state.key) { showError(new Error("Paste your API key first: uploads belong to a key.")); return; }
  state.upload = null;
  state.busy = true;
  refreshStart();
  if (state.localUrl) URL.revokeObjectURL(state.localUrl);
  state.localUrl = URL.createObjectURL(file);
  $("upload-progress").hidden = false;
  $("upload-progress").value = 0;
  try {
    state.upload = await upload(file);
    $("upload-progress").value = 100;
    $("upload-status").textContent = `Uploaded ${state.upload.filename} (${bytes(state.upload.size)})`;
  } catch (err) {
    $("upload-status").textContent = "Upload failed";
    showError(err);
  } finally {
    state.busy = false;
    refreshStart();
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => takeFile(e.target.files[0]));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => takeFile(e.dataTransfer.files[0]));

// ---- start -------------------------------------------------------------------------------------

function jobBody() {
  const body = {
    video_url: state.upload.video_url,
    model: $("model").value,
    output_format: $("format").value,
    auto_start: true,
    metadata: { source: "web", filename: state.upload.filename },
  };
  const bg = document.querySelector('input[name="bg"]:checked').value;
  if (bg === "color") { body.bg_type = "custom"; body.bg_color = $("bg-color").value; }
  else if (bg === "image") { body.bg_type = "image"; body.bg_image_url = $("bg-image-url").value.trim(); }
  else body.bg_type = "transparent";
  return body;
}

$("start").addEventListener("click", async () => {
  showError(null);
  state.busy = true;
  refreshStart();
  try {
    const job = await api("POST", "/v1/jobs", jobBody());
    showJob(job, state.localUrl);
    loadJobs();
  } catch (err) {
    showError(err);
  } finally {
    state.busy = false;
    refreshStart();
  }
});

// ---- progress and result -----------------------------------------------------------------------

const terminal = (s) => s === "completed" || s === "failed";

function showJob(job, beforeUrl) {
  clearTimeout(state.poll);
  state.jobId = job.id;
  $("result-card").hidden = false;
  $("compare").hidden = true;
  $("no-preview").hidden = true;
  $("download").hidden = true;
  $("play").hidden = true;
  $("output-info").textContent = "";
  $("after").removeAttribute("src");
  $("before").removeAttribute("src");
  const before = beforeUrl || (job.input && job.input.kind === "upload" ? job.video_url : null);
  if (before) $("before").src = before;
  render(job);
  if (!terminal(job.status)) state.poll = setTimeout(() => poll(job.id), POLL_MS);
  $("result-card").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function poll(id) {
  if (id !== state.jobId) return;
  try {
    const job = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
    if (id !== state.jobId) return;
    render(job);
    if (terminal(job.status)) { loadJobs(); return; }
  } catch (err) {
    showError(err);
  }
  state.poll = setTimeout(() => poll(id), POLL_MS);
}

// "12.5 fps · about 40 s left" while processing, "12.5 fps" once done (the job's extension fields).
function speed(job) {
  if (job.fps == null) return "";
  const parts = [`${job.fps.toFixed(1)} fps`];
  if (job.status === "processing" && job.eta_seconds != null) parts.push(`about ${duration(job.eta_seconds)} left`);
  return parts.join(" · ");
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function render(job) {
  const status = job.error_code === "cancelled" ? "cancelled" : job.status;
  $("job-status").textContent = status;
  $("job-status").className = `badge ${job.status}`;
  $("job-progress").value = job.progress || 0;
  $("job-percent").textContent = `${Math.round(job.progress || 0)}%`;
  $("job-speed").textContent = speed(job);
  $("cancel").hidden = terminal(job.status);
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error || "";
  if (job.status !== "completed" || !job.output_url) return;
  const after = $("after");
  if (after.dataset.job === job.id && after.getAttribute("src")) return;
  after.dataset.job = job.id;
  $("download").href = job.output_url;
  $("download").hidden = false;
  $("output-info").textContent = `${job.output_format} · ${bytes(job.output_size_bytes)} · ${job.frames} frames`;
  if (VIDEO_PREVIEW.has(job.output_format)) {
    $("after-image").hidden = true;
    after.hidden = false;
    after.src = job.output_url;
    $("compare").hidden = false;
    $("play").hidden = false;
    playBoth();
  } else if (IMAGE_PREVIEW.has(job.output_format)) {
    after.hidden = true;
    $("after-image").src = job.output_url;
    $("after-image").hidden = false;
    $("compare").hidden = false;
  } else {
    $("no-preview").hidden = false;
  }
}

function playBoth() {
  const after = $("after");
  const before = $("before");
  after.play().catch(() => {});
  if (before.getAttribute("src")) before.play().catch(() => {});
  $("play").textContent = "Pause";
}

// The original follows the result, so the two halves show the same frame.
$("after").addEventListener("timeupdate", () => {
  const before = $("before");
  if (before.getAttribute("src") && Math.abs(before.currentTime - $("after").currentTime) > 0.15) {
    before.currentTime = $("after").currentTime;
  }
});
$("play").addEventListener("click", () => {
  const after = $("after");
  if (after.paused) playBoth();
  else { after.pause(); $("before").pause(); $("play").textContent = "Play"; }
});
$("slider").addEventListener("input", (e) => $("compare").style.setProperty("--pos", `${e.target.value}%`));
$("cancel").addEventListener("click", async () => {
  if (!state.jobId) return;
  $("cancel").disabled = true;
  try {
    render(await api("POST", `/v1/jobs/${encodeURIComponent(state.jobId)}/cancel`));
    loadJobs();
  } catch (err) {
    showError(err);
  } finally {
    $("cancel").disabled = false;
  }
});

// ---- recent jobs -------------------------------------------------------------------------------

async function loadJobs() {
  if (!state.key) return;
  const button = $("refresh-jobs");
  button.disabled = true;
  try {
    const page = await api("GET", "/v1/jobs?limit=10");
    const rows = page.items.map((job) => {
      const tr = document.createElement("tr");
      tr.dataset.job = job.id;
      const status = job.error_code === "cancelled" ? "cancelled" : job.status;
      const cells = [
        new Date(job.created_at).toLocaleString(),
        job.id.slice(0, 12) + "…",
        status,
        job.model,
        job.output_format,
        `${Math.round(job.progress)}%`,
      ];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        if (i === 2) {
          const badge = document.createElement("span");
          badge.className = `badge ${job.status}`;
          badge.textContent = text;
          td.append(badge);
        } else if (i === 1) {
          const code = document.createElement("code");
          code.textContent = text;
          code.title = job.id;
          td.append(code);
        } else td.textContent = text;
        tr.append(td);
      });
      const td = document.createElement("td");
      const view = document.createElement("button");
      view.type = "button";
      view.className = "quiet";
      view.textContent = "View";
      view.addEventListener("click", () => showJob(job, null));
      td.append(view);
      tr.append(td);
      return tr;
    });
    const body = $("jobs");
    body.replaceChildren(...rows);
    if (!rows.length) body.innerHTML = '<tr><td colspan="7" class="muted">No jobs yet.</td></tr>';
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}
$("refresh-jobs").addEventListener("click", loadJobs);

// ---- start-up ----------------------------------------------------------------------------------

showPrice();
refreshStart();
if (state.key) useKey(state.key);

// The page: form controls in, the worker's messages out. All the work (the wasm module, the
// reads of the picked file) happens in worker.js so the page stays responsive.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// `?module=NAME.wasm` picks another build (e.g. the wasm32 one) next to the page.
const moduleUrl = new URL(params.get('module') || 'strata_wasm.wasm', location.href).href;

const worker = new Worker('worker.js');
let file = null; // the picked File; kept so a new budget can re-open it

/** Sets the machine-readable state (#status[data-state]) and its human text. */
function setState(state, text) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
  // Generating needs an open model and no generation running.
  $('generate').disabled = !(state === 'ready' || state === 'done');
}

const MiB = (b) => (b / 2 ** 20).toFixed(1) + ' MiB';

/** Fills the inspect list from strata_info()'s JSON. */
function showInfo(info) {
  const types = Object.entries(info.tensor_types || {})
    .map(([t, n]) => `${t} ×${n}`).join(', ');
  const rows = [
    ['name', info.name ?? '(none)'],
    ['architecture', info.architecture ?? '(none)'],
    ['file size', `${MiB(info.file_bytes)} (GGUF v${info.gguf_version})`],
    ['tensors', `${info.tensors}: ${types}`],
    ['layers', info.n_layer],
    ['embedding width', info.n_embd],
    ['heads', `${info.n_head} (KV ${info.n_head_kv}), feed-forward ${info.n_ff}`],
    ['vocabulary', info.n_vocab],
    ['context', `${info.n_ctx} (trained ${info.n_ctx_train})`],
    ['budget', `${MiB(info.budget_bytes)} (minimum ${MiB(info.minimum_budget_bytes)}, globals ${MiB(info.globals_bytes)})`],
    ['resident layers', `${info.resident_layers} of ${info.n_layer}, ${info.streaming_slots} streaming slots`],
  ];
  const dl = $('info');
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
}

/** Shows the timings and cache counters the worker measured. */
function showMetrics(m) {
  const parts = [`prompt ${m.nPrompt} tokens in ${(m.promptMs / 1000).toFixed(2)} s` +
                 ` (${m.promptTokS.toFixed(1)} tok/s)`];
  if (m.firstMs !== null) parts.push(`first token after ${(m.firstMs / 1000).toFixed(2)} s`);
  parts.push(`${m.generated} generated, decode ${m.decodeTokS.toFixed(1)} tok/s`);
  $('speed').textContent = parts.join('; ');
  const s = m.stats;
  $('stats').textContent =
    `cache: ${s.hits} hits, ${s.sync_loads} loads, ${(s.bytes_read / 1e6).toFixed(1)} MB read, ` +
    `resident ${MiB(s.resident_bytes)} (peak ${MiB(s.peak_resident_bytes)}) of ${MiB(s.budget_bytes)} budget`;
}

/** Asks the worker to (re)open the picked file with the current budget and context. */
function openModel() {
  if (!file) return;
  setState('loading', `Opening ${file.name} (budget ${$('budget').value})…`);
  worker.postMessage({
    type: 'open', file, moduleUrl,
    budget: $('budget').value.trim() || 'all',
    ctx: Number($('ctx').value) || 0,
  });
}

$('file').addEventListener('change', () => {
  file = $('file').files[0] || null;
  openModel();
});
// A new budget or context re-opens the model with it.
$('budget').addEventListener('change', openModel);
$('ctx').addEventListener('change', openModel);

$('generate').addEventListener('click', () => {
  $('output').textContent = '';
  $('speed').textContent = '';
  setState('generating', 'Generating…');
  worker.postMessage({
    type: 'generate',
    prompt: $('prompt').value,
    n: Number($('n').value) || 0,
    temp: Number($('temp').value) || 0,
  });
});

worker.onmessage = (e) => {
  const m = e.data;
  switch (m.type) {
    case 'state': setState(m.state, m.text); break;
    case 'info': showInfo(m.info); break;
    case 'piece': $('output').textContent += m.text; break;
    case 'metrics': showMetrics(m); break;
    case 'error':
      console.error(m.text);
      setState('error', m.text);
      break;
    default: console.warn('unknown message from the worker', m);
  }
};
// A worker that fails to load or throws outside our handlers still reaches the status.
worker.onerror = (e) => {
  e.preventDefault();
  setState('error', `worker: ${e.message || 'failed to start'}`);
};

setState('idle', 'Pick a .gguf file.');

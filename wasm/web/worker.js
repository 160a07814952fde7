// The worker: instantiates the Strata wasm module and serves its imports from the picked File
// with FileReaderSync (synchronous reads are allowed in workers, and the module's host_read is
// a synchronous call). Mirrors wasm/host/strata_host.py. Messages in: `open`, `generate`;
// out: `state`, `info`, `piece`, `metrics`, `error` (see app.js).
'use strict';

let file = null;        // the File the imports read
let mod = null;         // {url, ex (exports), is64}
const reader = new FileReaderSync();
const enc = new TextEncoder();
const dec = new TextDecoder();

/** An error code from the module, with its message. */
class ModuleError extends Error {
  constructor(code, message) { super(`${message} (code ${code})`); this.code = code; }
}

/**
 * Whether the module's memory is 64-bit (Memory64, the wasm64 build). The JS API does not
 * reflect types, so this reads the memory section (id 5) of the binary: its first memory's
 * limits flags have bit 2 set for memory64.
 */
function isMemory64(bytes) {
  const b = new Uint8Array(bytes);
  let p = 8; // magic + version
  const leb = () => {
    let v = 0, shift = 0;
    for (let i = 0; i < 10; i++) {
      const byte = b[p++];
      v += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) return v;
      shift += 7;
    }
    throw new Error('bad LEB128 in the module');
  };
  for (let n = 0; n < 100 && p < b.length; n++) {
    const id = b[p++];
    const size = leb();
    if (id === 5) {
      if (leb() === 0) break; // no memory defined here
      return (b[p] & 0x04) !== 0;
    }
    p += size;
  }
  throw new Error('the module defines no memory');
}

/** Loads and instantiates the module at `url` (once; kept for later opens). */
async function load(url) {
  if (mod && mod.url === url) return mod;
  const res = await fetch(url, { cache: 'no-cache' });
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  // arrayBuffer + instantiate (not instantiateStreaming): works whatever the MIME type.
  const bytes = await res.arrayBuffer();
  const is64 = isMemory64(bytes);
  let memory = null; // set after instantiation; the imports run only later
  const imports = {
    strata_host: {
      host_len: () => BigInt(file ? file.size : 0),
      // offset, len: u64 (BigInt); dst: a pointer (BigInt in wasm64, Number in wasm32).
      host_read: (offset, len, dst) => {
        try {
          const off = Number(offset), n = Number(len), at = Number(dst);
          if (!file || off + n > file.size) return 2;
          const data = reader.readAsArrayBuffer(file.slice(off, off + n));
          if (data.byteLength !== n) return 3;
          // memory.buffer is re-read on every call: growing the memory replaces it.
          new Uint8Array(memory.buffer, at, n).set(new Uint8Array(data));
          return 0;
        } catch (e) {
          console.error('host_read', e); // an error code, never an exception through the module
          return 1;
        }
      },
    },
  };
  const { instance } = await WebAssembly.instantiate(bytes, imports);
  memory = instance.exports.memory;
  mod = { url, ex: instance.exports, is64, memory };
  return mod;
}

/** A pointer or size argument in the module's width. */
const ptr = (n) => (mod.is64 ? BigInt(n) : n);

/** `len` bytes of the module's memory at `at` (pointer of either width). */
function bytesAt(at, len) {
  return new Uint8Array(mod.memory.buffer, Number(at), Number(len));
}

/** Throws the module's error for a negative code; returns the code otherwise. */
function check(rc) {
  if (rc < 0) {
    const msg = dec.decode(bytesAt(mod.ex.strata_error_ptr(), mod.ex.strata_error_len()));
    throw new ModuleError(rc, msg);
  }
  return rc;
}

/** The output buffer of the last call, as text (copied: the next call may move it). */
function outText() {
  const n = Number(mod.ex.strata_out_len());
  return n ? dec.decode(bytesAt(mod.ex.strata_out_ptr(), n).slice()) : '';
}

/** Calls `fn(ptr, len)` with `text` copied into module memory, freed afterwards. */
function withInput(text, fn) {
  const data = enc.encode(text);
  const p = mod.ex.strata_alloc(ptr(data.length));
  if (Number(p) === 0) throw new ModuleError(-5, `strata_alloc(${data.length}) failed`);
  try {
    bytesAt(p, data.length).set(data);
    return fn(p, ptr(data.length));
  } finally {
    mod.ex.strata_free(p, ptr(data.length));
  }
}

const stats = () => (check(mod.ex.strata_stats()), JSON.parse(outText()));

const post = (m) => self.postMessage(m);

async function openModel({ file: f, moduleUrl, budget, ctx }) {
  post({ type: 'state', state: 'loading', text: `Loading the module…` });
  await load(moduleUrl);
  file = f;
  post({ type: 'state', state: 'loading', text: `Opening ${f.name} with budget ${budget}…` });
  const t0 = performance.now();
  withInput(budget, (p, n) => check(mod.ex.strata_open(p, n, ctx >>> 0)));
  check(mod.ex.strata_info());
  const info = JSON.parse(outText());
  post({ type: 'info', info });
  const s = ((performance.now() - t0) / 1000).toFixed(2);
  post({
    type: 'state', state: 'ready',
    text: `Ready: ${info.name ?? f.name} (${mod.is64 ? 'wasm64' : 'wasm32'} module, opened in ${s} s)`,
  });
}

function generate({ prompt, n, temp }) {
  if (!mod) throw new Error('no model is open');
  // Each generation starts a fresh sequence (BOS first), like `strata generate`.
  check(mod.ex.strata_reset());
  const t0 = performance.now();
  // top_k 40, top_p 0.95, min_p 0.05, seed 0x5EED: the CLI's defaults (unused when greedy).
  const nPrompt = withInput(prompt, (p, len) =>
    check(mod.ex.strata_generate_start(p, len, n >>> 0, temp, 40, 0.95, 0.05, 0x5eedn)));
  const tPrompt = performance.now();
  let generated = 0, tFirst = null, tLast = tPrompt;
  const metrics = () => {
    const decodeMs = tFirst === null ? 0 : tLast - tFirst;
    post({
      type: 'metrics', nPrompt, generated,
      promptMs: tPrompt - t0,
      promptTokS: nPrompt / Math.max((tPrompt - t0) / 1000, 1e-9),
      firstMs: tFirst === null ? null : tFirst - t0,
      decodeTokS: generated > 1 ? (generated - 1) / (decodeMs / 1000) : 0,
      stats: stats(),
    });
  };
  for (let i = 0; i <= n + 1; i++) { // n tokens, then the end; the count is only a backstop
    const more = check(mod.ex.strata_generate_next());
    const text = outText();
    if (text) post({ type: 'piece', text });
    if (more === 0) break;
    generated++;
    tLast = performance.now();
    if (tFirst === null) tFirst = tLast;
    metrics();
  }
  metrics();
  post({ type: 'state', state: 'done', text: `Done: ${generated} tokens.` });
}

/** Handles one message; any failure becomes an `error` message, never silence. */
async function handle(m) {
  try {
    if (m.type === 'open') await openModel(m);
    else if (m.type === 'generate') generate(m);
    else throw new Error(`unknown message ${m.type}`);
  } catch (err) {
    post({ type: 'error', text: err instanceof ModuleError ? `strata: ${err.message}` : String(err) });
  }
}

// Messages are handled one after another (an open awaits the module's download).
let queue = Promise.resolve();
self.onmessage = (e) => { queue = queue.then(() => handle(e.data)); };

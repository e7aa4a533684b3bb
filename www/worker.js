// The sampler's Web Worker: owns one wasm Engine (backend + model + run) so the page never
// freezes. Messages in:  {type:'init', backend, wasmModule?} {type:'load', url}
//                        {type:'generate', options} {type:'stop'}
// Messages out: backend, load-progress, model, start, step, done, stopped, error.
import init, { Engine } from './ddpm-web.js';

let engine = null;
let stopRequested = false;
let running = false;
let backendKind = 'cpu';

const post = (msg, transfer = []) => self.postMessage(msg, transfer);

// A macrotask yield (faster than setTimeout's 4 ms clamp) so 'stop' messages are handled
// between steps even when a step never awaits the GPU (CPU backend).
const channel = new MessageChannel();
const waiters = [];
channel.port1.onmessage = () => waiters.shift()?.();
const yieldToEvents = () => new Promise((resolve) => { waiters.push(resolve); channel.port2.postMessage(0); });

const CACHE = 'ddpm-web-weights-v1';

// The validators of a response: a cached copy is reused only while the server still
// reports the same ones (so retrained weights at the same URL are picked up).
const validators = (headers) => ['etag', 'last-modified', 'content-length'].map((h) => headers.get(h) || '').join('|');

async function fetchWeights(url) {
  const abs = new URL(url, self.location.href).href;
  let cache = null;
  try { cache = await caches.open(CACHE); } catch (_) { /* Cache API unavailable: no caching */ }
  const hit = cache && await cache.match(abs);
  if (hit) {
    let fresh = true;
    try {
      const head = await fetch(abs, { method: 'HEAD', cache: 'no-store' });
      if (head.ok) fresh = validators(head.headers) === hit.headers.get('x-ddpm-validators');
    } catch (_) { /* offline: the cached copy will do */ }
    if (fresh) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      post({ type: 'load-progress', loaded: bytes.length, total: bytes.length, cached: true });
      return bytes;
    }
  }
  const res = await fetch(abs, { cache: 'no-store' });
  if (!res.ok) throw new Error(`could not download the weights (${res.status} ${res.statusText}) from ${url}`);
  const total = Number(res.headers.get('content-length')) || 0;
  const reader = res.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    post({ type: 'load-progress', loaded, total, cached: false });
  }
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const c of chunks) { bytes.set(c, offset); offset += c.length; }
  return { bytes, cache, abs, validators: validators(res.headers) };
}

async function load(url) {
  const got = await fetchWeights(url);
  const bytes = got instanceof Uint8Array ? got : got.bytes;
  const info = JSON.parse(engine.loadWeights(bytes)); // throws a readable Error on bad files
  // Cache only files that loaded, so a corrupt download is not kept.
  if (!(got instanceof Uint8Array) && got.cache) {
    try {
      await got.cache.put(got.abs, new Response(bytes, { headers: { 'x-ddpm-validators': got.validators } }));
    } catch (_) { /* quota: fine */ }
  }
  post({ type: 'model', info });
}

async function generate(options) {
  running = true;
  stopRequested = false;
  const started = performance.now();
  const run = JSON.parse(engine.start(JSON.stringify(options)));
  post({ type: 'start', ...run });
  const first = await engine.currentFrame();
  post({ type: 'step', frame: first }, [first.x.buffer]);
  let steps = 0;
  for (;;) {
    await yieldToEvents();
    if (stopRequested) {
      engine.stop();
      post({ type: 'stopped', index: steps, total: run.total });
      return;
    }
    const f = await engine.step();
    if (f === null) break;
    steps += 1;
    post({ type: 'step', frame: f }, [f.x.buffer, f.x0.buffer]);
  }
  const seconds = (performance.now() - started) / 1000;
  post({ type: 'done', steps, seconds, stepsPerSecond: steps / seconds });
}

function fatal(err) {
  // A trap inside wasm (e.g. a lost GPU) leaves the instance unusable: the widget restarts
  // the worker on the CPU backend.
  return err instanceof WebAssembly.RuntimeError || /device (was )?lost/i.test(String(err && err.message));
}

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg.type === 'stop') { stopRequested = true; return; }
  try {
    if (msg.type === 'init') {
      await init({ module_or_path: msg.wasmModule || new URL('./ddpm-web_bg.wasm', import.meta.url) });
      engine = new Engine();
      const info = await engine.initBackend(msg.backend || 'auto');
      backendKind = info.kind;
      if (info.kind === 'webgpu' && info.adapter === 'WebGPU adapter') {
        // Browsers hide the adapter name from wgpu; ask WebGPU for what it does tell.
        try {
          const a = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
          const i = a && a.info;
          const name = i && [i.vendor, i.architecture, i.description].filter(Boolean).join(' ');
          if (name) info.adapter = name + (a.isFallbackAdapter || (i && i.isFallbackAdapter) ? ' (software fallback adapter)' : '');
        } catch (_) { /* keep the generic name */ }
      }
      post({ type: 'backend', info });
    } else if (msg.type === 'load') {
      await load(msg.url);
    } else if (msg.type === 'generate') {
      if (running) throw new Error('a run is already in progress');
      await generate(msg.options);
    }
  } catch (err) {
    const message = (err && err.message) ? err.message : String(err);
    post({ type: 'error', message, fatal: fatal(err), backend: backendKind, during: msg.type });
  } finally {
    if (msg.type === 'generate') running = false;
  }
};

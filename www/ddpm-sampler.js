// <ddpm-sampler>: DDPM reverse diffusion live in the page. Each element owns its own Web
// Worker (its own wasm Engine), so several widgets on a page run independently.
//
//   <script type="module" src="ddpm-sampler.js"></script>
//   <ddpm-sampler src="weights/mnist-small.safetensors" sampler="ddim" steps="50" seed="7" count="16" controls></ddpm-sampler>
//
// Attributes: src, sampler (ddpm|ddim), steps, eta, seed (empty = random), count, class
// (index or name), guidance, variance (fixed-large|fixed-small), clip ("false" to disable),
// backend (auto|webgpu|cpu), controls (show Generate/Stop buttons).
// Methods: generate(overrides) → Promise<detail>, stop(), showFrame(i), toPNG() → Promise<Blob>.
// Events: ddpm-ready, ddpm-step {step,total,t}, ddpm-done, ddpm-stopped, ddpm-error {message}.

const HERE = new URL('.', import.meta.url);
const WASM_URL = new URL('ddpm-web_bg.wasm', HERE);
const WORKER_URL = new URL('worker.js', HERE);
const HISTORY_LIMIT = 400;

// Compile the wasm once per page and hand the module to every worker.
let compiled = null;
function wasmModule() {
  if (!compiled) {
    compiled = WebAssembly.compileStreaming(fetch(WASM_URL)).catch(async () => {
      const res = await fetch(WASM_URL);
      return WebAssembly.compile(await res.arrayBuffer());
    });
  }
  return compiled;
}

const STYLE = `
:host { display: inline-block; font: 14px/1.4 system-ui, sans-serif; color: #e8e8e8; }
.box { background: #181a1f; border-radius: 10px; padding: 12px; display: grid; gap: 8px; }
.views { display: flex; gap: 12px; flex-wrap: wrap; }
.views[hidden] { display: none; }
figure { margin: 0; display: grid; gap: 4px; justify-items: center; }
figcaption { font-size: 12px; color: #9aa0aa; }
canvas { image-rendering: pixelated; background: #000; border-radius: 4px; }
progress { width: 100%; height: 8px; accent-color: #6ea8fe; }
.line { font-size: 12px; color: #b8bcc6; min-height: 1.4em; font-variant-numeric: tabular-nums; }
.backend { font-size: 12px; color: #8fd19e; }
.backend.cpu { color: #f3c969; }
.error { color: #ff8b8b; font-size: 13px; }
.buttons { display: flex; gap: 8px; }
.buttons[hidden] { display: none; }
button { font: inherit; padding: 4px 14px; border-radius: 6px; border: 1px solid #3a3f4b; background: #262a33; color: inherit; cursor: pointer; }
button:disabled { opacity: .45; cursor: default; }
`;

export class DdpmSampler extends HTMLElement {
  static observedAttributes = ['src', 'backend', 'controls'];

  constructor() {
    super();
    this.frames = [];
    this.model = null;
    this.backend = null;
    this.running = false;
    this.lastSeed = null;
    this._worker = null;
    this._ready = null;
    this._loadedSrc = null;
    this._pending = null;
    this._latest = null;
    this._drawn = null;
    this._raf = 0;
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${STYLE}</style>
      <div class="box" part="box">
        <div class="backend" part="backend">starting…</div>
        <div class="views" hidden>
          <figure><canvas class="xt" part="canvas"></canvas><figcaption>x<sub>t</sub></figcaption></figure>
          <figure><canvas class="x0" part="canvas"></canvas><figcaption>predicted x̂<sub>0</sub></figcaption></figure>
        </div>
        <progress value="0" max="1" part="progress"></progress>
        <div class="line" part="status"></div>
        <div class="error" role="alert" part="error"></div>
        <div class="buttons" hidden><button class="go">Generate</button><button class="stop" disabled>Stop</button></div>
      </div>`;
    this.$ = (sel) => root.querySelector(sel);
    this.$('.go').addEventListener('click', () => this.generate().catch(() => {}));
    this.$('.stop').addEventListener('click', () => this.stop());
  }

  connectedCallback() {
    this.$('.buttons').hidden = !this.hasAttribute('controls');
    this.ready.catch((e) => this._fail(e));
  }

  disconnectedCallback() {
    this._worker?.terminate();
    this._worker = null;
    this._ready = null;
    cancelAnimationFrame(this._raf);
  }

  attributeChangedCallback(name, oldValue, value) {
    if (!this.isConnected || oldValue === value) return;
    if (name === 'controls') this.$('.buttons').hidden = value === null;
    if (name === 'backend') {
      this._worker?.terminate();
      this._worker = null;
      this._ready = null;
      this.ready.catch((e) => this._fail(e));
    }
    if (name === 'src' && !this.running) this.ready.catch((e) => this._fail(e));
  }

  /** Resolves once the backend is up and the weights named by `src` are loaded. */
  get ready() { return this._boot().then(() => this._load()); }

  // Start the worker and its backend (once; retried after a failure).
  _boot(preferOverride) {
    if (this._ready) return this._ready;
    this._loadedSrc = null;
    this._ready = (async () => {
      const worker = new Worker(WORKER_URL, { type: 'module' });
      this._worker = worker;
      worker.onmessage = (e) => this._onMessage(e.data);
      worker.onerror = (e) => {
        const p = this._pending;
        this._pending = null;
        p?.reject(new Error(e.message || 'the sampler worker failed to start'));
      };
      const backend = await this._request({ type: 'init', backend: preferOverride || this.getAttribute('backend') || 'auto', wasmModule: await wasmModule() }, 'backend');
      this.backend = backend.info;
      const el = this.$('.backend');
      el.classList.toggle('cpu', this.backend.kind === 'cpu');
      el.textContent = this.backend.kind === 'webgpu'
        ? `WebGPU · ${this.backend.adapter}`
        : `CPU fallback${this.backend.note ? ' · ' + this.backend.note : ''}`;
      this.dispatchEvent(new CustomEvent('ddpm-backend', { detail: this.backend }));
    })();
    this._ready.catch(() => { this._worker?.terminate(); this._worker = null; this._ready = null; });
    return this._ready;
  }

  // Load the weights named by `src` (once per src; concurrent callers share the request).
  _load() {
    const src = this.getAttribute('src');
    if (!src) return Promise.reject(new Error('no weights: set the src attribute'));
    if (src === this._loadedSrc) return Promise.resolve();
    if (this._loading && this._loading.src === src) return this._loading.promise;
    const promise = (async () => {
      this._status('loading weights…');
      const msg = await this._request({ type: 'load', url: new URL(src, document.baseURI).href }, 'model');
      this.model = msg.info;
      this._loadedSrc = src;
      const m = this.model.manifest;
      this._setError('');
      this.$('progress').value = 0;
      this._status(`${m.dataset} model ready · ${(this.model.parameters / 1e6).toFixed(2)}M parameters`);
      this.dispatchEvent(new CustomEvent('ddpm-ready', { detail: { backend: this.backend, model: this.model } }));
    })();
    this._loading = { src, promise };
    promise.catch(() => {}).finally(() => { if (this._loading?.promise === promise) this._loading = null; });
    return promise;
  }

  // Send a message and wait for the reply of the given type (or an error).
  _request(msg, replyType) {
    return new Promise((resolve, reject) => {
      this._pending = { replyType, resolve, reject };
      this._worker.postMessage(msg);
    });
  }

  _options(overrides = {}) {
    const a = (k) => this.getAttribute(k);
    const num = (k, d) => (a(k) === null || a(k) === '' ? d : Number(a(k)));
    const kind = (overrides.sampler ?? a('sampler') ?? 'ddim').toLowerCase();
    const m = this.model?.manifest;
    let cls = overrides.class ?? a('class');
    if (cls === '' || cls === 'any') cls = null;
    if (cls !== null && cls !== undefined && !/^\d+$/.test(String(cls))) {
      const i = (m?.class_names || []).findIndex((n) => n.toLowerCase() === String(cls).toLowerCase());
      if (i < 0) throw new Error(`unknown class "${cls}"`);
      cls = i;
    }
    let seed = overrides.seed ?? (a('seed') === null || a('seed') === '' ? null : Number(a('seed')));
    if (seed === null || seed === undefined) seed = Math.floor(Math.random() * 2 ** 32);
    const T = m?.schedule?.timesteps ?? 1000;
    const steps = overrides.steps ?? num('steps', kind === 'ddpm' ? T : 50);
    const variance = (overrides.variance ?? a('variance') ?? 'fixed-large') === 'fixed-small' ? 'FixedSmall' : 'FixedLarge';
    const opts = {
      kind: kind === 'ddpm' ? 'Ddpm' : 'Ddim',
      steps: Number(steps),
      eta: Number(overrides.eta ?? num('eta', 0)),
      variance,
      clip_x0: (overrides.clip ?? a('clip')) !== 'false',
      seed: Number(seed),
      count: Number(overrides.count ?? num('count', 16)),
      class: cls === null || cls === undefined ? null : Number(cls),
      guidance: Number(overrides.guidance ?? num('guidance', 0)),
    };
    for (const [k, v] of Object.entries(opts)) {
      if (typeof v === 'number' && !Number.isFinite(v)) throw new Error(`bad value for ${k}`);
    }
    if (!Number.isSafeInteger(opts.seed) || opts.seed < 0) throw new Error('the seed must be a whole number ≥ 0');
    return opts;
  }

  /** Run the reverse process; resolves with {steps, seconds, stepsPerSecond, seed} when done. */
  async generate(overrides = {}) {
    if (this.running) throw new Error('already generating');
    try {
      await this.ready;
      const options = this._options(overrides);
      this.lastSeed = options.seed;
      this.running = true;
      this.frames = [];
      this._setError('');
      this.$('.go').disabled = true;
      this.$('.stop').disabled = false;
      this._t0 = performance.now();
      this.timings = { generateAt: this._t0, firstDrawAt: 0 };
      const result = await this._request({ type: 'generate', options }, 'done');
      const detail = { steps: result.steps, seconds: result.seconds, stepsPerSecond: result.stepsPerSecond, seed: options.seed, stopped: !!result.stopped };
      this._status(result.stopped
        ? `stopped at step ${result.index}/${result.total}`
        : `done · ${result.steps} steps in ${result.seconds.toFixed(2)} s · ${result.stepsPerSecond.toFixed(1)} steps/s · seed ${options.seed}`);
      this.dispatchEvent(new CustomEvent(result.stopped ? 'ddpm-stopped' : 'ddpm-done', { detail }));
      return detail;
    } catch (e) {
      this._fail(e);
      throw e;
    } finally {
      this.running = false;
      this.$('.go').disabled = false;
      this.$('.stop').disabled = true;
    }
  }

  /** Stop the run in progress; it ends within one step. */
  stop() {
    if (this.running && this._worker) this._worker.postMessage({ type: 'stop' });
  }

  _onMessage(msg) {
    const p = this._pending;
    switch (msg.type) {
      case 'load-progress': {
        this.weightsFromCache = !!msg.cached;
        const pct = msg.total ? ` ${Math.round((100 * msg.loaded) / msg.total)}%` : '';
        this._status(msg.cached ? 'weights from cache' : `downloading weights…${pct} (${(msg.loaded / 1e6).toFixed(1)} MB)`);
        const bar = this.$('progress');
        bar.max = msg.total || 1; bar.value = msg.total ? msg.loaded : 0;
        return;
      }
      case 'start':
        this._total = msg.total;
        for (const c of [this.$('.xt'), this.$('.x0')]) { c.width = msg.width; c.height = msg.height; }
        this.$('.views').hidden = false;
        this._scale(msg.width);
        this.$('progress').max = msg.total; this.$('progress').value = 0;
        return;
      case 'step': {
        const f = msg.frame;
        this._record(f);
        this._latest = f;
        if (!this._raf) this._raf = requestAnimationFrame(() => this._drawLatest());
        if (f.index > 0) {
          const secs = (performance.now() - this._t0) / 1000;
          const rate = f.index / secs;
          const eta = (f.total - f.index) / rate;
          this.$('progress').value = f.index;
          this._status(`step ${f.index}/${f.total} · t = ${f.t} · ${rate.toFixed(1)} steps/s · ETA ${eta < 1 ? '<1' : Math.round(eta)} s`);
          this.dispatchEvent(new CustomEvent('ddpm-step', { detail: { step: f.index, total: f.total, t: f.t } }));
        }
        return;
      }
      case 'stopped':
        if (p) { this._pending = null; p.resolve({ ...msg, stopped: true }); }
        return;
      case 'error':
        if (msg.fatal && msg.backend === 'webgpu') { this._recoverOnCpu(msg.message); }
        if (p) { this._pending = null; p.reject(new Error(msg.message)); } else { this._fail(new Error(msg.message)); }
        return;
      default:
        if (p && msg.type === p.replyType) { this._pending = null; p.resolve(msg); }
    }
  }

  _recoverOnCpu(reason) {
    this._worker?.terminate();
    this._worker = null;
    this._ready = null;
    this._boot('cpu').then(() => this._load()).then(() => {
      this.$('.backend').textContent = `CPU fallback · the GPU failed (${reason})`;
    }).catch((e) => this._fail(e));
  }

  _record(f) {
    this.frames.push(f);
    if (this.frames.length > HISTORY_LIMIT) {
      // Keep the first, the latest, and every other frame in between.
      this.frames = this.frames.filter((_, i, all) => i === 0 || i === all.length - 1 || i % 2 === 0);
    }
  }

  _drawLatest() {
    this._raf = 0;
    if (this._latest && this._latest !== this._drawn) {
      this._draw(this._latest);
      this._drawn = this._latest;
    }
  }

  _draw(f) {
    if (this.timings && !this.timings.firstDrawAt) this.timings.firstDrawAt = performance.now();
    const put = (canvas, rgba) => {
      if (!rgba) return;
      canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba), f.width, f.height), 0, 0);
    };
    put(this.$('.xt'), f.x);
    put(this.$('.x0'), f.x0 || f.x);
  }

  _scale(width) {
    // Integer upscaling to about 300 px (pixelated), never below 1×.
    const px = Math.max(1, Math.round(300 / width));
    for (const c of [this.$('.xt'), this.$('.x0')]) c.style.width = `${width * px}px`;
  }

  /** Show recorded frame i (0 = x_T) — for scrubbing after a run. */
  showFrame(i) {
    const f = this.frames[Math.max(0, Math.min(this.frames.length - 1, i))];
    if (f) { this._draw(f); this._status(f.index === 0 ? 'x_T (pure noise)' : `step ${f.index}/${f.total} · t = ${f.t}`); }
    return f;
  }

  /** The x_t canvas as a PNG blob. */
  toPNG() {
    return new Promise((resolve) => this.$('.xt').toBlob(resolve, 'image/png'));
  }

  _status(text) { this.$('.line').textContent = text; }
  _setError(text) { this.$('.error').textContent = text; }

  _fail(e) {
    const message = e && e.message ? e.message : String(e);
    this._setError(message.charAt(0).toUpperCase() + message.slice(1));
    this.dispatchEvent(new CustomEvent('ddpm-error', { detail: { message } }));
  }
}

if (!customElements.get('ddpm-sampler')) customElements.define('ddpm-sampler', DdpmSampler);

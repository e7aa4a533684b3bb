// The demo page: a form around one <ddpm-sampler> element.
const $ = (id) => document.getElementById(id);
const el = $('sampler-el');
const form = $('controls');

let models = [];
const randomSeed = () => Math.floor(Math.random() * 2 ** 31);
$('seed').value = randomSeed();
$('reseed').addEventListener('click', () => { $('seed').value = randomSeed(); });

function syncSteps() {
  const ddpm = $('sampler').value === 'ddpm';
  const T = el.model?.manifest?.schedule?.timesteps ?? 1000;
  $('steps').max = T;
  if (ddpm && Number($('steps').value) === 50) $('steps').value = T;
  if (!ddpm && Number($('steps').value) === T) $('steps').value = 50;
  $('eta').disabled = ddpm;
}
$('sampler').addEventListener('change', syncSteps);

function fillClasses(manifest) {
  const sel = $('class');
  sel.innerHTML = '<option value="">any</option>';
  for (const [i, name] of (manifest.class_names || []).entries()) {
    sel.add(new Option(name, String(i)));
  }
  const labelled = (manifest.model?.num_classes || 0) > 0;
  sel.disabled = !labelled;
  $('guidance').disabled = !labelled;
}

el.addEventListener('ddpm-ready', (e) => { fillClasses(e.detail.model.manifest); syncSteps(); });

async function loadModels() {
  try {
    const res = await fetch('weights/index.json');
    models = await res.json();
  } catch (_) {
    models = [];
  }
  const sel = $('model');
  for (const m of models) sel.add(new Option(m.label, m.file));
  const pick = new URLSearchParams(location.search).get('model');
  if (pick && models.some((m) => m.file === pick)) sel.value = pick;
  el.setAttribute('src', `weights/${sel.value}`);
}
$('model').addEventListener('change', () => el.setAttribute('src', `weights/${$('model').value}`));

function running(on) {
  $('generate').disabled = on;
  $('stop').disabled = !on;
  if (on) $('after').hidden = true;
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!form.reportValidity()) return;
  const cls = $('class').value;
  const opts = {
    sampler: $('sampler').value,
    steps: Number($('steps').value),
    eta: Number($('eta').value),
    seed: Number($('seed').value),
    count: Number($('count').value),
    class: cls === '' ? null : Number(cls),
    guidance: cls === '' ? 0 : Number($('guidance').value),
  };
  running(true);
  try {
    await el.generate(opts);
  } catch (_) {
    // the element shows the error
  } finally {
    running(false);
    if (el.frames.length) {
      const scrub = $('scrub');
      scrub.max = el.frames.length - 1;
      scrub.value = el.frames.length - 1;
      $('after').hidden = false;
    }
  }
});
$('stop').addEventListener('click', () => el.stop());
$('scrub').addEventListener('input', (e) => el.showFrame(Number(e.target.value)));
$('download').addEventListener('click', async () => {
  const blob = await el.toPNG();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `ddpm-${$('model').value.replace(/\.safetensors$/, '')}-seed${el.lastSeed}.png`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
});

loadModels();

//! The training loop (Algorithm 1 with L_simple, t drawn per example).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::checkpoint::{self, CheckpointFiles, TrainState};
use super::config::TrainConfig;
use super::data::{self, Batcher, Dataset, Split};
use super::optim::{
    AdamState, AdamStep, ParamLayout, adam_step, clip_scale, ema_step, flatten, flatten_grads,
    mse_loss, unflatten,
};
use crate::image::Batch;
use crate::model::UNet;
use crate::rng::Rng;
use crate::sampler::{Sampler, SamplerConfig, SamplerKind};
use crate::schedule::Schedule;
use crate::weights::{self, ModelManifest, StorageDtype, TrainingInfo};

/// Where and how to run.
pub struct TrainOptions {
    /// Run folder (checkpoints, sample grids, log).
    pub run_dir: PathBuf,
    /// Folder holding the datasets.
    pub data_dir: PathBuf,
    /// Base (non-autodiff) device.
    pub device: Device,
    /// Its description (recorded with the weights).
    pub device_label: String,
    /// No progress bar.
    pub quiet: bool,
    /// Set to stop after the current step (Ctrl-C); a checkpoint is written.
    pub stop: Arc<AtomicBool>,
    /// Use this dataset instead of loading `config.dataset` (tests).
    pub dataset: Option<Dataset>,
    /// Settings that replace the checkpoint's when resuming.
    pub resume_changes: ResumeChanges,
}

/// What may change when a run is resumed (e.g. a lower learning rate for the last stretch);
/// everything else comes from the checkpoint. The changed config is saved with the next
/// checkpoint.
#[derive(Debug, Clone, Default)]
pub struct ResumeChanges {
    /// Adam learning rate.
    pub lr: Option<f64>,
    /// EMA decay.
    pub ema_decay: Option<f64>,
    /// Probability of training an example as "no label" (e.g. more of it for a run whose
    /// unconditional samples lag its conditional ones).
    pub label_dropout: Option<f64>,
    /// Checkpoint interval.
    pub checkpoint_every: Option<u64>,
    /// Sample-grid interval.
    pub sample_every: Option<u64>,
    /// Images per step (e.g. a larger batch on a GPU than on the CPU the run started on). The
    /// data order continues where it stopped; the examples fall into different batches.
    pub batch_size: Option<usize>,
    /// Random horizontal flips on or off (e.g. off for a run started while the dataset's default
    /// was to flip).
    pub flip: Option<bool>,
}

impl ResumeChanges {
    fn apply(&self, mut c: TrainConfig) -> TrainConfig {
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if let Some(v) = self.ema_decay {
            c.ema_decay = v;
        }
        if let Some(v) = self.label_dropout {
            c.label_dropout = v;
        }
        if let Some(v) = self.checkpoint_every {
            c.checkpoint_every = v;
        }
        if let Some(v) = self.sample_every {
            c.sample_every = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v;
        }
        if let Some(v) = self.flip {
            c.flip = Some(v);
        }
        c
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Steps done in total.
    pub step: u64,
    /// Smoothed loss at the end.
    pub loss: f64,
    /// Losses of every step of this invocation.
    pub losses: Vec<f64>,
    /// Steps per second of this invocation.
    pub steps_per_second: f64,
    /// Stopped early by a signal.
    pub interrupted: bool,
}

fn manifest(config: &TrainConfig, ds: &Dataset, state: Option<&TrainState>) -> ModelManifest {
    let class_names = if config.model.num_classes > 0 {
        ds.class_names.clone()
    } else {
        Vec::new()
    };
    let mut training = TrainingInfo::new().with_ema_decay(Some(config.ema_decay));
    if let Some(s) = state {
        training = training
            .with_steps(s.step)
            .with_date(checkpoint::now_iso8601())
            .with_device(s.device.clone())
            .with_seconds(Some(s.seconds));
    }
    ModelManifest::new(config.model.clone(), config.schedule.clone())
        .with_dataset(ds.name.clone())
        .with_class_names(class_names)
        .with_training(training)
}

/// Train (or resume) a run. Returns when `config.steps` are done or `stop` is set.
pub fn train(config: TrainConfig, resume: bool, opts: TrainOptions) -> Result<TrainReport, String> {
    std::fs::create_dir_all(&opts.run_dir)
        .map_err(|e| format!("cannot create {}: {e}", opts.run_dir.display()))?;
    let ad = opts.device.clone().autodiff();

    // Resume: the checkpoint's config wins, except for the total number of steps and the
    // settings in `opts.resume_changes`.
    let resumed = if resume {
        Some(checkpoint::load(&opts.run_dir)?)
    } else {
        if checkpoint::dir(&opts.run_dir).join("state.json").exists() {
            return Err(format!(
                "{} already holds a checkpoint: pass --resume to continue it, or choose another --run folder",
                opts.run_dir.display()
            ));
        }
        None
    };
    let config = match &resumed {
        Some(c) => opts.resume_changes.apply(
            c.state
                .config
                .clone()
                .with_steps(config.steps.max(c.state.step)),
        ),
        None => config,
    };
    config.model.validate().map_err(|e| e.to_string())?;
    if !(0.0..=1.0).contains(&config.label_dropout) {
        return Err(format!(
            "label dropout must be in [0, 1], got {}",
            config.label_dropout
        ));
    }
    let schedule = Schedule::new(&config.schedule).map_err(|e| e.to_string())?;

    let ds = match opts.dataset.clone() {
        Some(ds) => ds,
        None => data::load(&config.dataset, &opts.data_dir, Split::Train)?,
    };
    // The checkpoints record the flip setting in force, not "the dataset's default", which has
    // changed (Fashion-MNIST was flipped by default until its shoes were seen to face one way).
    let flip = config.flip.unwrap_or(ds.flip_ok);
    let config = config.with_flip(Some(flip));
    let m = &config.model;
    if ds.shape != [m.image_channels, m.image_size, m.image_size] {
        return Err(format!(
            "the model makes {}×{}×{} images but {} has {:?}",
            m.image_channels, m.image_size, m.image_size, ds.name, ds.shape
        ));
    }
    if m.num_classes > 0 && m.num_classes != ds.class_names.len() {
        return Err(format!(
            "the model has {} classes but {} has {}",
            m.num_classes,
            ds.name,
            ds.class_names.len()
        ));
    }
    let mut batcher = Batcher::new(ds.len(), config.seed, flip);
    let mut rng = Rng::new(config.seed ^ 0x7EA1_5EED);

    let (mut model, mut ema, mut adam, start_step, loss_ema, mut seconds) = match resumed {
        Some(files) => {
            let model = weights::load_from_bytes(&files.model, &ad)
                .map_err(|e| format!("checkpoint model: {e}"))?
                .unet;
            let ema = weights::load_from_bytes(&files.ema, &opts.device)
                .map_err(|e| format!("checkpoint EMA: {e}"))?
                .unet;
            let layout = ParamLayout::of(&model);
            if ParamLayout::of(&ema) != layout {
                return Err("the checkpoint's EMA weights do not match its model".into());
            }
            let named = checkpoint::decode_plain(&files.optim, "checkpoint optimizer state")?;
            let adam = AdamState::from_named(named, files.state.adam_t, &layout, &opts.device)
                .map_err(|e| format!("checkpoint: {e}"))?;
            batcher.restore(&files.state.batcher);
            rng = Rng::from_state(files.state.rng.0, files.state.rng.1);
            (
                model,
                ema,
                adam,
                files.state.step,
                files.state.loss_ema,
                files.state.seconds,
            )
        }
        None => {
            opts.device.seed(config.seed);
            let model = config.model.init(&ad).map_err(|e| e.to_string())?;
            let ema = model.valid();
            (model, ema, AdamState::default(), 0, f64::NAN, 0.0)
        }
    };
    // Adam and the EMA work on all parameters at once, laid end to end (see `optim`); the
    // model's parameters are pieces of `w_flat`, the EMA module is brought up to date from
    // `ema_flat` when it is saved or sampled from.
    let layout = ParamLayout::of(&model);
    let mut w_flat = flatten(&model);
    let mut ema_flat = flatten(&ema);
    // Dropout's mask comes from the backend generator: reseed per invocation.
    opts.device
        .seed(config.seed.wrapping_add(start_step.wrapping_mul(0x9E37)));

    let [c, h, w] = ds.shape;
    let per = c * h * w;
    let bs = config.batch_size;
    let null_label = m.num_classes as i64;
    let pb = crate::cli::progress::bar(config.steps, "training", opts.quiet);
    pb.set_position(start_step);
    let started = Instant::now();
    let mut log = LossLog::new(loss_ema);
    let mut step = start_step;
    let mut interrupted = false;

    let save = |step: u64,
                model: &UNet,
                ema: &UNet,
                adam: &AdamState,
                batcher: &Batcher,
                rng: &Rng,
                loss_ema: f64,
                seconds: f64|
     -> Result<(), String> {
        let state = TrainState {
            config: config.clone(),
            step,
            batcher: batcher.state(),
            rng: rng.state(),
            adam_t: adam.t,
            loss_ema,
            seconds,
            device: opts.device_label.clone(),
        };
        let man = manifest(&config, &ds, Some(&state));
        let files = CheckpointFiles {
            model: weights::save_to_bytes(model, &man, StorageDtype::F32)
                .map_err(|e| e.to_string())?,
            ema: weights::save_to_bytes(ema, &man, StorageDtype::F32).map_err(|e| e.to_string())?,
            optim: checkpoint::encode_plain(&adam.to_named(&layout)?)?,
            state,
        };
        checkpoint::save(&opts.run_dir, &files)
    };

    while step < config.steps {
        if opts.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        // Algorithm 1: x_0 ~ q(x_0), t ~ U{1..T} per example, ε ~ N(0, I).
        let (x0, labels) = batcher.next(&ds, bs);
        let mut x_t = Vec::with_capacity(bs * per);
        let mut eps = Vec::with_capacity(bs * per);
        let mut ts = Vec::with_capacity(bs);
        let mut ys = Vec::with_capacity(bs);
        for i in 0..bs {
            let t = 1 + rng.below(schedule.timesteps() as u64) as usize;
            let (a, b) = (
                schedule.sqrt_alpha_bar(t),
                schedule.sqrt_one_minus_alpha_bar(t),
            );
            for k in 0..per {
                let e = rng.normal();
                eps.push(e as f32);
                x_t.push((a * x0[i * per + k] as f64 + b * e) as f32);
            }
            ts.push(t as f32);
            let drop = rng.uniform() < config.label_dropout;
            ys.push(if drop { null_label } else { labels[i] as i64 });
        }
        let x_t = Tensor::<4>::from_data(TensorData::new(x_t, [bs, c, h, w]), &ad);
        let eps = Tensor::<4>::from_data(TensorData::new(eps, [bs, c, h, w]), &ad);
        let ts = Tensor::<1>::from_data(TensorData::new(ts, [bs]), &ad);
        let ys = (m.num_classes > 0)
            .then(|| Tensor::<1, Int>::from_data(TensorData::new(ys, [bs]), &ad));

        let pred = model.forward(x_t, ts, ys);
        let loss = mse_loss(&pred, &eps);
        let grads = loss.backward();
        let grads = GradientsParams::from_grads(grads, &model);
        let warm = if config.warmup_steps == 0 {
            1.0
        } else {
            ((step + 1) as f64 / config.warmup_steps as f64).min(1.0)
        };
        let adam_hp = AdamStep {
            lr: config.lr * warm,
            grad_scale: 1.0,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: config.adam_eps,
        };
        let g = flatten_grads(&model, &grads);
        let scale = clip_scale(&g, config.grad_clip);
        w_flat = adam_step(w_flat, g, &mut adam, adam_hp, scale);
        model = unflatten(model, &w_flat);
        drop(grads);
        let decay = if config.ema_warmup {
            config
                .ema_decay
                .min((1.0 + step as f64) / (10.0 + step as f64))
        } else {
            config.ema_decay
        };
        ema_flat = ema_step(ema_flat, &w_flat, decay);
        step += 1;
        log.push(loss.inner(), pred.inner(), eps.inner());

        let checkpoint_due = step % config.checkpoint_every.max(1) == 0 || step == config.steps;
        let samples_due = config.sample_every > 0 && step % config.sample_every == 0;
        if checkpoint_due || samples_due || log.due() || opts.stop.load(Ordering::SeqCst) {
            log.read(step, &opts.run_dir)
                .inspect_err(|_| pb.abandon())?;
            pb.set_message(format!("loss {:.4}", log.loss_ema));
        }
        pb.set_position(step);

        let elapsed = seconds + started.elapsed().as_secs_f64();
        if checkpoint_due || samples_due {
            ema = unflatten(ema, &ema_flat);
        }
        if checkpoint_due {
            let loss_ema = log.loss_ema;
            save(step, &model, &ema, &adam, &batcher, &rng, loss_ema, elapsed)?;
            let rate = (step - start_step) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            log_line(
                &opts.run_dir,
                &format!("step {step} loss {loss_ema:.5} {rate:.3} steps/s {elapsed:.0} s"),
            );
        }
        if samples_due {
            write_samples(&opts.run_dir, &ema, &schedule, &config, step, &opts.device)?;
        }
    }
    log.read(step, &opts.run_dir)
        .inspect_err(|_| pb.abandon())?;
    let loss_ema = log.loss_ema;
    let this_run = started.elapsed().as_secs_f64();
    seconds += this_run;
    if interrupted {
        ema = unflatten(ema, &ema_flat);
        save(step, &model, &ema, &adam, &batcher, &rng, loss_ema, seconds)?;
    }
    pb.finish_and_clear();
    let done = log.losses.len();
    Ok(TrainReport {
        step,
        loss: loss_ema,
        losses: log.losses,
        steps_per_second: if this_run > 0.0 {
            done as f64 / this_run
        } else {
            0.0
        },
        interrupted,
    })
}

/// The losses of the steps since the last read-back. Reading a loss every step would make the
/// CPU wait for the GPU to finish each step before it can queue the next one, so they are read
/// together, at most every `READ_EVERY` steps or `READ_INTERVAL`, and always before a checkpoint
/// or sample grid is written: a NaN/inf loss is caught before anything is saved from after it.
struct LossLog {
    /// (loss, prediction, target) per pending step; the inputs stay alive until the loss has
    /// been read (see [`mse_loss`]).
    pending: Vec<(Tensor<1>, Tensor<4>, Tensor<4>)>,
    last_read: Instant,
    /// Every loss read so far in this run.
    losses: Vec<f64>,
    /// Smoothed loss (NaN before the first).
    loss_ema: f64,
}

impl LossLog {
    const READ_EVERY: usize = 32;
    const READ_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

    fn new(loss_ema: f64) -> Self {
        Self {
            pending: Vec::new(),
            last_read: Instant::now(),
            losses: Vec::new(),
            loss_ema,
        }
    }

    fn push(&mut self, loss: Tensor<1>, pred: Tensor<4>, target: Tensor<4>) {
        self.pending.push((loss, pred, target));
    }

    fn due(&self) -> bool {
        self.pending.len() >= Self::READ_EVERY || self.last_read.elapsed() >= Self::READ_INTERVAL
    }

    /// Read the pending losses (one transfer); `step` is the number of steps done. Fails with
    /// the message for the user when one is not finite.
    fn read(&mut self, step: u64, run: &Path) -> Result<(), String> {
        self.last_read = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let first = step - self.pending.len() as u64;
        let all = Tensor::cat(self.pending.iter().map(|p| p.0.clone()).collect(), 0);
        let values = all
            .try_into_data()
            .map_err(|e| format!("device error while reading the loss: {e:?}"))?
            .try_into_vec_as::<f32>()
            .map_err(|e| format!("unexpected loss data: {e:?}"))?;
        self.pending.clear();
        for (i, v) in values.into_iter().enumerate() {
            let v = v as f64;
            if !v.is_finite() {
                return Err(format!(
                    "the loss became {v} at step {}; stopped without saving (the last good checkpoint in {} is kept). Try a lower --lr",
                    first + i as u64 + 1,
                    checkpoint::dir(run).display()
                ));
            }
            self.loss_ema = if self.loss_ema.is_nan() {
                v
            } else {
                0.98 * self.loss_ema + 0.02 * v
            };
            self.losses.push(v);
        }
        Ok(())
    }
}

/// Appends one line to `RUN/train.log` (a plain record for runs in the background); a failure
/// to write it never stops training.
fn log_line(run: &Path, line: &str) {
    use std::io::Write;
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("train.log"))
        .and_then(|mut f| writeln!(f, "{line}"));
}

/// A 4×4 grid of EMA samples (DDIM, 50 steps, fixed seed) as `RUN/samples/step_NNNNNNN.png`.
pub fn write_samples(
    run: &Path,
    ema: &UNet,
    schedule: &Schedule,
    config: &TrainConfig,
    step: u64,
    device: &Device,
) -> Result<(), String> {
    let m = &config.model;
    let sc = SamplerConfig::new()
        .with_kind(SamplerKind::Ddim)
        .with_steps(50.min(schedule.timesteps()))
        .with_seed(1)
        .with_count(16);
    let sampler = Sampler::new(
        schedule,
        &sc,
        [m.image_channels, m.image_size, m.image_size],
        m.num_classes,
        device,
    )
    .map_err(|e| e.to_string())?;
    let x = sampler.run(ema);
    let shape = x.dims();
    let values = x
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let path = run.join("samples").join(format!("step_{step:07}.png"));
    crate::cli::output::write_grid(
        &path,
        Batch {
            data: &values,
            shape,
        },
    )
}

/// Turn a run's checkpoint into a weights file for the page (EMA weights).
pub fn export(run: &Path, out: &Path, dtype: StorageDtype) -> Result<ModelManifest, String> {
    let files = checkpoint::load(run)?;
    let loaded = weights::load_from_bytes(&files.ema, &Device::flex())
        .map_err(|e| format!("checkpoint EMA: {e}"))?;
    let mut manifest = loaded.manifest.clone();
    manifest.training = manifest
        .training
        .clone()
        .with_steps(files.state.step)
        .with_ema_decay(Some(files.state.config.ema_decay))
        .with_device(files.state.device.clone())
        .with_seconds(Some(files.state.seconds))
        .with_date(checkpoint::now_iso8601());
    let bytes =
        weights::save_to_bytes(&loaded.unet, &manifest, dtype).map_err(|e| e.to_string())?;
    weights::write_atomic(out, &bytes).map_err(|e| e.to_string())?;
    Ok(manifest)
}

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use ddpm_web::burn::module::Module;
use ddpm_web::burn::tensor::Device;
use ddpm_web::cli::{device, output, progress};
use ddpm_web::image::Batch;
use ddpm_web::sampler::{Sampler, SamplerConfig, SamplerKind, Variance};
#[cfg(feature = "train")]
use ddpm_web::train::sample_set::SampleSet;
use ddpm_web::weights::{self, ModelManifest, StorageDtype, TrainingInfo};
use ddpm_web::{ScheduleConfig, UNetConfig};

/// `println!` that ends the program quietly when stdout is closed (`ddpm info … | head`)
/// instead of panicking.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

// `ddpm --version` names the optional parts this binary was built with.
#[cfg(all(feature = "gpu", feature = "train"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (gpu, train)");
#[cfg(all(feature = "gpu", not(feature = "train")))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (gpu, no train)");
#[cfg(all(not(feature = "gpu"), feature = "train"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (no gpu, train)");
#[cfg(all(not(feature = "gpu"), not(feature = "train")))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (no gpu, no train)");

#[derive(Parser)]
#[command(
    name = "ddpm",
    version = VERSION,
    about = "DDPM image generation (Ho et al. 2020): sample, inspect, benchmark, train"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerArg {
    Ddpm,
    Ddim,
}

#[derive(Clone, Copy, ValueEnum)]
enum VarianceArg {
    FixedSmall,
    FixedLarge,
}

impl From<SamplerArg> for SamplerKind {
    fn from(a: SamplerArg) -> Self {
        match a {
            SamplerArg::Ddpm => SamplerKind::Ddpm,
            SamplerArg::Ddim => SamplerKind::Ddim,
        }
    }
}

impl From<VarianceArg> for Variance {
    fn from(a: VarianceArg) -> Self {
        match a {
            VarianceArg::FixedSmall => Variance::FixedSmall,
            VarianceArg::FixedLarge => Variance::FixedLarge,
        }
    }
}

/// Steps when none are asked for: all T for DDPM, 50 (at most T) for DDIM.
fn default_steps(kind: SamplerKind, schedule: &ddpm_web::Schedule) -> usize {
    match kind {
        SamplerKind::Ddpm => schedule.timesteps(),
        SamplerKind::Ddim => 50.min(schedule.timesteps()),
    }
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Weights file (.safetensors) written by `ddpm export` or `ddpm init`.
    #[arg(long)]
    weights: PathBuf,
    /// ddpm: ancestral sampling (Algorithm 2); ddim: Song et al.'s sampler on a sub-sequence of the
    /// timesteps.
    #[arg(long, value_enum, default_value = "ddpm")]
    sampler: SamplerArg,
    /// Network evaluations (default: T for ddpm, 50 for ddim).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM η (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// σ_t² of ancestral sampling: β_t (fixed-large) or the posterior's β̃_t (fixed-small).
    #[arg(long, value_enum, default_value = "fixed-large")]
    variance: VarianceArg,
    /// Do not clip x̂₀ to [−1, 1] (use Algorithm 2's mean as written).
    #[arg(long)]
    no_clip: bool,
    /// Seed of the starting noise x_T and of every z.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Class index or name (models trained with labels).
    #[arg(long)]
    class: Option<String>,
    /// Classifier-free guidance scale w.
    #[arg(long, default_value_t = 0.0)]
    guidance: f64,
    /// cpu, or gpu (Burn's wgpu backend: Vulkan, Metal or DX12; the CPU with a note when no adapter
    /// is found)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Grid PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// Also write every sample as its own PNG into this folder.
    #[arg(long)]
    each: Option<PathBuf>,
    /// Also write an animated GIF of the grid over the reverse process (x_T → x_0).
    #[arg(long)]
    gif: Option<PathBuf>,
    /// Also write the final samples as raw little-endian f32 NCHW (for comparisons).
    #[arg(long, hide = true)]
    raw: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a weights file.
    Sample(SampleArgs),
    /// Show what a weights file holds.
    Info {
        file: PathBuf,
        /// List every tensor.
        #[arg(long)]
        tensors: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a randomly initialised model (for tests and demos before training).
    Init {
        /// Model preset (tiny, tiny-classes, mnist, mnist-small, mnist-large, mnist-wide, fashion,
        /// fashion-large, fashion-wide, emoji, emoji-wide, cifar10-paper).
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// Dataset name recorded in the weights' manifest.
        #[arg(long, default_value = "synthetic")]
        dataset: String,
        /// Seed of the random initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Store f32 instead of f16.
        #[arg(long)]
        f32: bool,
        /// Weights file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a U-Net (Algorithm 1) with checkpoints; resume with --resume.
    #[cfg(feature = "train")]
    Train(TrainArgs),
    /// Turn a training run's checkpoint into a weights file (EMA weights, f16 by default).
    #[cfg(feature = "train")]
    Export {
        /// Run folder given to `train --run`.
        #[arg(long)]
        run: PathBuf,
        /// Weights file to write.
        #[arg(long)]
        out: PathBuf,
        /// Store f32 instead of f16.
        #[arg(long)]
        f32: bool,
    },
    /// Average the weights of two or more exports of one run (a longer window than the EMA's).
    #[cfg(feature = "train")]
    Average {
        /// Weights files to average (the same model; two or more).
        #[arg(long = "weights", required = true, num_args = 1..)]
        weights: Vec<PathBuf>,
        /// Weights file to write.
        #[arg(long)]
        out: PathBuf,
        /// Store f32 instead of f16.
        #[arg(long)]
        f32: bool,
    },
    /// Evaluate a model: the bound in bits/dim and the sample-quality score, as JSON.
    #[cfg(feature = "train")]
    Eval(EvalArgs),
    /// Train the small CNN classifier used by `eval` on a dataset's training split.
    #[cfg(feature = "train")]
    TrainClassifier {
        /// mnist or fashion.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        /// Folder with the datasets.
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// Adam steps (learning rate 1e-3 with cosine decay).
        #[arg(long, default_value_t = 3000)]
        steps: u64,
        /// Images per step.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// cpu, or gpu (Burn's wgpu backend: Vulkan, Metal or DX12; the CPU with a note when no
        /// adapter is found)
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Classifier weights file to write.
        #[arg(long)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Measure sampling speed (steps/s) of a model on a device.
    Bench {
        /// Weights file; or use --preset for a randomly initialised model.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Model preset for a randomly initialised model (when no --weights).
        #[arg(long, default_value = "mnist")]
        preset: String,
        /// cpu, or gpu (Burn's wgpu backend: Vulkan, Metal or DX12; the CPU with a note when no
        /// adapter is found)
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        count: Vec<usize>,
        /// Timed steps per batch size.
        #[arg(long, default_value_t = 10)]
        steps: usize,
    },
}

#[cfg(feature = "train")]
#[derive(clap::Args)]
struct TrainArgs {
    /// mnist, fashion, emoji or synthetic.
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Model preset (see `ddpm init --help`) or a U-Net config .json file; default: the
    /// dataset's.
    #[arg(long)]
    preset: Option<String>,
    /// Train without labels even when the dataset has them.
    #[arg(long)]
    unconditional: bool,
    /// Run folder for checkpoints and sample grids.
    #[arg(long)]
    run: PathBuf,
    /// Continue the run in --run from its last checkpoint, with its settings; --steps,
    /// --batch-size, --lr, --ema-decay, --label-dropout, --flip, --checkpoint-every and
    /// --sample-every typed here replace the checkpoint's.
    #[arg(long)]
    resume: bool,
    /// Folder with the datasets.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// cpu, or gpu (Burn's wgpu backend: Vulkan, Metal or DX12; the CPU with a note when no adapter
    /// is found)
    #[arg(long, default_value = "gpu")]
    device: String,
    /// Total steps; a resumed run continues up to this many.
    #[arg(long, default_value_t = 100_000)]
    steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Adam learning rate (reached after the warm-up).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 5000)]
    warmup: u64,
    /// Decay of the EMA of the weights (samples and exports use the EMA).
    #[arg(long, default_value_t = 0.9999)]
    ema_decay: f64,
    /// Probability of training an example as "no label": the share of training the
    /// unconditional path gets (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    label_dropout: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Random horizontal flips of the training images, true or false (default: the dataset's,
    /// which flips only emoji: digits and Fashion-MNIST's shoes and bags face one way).
    #[arg(long)]
    flip: Option<bool>,
    /// Dropout inside residual blocks (default: the preset's).
    #[arg(long)]
    dropout: Option<f64>,
    /// Write a checkpoint every N steps (and on Ctrl-C).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Write a 4×4 grid of EMA samples (DDIM, 50 steps) to RUN/samples every N steps (0 = never).
    #[arg(long, default_value_t = 5000)]
    sample_every: u64,
    /// Seed of the initial weights, data order, t, ε and label dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn main_inner() -> Result<(), String> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    // `train --resume` applies only the flags typed on the command line (not defaults).
    #[cfg(feature = "train")]
    let resume_changes = {
        let given = |name: &str| {
            matches
                .subcommand()
                .and_then(|(_, m)| m.value_source(name))
                .is_some_and(|s| s == clap::parser::ValueSource::CommandLine)
        };
        match &cli.command {
            Command::Train(a) => ddpm_web::train::ResumeChanges {
                lr: given("lr").then_some(a.lr),
                ema_decay: given("ema_decay").then_some(a.ema_decay),
                label_dropout: given("label_dropout").then_some(a.label_dropout),
                checkpoint_every: given("checkpoint_every").then_some(a.checkpoint_every),
                sample_every: given("sample_every").then_some(a.sample_every),
                batch_size: given("batch_size").then_some(a.batch_size),
                flip: a.flip,
            },
            _ => Default::default(),
        }
    };
    match cli.command {
        Command::Sample(args) => sample(args),
        Command::Info {
            file,
            tensors,
            json,
        } => info(&file, tensors, json),
        Command::Init {
            preset,
            dataset,
            seed,
            f32,
            out,
        } => init(&preset, &dataset, seed, f32, &out),
        #[cfg(feature = "train")]
        Command::Train(args) => train(args, resume_changes),
        #[cfg(feature = "train")]
        Command::Export { run, out, f32 } => {
            let dtype = storage_dtype(f32);
            let m = ddpm_web::train::export(&run, &out, dtype)?;
            eprintln!(
                "wrote {} ({} dataset, {} steps, EMA {:?})",
                out.display(),
                m.dataset,
                m.training.steps,
                m.training.ema_decay
            );
            Ok(())
        }
        #[cfg(feature = "train")]
        Command::Average { weights, out, f32 } => {
            let dtype = storage_dtype(f32);
            let snapshots = ddpm_web::train::average::read_snapshots(&weights)?;
            let (bytes, m) = ddpm_web::train::average::average(&snapshots, dtype)?;
            ddpm_web::weights::write_atomic(&out, &bytes).map_err(|e| e.to_string())?;
            eprintln!(
                "wrote {} ({} dataset): {}",
                out.display(),
                m.dataset,
                m.training.notes
            );
            Ok(())
        }
        #[cfg(feature = "train")]
        Command::Eval(args) => eval(args),
        #[cfg(feature = "train")]
        Command::TrainClassifier {
            dataset,
            data,
            steps,
            batch_size,
            device,
            out,
            quiet,
        } => train_classifier(&dataset, &data, steps, batch_size, &device, &out, quiet),
        Command::Bench {
            weights,
            preset,
            device,
            count,
            steps,
        } => bench(weights, &preset, &device, &count, steps),
    }
}

pub fn main() -> ExitCode {
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The storage precision the `--f32` flag asks for (f16 by default).
fn storage_dtype(f32: bool) -> StorageDtype {
    if f32 {
        StorageDtype::F32
    } else {
        StorageDtype::F16
    }
}

fn pick_device(name: &str) -> Result<(Device, String), String> {
    let picked = device::pick(name)?;
    if let Some(reason) = &picked.fallback_reason {
        eprintln!("note: no GPU adapter ({reason}); falling back to the CPU");
    }
    Ok((picked.device, picked.label))
}

fn read_f32(t: ddpm_web::burn::Tensor<4>) -> Result<Vec<f32>, String> {
    t.try_into_data()
        .map_err(|e| format!("device error while reading samples: {e:?}"))?
        .try_into_vec_as::<f32>()
        .map_err(|e| format!("unexpected sample data: {e:?}"))
}

/// A class given as an index or a name (case-insensitive) of the model's classes.
fn parse_class(s: &str, manifest: &ModelManifest) -> Result<usize, String> {
    if let Ok(k) = s.parse::<usize>() {
        return Ok(k);
    }
    manifest
        .class_names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!(
                "unknown class \"{s}\"; this model knows: {}",
                if manifest.class_names.is_empty() {
                    "no classes".to_string()
                } else {
                    manifest.class_names.join(", ")
                }
            )
        })
}

fn sample(args: SampleArgs) -> Result<(), String> {
    let (device, label) = pick_device(&args.device)?;
    let model = weights::load_from_path(&args.weights, &device).map_err(|e| e.to_string())?;
    let manifest = &model.manifest;
    let class = match &args.class {
        None => None,
        Some(s) => Some(parse_class(s, manifest)?),
    };
    let kind = SamplerKind::from(args.sampler);
    let steps = args
        .steps
        .unwrap_or_else(|| default_steps(kind, &model.schedule));
    let config = SamplerConfig::new()
        .with_kind(kind)
        .with_steps(steps)
        .with_eta(args.eta)
        .with_variance(args.variance.into())
        .with_clip_x0(!args.no_clip)
        .with_seed(args.seed)
        .with_count(args.count)
        .with_class(class)
        .with_guidance(args.guidance);
    let mut sampler = Sampler::new(
        &model.schedule,
        &config,
        model.image_shape(),
        manifest.model.num_classes,
        &device,
    )
    .map_err(|e| e.to_string())?;
    let [c, h, w] = model.image_shape();
    let shape = [args.count, c, h, w];

    let mut gif = match &args.gif {
        Some(path) => Some(output::GifWriter::create(path, shape)?),
        None => None,
    };
    // At most ~100 GIF frames, evenly spaced, plus x_T and x_0.
    let total = sampler.total();
    let every = total.div_ceil(100).max(1);
    if let Some(g) = gif.as_mut() {
        let x = read_f32(sampler.x().clone())?;
        g.frame(Batch { data: &x, shape }, 20)?;
    }

    let pb = progress::bar(total as u64, "sampling", args.quiet);
    let start = Instant::now();
    while let Some(step) = sampler.step(&model.unet) {
        let last = step.index == step.total;
        match gif.as_mut() {
            Some(g) if step.index % every == 0 || last => {
                let x = read_f32(step.x)?;
                g.frame(Batch { data: &x, shape }, if last { 300 } else { 4 })?;
            }
            _ => device
                .sync()
                .map_err(|e| format!("device error while sampling: {e:?}"))?,
        }
        pb.inc(1);
    }
    let x = read_f32(sampler.x().clone())?;
    let secs = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let batch = Batch { data: &x, shape };
    output::write_grid(&args.out, batch)?;
    if let Some(dir) = &args.each {
        output::write_each(dir, batch)?;
    }
    if let Some(path) = &args.raw {
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    eprintln!(
        "{} samples, {total} steps in {secs:.2} s ({:.2} steps/s) on {label}; wrote {}",
        args.count,
        total as f64 / secs,
        args.out.display()
    );
    Ok(())
}

fn info(file: &PathBuf, list: bool, json: bool) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let summary = weights::inspect(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let m = &summary.manifest;
    if json {
        let value = serde_json::json!({
            "file": file.display().to_string(),
            "bytes": summary.bytes,
            "parameters": summary.parameters,
            "dtypes": summary.tensors.iter().map(|t| t.dtype.clone()).collect::<std::collections::BTreeSet<_>>(),
            "tensors": summary.tensors.len(),
            "manifest": m,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let cfg = &m.model;
    let dtypes: std::collections::BTreeSet<_> =
        summary.tensors.iter().map(|t| t.dtype.as_str()).collect();
    println!(
        "file        {} ({:.2} MB)",
        file.display(),
        summary.bytes as f64 / 1e6
    );
    println!("dataset     {}", m.dataset);
    println!(
        "images      {}×{}, {} channel(s)",
        cfg.image_size, cfg.image_size, cfg.image_channels
    );
    println!(
        "classes     {}",
        if cfg.num_classes == 0 {
            "unconditional".to_string()
        } else if m.class_names.is_empty() {
            format!("{} (+ \"no label\")", cfg.num_classes)
        } else {
            format!("{}: {}", cfg.num_classes, m.class_names.join(", "))
        }
    );
    println!(
        "u-net       base {}, mults {:?}, {} res blocks/level, attention at {:?}, {} groups, dropout {}",
        cfg.base_channels,
        cfg.channel_mults,
        cfg.res_blocks,
        cfg.attention_resolutions,
        cfg.groups,
        cfg.dropout
    );
    println!(
        "parameters  {} ({} tensors, stored as {})",
        summary.parameters,
        summary.tensors.len(),
        dtypes.into_iter().collect::<Vec<_>>().join("/")
    );
    println!(
        "schedule    {:?}, T = {}, β {}…{}",
        m.schedule.kind, m.schedule.timesteps, m.schedule.beta_start, m.schedule.beta_end
    );
    let t = &m.training;
    println!(
        "training    {} steps, EMA {}, {}{}{}",
        t.steps,
        t.ema_decay.map_or("none".to_string(), |d| d.to_string()),
        if t.date.is_empty() {
            "date unknown"
        } else {
            &t.date
        },
        if t.device.is_empty() {
            String::new()
        } else {
            format!(", on {}", t.device)
        },
        t.seconds.map_or(String::new(), |s| format!(", {:.0} s", s)),
    );
    if !t.notes.is_empty() {
        println!("notes       {}", t.notes);
    }
    if list {
        for t in &summary.tensors {
            println!("  {:<50} {:?} {}", t.name, t.shape, t.dtype);
        }
    }
    Ok(())
}

/// A preset name or a path to a U-Net config JSON file (as `ddpm info --json` prints under
/// "model"), validated.
fn model_config(name: &str) -> Result<UNetConfig, String> {
    let config = if name.ends_with(".json") {
        let text = std::fs::read_to_string(name).map_err(|e| format!("cannot read {name}: {e}"))?;
        serde_json::from_str::<UNetConfig>(&text)
            .map_err(|e| format!("{name} is not a U-Net config: {e}"))?
    } else {
        UNetConfig::preset(name).ok_or_else(|| {
            format!(
                "unknown preset \"{name}\"; known: {} (or a .json config file)",
                UNetConfig::PRESETS.join(", ")
            )
        })?
    };
    config.validate().map_err(|e| format!("{name}: {e}"))?;
    Ok(config)
}

fn init(preset: &str, dataset: &str, seed: u64, f32: bool, out: &PathBuf) -> Result<(), String> {
    let config = model_config(preset)?;
    let device = Device::flex();
    device.seed(seed);
    let unet = config.init(&device).map_err(|e| e.to_string())?;
    let class_names = if config.num_classes > 0 {
        (0..config.num_classes).map(|i| i.to_string()).collect()
    } else {
        Vec::new()
    };
    let manifest = ModelManifest::new(config, ScheduleConfig::new())
        .with_dataset(dataset.to_string())
        .with_class_names(class_names)
        .with_training(
            TrainingInfo::new()
                .with_notes(format!("random initialisation (seed {seed}), untrained")),
        );
    let dtype = storage_dtype(f32);
    let bytes = weights::save_to_bytes(&unet, &manifest, dtype).map_err(|e| e.to_string())?;
    weights::write_atomic(out, &bytes).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} ({} parameters, {} bytes)",
        out.display(),
        unet.num_params(),
        bytes.len()
    );
    Ok(())
}

fn bench(
    weights_path: Option<PathBuf>,
    preset: &str,
    device_name: &str,
    counts: &[usize],
    steps: usize,
) -> Result<(), String> {
    let (device, label) = pick_device(device_name)?;
    let (unet, schedule, cfg, name) = match &weights_path {
        Some(path) => {
            let m = weights::load_from_path(path, &device).map_err(|e| e.to_string())?;
            let cfg = m.manifest.model.clone();
            (m.unet, m.schedule, cfg, path.display().to_string())
        }
        None => {
            let config = model_config(preset)?;
            let unet = config.init(&device).map_err(|e| e.to_string())?;
            (
                unet,
                ddpm_web::Schedule::linear_paper(),
                config,
                format!("preset {preset}"),
            )
        }
    };
    let num_classes = unet.num_classes();
    println!(
        "model {name}: {} parameters; device {label}",
        unet.num_params()
    );
    for &count in counts {
        let config = SamplerConfig::new()
            .with_kind(SamplerKind::Ddim)
            .with_steps(schedule.timesteps())
            .with_count(count);
        let mut sampler = Sampler::new(
            &schedule,
            &config,
            [cfg.image_channels, cfg.image_size, cfg.image_size],
            num_classes,
            &device,
        )
        .map_err(|e| e.to_string())?;
        // Two warm-up steps (kernel compilation, allocations), then `steps` timed ones.
        for _ in 0..2 {
            sampler.step(&unet);
        }
        device.sync().map_err(|e| format!("{e:?}"))?;
        let start = Instant::now();
        for _ in 0..steps {
            sampler.step(&unet);
            device.sync().map_err(|e| format!("{e:?}"))?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "batch {count:>4}: {:.2} steps/s ({:.1} ms/step, {:.1} images·steps/s)",
            steps as f64 / secs,
            secs * 1e3 / steps as f64,
            (steps * count) as f64 / secs
        );
    }
    Ok(())
}

#[cfg(feature = "train")]
fn train(args: TrainArgs, resume_changes: ddpm_web::train::ResumeChanges) -> Result<(), String> {
    use ddpm_web::train::{TrainConfig, TrainOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let preset = args
        .preset
        .clone()
        .unwrap_or_else(|| match args.dataset.as_str() {
            "synthetic" => "tiny".to_string(),
            other => other.to_string(),
        });
    let mut model = model_config(&preset)?;
    if args.unconditional {
        model.num_classes = 0;
    } else if args.dataset == "synthetic" {
        model.num_classes = 4;
    }
    if let Some(p) = args.dropout {
        model.dropout = p;
    }
    let config = TrainConfig::new(args.dataset.clone(), model)
        .with_steps(args.steps)
        .with_batch_size(args.batch_size)
        .with_lr(args.lr)
        .with_warmup_steps(args.warmup)
        .with_ema_decay(args.ema_decay)
        .with_label_dropout(args.label_dropout)
        .with_grad_clip(args.grad_clip)
        .with_checkpoint_every(args.checkpoint_every)
        .with_sample_every(args.sample_every)
        .with_seed(args.seed)
        .with_flip(args.flip);
    let (device, label) = pick_device(&args.device)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C: finish the current step, write a checkpoint, exit.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    eprintln!("training on {label}; run folder {}", args.run.display());
    let report = ddpm_web::train::train(
        config,
        args.resume,
        TrainOptions {
            run_dir: args.run.clone(),
            data_dir: args.data.clone(),
            device,
            device_label: label,
            quiet: args.quiet,
            stop,
            dataset: None,
            resume_changes,
        },
    )?;
    eprintln!(
        "{} at step {} (loss {:.4}, {:.2} steps/s){}",
        if report.interrupted {
            "stopped"
        } else {
            "done"
        },
        report.step,
        report.loss,
        report.steps_per_second,
        if report.interrupted {
            "; checkpoint written, continue with --resume"
        } else {
            ""
        }
    );
    Ok(())
}

#[cfg(feature = "train")]
#[derive(clap::Args)]
struct EvalArgs {
    /// Weights file to evaluate.
    #[arg(long)]
    weights: PathBuf,
    /// Folder with the datasets.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Number of test images.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Evaluate every k-th timestep of the bound (1 = exact sum over all T).
    #[arg(long, default_value_t = 1)]
    elbo_stride: usize,
    /// Images per batch (test images for the bound; samples drawn at once).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// σ_t² of the reverse process, for the bound and for ddpm sampling: β_t (fixed-large) or β̃_t
    /// (fixed-small).
    #[arg(long, value_enum, default_value = "fixed-large")]
    variance: VarianceArg,
    /// cpu, or gpu (Burn's wgpu backend: Vulkan, Metal or DX12; the CPU with a note when no adapter
    /// is found)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Classifier weights for the sample-quality score (default:
    /// weights/classifier-<dataset>.safetensors when it exists).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Generated samples to score (0 = skip the sample-quality part).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// ddpm (ancestral, Algorithm 2) or ddim.
    #[arg(long, value_enum, default_value = "ddpm")]
    sampler: SamplerArg,
    /// Sampling steps (default: T for ddpm, 50 for ddim).
    #[arg(long)]
    steps: Option<usize>,
    /// Sample this class (index or name) with guidance and report how many are labelled so;
    /// `all` splits the samples evenly over every class and reports each.
    #[arg(long)]
    class: Option<String>,
    /// Also write the first (up to 100) generated samples as a grid PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Seed of the first batch of samples (batch i uses seed + i); pieces of one evaluation
    /// run with different seeds.
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    /// Keep the generated samples in this file (score them later with --load-samples).
    #[arg(long)]
    save_samples: Option<PathBuf>,
    /// Score samples saved by --save-samples instead of drawing new ones (repeat the flag to
    /// combine pieces made with different seeds).
    #[arg(long)]
    load_samples: Vec<PathBuf>,
    /// Classifier-free guidance scale w for --class (0 = none).
    #[arg(long, default_value_t = 0.0)]
    guidance: f64,
    /// Skip the bound (bits/dim).
    #[arg(long)]
    no_elbo: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[cfg(feature = "train")]
fn eval(a: EvalArgs) -> Result<(), String> {
    use ddpm_web::train::classifier::{self, frechet_distance, probe};
    use ddpm_web::train::data::{Split, load};
    use ddpm_web::train::eval::{ElboOptions, elbo};
    use ddpm_web::train::sample_set;
    let (device, label) = pick_device(&a.device)?;
    let bytes = std::fs::read(&a.weights)
        .map_err(|e| format!("cannot read {}: {e}", a.weights.display()))?;
    let model = weights::load_from_bytes(&bytes, &device).map_err(|e| e.to_string())?;
    // What the weights are, not where they were: sample sets drawn from copies of one file
    // (another folder, another machine) are scored together; different files are not.
    let weights_crc32 = format!("{:08x}", crc32fast::hash(&bytes));
    drop(bytes);
    let dataset = model.manifest.dataset.clone();
    // The bound uses the first --n test images; the Fréchet distance as many as there are samples.
    let test = load(&dataset, &a.data, Split::Test)?;
    let n_elbo = a.n.min(test.len());
    let start = Instant::now();
    let mut out = serde_json::json!({
        "weights": a.weights.display().to_string(),
        "dataset": dataset,
        "device": label,
    });
    if !a.no_elbo {
        let pb = progress::bar(1, "ELBO", a.quiet);
        let result = elbo(
            &model.unet,
            &model.schedule,
            &test.images[..n_elbo * test.shape.iter().product::<usize>()],
            test.shape,
            ElboOptions {
                batch: a.batch,
                stride: a.elbo_stride,
                variance: a.variance.into(),
                seed: 0,
            },
            &device,
            |done, total| {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            },
        )?;
        pb.finish_and_clear();
        out["elbo"] = serde_json::to_value(&result).unwrap_or_default();
    }
    let set = if !a.load_samples.is_empty() {
        let mut set: Option<SampleSet> = None;
        for path in &a.load_samples {
            let more = sample_set::load(path)?;
            match &mut set {
                None => set = Some(more),
                Some(s) => s
                    .extend(more)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            }
        }
        set.filter(|s| !s.is_empty())
    } else if a.samples > 0 {
        Some(generate_samples(&a, &model, &weights_crc32, &device)?)
    } else {
        None
    };
    if let (Some(path), Some(set)) = (&a.save_samples, &set) {
        sample_set::save(path, set)?;
    }
    if let Some(set) = set {
        if set.shape != model.image_shape() {
            return Err(format!(
                "the samples are {:?} images, the model makes {:?}",
                set.shape,
                model.image_shape()
            ));
        }
        let path = a
            .classifier
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("weights/classifier-{dataset}.safetensors")));
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read classifier {}: {e} (train one with `ddpm train-classifier`)",
                path.display()
            )
        })?;
        // The classifier always runs on the CPU: it is small, and the score then does not
        // depend on the GPU backend the samples were drawn with.
        let cpu = Device::flex();
        let (clf, _, _) =
            classifier::load(&bytes, &cpu).map_err(|e| format!("{}: {e}", path.display()))?;
        let shape = set.shape;
        let per: usize = shape.iter().product();
        if let Some(path) = &a.grid {
            let n = set.len().min(100);
            let [c, h, w] = shape;
            output::write_grid(
                path,
                Batch {
                    data: &set.images[..n * per],
                    shape: [n, c, h, w],
                },
            )?;
        }
        let (probs, feats) = probe(&clf, &set.images, shape, &cpu)?;
        let labels = probs.first().map_or(0, |p| p.len());
        let mut hist = vec![0usize; labels];
        let mut confident = 0;
        // Per wanted class: (samples, labelled so).
        let mut per_class = vec![(0usize, 0usize); labels];
        for (p, want) in probs.iter().zip(&set.wanted) {
            let arg = classifier::argmax(p);
            hist[arg] += 1;
            confident += usize::from(classifier::is_confident(p));
            if let Some(k) = *want
                && let Some(slot) = per_class.get_mut(k)
            {
                slot.0 += 1;
                slot.1 += usize::from(arg == k);
            }
        }
        let n_real = set.len().min(test.len());
        let (test_probs, test_feats) = probe(&clf, &test.images[..n_real * per], shape, &cpu)?;
        // The same confidence figure for real test images, as the reference.
        let test_confident = test_probs
            .iter()
            .filter(|p| classifier::is_confident(p))
            .count() as f64
            / n_real.max(1) as f64;
        let mut train = load(&dataset, &a.data, Split::Train)?;
        train.truncate(n_real);
        let (_, train_feats) = probe(&clf, &train.images, shape, &cpu)?;
        let total = probs.len() as f64;
        let (asked, hit) = per_class
            .iter()
            .fold((0, 0), |(a, h), &(n, k)| (a + n, h + k));
        let several = per_class.iter().filter(|(n, _)| *n > 0).count() > 1;
        let mut quality = serde_json::json!({
            "samples": probs.len(),
            "confident_fraction": confident as f64 / total,
            "confident_fraction_real_test": test_confident,
            "class_histogram": hist.iter().map(|&c| c as f64 / total).collect::<Vec<_>>(),
            "labelled_as_class": (asked > 0).then(|| hit as f64 / asked as f64),
            "labelled_as_class_per_class": several.then(|| {
                per_class
                    .iter()
                    .map(|&(n, k)| if n > 0 { k as f64 / n as f64 } else { 0.0 })
                    .collect::<Vec<_>>()
            }),
            "frechet_samples_vs_test": frechet_distance(&feats, &test_feats),
            "frechet_train_vs_test_floor": frechet_distance(&train_feats, &test_feats),
            "real_images": n_real,
        });
        if let (Some(q), Some(settings)) = (quality.as_object_mut(), set.settings.as_object()) {
            for (k, v) in settings {
                q.insert(k.clone(), v.clone());
            }
        }
        out["quality"] = quality;
    }
    out["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

/// Draw `a.samples` samples for `eval` (split evenly over the classes for `--class all`).
#[cfg(feature = "train")]
fn generate_samples(
    a: &EvalArgs,
    model: &weights::LoadedModel,
    weights_crc32: &str,
    device: &Device,
) -> Result<SampleSet, String> {
    let kind = SamplerKind::from(a.sampler);
    let steps = a
        .steps
        .unwrap_or_else(|| default_steps(kind, &model.schedule));
    let shape = model.image_shape();
    let per: usize = shape.iter().product();
    let classes = model.manifest.model.num_classes;
    // (class, how many) per sampling job; `all` → an even split over the classes.
    let jobs: Vec<(Option<usize>, usize)> = match a.class.as_deref() {
        None => vec![(None, a.samples)],
        Some("all") => {
            if classes == 0 {
                return Err("--class all needs a model trained with labels".into());
            }
            (0..classes)
                .map(|k| {
                    (
                        Some(k),
                        a.samples / classes + usize::from(k < a.samples % classes),
                    )
                })
                .collect()
        }
        Some(s) => vec![(Some(parse_class(s, &model.manifest)?), a.samples)],
    };
    let mut images = Vec::with_capacity(a.samples * per);
    let mut wanted = Vec::with_capacity(a.samples);
    let pb = progress::bar((a.samples * steps) as u64, "sampling", a.quiet);
    let mut chunk_index = 0u64;
    for &(class, n) in &jobs {
        for chunk in (0..n).step_by(a.batch.max(1)) {
            let count = a.batch.max(1).min(n - chunk);
            let config = SamplerConfig::new()
                .with_kind(kind)
                .with_steps(steps)
                .with_count(count)
                .with_seed(a.seed.wrapping_add(chunk_index))
                .with_class(class)
                .with_guidance(a.guidance)
                .with_variance(a.variance.into());
            chunk_index += 1;
            let mut sampler = Sampler::new(&model.schedule, &config, shape, classes, device)
                .map_err(|e| e.to_string())?;
            while sampler.step(&model.unet).is_some() {
                pb.inc(count as u64);
            }
            images.extend(read_f32(sampler.x().clone())?);
            wanted.extend(std::iter::repeat_n(class, count));
        }
    }
    pb.finish_and_clear();
    Ok(SampleSet {
        images,
        shape,
        wanted,
        settings: serde_json::json!({
            "dataset": model.manifest.dataset,
            "sampler": format!("{kind:?}"),
            "steps": steps,
            "class": a.class,
            "guidance": a.guidance,
            // σ_t² matters to ancestral sampling only (DDIM's comes from η).
            "variance": (kind == SamplerKind::Ddpm).then(|| format!("{:?}", Variance::from(a.variance))),
            "seed": a.seed,
            "weights": a.weights.display().to_string(),
            "weights_crc32": weights_crc32,
        }),
    })
}

#[cfg(feature = "train")]
fn train_classifier(
    dataset: &str,
    data: &std::path::Path,
    steps: u64,
    batch: usize,
    device_name: &str,
    out: &PathBuf,
    quiet: bool,
) -> Result<(), String> {
    use ddpm_web::train::classifier::{ClassifierConfig, argmax, probe, save, train_classifier};
    use ddpm_web::train::data::{Split, load};
    let (device, label) = pick_device(device_name)?;
    let train = load(dataset, data, Split::Train)?;
    if train.class_names.is_empty() {
        return Err(format!("{dataset} has no labels to train a classifier on"));
    }
    let [c, h, _] = train.shape;
    let config = ClassifierConfig::new(c, h, train.class_names.len());
    let pb = progress::bar(steps, "classifier", quiet);
    let (model, loss) = train_classifier(&train, &config, steps, batch, 0, &device, |s, l| {
        pb.set_position(s);
        pb.set_message(format!("loss {l:.3}"));
    })?;
    pb.finish_and_clear();
    let test = load(dataset, data, Split::Test)?;
    let (probs, _) = probe(&model, &test.images, test.shape, &device)?;
    let correct = probs
        .iter()
        .zip(&test.labels)
        .filter(|&(p, &y)| argmax(p) == y as usize)
        .count();
    let bytes = save(&model, &config, dataset)?;
    weights::write_atomic(out, &bytes).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} (final loss {loss:.3}, test accuracy {:.2}% on {label})",
        out.display(),
        100.0 * correct as f64 / test.len() as f64
    );
    Ok(())
}

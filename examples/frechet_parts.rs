//! What a sample set's Fréchet figure (`ddpm eval`) is made of: the mean term, the share the
//! class mix alone accounts for, what mirrored real images would score, and how far each
//! predicted class sits from the real images of that class.
//!
//! ```sh
//! cargo run --release --no-default-features --features train --example frechet_parts -- \
//!   fashion A.samples [B.samples …]      # sets saved by `ddpm eval --save-samples`
//! # --first N before the dataset: only the first N samples of each set
//! ```
//!
//! It found that Fashion-MNIST must not be flipped: mirrored shoes are labelled bags.

use std::path::Path;

use ddpm_web::burn::tensor::Device;
use ddpm_web::train::classifier::{
    self, Rows, argmax, frechet_distance, is_confident, mean, probe,
};
use ddpm_web::train::data::{Split, load};
use ddpm_web::train::sample_set;

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// Rows of `x` whose entry in `keep` is true.
fn pick(x: &Rows, keep: impl Fn(usize) -> bool) -> Rows {
    (0..x.len())
        .filter(|&i| keep(i))
        .map(|i| x[i].clone())
        .collect()
}

fn main() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `--first N`: only the first N samples of each set (to compare sets of different sizes).
    let mut keep = usize::MAX;
    if let Some(i) = args.iter().position(|a| a == "--first") {
        let n = args.get(i + 1).and_then(|n| n.parse().ok());
        keep = n.ok_or("--first needs a number")?;
        args.drain(i..i + 2);
    }
    let [dataset, first, more @ ..] = args.as_slice() else {
        return Err("usage: frechet_parts [--first N] DATASET SAMPLES [SAMPLES …]".into());
    };
    let read = |p: &String| -> Result<sample_set::SampleSet, String> {
        let mut set = sample_set::load(Path::new(p))?;
        if keep < set.len() {
            set.images
                .truncate(keep * set.shape.iter().product::<usize>());
            set.wanted.truncate(keep);
        }
        Ok(set)
    };
    let mut set = read(first)?;
    for p in more {
        set.extend(read(p)?)?;
    }
    let dev = Device::flex();
    let path = format!("weights/classifier-{dataset}.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let (clf, _, _) = classifier::load(&bytes, &dev).map_err(|e| format!("{path}: {e}"))?;
    let data = Path::new("../shared/data");
    let test = load(dataset, data, Split::Test)?;
    let mut train = load(dataset, data, Split::Train)?;
    let (n, per) = (set.len(), test.per_image());
    if test.labels.is_empty() || 2 * n > test.len() {
        return Err(format!(
            "needs a labelled dataset with at least {} test images",
            2 * n
        ));
    }
    train.truncate(n);
    let (sample_probs, sample_feats) = probe(&clf, &set.images, set.shape, &dev)?;
    let (_, test_feats) = probe(&clf, &test.images, test.shape, &dev)?;
    let (_, train_feats) = probe(&clf, &train.images, train.shape, &dev)?;
    // As `ddpm eval`: against the first n test images.
    let reference = &test_feats[..n];
    let labels: Vec<usize> = sample_probs.iter().map(|p| argmax(p)).collect();
    let classes = test.class_names.len();
    let f = |x: &[Vec<f64>]| frechet_distance(x, reference);
    println!(
        "samples: Fréchet {:.1} (mean term {:.1}); floor (training images) {:.1} (mean term {:.1})",
        f(&sample_feats),
        dist2(&mean(&sample_feats), &mean(reference)),
        f(&train_feats),
        dist2(&mean(&train_feats), &mean(reference)),
    );
    let confident = pick(&sample_feats, |i| is_confident(&sample_probs[i]));
    println!(
        "confident samples only ({}): {:.1}",
        confident.len(),
        f(&confident)
    );
    // Other real test images, in the samples' class mix: what the mix alone costs.
    let mut pool: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for i in n..test.len() {
        pool[test.labels[i] as usize].push(i);
    }
    let mut mixed = Vec::new();
    for (c, ids) in pool.iter().enumerate() {
        let want = labels.iter().filter(|&&l| l == c).count();
        mixed.extend((0..want).map(|k| test_feats[ids[k % ids.len()]].clone()));
    }
    println!(
        "other real test images in the samples' class mix: {:.1}",
        f(&mixed)
    );
    // Other real test images, every other one mirrored left-right.
    let w = test.shape[2];
    let mut mirrored = test.images[n * per..2 * n * per].to_vec();
    for i in (0..n).step_by(2) {
        for row in mirrored[i * per..(i + 1) * per].chunks_mut(w) {
            row.reverse();
        }
    }
    let (mirror_probs, mirror_feats) = probe(&clf, &mirrored, test.shape, &dev)?;
    let mut hist = vec![0usize; classes];
    for p in &mirror_probs {
        hist[argmax(p)] += 1;
    }
    println!(
        "other real test images, every other one mirrored: {:.1}, labelled {hist:?}",
        f(&mirror_feats)
    );
    // Per predicted class: squared distance between the mean features of the samples given
    // that label and of the real test images of that class (beside it, half of the real images
    // against the other half: the noise level).
    for (k, name) in test.class_names.iter().enumerate() {
        let s = pick(&sample_feats, |i| labels[i] == k);
        let real: Rows = pool[k].iter().map(|&i| test_feats[i].clone()).collect();
        let (a, b) = real.split_at(real.len() / 2);
        println!(
            "{k} {name}: {} samples, mean shift {:.1} (real half against half {:.1})",
            s.len(),
            if s.is_empty() {
                f64::NAN
            } else {
                dist2(&mean(&s), &mean(&real))
            },
            dist2(&mean(a), &mean(b)),
        );
    }
    Ok(())
}

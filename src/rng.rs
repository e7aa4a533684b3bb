//! Our own seeded noise generator, independent of any backend.
//!
//! Burn's `Tensor::random` differs between backends and (without `std`) repeats across page
//! loads, so x_T and every z come from here: the same seed gives the same noise natively and
//! in wasm, on CPU and GPU. Each sample in a batch has its own stream, so sample i of a grid
//! does not depend on how many samples the grid holds.

/// xoshiro256++ (Blackman & Vigna), seeded through SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    /// The second Box–Muller value, kept for the next call.
    spare: Option<f64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s, spare: None }
    }

    /// The generator for sample `index` of a run seeded with `seed`.
    pub fn for_sample(seed: u64, index: u64) -> Self {
        let mut sm = seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Self::new(splitmix64(&mut sm))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in 0..n (n > 0), without modulo bias worth noticing for n ≪ 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A standard normal value (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        // 1 − u ∈ (0, 1] keeps ln finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = core::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Append `n` standard normal values as f32.
    pub fn fill_normal(&mut self, out: &mut Vec<f32>, n: usize) {
        out.reserve(n);
        for _ in 0..n {
            out.push(self.normal() as f32);
        }
    }

    /// The raw state, for checkpoints.
    pub fn state(&self) -> ([u64; 4], Option<f64>) {
        (self.s, self.spare)
    }

    /// Restore a state saved with [`Rng::state`].
    pub fn from_state(s: [u64; 4], spare: Option<f64>) -> Self {
        Self { s, spare }
    }
}

/// One noise stream per sample of a batch.
#[derive(Debug, Clone)]
pub struct BatchNoise {
    streams: Vec<Rng>,
}

impl BatchNoise {
    /// Streams for `count` samples of a run seeded with `seed`.
    pub fn new(seed: u64, count: usize) -> Self {
        Self {
            streams: (0..count as u64)
                .map(|i| Rng::for_sample(seed, i))
                .collect(),
        }
    }

    /// `per_sample` normals for every sample, sample-major (the layout of an NCHW batch).
    pub fn next(&mut self, per_sample: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(per_sample * self.streams.len());
        for rng in &mut self.streams {
            rng.fill_normal(&mut out, per_sample);
        }
        out
    }
}

//! One meta-training step of the CPU kernel, timed on a fixed batch: the inner pass (∂L/∂z,
//! network frozen) and the outer pass (∂L/∂θ, then the regularisers) of `noether train` on a
//! freshly initialised mass_spring model, 10 tasks × 64 points, as `noether bench meta` and
//! `benches/jax_meta.py` run them. The batch and latents are fixed, so two builds (or two
//! methods) compare without the data sampling, Adam and validation of the training loop:
//!
//! ```text
//! cargo run --release --example bench_train_step -- svd5
//! ```
//!
//! The method is any of `noether train --method`'s modulations (default `svd5`). Prints the
//! best of 15 rounds of 40 steps, in ms per step. Alternate the builds being compared: the
//! speed of a shared machine drifts within minutes (BENCHMARKS.md).

use std::time::Instant;

use burn::backend::Flex;
use noether::{
    nn::{
        ModelConfig, Modulation,
        cpu::{
            ModelParams,
            loss::{Batch, Objective, add_regularizers},
        },
    },
    systems::Family,
};

const ROWS: usize = 640;
const TASKS: usize = 10;
const ROUNDS: usize = 15;
const STEPS: usize = 40;

fn main() {
    let method = std::env::args().nth(1).unwrap_or_else(|| "svd5".into());
    let modulation: Modulation = match method.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("bench_train_step: {e}");
            std::process::exit(2);
        }
    };
    let config = ModelConfig::new(Family::MassSpring, modulation);
    let params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
    let dz = config.d_latent;
    let x: Vec<f32> = (0..ROWS * 2).map(|i| (i as f32 * 0.37).sin()).collect();
    let dx: Vec<f32> = (0..ROWS * 2).map(|i| (i as f32 * 0.11).cos()).collect();
    let task: Vec<usize> = (0..ROWS).map(|r| r * TASKS / ROWS).collect();
    let z: Vec<f32> = (0..TASKS * dz)
        .map(|i| (i as f32 * 0.7).sin() * 0.1)
        .collect();
    let batch = Batch {
        x: &x,
        dx: &dx,
        task: &task,
    };
    // Best per column over the rounds: [inner, outer, regularisers, whole step].
    let mut best = [f64::INFINITY; 4];
    for _ in 0..ROUNDS {
        let mut sums = [0.0f64; 4];
        for _ in 0..STEPS {
            let start = Instant::now();
            let objective = Objective::new(&params);
            std::hint::black_box(objective.loss_grad(batch, &z, false));
            let inner = start.elapsed().as_secs_f64();
            let out = objective.loss_grad(batch, &z, true);
            let outer = start.elapsed().as_secs_f64() - inner;
            let mut grads = out.params.expect("asked for parameter gradients");
            add_regularizers(&params, &mut grads, 1e-3, 1e-2);
            std::hint::black_box(&grads);
            let all = start.elapsed().as_secs_f64();
            for (s, v) in sums
                .iter_mut()
                .zip([inner, outer, all - inner - outer, all])
            {
                *s += v;
            }
        }
        for (b, s) in best.iter_mut().zip(sums) {
            *b = b.min(s / STEPS as f64 * 1e3);
        }
    }
    println!(
        "{method} (best of {ROUNDS} × {STEPS}): inner {:.3} ms, outer {:.3} ms, regularisers {:.3} ms, step {:.3} ms",
        best[0], best[1], best[2], best[3]
    );
}

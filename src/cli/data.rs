//! `noether data`: generate a protocol-v1 dataset into a directory.

use std::{path::PathBuf, time::Instant};

use clap::Args;
use noether::{
    data::{CacheStatus, DatasetSpec, Split, cache::cache_path, load_or_generate},
    systems::Family,
};

use super::{CliResult, outln, progress_bar};

/// Arguments of `noether data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    /// Family: mass_spring, pendulum, duffing, dno, tgc.
    #[arg(long)]
    system: Family,
    /// Seed; the dataset is a pure function of (system, seed, split).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `standard` (meta-training ranges) or `ood` (mass_spring with m, k ∈ [5, 7]).
    #[arg(long, default_value = "standard")]
    split: Split,
    /// Output directory (created if missing).
    #[arg(long, default_value = "data")]
    out: PathBuf,
}

/// Runs `noether data`.
pub fn run(args: DataArgs) -> CliResult {
    let spec = DatasetSpec::new(args.system, args.seed).with_split(args.split);
    let bar = progress_bar(noether::data::INSTANCES as u64, "instances");
    let start = Instant::now();
    let (data, status) = load_or_generate(&args.out, &spec, &|_| bar.inc(1))?;
    bar.finish_and_clear();
    let what = match status {
        CacheStatus::Hit => "already up to date",
        CacheStatus::Generated => "generated",
        CacheStatus::Regenerated => "regenerated (the old file was for another spec)",
    };
    outln!(
        "{}: {what} in {:.2} s — {} instances ({} train, {} test) × {} trajectories × {} samples of {}",
        cache_path(&args.out, &spec).display(),
        start.elapsed().as_secs_f64(),
        noether::data::INSTANCES,
        data.train().len(),
        data.test().len(),
        noether::data::TRAJECTORIES,
        data.samples,
        args.system.spec().state.join(", ")
    );
    Ok(())
}

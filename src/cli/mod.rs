//! Subcommands, one file each. This is the only code that names a concrete backend.

mod adapt;
mod bench;
mod data;
mod encoder;
mod eval;
mod params;
mod reproduce;
mod simulate;
mod systems;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// Errors of the command line: any library error, or a message about an argument.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// `println!` that returns an I/O error instead of panicking (a closed pipe, as in
/// `noether systems | head`, ends the command quietly).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}
pub(crate) use outln;

/// Learned, structure-preserving physics: ground truth, datasets, training, evaluation.
#[derive(Parser, Debug)]
#[command(name = "noether", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Integrate one ground-truth system and print CSV (t, state…, energy[, entropy]).
    Simulate(simulate::SimulateArgs),
    /// Generate (or refresh the cache of) a protocol-v1 dataset.
    Data(data::DataArgs),
    /// Benchmarks; results go to BENCHMARKS.md.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// List the ground-truth families with their parameters and ranges.
    Systems,
    /// Meta-train a model (Algorithm 1) and its encoder, and save them.
    Train(train::TrainArgs),
    /// Train the encoder (amortised start of online adaptation) of an existing model file.
    TrainEncoder(encoder::TrainEncoderArgs),
    /// Adapt a trained model to the meta-test instances and report ε_traj, ε_field, SSIM.
    Eval(eval::EvalArgs),
    /// Fit a latent code for a new parameter set from a few shots and report its errors.
    Adapt(adapt::AdaptArgs),
    /// Run the paper's grid (families × methods × seeds), resumably; write tables and figures.
    Reproduce(reproduce::ReproduceArgs),
    /// Parameter counts (base, hypernetwork) of protocol-v1 models per family and method.
    Params(params::ParamsArgs),
}

/// The documented limits of the numeric arguments: a value outside is refused with a
/// message and exit code 1 before any work or allocation is done.
pub mod limits {
    /// Steps of `simulate` (the CSV streams; 10⁷ rows is minutes of output).
    pub const MAX_STEPS: usize = 10_000_000;
    /// Largest step size `simulate` takes, seconds.
    pub const MAX_DT: f64 = 1e3;
    /// Shots per instance (`eval`, `adapt`).
    pub const MAX_SHOTS: usize = 10_000;
    /// Levenberg–Marquardt steps of `adapt --observations`.
    pub const MAX_FIT_STEPS: usize = 100_000;
    /// Outer iterations of `train`, `reproduce` and `bench meta`.
    pub const MAX_ITERATIONS: usize = 100_000_000;
    /// Rank of `mr<r>` / `svd<r>` methods.
    pub const MAX_RANK: usize = 256;
    /// Largest penalty weight λ.
    pub const MAX_LAMBDA: f64 = 1e6;
    /// Rows of one benchmark batch.
    pub const MAX_BATCH: usize = 10_000_000;
    /// Seconds of one benchmark measurement.
    pub const MAX_BENCH_SECONDS: f64 = 3600.0;
    /// Seeds of one `reproduce` run.
    pub const MAX_SEEDS: usize = 1000;
}

pub use noether::io::args::{count_in, number_in};

/// Parses the arguments, runs the subcommand, prints an error chain on failure. An argument
/// outside its documented limits ([`limits`]) exits with 1 like every other bad input;
/// other usage errors keep clap's code (2), help and version 0.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue => {
                    ExitCode::FAILURE
                }
                _ => ExitCode::from(e.exit_code().clamp(0, 255) as u8),
            };
        }
    };
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Data(args) => data::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Systems => systems::run(),
        Command::Train(args) => train::run(args),
        Command::TrainEncoder(args) => encoder::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Adapt(args) => adapt::run(args),
        Command::Reproduce(args) => reproduce::run(args),
        Command::Params(args) => params::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// `name=value` argument parser.
pub fn parse_key_value(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not of the form name=value"))?;
    let value: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("`{v}` in `{s}` is not a number"))?;
    Ok((k.trim().to_owned(), value))
}

/// A comma-separated list of numbers as one argument (a newtype, so clap does not treat it
/// as a repeated argument).
#[derive(Clone, Debug, PartialEq)]
pub struct NumberList(pub Vec<f64>);

/// Parses a [`NumberList`].
pub fn parse_list(s: &str) -> Result<NumberList, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("`{v}` in `{s}` is not a number"))
        })
        .collect::<Result<_, _>>()
        .map(NumberList)
}

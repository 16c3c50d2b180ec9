//! `noether bench`: throughput benchmarks printed as Markdown tables for BENCHMARKS.md.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use noether::{
    integrate::{Integrator, Stepper},
    systems::Family,
};

use super::CliResult;

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Ground-truth integrator throughput (steps/s) per family and integrator.
    Integrators(IntegratorArgs),
}

/// Arguments of `noether bench integrators`.
#[derive(Args, Debug)]
pub struct IntegratorArgs {
    /// Wall time per (family, integrator) cell, in seconds.
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Integrators(args) => integrators(&args),
    }
}

fn integrators(args: &IntegratorArgs) -> CliResult {
    let budget = Duration::from_secs_f64(args.seconds);
    println!("| family | integrator | Δt | steps/s | ns/step |");
    println!("|---|---|---|---|---|");
    for family in Family::ALL {
        let spec = family.spec();
        let sys = family.build(&family.default_params())?;
        for method in Integrator::ALL {
            let mut stepper = Stepper::new(method, family.dim());
            if stepper.check(sys.as_ref()).is_err() {
                continue;
            }
            let mut x = spec.default_state.to_vec();
            let (start, mut steps) = (Instant::now(), 0u64);
            while start.elapsed() < budget {
                for _ in 0..100 {
                    stepper.step(sys.as_ref(), &mut x, spec.dt)?;
                }
                steps += 100;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "| {family} | {method} | {} | {:.3e} | {:.0} |",
                spec.dt,
                steps as f64 / secs,
                secs * 1e9 / steps as f64
            );
        }
    }
    Ok(())
}

//! `noether simulate`: one ground-truth trajectory as CSV on stdout.

use std::io::{BufWriter, Write};

use clap::Args;
use noether::{
    integrate::{Integrator, simulate_each},
    systems::Family,
};

use super::{CliResult, NumberList, count_in, limits, number_in, parse_key_value, parse_list};

/// Arguments of `noether simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Family: mass_spring, pendulum, duffing, dno, tgc.
    #[arg(long)]
    system: Family,
    /// A parameter, `name=value` (repeatable); unset ones take their default
    /// (`noether systems` lists them).
    #[arg(long = "param", value_parser = parse_key_value)]
    params: Vec<(String, f64)>,
    /// Initial state, comma-separated (default: the family's typical state).
    #[arg(long, value_parser = parse_list, allow_hyphen_values = true)]
    x0: Option<NumberList>,
    /// Step size in seconds, in (0, 1000] (default: the family's dataset Δt).
    #[arg(long, allow_hyphen_values = true, value_parser = number_in(0.0, limits::MAX_DT, true))]
    dt: Option<f64>,
    /// Number of steps, at most 10⁷ (default: one dataset trajectory).
    #[arg(long, value_parser = count_in(0, limits::MAX_STEPS))]
    steps: Option<usize>,
    /// euler, rk4, dopri, symplectic-euler, verlet, yoshida4 or midpoint (auto: dopri).
    #[arg(long, default_value = "dopri")]
    integrator: Integrator,
}

/// Runs `noether simulate`.
pub fn run(args: SimulateArgs) -> CliResult {
    let family = args.system;
    let spec = family.spec();
    let system = family.build_named(&args.params)?;
    let x0 = args.x0.map_or_else(|| spec.default_state.to_vec(), |l| l.0);
    system.check_state(&x0)?;
    let dt = args.dt.unwrap_or(spec.dt);
    let steps = args.steps.unwrap_or(spec.samples - 1);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let entropy = system.entropy(&x0).is_some();
    write!(out, "t,{}", spec.state.join(","))?;
    writeln!(out, ",energy{}", if entropy { ",entropy" } else { "" })?;
    // Streamed: each row is written as it is computed, whatever the number of steps.
    simulate_each(system.as_ref(), args.integrator, &x0, dt, steps, |t, x| {
        write!(out, "{t}")?;
        for v in x {
            write!(out, ",{v}")?;
        }
        write!(out, ",{}", system.energy(x))?;
        if let Some(s) = system.entropy(x) {
            write!(out, ",{s}")?;
        }
        writeln!(out)?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    out.flush()?;
    Ok(())
}

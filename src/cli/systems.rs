//! `noether systems`: the families, their parameters and ranges.

use noether::systems::{Family, Structure};

use super::{CliResult, outln};

/// Runs `noether systems`.
pub fn run() -> CliResult {
    for family in Family::ALL {
        let spec = family.spec();
        let structure = match spec.structure {
            Structure::Hamiltonian { separable: true } => "Hamiltonian, separable",
            Structure::Hamiltonian { separable: false } => "Hamiltonian",
            Structure::Generic => "GENERIC",
        };
        outln!(
            "{family}: state ({}), {structure}, Δt = {}, {} samples",
            spec.state.join(", "),
            spec.dt,
            spec.samples
        );
        for p in spec.params {
            outln!(
                "  {:<6} {:<36} train {:<12} valid {:<16} default {}",
                p.name,
                p.doc,
                p.train.to_string(),
                p.valid.to_string(),
                p.default
            );
        }
    }
    Ok(())
}

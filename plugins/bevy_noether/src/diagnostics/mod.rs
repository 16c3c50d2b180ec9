//! Diagnostics of the learned dynamics through Bevy's [`DiagnosticsStore`]:
//!
//! | path | value |
//! |---|---|
//! | [`NoetherDiagnosticsPlugin::BODIES`] `noether/bodies` | bodies stepped in the last tick |
//! | [`NoetherDiagnosticsPlugin::STEP_MS`] `noether/step_ms` | wall time of the last tick's stepping |
//! | [`NoetherDiagnosticsPlugin::MAX_ENERGY_DRIFT`] `noether/max_energy_drift` | max over bodies of the offset-free energy drift ([`noether::runtime::EnergyRecord::drift`]; +∞ once a body's energy is not finite) |
//! | [`NoetherDiagnosticsPlugin::NONFINITE_BODIES`] `noether/nonfinite_bodies` | bodies frozen because their state stopped being finite |
//! | [`NoetherDiagnosticsPlugin::MIN_ENTROPY_CHANGE`] `noether/min_entropy_change` | min over GENERIC bodies of the per-tick change of S (≥ 0) |
//!
//! [`DiagnosticsStore`]: bevy::diagnostic::DiagnosticsStore

use bevy::{
    app::{App, Plugin},
    diagnostic::{Diagnostic, DiagnosticPath, Diagnostics, RegisterDiagnostic},
    ecs::{intern::Interned, schedule::ScheduleLabel},
    prelude::*,
};

use crate::{
    dynamics::{BodyEnergy, FrozenBody, StepDiagnostics},
    scene::Population,
    schedule::NoetherSystems,
};

/// Energy and entropy bookkeeping of one population, over its bodies.
#[derive(Clone, Debug, PartialEq)]
pub struct PopulationSummary {
    /// Index of the population in its scene.
    pub index: usize,
    /// Population name.
    pub name: String,
    /// Family.
    pub family: noether::systems::Family,
    /// Bodies.
    pub bodies: usize,
    /// Bodies frozen because their state stopped being finite ([`FrozenBody`]).
    pub frozen: usize,
    /// Median over bodies of the largest offset-free relative drift of the learned energy
    /// ([`noether::runtime::EnergyRecord::drift`]): the typical body; the maximum is the
    /// worst.
    pub median_drift: f32,
    /// Largest relative drift of any body.
    pub max_drift: f32,
    /// Smallest per-tick change of S of any body (+∞ for Hamiltonian populations).
    pub min_entropy_change: f32,
    /// The population's first body (member 0), if alive.
    pub first: Option<Entity>,
}

/// Summaries of the populations in `bodies` (each with whether it is frozen), by
/// population index.
pub fn summarize_populations<'a>(
    bodies: impl IntoIterator<Item = (Entity, &'a Population, &'a BodyEnergy, bool)>,
) -> Vec<PopulationSummary> {
    let mut per: std::collections::BTreeMap<usize, (PopulationSummary, Vec<f32>)> =
        Default::default();
    for (entity, p, e, frozen) in bodies {
        let (s, drifts) = per.entry(p.index).or_insert_with(|| {
            let s = PopulationSummary {
                index: p.index,
                name: p.name.clone(),
                family: p.family,
                bodies: 0,
                frozen: 0,
                median_drift: 0.0,
                max_drift: 0.0,
                min_entropy_change: f32::INFINITY,
                first: None,
            };
            (s, Vec::new())
        });
        s.bodies += 1;
        s.frozen += usize::from(frozen);
        drifts.push(e.max_drift);
        s.min_entropy_change = s.min_entropy_change.min(e.min_entropy_change);
        if p.member == 0 {
            s.first = Some(entity);
        }
    }
    per.into_values()
        .map(|(mut s, mut drifts)| {
            drifts.sort_by(f32::total_cmp);
            s.median_drift = drifts[drifts.len() / 2];
            s.max_drift = drifts[drifts.len() - 1];
            s
        })
        .collect()
}

/// Publishes the noether diagnostics (see the module docs).
pub struct NoetherDiagnosticsPlugin {
    /// The schedule of [`NoetherSystems`].
    pub schedule: Interned<dyn ScheduleLabel>,
}

impl NoetherDiagnosticsPlugin {
    /// Bodies stepped in the last tick.
    pub const BODIES: DiagnosticPath = DiagnosticPath::const_new("noether/bodies");
    /// Wall time of the last tick's stepping, milliseconds.
    pub const STEP_MS: DiagnosticPath = DiagnosticPath::const_new("noether/step_ms");
    /// Largest relative drift of the learned energy over all bodies.
    pub const MAX_ENERGY_DRIFT: DiagnosticPath =
        DiagnosticPath::const_new("noether/max_energy_drift");
    /// Smallest per-tick entropy change over GENERIC bodies.
    pub const MIN_ENTROPY_CHANGE: DiagnosticPath =
        DiagnosticPath::const_new("noether/min_entropy_change");
    /// Bodies frozen at their last finite state.
    pub const NONFINITE_BODIES: DiagnosticPath =
        DiagnosticPath::const_new("noether/nonfinite_bodies");
}

/// Publishes this tick's values; the stepping counters exist only with the
/// [`DynamicsPlugin`](crate::dynamics::DynamicsPlugin).
fn measure(
    mut diagnostics: Diagnostics,
    step: Option<Res<StepDiagnostics>>,
    bodies: Query<&BodyEnergy>,
    frozen: Query<(), With<FrozenBody>>,
) {
    let nonfinite = frozen.iter().count();
    diagnostics.add_measurement(&NoetherDiagnosticsPlugin::NONFINITE_BODIES, || {
        nonfinite as f64
    });
    if let Some(step) = step {
        diagnostics.add_measurement(&NoetherDiagnosticsPlugin::BODIES, || step.bodies as f64);
        diagnostics.add_measurement(&NoetherDiagnosticsPlugin::STEP_MS, || step.step_ms);
    }
    let drift = noether::metrics::worst(bodies.iter().map(|e| f64::from(e.max_drift)));
    let ds = bodies
        .iter()
        .map(|e| e.min_entropy_change)
        .fold(f32::INFINITY, |m, v| {
            if v.is_nan() {
                f32::NEG_INFINITY
            } else {
                m.min(v)
            }
        });
    diagnostics.add_measurement(&NoetherDiagnosticsPlugin::MAX_ENERGY_DRIFT, || drift);
    if ds.is_finite() {
        diagnostics.add_measurement(&NoetherDiagnosticsPlugin::MIN_ENTROPY_CHANGE, || {
            f64::from(ds)
        });
    }
}

impl Plugin for NoetherDiagnosticsPlugin {
    fn build(&self, app: &mut App) {
        app.register_diagnostic(Diagnostic::new(Self::BODIES))
            .register_diagnostic(Diagnostic::new(Self::STEP_MS).with_suffix(" ms"))
            .register_diagnostic(Diagnostic::new(Self::MAX_ENERGY_DRIFT))
            .register_diagnostic(Diagnostic::new(Self::MIN_ENTROPY_CHANGE))
            .register_diagnostic(Diagnostic::new(Self::NONFINITE_BODIES))
            .add_systems(
                self.schedule,
                measure
                    .in_set(NoetherSystems::Writeback)
                    .after(crate::dynamics::EnergySystems),
            );
    }
}

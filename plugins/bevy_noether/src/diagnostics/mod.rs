//! Diagnostics of the learned dynamics through Bevy's [`DiagnosticsStore`]:
//!
//! | path | value |
//! |---|---|
//! | [`NoetherDiagnosticsPlugin::BODIES`] `noether/bodies` | bodies stepped in the last tick |
//! | [`NoetherDiagnosticsPlugin::STEP_MS`] `noether/step_ms` | wall time of the last tick's stepping |
//! | [`NoetherDiagnosticsPlugin::MAX_ENERGY_DRIFT`] `noether/max_energy_drift` | max over bodies of \|E − E₀\|/\|E₀\| |
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
    dynamics::{BodyEnergy, StepDiagnostics},
    schedule::NoetherSystems,
};

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
}

fn measure(mut diagnostics: Diagnostics, step: Res<StepDiagnostics>, bodies: Query<&BodyEnergy>) {
    diagnostics.add_measurement(&NoetherDiagnosticsPlugin::BODIES, || step.bodies as f64);
    diagnostics.add_measurement(&NoetherDiagnosticsPlugin::STEP_MS, || step.step_ms);
    let (mut drift, mut ds) = (0.0f32, f32::INFINITY);
    for e in &bodies {
        drift = drift.max(e.max_drift);
        ds = ds.min(e.min_entropy_change);
    }
    diagnostics.add_measurement(&NoetherDiagnosticsPlugin::MAX_ENERGY_DRIFT, || {
        f64::from(drift)
    });
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
            .add_systems(
                self.schedule,
                measure
                    .in_set(NoetherSystems::Writeback)
                    .after(crate::dynamics::EnergySystems),
            );
    }
}

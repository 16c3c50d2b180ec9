//! Reflection of the core's plain data types, so the components that hold them are
//! `Reflect` like every Bevy component (inspectors, scenes, `bevy_remote`).
//!
//! The core has no Bevy (docs/protocol.md §1), so these are remote mirrors
//! ([`bevy::reflect::reflect_remote`]): each lists the core type's fields or variants, and the
//! compiler checks that it matches. A component field of a core type carries
//! `#[reflect(remote = …)]` naming its mirror.

use bevy::reflect::reflect_remote;

#[reflect_remote(noether::systems::Family)]
pub enum FamilyReflect {
    MassSpring,
    Pendulum,
    Duffing,
    Dno,
    Tgc,
}

#[reflect_remote(noether::integrate::Integrator)]
pub enum IntegratorReflect {
    Auto,
    Euler,
    Rk4,
    Dopri,
    SymplecticEuler,
    Verlet,
    Yoshida4,
    Midpoint,
    DiscreteGradient,
}

#[reflect_remote(noether::meta::ObservedPart)]
pub enum ObservedPartReflect {
    Positions,
    States,
}

#[reflect_remote(noether::runtime::EnergyRecord)]
pub struct EnergyRecordReflect {
    pub initial: f32,
    pub rest: f32,
    pub energy: f32,
    pub initial_entropy: f32,
    pub entropy: f32,
    pub max_drift: f32,
    pub min_entropy_change: f32,
    pub temperatures: [f32; 2],
}

#[reflect_remote(noether::runtime::AdaptationSettings)]
pub struct AdaptationSettingsReflect {
    pub enabled: bool,
    pub lambda_z: f64,
    pub steps_per_job: usize,
    pub max_substep: f64,
    pub settle_tol: f64,
    pub settle_misfit: f64,
    pub noise: Option<f64>,
    pub converge_span: f64,
    pub retry_after: f64,
    pub sync_on_converge: bool,
    pub max_bodies_per_job: usize,
    pub max_jobs_in_flight: usize,
    pub min_observations: usize,
    pub max_rejections: u32,
}

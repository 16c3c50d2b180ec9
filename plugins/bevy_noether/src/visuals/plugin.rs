//! [`VisualsPlugin`]: gizmo drawings, energy bars, phase portraits, labels, camera.

use std::collections::BTreeMap;

use bevy::{
    app::{App, Plugin},
    ecs::{intern::Interned, schedule::ScheduleLabel},
    prelude::*,
};

use crate::{
    dynamics::{BodyEnergy, NoetherBody, PhaseState},
    scene::Population,
    schedule::NoetherSystems,
};

/// Knobs of the views (inspector-tweakable).
#[derive(Resource, Reflect, Clone, Debug)]
#[reflect(Resource, Default, Debug)]
pub struct VisualSettings {
    /// Draw states interpolated between the last two fixed steps (smooth motion at any
    /// frame rate).
    pub interpolate: bool,
    /// Spawn a 2D camera at startup when none exists.
    pub spawn_camera: bool,
    /// Pixels per unit of q for displacements.
    pub scale: f32,
    /// Draw the per-population phase portraits.
    pub phase_portraits: bool,
    /// Draw energy and entropy bars.
    pub bars: bool,
    /// At most this many bodies are drawn per population (the rest still step).
    pub max_drawn_per_population: usize,
}

impl Default for VisualSettings {
    fn default() -> Self {
        Self {
            interpolate: true,
            spawn_camera: true,
            scale: 14.0,
            phase_portraits: true,
            bars: true,
            max_drawn_per_population: 2_000,
        }
    }
}

/// The state before the last fixed step, for interpolation.
#[derive(Component, Reflect, Clone, Debug, Default)]
#[reflect(Component, Default, Debug)]
pub struct PreviousState(pub Vec<f32>);

/// The view systems, in `Update`.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VisualsSystems {
    /// Gizmos and labels.
    Draw,
}

/// Label entity of a population.
#[derive(Component)]
struct PopulationLabel(String);

fn spawn_camera(
    mut commands: Commands,
    settings: Res<VisualSettings>,
    cameras: Query<(), With<Camera>>,
) {
    if settings.spawn_camera && cameras.is_empty() {
        commands.spawn(Camera2d);
    }
}

fn remember_previous(
    mut commands: Commands,
    mut bodies: Query<(Entity, &PhaseState, Option<&mut PreviousState>), With<NoetherBody>>,
) {
    for (e, s, prev) in &mut bodies {
        match prev {
            Some(mut p) => p.0.clone_from(&s.0),
            None => {
                commands.entity(e).insert(PreviousState(s.0.clone()));
            }
        }
    }
}

fn lerp_state(prev: Option<&PreviousState>, cur: &PhaseState, alpha: f32) -> Vec<f32> {
    match prev {
        Some(p) if p.0.len() == cur.0.len() => {
            p.0.iter()
                .zip(&cur.0)
                .map(|(a, b)| a + alpha * (b - a))
                .collect()
        }
        _ => cur.0.clone(),
    }
}

/// Blue (cold) → red (hot) for t ∈ [0, 1].
fn heat(t: f32) -> Color {
    let t = t.clamp(0.0, 1.0);
    Color::srgb(0.2 + 0.8 * t, 0.25, 1.0 - 0.8 * t)
}

fn drift_color(drift: f32) -> Color {
    if drift < 1e-3 {
        Color::srgb(0.2, 0.85, 0.3)
    } else if drift < 1e-2 {
        Color::srgb(0.95, 0.8, 0.2)
    } else {
        Color::srgb(0.95, 0.2, 0.2)
    }
}

type Drawn<'a> = (
    &'a Transform,
    &'a PhaseState,
    Option<&'a PreviousState>,
    &'a BodyEnergy,
    Option<&'a Population>,
);

fn draw_bodies(
    mut gizmos: Gizmos,
    settings: Res<VisualSettings>,
    fixed: Res<Time<Fixed>>,
    bodies: Query<Drawn>,
) {
    let alpha = if settings.interpolate {
        fixed.overstep_fraction()
    } else {
        1.0
    };
    let s = settings.scale;
    let mut drawn: BTreeMap<usize, usize> = BTreeMap::new();
    let mut portraits: BTreeMap<usize, (Vec2, Vec<Vec2>)> = BTreeMap::new();
    for (transform, state, prev, energy, pop) in &bodies {
        let index = pop.map_or(usize::MAX, |p| p.index);
        let n = drawn.entry(index).or_default();
        let x = lerp_state(prev, state, alpha);
        if let Some(p) = pop
            && settings.phase_portraits
            && x.len() >= 2
        {
            let entry = portraits
                .entry(p.index)
                .or_insert((transform.translation.truncate(), Vec::new()));
            if entry.1.len() < settings.max_drawn_per_population {
                entry.1.push(Vec2::new(x[0], x[1]));
            }
        }
        if *n >= settings.max_drawn_per_population {
            continue;
        }
        *n += 1;
        let o = transform.translation.truncate();
        let family = pop.map_or("", |p| p.family.as_str());
        let ink = Color::srgb(0.85, 0.85, 0.9);
        match family {
            "mass_spring" => {
                let wall = o + Vec2::new(-22.0, 0.0);
                gizmos.line_2d(wall + Vec2::new(0.0, -8.0), wall + Vec2::new(0.0, 8.0), ink);
                let mass = o + Vec2::new(x[0] * s, 0.0);
                let coils = 8;
                let mut last = wall;
                for k in 1..=coils {
                    let t = k as f32 / coils as f32;
                    let y = if k == coils {
                        0.0
                    } else if k % 2 == 0 {
                        4.0
                    } else {
                        -4.0
                    };
                    let next = Vec2::new(wall.x + t * (mass.x - 5.0 - wall.x), o.y + y);
                    gizmos.line_2d(last, next, ink);
                    last = next;
                }
                gizmos.rect_2d(
                    Isometry2d::from_translation(mass),
                    Vec2::splat(10.0),
                    Color::srgb(0.4, 0.7, 1.0),
                );
            }
            "pendulum" | "dno" => {
                let pivot = o + Vec2::new(0.0, 14.0);
                let bob = pivot + 22.0 * Vec2::new(x[0].sin(), -x[0].cos());
                gizmos.line_2d(pivot, bob, ink);
                gizmos
                    .circle_2d(
                        Isometry2d::from_translation(bob),
                        4.0,
                        Color::srgb(1.0, 0.75, 0.3),
                    )
                    .resolution(12);
                if family == "dno" && x.len() == 3 {
                    let absorbed = if energy.initial_entropy.is_finite() {
                        (energy.entropy - energy.initial_entropy).max(0.0)
                    } else {
                        0.0
                    };
                    let bath = Isometry2d::from_translation(o + Vec2::new(0.0, -16.0));
                    gizmos.rect_2d(bath, Vec2::new(26.0, 6.0), heat((absorbed / 2.0).tanh()));
                }
            }
            "duffing" => {
                let mut last = None;
                for k in 0..=16 {
                    let u = -1.6 + 3.2 * k as f32 / 16.0;
                    let v = o + Vec2::new(u * s, (0.5 * u * u + 0.25 * u.powi(4)) * 6.0 - 10.0);
                    if let Some(l) = last {
                        gizmos.line_2d(l, v, ink);
                    }
                    last = Some(v);
                }
                let q = x[0].clamp(-1.6, 1.6);
                let particle = o + Vec2::new(q * s, (0.5 * q * q + 0.25 * q.powi(4)) * 6.0 - 6.0);
                gizmos
                    .circle_2d(
                        Isometry2d::from_translation(particle),
                        3.5,
                        Color::srgb(0.6, 1.0, 0.6),
                    )
                    .resolution(10);
            }
            "tgc" if x.len() == 4 => {
                let (w, h) = (40.0, 16.0);
                gizmos.rect_2d(Isometry2d::from_translation(o), Vec2::new(w, h), ink);
                let wall = o.x - w / 2.0 + (x[0] / 2.0).clamp(0.0, 1.0) * w;
                gizmos.line_2d(
                    Vec2::new(wall, o.y - h / 2.0),
                    Vec2::new(wall, o.y + h / 2.0),
                    Color::WHITE,
                );
                // Each gas coloured by its learned temperature Tᵢ = ∂E/∂Sᵢ (scale: 0 … 3).
                let [t1, t2] = energy.temperatures;
                let (c1, c2) = if t1.is_finite() && t2.is_finite() {
                    (heat(t1 / 3.0), heat(t2 / 3.0))
                } else {
                    (ink, ink)
                };
                gizmos.rect_2d(
                    Isometry2d::from_translation(Vec2::new((o.x - w / 2.0 + wall) / 2.0, o.y)),
                    Vec2::new((wall - (o.x - w / 2.0)).max(1.0) - 2.0, h - 4.0),
                    c1,
                );
                gizmos.rect_2d(
                    Isometry2d::from_translation(Vec2::new((o.x + w / 2.0 + wall) / 2.0, o.y)),
                    Vec2::new(((o.x + w / 2.0) - wall).max(1.0) - 2.0, h - 4.0),
                    c2,
                );
            }
            _ => {
                gizmos.circle_2d(
                    Isometry2d::from_translation(o + Vec2::new(x[0] * s, 0.0)),
                    3.0,
                    ink,
                );
            }
        }
        if settings.bars && energy.energy.is_finite() && energy.initial.is_finite() {
            let ratio = (energy.energy / energy.initial.abs().max(1e-6)).clamp(0.0, 2.0);
            let base = o + Vec2::new(26.0, -12.0);
            gizmos.line_2d(
                base,
                base + Vec2::new(0.0, 12.0 * ratio),
                drift_color(energy.drift()),
            );
            if energy.entropy.is_finite() && energy.initial_entropy.is_finite() {
                let ds = (energy.entropy - energy.initial_entropy).max(0.0);
                let b2 = base + Vec2::new(4.0, 0.0);
                gizmos.line_2d(
                    b2,
                    b2 + Vec2::new(0.0, 12.0 * (ds / 2.0).tanh()),
                    Color::srgb(1.0, 0.5, 0.2),
                );
            }
        }
    }
    for (origin, points) in portraits.values() {
        let (w, h) = (70.0, 70.0);
        let corner = *origin + Vec2::new(-90.0, 10.0);
        gizmos.rect_2d(
            Isometry2d::from_translation(corner),
            Vec2::new(w, h),
            Color::srgba(0.6, 0.6, 0.7, 0.6),
        );
        let (mq, mp) = points.iter().fold((1e-6f32, 1e-6f32), |(a, b), p| {
            (a.max(p.x.abs()), b.max(p.y.abs()))
        });
        for p in points {
            let v = corner + Vec2::new(p.x / mq * w * 0.45, p.y / mp * h * 0.45);
            gizmos.line_2d(v - Vec2::X, v + Vec2::X, Color::srgb(0.5, 0.9, 1.0));
        }
    }
}

fn label_populations(
    mut commands: Commands,
    bodies: Query<(&Population, &Transform)>,
    labels: Query<(Entity, &PopulationLabel)>,
) {
    let mut wanted: BTreeMap<String, Vec2> = BTreeMap::new();
    for (p, t) in &bodies {
        if p.member == 0 {
            wanted.insert(
                format!("{} ({})", p.name, p.family),
                t.translation.truncate() + Vec2::new(0.0, 40.0),
            );
        }
    }
    for (e, l) in &labels {
        if wanted.remove(&l.0).is_none() {
            commands.entity(e).despawn();
        }
    }
    for (text, at) in wanted {
        commands.spawn((
            PopulationLabel(text.clone()),
            Text2d::new(text),
            TextFont {
                font_size: FontSize::Px(14.0),
                ..default()
            },
            Transform::from_xyz(at.x + 60.0, at.y, 1.0),
        ));
    }
}

/// Draws every body and population (see the module docs).
pub struct VisualsPlugin {
    /// The schedule of [`NoetherSystems`] (for remembering the pre-step state).
    pub schedule: Interned<dyn ScheduleLabel>,
}

impl Plugin for VisualsPlugin {
    fn build(&self, app: &mut App) {
        app.register_type::<VisualSettings>()
            .register_type::<PreviousState>()
            .init_resource::<VisualSettings>()
            .add_systems(Startup, spawn_camera)
            .add_systems(
                self.schedule,
                remember_previous.in_set(NoetherSystems::Prepare),
            )
            .add_systems(
                Update,
                (draw_bodies, label_populations).in_set(VisualsSystems::Draw),
            );
    }
}

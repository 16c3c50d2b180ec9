//! [`VisualsPlugin`]: gizmo drawings, energy bars, phase portraits, labels, camera.

use std::collections::BTreeMap;

use bevy::{
    app::{App, Plugin},
    prelude::*,
};
use noether::{runtime::AdaptPhase, systems::Family};

use crate::{
    adapt::{Adaptation, TruthSimulator},
    dynamics::{BodyEnergy, NoetherBody, PhaseState, PreviousState},
    model::NoetherModel,
    scene::Population,
};

/// The gizmo group every noether drawing goes through: configure it (line width, on/off,
/// render layers) with `GizmoConfigStore::config_mut::<NoetherGizmos>()`.
#[derive(Default, Reflect, GizmoConfigGroup)]
#[reflect(Default)]
pub struct NoetherGizmos;

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
    /// Move and zoom the spawned camera so every population is in view.
    pub frame_camera: bool,
    /// Logical pixels on the window's right that a panel covers (the inspector sets it),
    /// left out when framing.
    pub reserved_right: f32,
}

impl Default for VisualSettings {
    fn default() -> Self {
        Self {
            interpolate: true,
            spawn_camera: true,
            scale: 14.0,
            phase_portraits: true,
            bars: true,
            max_drawn_per_population: 10_000,
            frame_camera: true,
            reserved_right: 0.0,
        }
    }
}

/// The view systems, in `Update`.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VisualsSystems {
    /// Gizmos and labels.
    Draw,
}

/// Label entity of a population.
#[derive(Component)]
struct PopulationLabel(String);

/// The camera [`VisualsPlugin`] spawned (and frames).
#[derive(Component, Reflect, Clone, Copy, Debug, Default)]
#[reflect(Component, Default, Debug)]
pub struct NoetherCamera;

/// Each population's name and the box its bodies' anchors span (world units), by index.
#[derive(Resource, Clone, Debug, Default)]
pub struct PopulationBounds(pub BTreeMap<usize, (String, Rect)>);

/// Room around a population's anchors: drawings reach this far beside and below them, the
/// label and phase portrait sit above.
const MARGIN: f32 = 45.0;
const HEADER: f32 = 120.0;
/// Side of a phase portrait.
const PORTRAIT: f32 = 70.0;

fn spawn_camera(
    mut commands: Commands,
    settings: Res<VisualSettings>,
    cameras: Query<(), With<Camera>>,
) {
    if settings.spawn_camera && cameras.is_empty() {
        commands.spawn((Camera2d, NoetherCamera));
    }
}

fn measure_populations(
    bodies: Query<(&Population, &Transform)>,
    mut bounds: ResMut<PopulationBounds>,
) {
    let mut next: BTreeMap<usize, (String, Rect)> = BTreeMap::new();
    for (p, t) in &bodies {
        let at = t.translation.truncate();
        next.entry(p.index)
            .and_modify(|(_, r)| *r = r.union_point(at))
            .or_insert_with(|| {
                (
                    format!("{} ({})", p.name, p.family),
                    Rect::from_center_size(at, Vec2::ZERO),
                )
            });
    }
    if next.len() != bounds.0.len() || next.iter().zip(&bounds.0).any(|(a, b)| a != b) {
        bounds.0 = next;
    }
}

/// Zooms and centres the [`NoetherCamera`] on all populations (with their labels and
/// portraits), in the part of the window no panel covers.
fn frame_camera(
    settings: Res<VisualSettings>,
    bounds: Res<PopulationBounds>,
    windows: Query<&Window, With<bevy::window::PrimaryWindow>>,
    mut cameras: Query<(&mut Transform, &mut Projection), With<NoetherCamera>>,
) {
    let (Ok(window), Some(all)) = (
        windows.single(),
        bounds.0.values().map(|(_, r)| *r).reduce(|a, b| a.union(b)),
    ) else {
        return;
    };
    if !settings.frame_camera {
        return;
    }
    let all = Rect::from_corners(
        all.min - Vec2::splat(MARGIN),
        all.max + Vec2::new(MARGIN, HEADER),
    );
    let (w, h) = (
        (window.width() - settings.reserved_right).max(64.0),
        window.height().max(64.0),
    );
    let scale = (all.width() / w).max(all.height() / h) * 1.04;
    for (mut transform, mut projection) in &mut cameras {
        if let Projection::Orthographic(ortho) = projection.as_mut()
            && (ortho.scale - scale).abs() > 1e-4 * scale
        {
            ortho.scale = scale;
        }
        let centre = all.center() + Vec2::new(0.5 * settings.reserved_right * scale, 0.0);
        if transform.translation.truncate().distance(centre) > 1e-3 {
            transform.translation = centre.extend(transform.translation.z);
        }
    }
}

/// Bodies the views draw keep their pre-step state ([`PreviousState`], kept current by the
/// dynamics) so they can be drawn between fixed steps.
#[expect(
    clippy::type_complexity,
    reason = "a system's query: the bodies drawn that lack a previous state"
)]
fn track_previous(
    mut commands: Commands,
    bodies: Query<(Entity, &PhaseState), (With<NoetherBody>, Without<PreviousState>)>,
) {
    for (e, s) in &bodies {
        commands.entity(e).insert(PreviousState(s.0.clone()));
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
    &'a NoetherBody,
    &'a Transform,
    &'a PhaseState,
    Option<&'a PreviousState>,
    &'a BodyEnergy,
    Option<&'a Population>,
    Option<&'a crate::transform::StateTransform>,
);

/// Pivot and bob of a pendulum drawn at `o` with angle `q` (bodies and their ghosts).
fn pendulum(o: Vec2, q: f32) -> (Vec2, Vec2) {
    let pivot = o + Vec2::new(0.0, 14.0);
    (pivot, pivot + 22.0 * Vec2::new(q.sin(), -q.cos()))
}

fn draw_bodies(
    mut gizmos: Gizmos<NoetherGizmos>,
    settings: Res<VisualSettings>,
    fixed: Res<Time<Fixed>>,
    bounds: Res<PopulationBounds>,
    models: Res<Assets<NoetherModel>>,
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
    for (body, transform, state, prev, energy, pop, follow) in &bodies {
        let index = pop.map_or(usize::MAX, |p| p.index);
        let n = drawn.entry(index).or_default();
        let x = prev.map_or_else(|| state.0.clone(), |p| p.lerp(state, alpha));
        if x.is_empty() {
            continue;
        }
        if let Some(p) = pop
            && settings.phase_portraits
            && x.len() >= 2
        {
            let entry = portraits.entry(p.index).or_insert_with(|| {
                let top_right = bounds
                    .0
                    .get(&p.index)
                    .map_or(transform.translation.truncate(), |(_, r)| {
                        Vec2::new(r.max.x, r.max.y)
                    });
                (
                    top_right + Vec2::new(MARGIN - 0.5 * PORTRAIT, 0.5 * HEADER),
                    Vec::new(),
                )
            });
            if entry.1.len() < settings.max_drawn_per_population {
                entry.1.push(Vec2::new(x[0], x[1]));
            }
        }
        if *n >= settings.max_drawn_per_population {
            continue;
        }
        *n += 1;
        // A body whose transform follows its state is drawn at its resting origin.
        let o = follow
            .map_or(transform.translation, |f| f.origin)
            .truncate();
        let family = models.get(&body.model).map(|m| m.family());
        let ink = Color::srgb(0.85, 0.85, 0.9);
        match family {
            Some(Family::MassSpring) => {
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
            Some(Family::Pendulum | Family::Dno) => {
                let (pivot, bob) = pendulum(o, x[0]);
                gizmos.line_2d(pivot, bob, ink);
                gizmos
                    .circle_2d(
                        Isometry2d::from_translation(bob),
                        4.0,
                        Color::srgb(1.0, 0.75, 0.3),
                    )
                    .resolution(12);
                if family == Some(Family::Dno) && x.len() == 3 {
                    let absorbed = if energy.initial_entropy.is_finite() {
                        (energy.entropy - energy.initial_entropy).max(0.0)
                    } else {
                        0.0
                    };
                    let bath = Isometry2d::from_translation(o + Vec2::new(0.0, -16.0));
                    gizmos.rect_2d(bath, Vec2::new(26.0, 6.0), heat((absorbed / 2.0).tanh()));
                }
            }
            Some(Family::Duffing) => {
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
            Some(Family::Tgc) if x.len() == 4 => {
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
            // The mechanical energy now over at the start: 1 while it holds.
            let ratio = (1.0 + energy.relative_change()).clamp(0.0, 2.0);
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
    for (corner, points) in portraits.values() {
        let (w, h) = (PORTRAIT, PORTRAIT);
        let corner = *corner;
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
    bounds: Res<PopulationBounds>,
    labels: Query<(Entity, &PopulationLabel)>,
) {
    if !bounds.is_changed() {
        return;
    }
    let mut wanted: BTreeMap<String, Vec2> = bounds
        .0
        .values()
        .map(|(name, r)| {
            (
                name.clone(),
                Vec2::new(r.min.x - 0.5 * MARGIN, r.max.y + 0.5 * HEADER),
            )
        })
        .collect();
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
                font_size: FontSize::Px(16.0),
                ..default()
            },
            bevy::sprite::Anchor::CENTER_LEFT,
            Transform::from_xyz(at.x, at.y, 1.0),
        ));
    }
}

/// Observed bodies: the hidden truth as a faint ghost beside the learned body (the two
/// fall into step as the latent converges), and a dot coloured by the adaptation phase
/// (grey observing, amber adapting, green converged, red diverged).
fn draw_truth_ghosts(
    mut gizmos: Gizmos<NoetherGizmos>,
    settings: Res<VisualSettings>,
    bodies: Query<(&Transform, &TruthSimulator, &Adaptation, &Population)>,
) {
    let ghost = Color::srgba(0.5, 0.9, 1.0, 0.55);
    let mut drawn: BTreeMap<usize, usize> = BTreeMap::new();
    for (transform, truth, adaptation, pop) in &bodies {
        let n = drawn.entry(pop.index).or_default();
        if *n >= settings.max_drawn_per_population {
            continue;
        }
        *n += 1;
        let o = transform.translation.truncate();
        let q = truth.state().first().copied().unwrap_or(0.0) as f32;
        match pop.family {
            Family::Pendulum | Family::Dno => {
                let (pivot, bob) = pendulum(o, q);
                gizmos.line_2d(pivot, bob, ghost);
                gizmos
                    .circle_2d(Isometry2d::from_translation(bob), 5.5, ghost)
                    .resolution(12);
            }
            Family::MassSpring | Family::Duffing => {
                let at = o + Vec2::new(q * settings.scale, 0.0);
                gizmos.rect_2d(Isometry2d::from_translation(at), Vec2::splat(13.0), ghost);
            }
            _ => {}
        }
        let phase = match adaptation.phase {
            AdaptPhase::Observing => Color::srgb(0.6, 0.6, 0.6),
            AdaptPhase::Adapting => Color::srgb(1.0, 0.7, 0.2),
            AdaptPhase::Converged => Color::srgb(0.3, 0.9, 0.4),
            AdaptPhase::Diverged => Color::srgb(1.0, 0.25, 0.25),
            AdaptPhase::Stalled => Color::srgb(0.75, 0.4, 1.0),
        };
        gizmos
            .circle_2d(
                Isometry2d::from_translation(o + Vec2::new(-20.0, 20.0)),
                2.5,
                phase,
            )
            .resolution(8);
    }
}

/// Draws every body and population (see the module docs), through the [`NoetherGizmos`]
/// group. Not part of [`crate::NoetherPlugins`]: add it to an app with a window, as avian's
/// `PhysicsDebugPlugin`.
#[derive(Default)]
pub struct VisualsPlugin;

impl Plugin for VisualsPlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        app.register_type::<VisualSettings>()
            .register_type::<NoetherCamera>()
            .init_gizmo_group::<NoetherGizmos>()
            .init_resource::<VisualSettings>()
            .init_resource::<PopulationBounds>()
            .add_systems(Startup, spawn_camera)
            .add_systems(
                Update,
                (
                    track_previous,
                    measure_populations,
                    (
                        draw_bodies,
                        draw_truth_ghosts,
                        label_populations,
                        frame_camera,
                    ),
                )
                    .chain()
                    .in_set(VisualsSystems::Draw),
            );
    }
}

//! Bodies that move things: [`StateTransformPlugin`] writes a body's configuration q to its
//! [`Transform`], so a sprite, a mesh or any child entity follows the learned motion.
//!
//! 1. Add the plugin (it is not in [`crate::NoetherPlugins`]: most bodies are drawn by
//!    their own views or not at all).
//! 2. Give a body a [`StateTransform`]: where q = 0 sits, and how q becomes a pose
//!    ([`ConfigurationMap`]).
//! 3. Every frame the body's `Transform` is set from its state interpolated between the last
//!    two fixed steps (by the fixed clock's overstep fraction, as avian's
//!    `TransformInterpolation` does), so motion is smooth at any frame rate; the visual lag
//!    is at most one fixed step.
//!
//! ```no_run
//! use bevy::prelude::*;
//! use bevy_noether::{prelude::*, transform::StateTransformPlugin};
//!
//! fn spawn(mut commands: Commands, server: Res<AssetServer>) {
//!     let model = server.load("models/pendulum-svd5.model.ron");
//!     commands.spawn((
//!         NoetherBody::new(model),
//!         PhaseState(vec![1.0, 0.0]),
//!         StateTransform::new(Vec3::new(0.0, 100.0, 0.0), ConfigurationMap::Swing { length: 80.0 }),
//!         Sprite::from_color(Color::WHITE, Vec2::splat(12.0)),
//!     ));
//! }
//!
//! App::new()
//!     .add_plugins((DefaultPlugins, NoetherPlugins::default(), StateTransformPlugin))
//!     .add_systems(Startup, spawn)
//!     .run();
//! ```
//!
//! | [`ConfigurationMap`] | translation | rotation (about z) |
//! |---|---|---|
//! | `Slide { axis, scale }` | origin + scale · q₀ · axis | none |
//! | `Swing { length }` | origin + length · (sin q₀, −cos q₀, 0) | q₀ |
//! | `Turn` | origin | q₀ |
//! | `Auto { scale }` | `Swing { length: scale }` for pendulum and dno, `Slide` along x otherwise | as chosen |

use bevy::{
    app::{App, Plugin, PostUpdate},
    prelude::*,
    transform::TransformSystems,
};
use noether::systems::Family;

use crate::{
    dynamics::{NoetherBody, PhaseState, PreviousState},
    model::NoetherModel,
};

/// How a body's configuration q becomes a pose (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Reflect)]
#[reflect(Default, Debug)]
pub enum ConfigurationMap {
    /// Chosen from the model's family: pendulum and dno swing, everything else slides
    /// along x; `scale` is the rod length or the world units per unit of q.
    Auto {
        /// World units per unit of q (or the rod length).
        scale: f32,
    },
    /// Along `axis` by `scale · q₀`.
    Slide {
        /// Direction of motion (normalised when used).
        axis: Vec3,
        /// World units per unit of q.
        scale: f32,
    },
    /// A bob on a rod of `length` from the origin, at angle q₀ from straight down, turned
    /// by q₀.
    Swing {
        /// Rod length, world units.
        length: f32,
    },
    /// Turned by q₀ about z, in place.
    Turn,
}

impl Default for ConfigurationMap {
    fn default() -> Self {
        Self::Auto { scale: 40.0 }
    }
}

impl ConfigurationMap {
    /// The pose for configuration `q0` of a body of `family`, relative to the origin.
    pub fn pose(self, q0: f32, family: Option<Family>) -> (Vec3, Quat) {
        match self {
            Self::Auto { scale } => match family {
                Some(Family::Pendulum | Family::Dno) => Self::Swing { length: scale },
                _ => Self::Slide {
                    axis: Vec3::X,
                    scale,
                },
            }
            .pose(q0, family),
            Self::Slide { axis, scale } => (axis.normalize_or_zero() * scale * q0, Quat::IDENTITY),
            Self::Swing { length } => (
                length * Vec3::new(q0.sin(), -q0.cos(), 0.0),
                Quat::from_rotation_z(q0),
            ),
            Self::Turn => (Vec3::ZERO, Quat::from_rotation_z(q0)),
        }
    }
}

/// Makes a body's [`Transform`] follow its configuration (see the module docs).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq)]
#[reflect(Component, Default, Debug)]
#[require(Transform, PreviousState)]
pub struct StateTransform {
    /// Where q = 0 puts the body (world units, or the parent's space for a child).
    pub origin: Vec3,
    /// How q becomes a pose.
    pub map: ConfigurationMap,
    /// Interpolate between the last two fixed steps (default); off: the state of the last
    /// step.
    pub interpolate: bool,
}

impl StateTransform {
    /// At `origin`, posed by `map`, interpolated.
    pub fn new(origin: Vec3, map: ConfigurationMap) -> Self {
        Self {
            origin,
            map,
            interpolate: true,
        }
    }
}

/// The transform writer, in `PostUpdate` before transform propagation.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateTransformSystems;

/// Sets each [`StateTransform`] body's translation and rotation from its (interpolated)
/// state.
fn write_transforms(
    fixed: Res<Time<Fixed>>,
    models: Res<Assets<NoetherModel>>,
    mut bodies: Query<(
        &NoetherBody,
        &StateTransform,
        &PhaseState,
        &PreviousState,
        &mut Transform,
    )>,
) {
    let overstep = fixed.overstep_fraction();
    for (body, follow, state, previous, mut transform) in &mut bodies {
        let alpha = if follow.interpolate { overstep } else { 1.0 };
        let Some(q0) = previous.lerp(state, alpha).first().copied() else {
            continue;
        };
        if !q0.is_finite() {
            continue;
        }
        let family = models.get(&body.model).map(|m| m.family());
        let (offset, rotation) = follow.map.pose(q0, family);
        let translation = follow.origin + offset;
        if transform.translation != translation || transform.rotation != rotation {
            transform.translation = translation;
            transform.rotation = rotation;
        }
    }
}

/// Writes [`StateTransform`] bodies' configurations to their [`Transform`]s.
#[derive(Default)]
pub struct StateTransformPlugin;

impl Plugin for StateTransformPlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        app.register_type::<StateTransform>()
            .configure_sets(
                PostUpdate,
                StateTransformSystems.before(TransformSystems::Propagate),
            )
            .add_systems(PostUpdate, write_transforms.in_set(StateTransformSystems));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poses_follow_the_configuration() {
        let (t, r) = ConfigurationMap::Swing { length: 2.0 }.pose(0.0, None);
        assert!((t - Vec3::new(0.0, -2.0, 0.0)).length() < 1e-6 && r == Quat::IDENTITY);
        let (t, _) = ConfigurationMap::Auto { scale: 10.0 }.pose(0.5, Some(Family::MassSpring));
        assert!((t - Vec3::new(5.0, 0.0, 0.0)).length() < 1e-6);
        let (t, r) = ConfigurationMap::Auto { scale: 1.0 }
            .pose(std::f32::consts::FRAC_PI_2, Some(Family::Pendulum));
        assert!((t - Vec3::X).length() < 1e-6);
        assert!((r.to_euler(EulerRot::XYZ).2 - std::f32::consts::FRAC_PI_2).abs() < 1e-6);
    }
}

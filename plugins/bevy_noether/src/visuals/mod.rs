//! Views of the learned systems (feature `render`): each family drawn so its physics reads
//! at a glance, from the body's state interpolated between fixed steps.
//!
//! | family | drawing |
//! |---|---|
//! | mass_spring | a wall, a spring and a mass displaced by q |
//! | pendulum | a rod and bob at angle q |
//! | duffing | a particle in its double-well-shaped potential |
//! | dno | a pendulum over a bath coloured by the entropy it has absorbed |
//! | tgc | a box split by a moving wall, each gas coloured by its temperature ∂E/∂Sᵢ |
//!
//! Every body also gets an energy bar (green while the learned energy holds, red when it
//! drifts) and, for GENERIC families, an entropy bar; each population gets a gizmo phase
//! portrait of its members' (q, p) and a label. Bodies that adapt online show their hidden
//! truth as a faint ghost and their adaptation phase as a coloured dot.

mod plugin;

pub use plugin::{
    NoetherCamera, NoetherGizmos, PopulationBounds, VisualSettings, VisualsPlugin, VisualsSystems,
};

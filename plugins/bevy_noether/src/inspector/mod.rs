//! The egui inspector (feature `egui`): populations, the selected body's latent code
//! (editable: watch its behaviour change), its energy and entropy over time, drift
//! statistics, step timing, pause / step / speed controls, and for observed bodies their
//! adaptation phase and falling trajectory loss.

use std::collections::VecDeque;

use bevy::{
    app::{App, Plugin},
    prelude::*,
};
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, egui};

use crate::{
    adapt::{Adaptation, AdaptationStats},
    diagnostics::summarize_populations,
    dynamics::{ActiveBackend, BodyEnergy, FrozenBody, LatentCode, PhaseState, StepDiagnostics},
    scene::Population,
    schedule::{Simulation, SimulationControl},
};

/// What the inspector shows (inspector-tweakable).
#[derive(Resource, Reflect, Clone, Debug)]
#[reflect(Resource, Default, Debug)]
pub struct InspectorSettings {
    /// The body whose latent and energy are shown.
    #[reflect(ignore)]
    pub selected: Option<Entity>,
    /// Samples kept in the energy plot.
    pub history: usize,
}

impl Default for InspectorSettings {
    fn default() -> Self {
        Self {
            selected: None,
            history: 600,
        }
    }
}

/// Energy and entropy samples of the selected body.
#[derive(Resource, Default)]
struct Trace {
    entity: Option<Entity>,
    energy: VecDeque<f32>,
    entropy: VecDeque<f32>,
}

fn record(settings: Res<InspectorSettings>, mut trace: ResMut<Trace>, bodies: Query<&BodyEnergy>) {
    if trace.entity != settings.selected {
        *trace = Trace {
            entity: settings.selected,
            ..Trace::default()
        };
    }
    let Some(e) = settings.selected.and_then(|e| bodies.get(e).ok()) else {
        return;
    };
    trace.energy.push_back(e.energy);
    trace.entropy.push_back(e.entropy);
    while trace.energy.len() > settings.history {
        trace.energy.pop_front();
        trace.entropy.pop_front();
    }
}

/// A line plot of `values` in the next `height` pixels of `ui`.
fn plot(ui: &mut egui::Ui, values: &VecDeque<f32>, color: egui::Color32, height: f32) {
    let (rect, _) = ui.allocate_exact_size(
        egui::vec2(ui.available_width(), height),
        egui::Sense::hover(),
    );
    let painter = ui.painter_at(rect);
    painter.rect_stroke(
        rect,
        0.0,
        egui::Stroke::new(1.0, egui::Color32::DARK_GRAY),
        egui::StrokeKind::Inside,
    );
    let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return;
    }
    let (lo, hi) = finite
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let span = (hi - lo).max(1e-9 * hi.abs().max(1.0));
    let points: Vec<egui::Pos2> = finite
        .iter()
        .enumerate()
        .map(|(i, v)| {
            egui::pos2(
                rect.left() + rect.width() * i as f32 / (finite.len() - 1) as f32,
                rect.bottom() - rect.height() * (v - lo) / span,
            )
        })
        .collect();
    painter.add(egui::Shape::line(points, egui::Stroke::new(1.5, color)));
    painter.text(
        rect.left_top(),
        egui::Align2::LEFT_TOP,
        format!("{hi:.6}"),
        egui::FontId::monospace(10.0),
        egui::Color32::GRAY,
    );
    painter.text(
        rect.left_bottom(),
        egui::Align2::LEFT_BOTTOM,
        format!("{lo:.6}"),
        egui::FontId::monospace(10.0),
        egui::Color32::GRAY,
    );
}

#[expect(
    clippy::too_many_arguments,
    reason = "one panel showing several resources and queries"
)]
fn ui(
    mut contexts: EguiContexts,
    mut time: ResMut<Time<Simulation>>,
    step: Res<StepDiagnostics>,
    backend: Res<ActiveBackend>,
    mut settings: ResMut<InspectorSettings>,
    trace: Res<Trace>,
    populations: Query<(Entity, &Population, &BodyEnergy, Has<FrozenBody>)>,
    mut latents: Query<(&mut LatentCode, &PhaseState, Option<&mut Adaptation>)>,
    adaptation: Option<Res<AdaptationStats>>,
    visuals: Option<ResMut<crate::visuals::VisualSettings>>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    let mut root = egui::Ui::new(
        ctx.clone(),
        "noether-root".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(ctx.viewport_rect()),
    );
    let panel = egui::Panel::right("noether-inspector")
        .default_size(300.0)
        .show(&mut root, |ui| {
            ui.heading("noether");
            ui.horizontal(|ui| {
                let label = if time.is_paused() {
                    "▶ resume"
                } else {
                    "⏸ pause"
                };
                if ui.button(label).clicked() {
                    time.toggle_pause();
                }
                if ui.button("step").clicked() {
                    time.pause();
                    time.step_once();
                }
            });
            let mut speed = time.context().speed();
            if ui
                .add(egui::Slider::new(&mut speed, 0.0..=8.0).text("speed"))
                .changed()
            {
                time.set_speed(speed);
            }
            ui.label(format!(
                "{} · {} bodies · {} batches",
                backend.description, step.bodies, step.batches
            ));
            for choice in &backend.choices {
                ui.label(format!(
                    "{} ({} bodies): GPU {:.2} ms, CPU {:.2} ms per step → {}",
                    choice.batch,
                    choice.bodies,
                    choice.gpu_ms,
                    choice.cpu_ms,
                    if choice.gpu { "GPU" } else { "CPU" }
                ));
            }
            if step.frozen > 0 {
                ui.colored_label(
                    egui::Color32::from_rgb(255, 80, 80),
                    format!("{} bodies frozen: non-finite state (see FrozenBody)", step.frozen),
                );
            }
            if step.invalid > 0 {
                ui.colored_label(
                    egui::Color32::from_rgb(255, 120, 90),
                    format!("{} bodies not stepped (see InvalidBody)", step.invalid),
                );
            }
            ui.label(format!(
                "step {:.2} ms · ticks {} · unconverged solves {}",
                step.step_ms, step.ticks, step.non_converged
            ));
            if let Some(a) = adaptation.filter(|a| a.jobs_sent > 0) {
                ui.label(format!(
                    "adaptation: {} observing · {} adapting · {} converged · {} stalled · {} diverged",
                    a.phases[0], a.phases[1], a.phases[2], a.phases[4], a.phases[3]
                ));
                ui.label(format!(
                    "{} updates · {} rejected · worker {:.1} s · frame {:.2} ms",
                    a.updates, a.rejected, a.worker_seconds, a.frame_ms
                ));
            }
            ui.separator();
            ui.label("populations");
            for p in summarize_populations(populations) {
                let first = p.first;
                ui.horizontal(|ui| {
                    if ui
                        .selectable_label(
                            settings.selected == first && first.is_some(),
                            format!("{} · {}: {}", p.name, p.family, p.bodies),
                        )
                        .clicked()
                    {
                        settings.selected = first;
                    }
                    ui.label(format!(
                        "drift {:.1e} (max {:.1e})",
                        p.median_drift, p.max_drift
                    ));
                });
            }
            ui.separator();
            let Some(selected) = settings.selected else {
                ui.label("select a population to inspect its first body");
                return;
            };
            if let Ok((mut latent, state, adaptation)) = latents.get_mut(selected) {
                if let Some(mut a) = adaptation {
                    ui.horizontal(|ui| {
                        ui.label(format!(
                            "adaptation: {:?} · loss {:.2e} · {} updates",
                            a.phase, a.loss, a.updates
                        ));
                        if ui.button("restart").clicked() {
                            a.restart();
                        }
                    });
                    if a.history.len() >= 2 {
                        ui.label("log₁₀ trajectory loss per update");
                        let log: VecDeque<f32> =
                            a.history.iter().map(|v| v.max(1e-12).log10()).collect();
                        plot(ui, &log, egui::Color32::from_rgb(120, 170, 255), 70.0);
                    }
                }
                ui.label(format!(
                    "state: {:?}",
                    state
                        .0
                        .iter()
                        .map(|v| (v * 1000.0).round() / 1000.0)
                        .collect::<Vec<_>>()
                ));
                ui.label("latent code (drag to edit; an adapting body moves it)");
                // Only a moved slider counts as a change (it restarts the energy bookkeeping).
                let mut moved = false;
                for (k, v) in latent.bypass_change_detection().0.iter_mut().enumerate() {
                    moved |= ui
                        .add(egui::Slider::new(v, -3.0..=3.0).text(format!("z{k}")))
                        .changed();
                }
                if moved {
                    latent.set_changed();
                }
            }
            ui.label("learned energy E");
            plot(ui, &trace.energy, egui::Color32::LIGHT_GREEN, 90.0);
            if trace.entropy.iter().any(|v| v.is_finite()) {
                ui.label("learned entropy S");
                plot(
                    ui,
                    &trace.entropy,
                    egui::Color32::from_rgb(255, 140, 60),
                    90.0,
                );
            }
        });
    // Keep the scene framed in the part of the window the panel leaves free.
    let width = panel.response.rect.width();
    if let Some(mut visuals) = visuals
        && (visuals.reserved_right - width).abs() > 0.5
    {
        visuals.reserved_right = width;
    }
    Ok(())
}

/// The inspector's systems: `Record` in `Update`, `Panel` in egui's
/// `EguiPrimaryContextPass`.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InspectorSystems {
    /// The selected body's energy and entropy are sampled.
    Record,
    /// The panel is drawn (and its edits applied).
    Panel,
}

/// The egui inspector panel (adds bevy_egui's [`EguiPlugin`] when absent). Not part of
/// [`crate::NoetherPlugins`]: add it to an app with a window.
#[derive(Default)]
pub struct InspectorPlugin;

impl Plugin for InspectorPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<EguiPlugin>() {
            app.add_plugins(EguiPlugin::default());
        }
        app.register_type::<InspectorSettings>()
            .init_resource::<InspectorSettings>()
            .init_resource::<Trace>()
            .add_systems(Update, record.in_set(InspectorSystems::Record))
            .add_systems(EguiPrimaryContextPass, ui.in_set(InspectorSystems::Panel));
    }
}

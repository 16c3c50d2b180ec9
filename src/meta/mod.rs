//! Meta-learning (docs/protocol.md §5): auto-decoding meta-training, test-time adaptation,
//! optimisation-based baselines, and evaluation.

pub mod adapt;
pub mod baselines;
pub mod encoder;
pub mod eval;
pub mod grid;
pub mod observed;
pub mod optim;
pub mod task;
pub mod train;

pub use adapt::{AdaptConfig, AdaptSolver, Adapted, LatentStart, adapt_latents};
pub use baselines::{
    Baseline, BaselineConfig, BaselineOutcome, Tuning, adapt_baseline, baseline_validation_error,
    train_baseline, tune_baseline,
};
pub use encoder::{
    EncoderError, EncoderEval, EncoderTraining, evaluate_encoder, latent_distance, train_encoder,
};
pub use eval::{
    EvalReport, InstanceMetrics, Stat, TRAINING_BOX_TAIL, evaluate, evaluate_instance, training_box,
};
pub use grid::{
    CellResult, Method, OrderingVerdict, Profile, SHOTS_SWEEP, evaluate_baseline,
    evaluate_modulated, run_cell, run_modulated,
};
pub use observed::{
    FitConfig, FitOutcome, FitState, FitStep, INLINE_VALUES, Observation, ObservedError,
    ObservedPart, Track, Values, fit_latent, fit_step,
};
pub use task::{
    HELD_OUT, META_TEST, META_TRAIN, PROTOCOL, Points, QUERY, SUPPORT, Samples, TRAIN_TRAJECTORIES,
    TaskSet, VALIDATION, system_shots, system_trajectories,
};
pub use train::{
    HistoryPoint, MetaConfig, MetaOutcome, latent_stats, meta_train, query_error, validation_error,
};

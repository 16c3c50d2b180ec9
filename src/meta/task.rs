//! The meta-learning view of a dataset: instances as tasks, split into meta-train and
//! meta-test, with support shots and query trajectories (protocol v2, [`PROTOCOL`]).
//!
//! | instances | role | data used |
//! |---|---|---|
//! | 0 … 69 | meta-train | every sample of trajectories 0–7 ([`TRAIN_TRAJECTORIES`]) |
//! | 60 … 69 | also validation (checkpoint selection) | shots from trajectories 0–4, derivative error on the held-out trajectories 8–9 ([`HELD_OUT`]) |
//! | 70 … 79 | meta-test | shots from trajectories 0–4, ε_traj on 5–9 |
//!
//! Protocol v1 trained on instances 0–59 (every trajectory) and validated on instances
//! 60–69 as if they were test instances; v2 trains on all 70 training instances, as the
//! paper does, and validates on trajectories of ten of them that training never sees.
//!
//! A *shot* is one (x, ẋ) sample of a support trajectory (0–4). The shots of an instance
//! are drawn without replacement by stream `meta/shots` of the instance index, so every
//! method sees the same shots. Shot counts beyond the support pool (150 samples for the
//! 30-sample families) draw from extra support trajectories generated for that instance by
//! the same protocol ([`TaskSet::extra_support`]).
//!
//! A task set may join several datasets of the same state dimension (one base network
//! for mass_spring, pendulum and duffing, the latent selecting the family): instance ids
//! are then global, `dataset index · 80 + instance`, and each split is the union of the
//! datasets' splits.

use std::ops::Range;

use rand::{Rng, RngExt, seq::index::sample};

use crate::{
    data::{Dataset, INSTANCES, TRAJECTORIES, sample_initial_state, stream_rng},
    integrate::Dopri5,
    systems::Family,
};

/// Version of the split, the validation and the test-time adaptation (results record it:
/// cells of an older protocol are run again).
pub const PROTOCOL: u32 = 2;
/// Meta-training instances.
pub const META_TRAIN: Range<usize> = 0..70;
/// Validation instances: training instances whose [`HELD_OUT`] trajectories score a
/// checkpoint.
pub const VALIDATION: Range<usize> = 60..70;
/// Trajectories of a training instance that training samples.
pub const TRAIN_TRAJECTORIES: Range<usize> = 0..8;
/// Trajectories of a training instance that training never sees: the validation query set.
pub const HELD_OUT: Range<usize> = 8..TRAJECTORIES;
/// Meta-test instances.
pub const META_TEST: Range<usize> = 70..80;
/// Support trajectories of validation and test instances; the rest are the query set.
pub const SUPPORT: Range<usize> = 0..5;
/// Query trajectories.
pub const QUERY: Range<usize> = 5..TRAJECTORIES;

/// A batch of (x, ẋ) rows, f32, each row tagged with the task it belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Points {
    /// States, `[rows, n]`.
    pub x: Vec<f32>,
    /// Targets ẋ, `[rows, n]`.
    pub dx: Vec<f32>,
    /// For each row, the index of its task in the batch.
    pub task: Vec<usize>,
}

impl Points {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.task.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.task.is_empty()
    }

    fn push(&mut self, x: &[f64], dx: &[f64], task: usize) {
        self.x.extend(x.iter().map(|v| *v as f32));
        self.dx.extend(dx.iter().map(|v| *v as f32));
        self.task.push(task);
    }
}

/// Tasks of one or more datasets.
#[derive(Clone, Debug)]
pub struct TaskSet<'a> {
    /// The datasets (one, or several of the same state dimension).
    pub datasets: Vec<&'a Dataset>,
}

impl<'a> TaskSet<'a> {
    /// The tasks of one dataset.
    pub fn new(data: &'a Dataset) -> Self {
        Self {
            datasets: vec![data],
        }
    }

    /// The tasks of several datasets of the same state dimension, with global ids.
    ///
    /// # Panics
    /// If the datasets are empty or differ in state dimension.
    pub fn joint(datasets: Vec<&'a Dataset>) -> Self {
        assert!(
            !datasets.is_empty(),
            "TaskSet::joint needs at least one dataset"
        );
        let dim = datasets[0].dim();
        assert!(
            datasets.iter().all(|d| d.dim() == dim),
            "TaskSet::joint: datasets of different state dimensions"
        );
        Self { datasets }
    }

    /// The dataset and local index of global instance `i`.
    pub fn locate(&self, i: usize) -> (&'a Dataset, usize) {
        (self.datasets[i / INSTANCES], i % INSTANCES)
    }

    /// The family of the first dataset (the only one unless joint).
    pub fn family(&self) -> Family {
        self.datasets[0].spec.family
    }

    /// State dimension.
    pub fn dim(&self) -> usize {
        self.datasets[0].dim()
    }

    /// Samples per trajectory of instance `i`.
    pub fn samples_of(&self, i: usize) -> usize {
        self.locate(i).0.samples
    }

    fn split(&self, range: Range<usize>) -> Vec<usize> {
        (0..self.datasets.len())
            .flat_map(|d| range.clone().map(move |i| d * INSTANCES + i))
            .collect()
    }

    /// Global ids of the meta-train instances.
    pub fn meta_train(&self) -> Vec<usize> {
        self.split(META_TRAIN)
    }

    /// Global ids of the validation instances.
    pub fn validation(&self) -> Vec<usize> {
        self.split(VALIDATION)
    }

    /// Global ids of the meta-test instances.
    pub fn meta_test(&self) -> Vec<usize> {
        self.split(META_TEST)
    }

    /// (x, ẋ) of sample `s` of trajectory `j` of instance `i`.
    fn sample(&self, i: usize, j: usize, s: usize) -> (&'a [f64], &'a [f64]) {
        let n = self.dim();
        let (data, local) = self.locate(i);
        let (x, dx) = (data.trajectory(local, j), data.derivatives(local, j));
        (&x[s * n..(s + 1) * n], &dx[s * n..(s + 1) * n])
    }

    /// `points` random samples of the training trajectories ([`TRAIN_TRAJECTORIES`]) of
    /// each of `instances`, tagged by position.
    pub fn batch(&self, instances: &[usize], points: usize, rng: &mut impl Rng) -> Points {
        let mut out = Points::default();
        for (t, &i) in instances.iter().enumerate() {
            let ns = self.samples_of(i);
            for _ in 0..points {
                let k = rng.random_range(0..TRAIN_TRAJECTORIES.len() * ns);
                let (x, dx) = self.sample(i, TRAIN_TRAJECTORIES.start + k / ns, k % ns);
                out.push(x, dx, t);
            }
        }
        out
    }

    /// The `shots` support shots of instance `i` (fixed per instance and shot count:
    /// a prefix of one fixed random order of the support pool).
    pub fn shots(&self, i: usize, shots: usize) -> Points {
        let ns = self.samples_of(i);
        let pool = SUPPORT.len() * ns;
        let (data, local) = self.locate(i);
        let mut rng = stream_rng(
            &format!("meta/shots/{}", data.spec.family),
            data.spec.seed,
            local as u64,
        );
        let order = sample(&mut rng, pool, pool).into_vec();
        let mut out = Points::default();
        for &k in order.iter().take(shots) {
            let (x, dx) = self.sample(i, SUPPORT.start + k / ns, k % ns);
            out.push(x, dx, 0);
        }
        if shots > pool {
            let extra = self.extra_support(i, (shots - pool).div_ceil(ns));
            for (x, dx) in extra.into_iter().take(shots - pool) {
                out.push(&x, &dx, 0);
            }
        }
        out
    }

    /// Every sample of the query trajectories of instance `i` (derivative targets): for a
    /// meta-test instance [`QUERY`], for a training instance its [`HELD_OUT`] trajectories.
    pub fn query_points(&self, i: usize) -> Points {
        let mut out = Points::default();
        let (_, local) = self.locate(i);
        let query = if META_TRAIN.contains(&local) {
            HELD_OUT
        } else {
            QUERY
        };
        for j in query {
            for s in 0..self.samples_of(i) {
                let (x, dx) = self.sample(i, j, s);
                out.push(x, dx, 0);
            }
        }
        out
    }

    /// `count` more support trajectories of instance `i`, drawn and integrated by the
    /// dataset protocol (stream `data/extra-support`), as (x, ẋ) samples.
    pub fn extra_support(&self, i: usize, count: usize) -> Samples {
        let (data, local) = self.locate(i);
        let family = data.spec.family;
        let params = data.params_of(local);
        let sys = family.build(params).expect("dataset parameters are valid");
        let mut rng = stream_rng(
            &format!("data/extra-support/{family}"),
            data.spec.seed,
            local as u64,
        );
        let mut out = Vec::new();
        for _ in 0..count {
            let mut x = sample_initial_state(family, params, &mut rng);
            let mut dopri = Dopri5::new(x.len());
            for s in 0..data.samples {
                if s > 0 {
                    let t = (s - 1) as f64 * data.dt;
                    dopri
                        .integrate(sys.as_ref(), &mut x, t, t + data.dt)
                        .expect("protocol trajectories integrate");
                }
                let mut dx = vec![0.0; x.len()];
                sys.eval(&x, &mut dx);
                out.push((x.clone(), dx));
            }
        }
        out
    }
}

/// (x, ẋ) samples, in order (of one trajectory, or of several end to end).
pub type Samples = Vec<(Vec<f64>, Vec<f64>)>;

/// `count` trajectories of `system` (parameters `params` of `family`) from protocol initial
/// states drawn from `rng`, sampled on the family's grid: (x, ẋ) per sample.
///
/// # Errors
/// The reference integrator's, for a state that leaves the family's domain.
pub fn system_trajectories(
    family: Family,
    system: &dyn crate::systems::System,
    params: &[f64],
    count: usize,
    rng: &mut impl Rng,
) -> Result<Vec<Samples>, crate::integrate::IntegrateError> {
    let spec = family.spec();
    (0..count)
        .map(|_| {
            let mut x = sample_initial_state(family, params, rng);
            let mut dopri = Dopri5::new(x.len());
            let mut out = Vec::with_capacity(spec.samples);
            for s in 0..spec.samples {
                if s > 0 {
                    let t = (s - 1) as f64 * spec.dt;
                    dopri.integrate(system, &mut x, t, t + spec.dt)?;
                }
                let mut dx = vec![0.0; x.len()];
                system.eval(&x, &mut dx);
                out.push((x.clone(), dx));
            }
            Ok(out)
        })
        .collect()
}

/// `shots` (x, ẋ) samples of a system with known parameters, spread over the samples of
/// as many protocol trajectories as needed (what online adaptation and scenes fit latents to).
///
/// # Errors
/// As [`system_trajectories`].
pub fn system_shots(
    family: Family,
    system: &dyn crate::systems::System,
    params: &[f64],
    shots: usize,
    rng: &mut impl Rng,
) -> Result<Points, crate::integrate::IntegrateError> {
    let samples = family.spec().samples;
    let traj = system_trajectories(family, system, params, shots.div_ceil(samples).max(1), rng)?;
    let pool = traj.len() * samples;
    let order = sample(rng, pool, pool).into_vec();
    let mut out = Points::default();
    for &k in order.iter().take(shots) {
        let (x, dx) = &traj[k / samples][k % samples];
        out.push(x, dx, 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetSpec;

    #[test]
    fn shots_are_fixed_nested_and_from_the_support_set() {
        let data = Dataset::generate(&DatasetSpec::new(Family::Pendulum, 0));
        let tasks = TaskSet::new(&data);
        let (five, ten) = (tasks.shots(71, 5), tasks.shots(71, 10));
        assert_eq!(five.len(), 5);
        assert_eq!(
            &ten.x[..10],
            &five.x[..],
            "smaller shot sets are prefixes of larger ones"
        );
        assert_eq!(tasks.shots(71, 10), ten);
        let support: Vec<f32> = SUPPORT
            .flat_map(|j| data.trajectory(71, j).iter().map(|v| *v as f32))
            .collect();
        for row in ten.x.chunks(2) {
            assert!(
                support.chunks(2).any(|s| s == row),
                "shot {row:?} is not a support sample"
            );
        }
        // More shots than the support pool: extra support trajectories of the same instance.
        let many = tasks.shots(71, 300);
        assert_eq!(many.len(), 300);
        let sys = Family::Pendulum.build(data.params_of(71)).unwrap();
        for (x, dx) in many.x.chunks(2).zip(many.dx.chunks(2)).skip(150) {
            let mut f = [0.0; 2];
            sys.eval(&[f64::from(x[0]), f64::from(x[1])], &mut f);
            assert!((f[0] as f32 - dx[0]).abs() < 1e-5 && (f[1] as f32 - dx[1]).abs() < 1e-5);
        }
    }

    #[test]
    fn batches_tag_rows_by_task() {
        let data = Dataset::generate(&DatasetSpec::new(Family::MassSpring, 0));
        let tasks = TaskSet::new(&data);
        let batch = tasks.batch(&[3, 7], 4, &mut stream_rng("test", 0, 0));
        assert_eq!(batch.task, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(batch.x.len(), 16);
        assert_eq!(tasks.query_points(75).len(), QUERY.len() * 30);
    }

    #[test]
    fn training_never_sees_the_validation_trajectories() {
        let data = Dataset::generate(&DatasetSpec::new(Family::MassSpring, 0));
        let tasks = TaskSet::new(&data);
        assert_eq!(tasks.meta_train().len(), 70);
        assert!(
            tasks
                .validation()
                .iter()
                .all(|i| tasks.meta_train().contains(i))
        );
        let rows = |i: usize, trajectories: Range<usize>| -> Vec<Vec<f32>> {
            trajectories
                .flat_map(|j| {
                    data.trajectory(i, j)
                        .chunks(2)
                        .map(|x| x.iter().map(|v| *v as f32).collect())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let i = tasks.validation()[0];
        let held = rows(i, HELD_OUT);
        let batch = tasks.batch(&[i], 2000, &mut stream_rng("test", 1, 0));
        for x in batch.x.chunks(2) {
            assert!(
                !held.iter().any(|h| h == x),
                "a held-out sample {x:?} was trained on"
            );
        }
        assert_eq!(tasks.query_points(i).len(), HELD_OUT.len() * 30);
        let query = tasks.query_points(i);
        assert!(query.x.chunks(2).all(|x| held.iter().any(|h| h == x)));
    }
}

//! `noether reproduce`: the paper's grid (families × methods × seeds), resumable, with
//! tables and figures.
//!
//! Every finished cell is written atomically to `OUT/PROFILE/cells/NAME.ron` (and its
//! model to `OUT/PROFILE/models/NAME.{ron,safetensors}`); a rerun skips finished cells, so
//! Ctrl-C loses at most the cell in progress. The report (tables in the layout of the
//! paper's, next to its published numbers) and the figures are rebuilt from the cell files
//! at the end of every run, with missing cells marked "not yet run".

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use burn::backend::Flex;
use clap::Args;
use noether::{
    data::{DatasetSpec, Split, load_or_generate},
    io::{
        load_model,
        plot::{FieldPanel, Series, field_panels, heatmap, line_chart},
        save_model,
    },
    meta::{
        AdaptConfig, Baseline, CellResult, EvalReport, LatentStart, MetaConfig, Method,
        OrderingVerdict, PROTOCOL, Profile, QUERY, TaskSet, adapt_latents, evaluate_modulated,
        grid::{CellModel, evaluate_baseline},
        run_cell, run_modulated,
    },
    nn::{
        ModelConfig, Modulation,
        cpu::{CpuModel, ModelParams},
    },
    systems::Family,
};
use serde::{Deserialize, Serialize};

use super::{CliResult, count_in, limits, outln, progress_bar};
use noether::io::{is_temporary, write_atomic};

/// Arguments of `noether reproduce`.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// `quick` (short runs, mass_spring and pendulum by default) or `paper` (full protocol).
    #[arg(long, default_value = "quick")]
    profile: Profile,
    /// Families (default: mass_spring, pendulum for quick; all for paper).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<Family>,
    /// Methods (default: the paper's grid).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<Method>,
    /// Seeds (default: the profile's).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Also run the extra experiments: out-of-distribution mass_spring, the λ_φ × λ_z
    /// locality sweep, one base for three families, the latent-dimension ablation
    /// (pendulum SVD(5), d_z ∈ {5, 10, 20}) (default: on for paper).
    #[arg(long)]
    extras: Option<bool>,
    /// Results directory.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Report file (default: OUT/PROFILE/RESULTS.md).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Dataset cache directory.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Only rebuild the report and figures from finished cells.
    #[arg(long)]
    report_only: bool,
    /// Override the profile's outer iterations (smoke tests).
    #[arg(long, value_parser = count_in(1, limits::MAX_ITERATIONS))]
    iterations: Option<usize>,
}

/// An extra experiment's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ExtraResult {
    name: String,
    rows: Vec<ExtraRow>,
}

/// A report's hand-written part starts at this line; regenerating the tables keeps it.
const ANALYSIS_MARKER: &str = "<!-- analysis: kept when the tables are regenerated -->";

fn cell_name(family: Family, method: Method, seed: u64) -> String {
    format!("{family}-{method}-seed{seed}")
}

/// Runs `noether reproduce`.
pub fn run(args: ReproduceArgs) -> CliResult {
    let profile = args.profile;
    let families = if args.systems.is_empty() {
        match profile {
            Profile::Quick => vec![Family::MassSpring, Family::Pendulum],
            Profile::Paper => Family::ALL.to_vec(),
        }
    } else {
        args.systems.clone()
    };
    if args.seeds.len() > limits::MAX_SEEDS {
        return Err(format!(
            "--seeds lists {} seeds; at most {} per run",
            args.seeds.len(),
            limits::MAX_SEEDS
        )
        .into());
    }
    let seeds = if args.seeds.is_empty() {
        profile.seeds()
    } else {
        args.seeds.clone()
    };
    let extras = args.extras.unwrap_or(profile == Profile::Paper);
    let root = args.out.join(profile.name());
    let device = Default::default();
    let started = Instant::now();

    if !args.report_only {
        for &family in &families {
            let methods = if args.methods.is_empty() {
                Method::paper_grid(family)
            } else {
                args.methods.clone()
            };
            for &seed in &seeds {
                let (data, _) =
                    load_or_generate(&args.data, &DatasetSpec::new(family, seed), &|_| ())?;
                let tasks = TaskSet::new(&data);
                for &method in &methods {
                    let name = cell_name(family, method, seed);
                    let path = root.join("cells").join(format!("{name}.ron"));
                    if path.exists() {
                        match read_cell(&path) {
                            Some(cell) if cell.protocol == PROTOCOL => {
                                outln!("{name}: done earlier, skipped");
                                continue;
                            }
                            Some(cell) => outln!(
                                "{name}: done earlier under protocol v{}, running again under v{PROTOCOL}",
                                cell.protocol
                            ),
                            None => outln!(
                                "{name}: {} does not parse, running the cell again",
                                path.display()
                            ),
                        }
                    }
                    let bar = progress_bar(1, &name);
                    let (result, model) = run_cell::<Flex>(
                        family,
                        method,
                        seed,
                        profile,
                        args.iterations,
                        &tasks,
                        &device,
                        &mut |it, total, loss| {
                            bar.set_length(total as u64);
                            bar.set_position(it as u64);
                            if it % 100 == 0 {
                                bar.set_message(format!("{name} {loss:.1e}"));
                            }
                        },
                    );
                    bar.finish_and_clear();
                    save_model(&model.model, &root.join("models").join(&name))?;
                    write_atomic(&path, &to_ron(&result)?)?;
                    let traj = result.report.as_ref().map_or("diverged".into(), |r| {
                        format!("{:.3e}", r.traj_error().mean)
                    });
                    outln!(
                        "{name}: ε_traj {traj} ({:.0} s, {:.0} it/s)",
                        result.train_seconds,
                        result.iterations_per_second
                    );
                }
            }
        }
        if extras {
            run_extras(&root, &args.data, profile, args.iterations, &device)?;
        }
    }
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| root.join("RESULTS.md"));
    write_report(&root, &report, profile, &families, &args.data)?;
    outln!(
        "report: {} ({:.0} s)",
        report.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `path` as seen from the directory `base`: how a report written in `base` links a file at
/// `path` (both taken against the working directory; `..` where `base` goes deeper).
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, base) = (absolute(path), absolute(base));
    let common = path
        .components()
        .zip(base.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in base.components().skip(common) {
        out.push("..");
    }
    for c in path.components().skip(common) {
        out.push(c);
    }
    out
}

fn to_ron<T: Serialize>(v: &T) -> Result<String, Box<dyn std::error::Error>> {
    Ok(ron::ser::to_string_pretty(
        v,
        ron::ser::PrettyConfig::default(),
    )?)
}

/// How a cell's method adapts at test time, with the tuned values and what was tried.
fn test_time_budget(c: &CellResult) -> String {
    match (c.method, &c.tuning) {
        (Method::Modulated(_), _) => "latent: 100 Adam + Gauss–Newton ≤ 100 steps".into(),
        (Method::Baseline(Baseline::Scratch), _) => format!(
            "fresh net: {} Adam steps",
            c.profile.baseline(c.seed).scratch_steps
        ),
        (Method::Baseline(_), Some(t)) => {
            let tried: Vec<String> = t
                .tried
                .iter()
                .map(|(lr, k, v)| format!("{lr:.0e}×{k}: {v:.3}"))
                .collect();
            format!(
                "weights: {} SGD steps at {:.0e} (tuned; validation {})",
                t.chosen.1,
                t.chosen.0,
                tried.join(", ")
            )
        }
        (Method::Baseline(_), None) => {
            let cfg = c.profile.baseline(c.seed);
            format!(
                "weights: {} SGD steps at {:.0e}",
                cfg.inner_steps, cfg.inner_lr
            )
        }
    }
}

/// A finished cell; `None` when the file cannot be read or parsed.
fn read_cell(path: &Path) -> Option<CellResult> {
    ron::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn read_cells(root: &Path) -> Vec<CellResult> {
    let Ok(dir) = fs::read_dir(root.join("cells")) else {
        return Vec::new();
    };
    let mut out: Vec<CellResult> = dir
        .filter_map(Result::ok)
        // Cells, not the hidden temporaries a killed write leaves (`io::temp_beside`).
        .filter(|e| !is_temporary(&e.path()))
        .filter(|e| e.path().extension().is_some_and(|x| x == "ron"))
        .filter_map(|e| ron::from_str(&fs::read_to_string(e.path()).ok()?).ok())
        .collect();
    out.sort_by_key(|c| (c.family, c.method.name(), c.seed));
    out
}

fn read_extras(root: &Path) -> Vec<ExtraResult> {
    let Ok(dir) = fs::read_dir(root.join("extras")) else {
        return Vec::new();
    };
    let mut out: Vec<ExtraResult> = dir
        .filter_map(Result::ok)
        .filter(|e| !is_temporary(&e.path()))
        .filter_map(|e| ron::from_str(&fs::read_to_string(e.path()).ok()?).ok())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The latent dimensions of the d_z ablation (pendulum SVD(5); 10 is the grid's).
const DZ_ABLATION: [usize; 3] = [5, 10, 20];

/// Out-of-distribution mass_spring, the locality sweep, the joint three-family base, and
/// the latent-dimension ablation. `iterations` overrides the profile's outer iterations of
/// every training here, as it does the cells' (smoke tests).
fn run_extras(
    root: &Path,
    data_dir: &Path,
    profile: Profile,
    iterations: Option<usize>,
    device: &burn::backend::flex::FlexDevice,
) -> CliResult {
    let extras = root.join("extras");
    // Out of distribution: the seed-0 mass_spring models on m, k ∈ [5, 7].
    let ood_path = extras.join("ood-mass_spring.ron");
    if !ood_path.exists() {
        let (ood, _) = load_or_generate(
            data_dir,
            &DatasetSpec::new(Family::MassSpring, 0).with_split(Split::Ood),
            &|_| (),
        )?;
        let (ind, _) =
            load_or_generate(data_dir, &DatasetSpec::new(Family::MassSpring, 0), &|_| ())?;
        let mut rows = Vec::new();
        for method in Method::paper_grid(Family::MassSpring) {
            let path = root
                .join("models")
                .join(cell_name(Family::MassSpring, method, 0));
            let Ok(model) = load_model::<Flex>(&path, device) else {
                continue;
            };
            let params = ModelParams::from_model(&model);
            for (label, data) in [("in-distribution", &ind), ("out-of-distribution", &ood)] {
                let tasks = TaskSet::new(data);
                let report = match method {
                    Method::Modulated(_) => {
                        evaluate_modulated(&params, &model.config, &tasks, 10, LatentStart::Mean)
                    }
                    Method::Baseline(b) => {
                        let outcome = noether::meta::BaselineOutcome {
                            config: model.config.clone(),
                            params: params.clone(),
                            history: vec![],
                            diverged: None,
                        };
                        evaluate_baseline::<Flex>(
                            &outcome,
                            b,
                            &profile.baseline(0),
                            &tasks,
                            10,
                            device,
                        )
                    }
                };
                let (t, s, f) = summary(Some(&report));
                rows.push((format!("{} ({label})", method.label()), t, s, f));
            }
        }
        write_atomic(
            &ood_path,
            &to_ron(&ExtraResult {
                name: "ood-mass_spring".into(),
                rows,
            })?,
        )?;
    }
    let (pendulum, _) =
        load_or_generate(data_dir, &DatasetSpec::new(Family::Pendulum, 0), &|_| ())?;
    let tasks = TaskSet::new(&pendulum);
    // Latent dimension on pendulum SVD(5), seed 0: d_z ∈ {5, 10, 20}. The grid's cell is
    // d_z = 10 (training is deterministic); it is read when it exists at this protocol.
    let dz_path = extras.join("dz-svd5.ron");
    if !dz_path.exists() {
        let modulation = Modulation::Svd { rank: 5 };
        let grid = ModelConfig::new(Family::Pendulum, modulation).with_seed(0);
        let cell = read_cell(&root.join("cells").join(format!(
            "{}.ron",
            cell_name(Family::Pendulum, Method::Modulated(modulation), 0)
        )))
        .filter(|cell| iterations.is_none() && cell.protocol == PROTOCOL);
        let rows_dir = sweep_dir(&extras, "dz-svd5", iterations);
        let mut rows = Vec::new();
        for dz in DZ_ABLATION {
            let row = match &cell {
                Some(cell) if dz == grid.d_latent => {
                    let (t, s, f) = summary(cell.report.as_ref());
                    (format!("d_z = {dz} (the grid's cell)"), t, s, f)
                }
                _ => sweep_row(&rows_dir, &format!("dz{dz}"), || {
                    let label = format!("d_z = {dz}");
                    let config = grid.clone().with_d_latent(dz);
                    let cfg = profile.meta_with(0, iterations);
                    let (result, _) = train_extra(&config, &cfg, profile, &tasks, device, &label);
                    let (t, s, f) = summary(result.report.as_ref());
                    (label, t, s, f)
                })?,
            };
            rows.push(row);
        }
        write_atomic(
            &dz_path,
            &to_ron(&ExtraResult {
                name: "dz-svd5".into(),
                rows,
            })?,
        )?;
    }
    // Locality sweep on pendulum: λ_φ × λ_z for MR(5) and SVD(5).
    for modulation in [Modulation::Mr { rank: 5 }, Modulation::Svd { rank: 5 }] {
        let path = extras.join(format!("locality-{modulation}.ron"));
        if path.exists() {
            continue;
        }
        let rows_dir = sweep_dir(&extras, &format!("locality-{modulation}"), iterations);
        let mut rows = Vec::new();
        for lphi in [1e-2, 1e-3, 1e-4] {
            for lz in [1e-1, 1e-2, 1e-3] {
                rows.push(sweep_row(
                    &rows_dir,
                    &format!("phi{lphi:e}-z{lz:e}"),
                    || {
                        let mut cfg = profile.meta_with(0, iterations);
                        cfg.lambda_phi = lphi;
                        cfg.lambda_z = lz;
                        cfg.adapt.lambda_z = lz;
                        let config = ModelConfig::new(Family::Pendulum, modulation);
                        let (result, _) = train_extra(
                            &config,
                            &cfg,
                            profile,
                            &tasks,
                            device,
                            &format!("locality {modulation}"),
                        );
                        let (t, s, f) = summary(result.report.as_ref());
                        (format!("λφ={lphi:e} λz={lz:e}"), t, s, f)
                    },
                )?);
            }
        }
        write_atomic(
            &path,
            &to_ron(&ExtraResult {
                name: format!("locality-{modulation}"),
                rows,
            })?,
        )?;
    }
    // One base for mass_spring, pendulum and duffing: the latent selects the family.
    let joint_path = extras.join("joint-svd5.ron");
    if !joint_path.exists() {
        let families = [Family::MassSpring, Family::Pendulum, Family::Duffing];
        let datasets: Vec<_> = families
            .iter()
            .map(|&f| load_or_generate(data_dir, &DatasetSpec::new(f, 0), &|_| ()).map(|d| d.0))
            .collect::<Result<_, _>>()?;
        let tasks = TaskSet::joint(datasets.iter().collect());
        let config = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 5 });
        let cfg = profile.meta_with(0, iterations);
        let (result, model) = train_extra(&config, &cfg, profile, &tasks, device, "joint svd5");
        save_model(&model.model, &root.join("models").join("joint-svd5-seed0"))?;
        let mut rows = Vec::new();
        if let Some(report) = result.report {
            for (d, family) in families.iter().enumerate() {
                let part: Vec<_> = report
                    .instances
                    .iter()
                    .filter(|m| m.instance / 80 == d)
                    .cloned()
                    .collect();
                let (t, s, f) = summary(Some(&EvalReport { instances: part }));
                rows.push((format!("{family}"), t, s, f));
            }
        }
        write_atomic(
            &joint_path,
            &to_ron(&ExtraResult {
                name: "joint-svd5".into(),
                rows,
            })?,
        )?;
    }
    Ok(())
}

/// Meta-trains and evaluates one model of an extra experiment, with a progress bar.
fn train_extra(
    config: &ModelConfig,
    cfg: &MetaConfig,
    profile: Profile,
    tasks: &TaskSet<'_>,
    device: &burn::backend::flex::FlexDevice,
    label: &str,
) -> (CellResult, CellModel<Flex>) {
    let bar = progress_bar(cfg.iterations as u64, label);
    let out = run_modulated::<Flex>(config, cfg, profile, tasks, device, &mut |it, _, _| {
        bar.set_position(it as u64)
    });
    bar.finish_and_clear();
    out
}

/// A row of an extra experiment: (label, ε_traj mean, ε_traj std, ε_field mean).
type ExtraRow = (String, f64, f64, f64);

/// Where the finished rows of a sweep of several trainings wait until the whole sweep is
/// done (`extras/<name>.rows`; a run with `--iterations N` keeps its own, `….rows-Nit`).
fn sweep_dir(extras: &Path, name: &str, iterations: Option<usize>) -> PathBuf {
    extras.join(match iterations {
        Some(n) => format!("{name}.rows-{n}it"),
        None => format!("{name}.rows"),
    })
}

/// One row of a sweep: read back from `dir/<slug>.ron` when an earlier run finished it,
/// else computed and written there first, so the same command resumes an interrupted
/// sweep (the locality sweep is 18 trainings) where it stopped.
fn sweep_row(
    dir: &Path,
    slug: &str,
    compute: impl FnOnce() -> ExtraRow,
) -> Result<ExtraRow, Box<dyn std::error::Error>> {
    let path = dir.join(format!("{slug}.ron"));
    if let Some(row) = fs::read_to_string(&path)
        .ok()
        .and_then(|text| ron::from_str(&text).ok())
    {
        outln!("{}: done earlier, read back", path.display());
        return Ok(row);
    }
    let started = std::time::Instant::now();
    let row = compute();
    write_atomic(&path, to_ron(&row)?)?;
    outln!(
        "{} ({}): ε_traj {:.3e} ({:.0} s)",
        path.display(),
        row.0,
        row.1,
        started.elapsed().as_secs_f64()
    );
    Ok(row)
}

/// (ε_traj mean, ε_traj std, ε_field mean) of an extra's evaluation; NaN without one (the
/// training diverged).
fn summary(report: Option<&EvalReport>) -> (f64, f64, f64) {
    report.map_or((f64::NAN, f64::NAN, f64::NAN), |r| {
        (
            r.traj_error().mean,
            r.traj_error().std,
            r.field_error().mean,
        )
    })
}

/// Published numbers (docs/protocol.md §7), ×10⁻², (field, traj).
fn paper_numbers(family: Family, method: &str) -> Option<(Option<f64>, Option<f64>)> {
    let t = |f: f64, tr: f64| Some((Some(f), Some(tr)));
    match (family, method) {
        (Family::Pendulum, "Scratch") => t(83.35, 79.84),
        (Family::Pendulum, "MAML") => t(99.13, 52.37),
        (Family::Pendulum, "Reptile") => t(88.72, 75.73),
        (Family::Pendulum, "FW") => t(8.23, 10.65),
        (Family::Pendulum, "Shift") => t(9.76, 12.88),
        (Family::Pendulum, "RO") => t(6.47, 8.27),
        (Family::Pendulum, "SVD(5)") => t(4.62, 5.33),
        (Family::MassSpring, "FW") => t(1.60, 1.31),
        (Family::MassSpring, "SVD(5)") => t(1.51, 1.12),
        (Family::Duffing, "FW") => t(10.30, 2.78),
        (Family::Duffing, "SVD(5)") => t(10.03, 2.30),
        (Family::Dno, "SVD(3)") => Some((None, Some(0.142))),
        _ => None,
    }
}

/// Whether the published number of this cell is given without a unit in its source
/// (docs/protocol.md §7: DNO SVD(3) ε_traj 0.142).
fn unit_unstated(family: Family, method: &str) -> bool {
    (family, method) == (Family::Dno, "SVD(3)")
}

fn fmt_stat(mean: f64, std: f64) -> String {
    if mean.is_finite() {
        format!("{:.2} ± {:.2}", mean * 100.0, std * 100.0)
    } else {
        "∞ (rollout diverged)".into()
    }
}

/// Mean ± std over seeds, or the single value for one seed.
fn fmt_seeds(s: noether::meta::Stat, n: usize) -> String {
    if n > 1 {
        fmt_stat(s.mean, s.std)
    } else if s.mean.is_finite() {
        format!("{:.2}", s.mean * 100.0)
    } else {
        "∞".into()
    }
}

#[expect(clippy::too_many_lines, reason = "one report, written top to bottom")]
fn write_report(
    root: &Path,
    report: &Path,
    profile: Profile,
    families: &[Family],
    data_dir: &Path,
) -> CliResult {
    // Cells of an older protocol are listed apart, not mixed into the tables.
    let (cells, superseded): (Vec<CellResult>, Vec<CellResult>) = read_cells(root)
        .into_iter()
        .partition(|c| c.protocol == PROTOCOL);
    let mut md = String::new();
    let command = match profile {
        Profile::Quick => "reproduce --profile quick".to_owned(),
        Profile::Paper => "reproduce --profile paper --report RESULTS.md".to_owned(),
    };
    md.push_str(&format!(
        "# Results ({profile} profile)\n\nProduced by `cargo run --release -- {}` (protocol v{PROTOCOL}, docs/protocol.md §3–§6: \
         70 training instances, checkpoints chosen on held-out trajectories of ten of them). \
         Errors are ×10⁻², mean ± std over seeds of the mean over the 10 meta-test instances; 10 shots, test-time \
         adaptation of the modulated methods by 100 Adam steps from the mean training latent, then Gauss–Newton on the \
         shot loss to its floor (at most 100 steps). MAML, ANIL and Reptile get the modulations' outer-iteration budget \
         and checkpoint selection; their inner learning rate and step count are chosen on validation from \
         {{1e-3, 1e-2, 1e-1}} × {{5, 20}} by pilots of a twentieth of the budget (the per-family tables list the choice). ε_field is measured on two grids (docs/protocol.md §6): \
         the 50×50 grid over [−3, 3]² of the main table, which reaches beyond the training data for mass_spring \
         (|q| ≤ 1) and duffing (|q| ≤ 1.5) and is out of distribution there, and a grid over the box holding the \
         training states (1st–99th percentile per component), the primary column of the per-family tables \
         (\"—\" for cells run before it was measured).\n\n",
        command
    ));
    // How much of the grid is done (the paper profile runs for days on 2 cores).
    let grid_cells: usize = families
        .iter()
        .map(|&f| Method::paper_grid(f).len() * profile.seeds().len())
        .sum();
    let done = cells
        .iter()
        .filter(|c| families.contains(&c.family) && profile.seeds().contains(&c.seed))
        .count();
    md.push_str(&format!(
        "**Status:** {done} of {grid_cells} grid cells (families × methods × seeds {:?}) finished. \
         Cells not finished yet read \"not yet run\"; the same command resumes the grid where it \
         stopped, without redoing finished cells.\n\n",
        profile.seeds()
    ));
    // Main table: methods × families, "ε_field / ε_traj".
    let all_methods: Vec<Method> = {
        let mut v: Vec<Method> = families
            .iter()
            .flat_map(|&f| Method::paper_grid(f))
            .collect();
        v.dedup_by_key(|m| m.label());
        let mut seen = Vec::new();
        v.retain(|m| {
            if seen.contains(&m.label()) {
                false
            } else {
                seen.push(m.label());
                true
            }
        });
        v
    };
    md.push_str("## ε_field on [−3, 3]² / ε_traj (×10⁻²)\n\n| method |");
    for f in families {
        md.push_str(&format!(" {f} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(families.len()));
    md.push('\n');
    let stats = |family: Family, label: &str| -> Option<(String, String, usize, bool)> {
        let cs: Vec<&CellResult> = cells
            .iter()
            .filter(|c| c.family == family && c.method.label() == label)
            .collect();
        if cs.is_empty() {
            return None;
        }
        let reports: Vec<_> = cs.iter().filter_map(|c| c.report.as_ref()).collect();
        let diverged = cs.iter().any(|c| c.diverged.is_some());
        if reports.is_empty() {
            return Some(("diverged".into(), "diverged".into(), cs.len(), true));
        }
        let tr: Vec<f64> = reports.iter().map(|r| r.traj_error().mean).collect();
        let fi: Vec<f64> = reports.iter().map(|r| r.field_error().mean).collect();
        let (t, f) = (noether::meta::Stat::of(&tr), noether::meta::Stat::of(&fi));
        Some((
            fmt_seeds(f, reports.len()),
            fmt_seeds(t, reports.len()),
            cs.len(),
            diverged,
        ))
    };
    for m in &all_methods {
        md.push_str(&format!("| {} |", m.label()));
        for &f in families {
            let applies = Method::paper_grid(f).iter().any(|x| x.label() == m.label());
            match (applies, stats(f, &m.label())) {
                (false, _) => md.push_str(" — |"),
                (true, None) => md.push_str(" not yet run |"),
                (true, Some((fs, ts, n, div))) => md.push_str(&format!(
                    " {fs} / {ts}{}{} |",
                    if n > 1 {
                        format!(" ({n} seeds)")
                    } else {
                        String::new()
                    },
                    if div {
                        " ⚠ diverged in some seeds"
                    } else {
                        ""
                    }
                )),
            }
        }
        md.push('\n');
    }
    md.push_str("\nPublished (ICML version, docs/protocol.md §7), same layout:\n\n| method |");
    for f in families {
        md.push_str(&format!(" {f} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(families.len()));
    md.push('\n');
    for m in &all_methods {
        md.push_str(&format!("| {} |", m.label()));
        for &f in families {
            match paper_numbers(f, &m.label()) {
                Some((fi, tr)) => md.push_str(&format!(
                    " {} / {}{} |",
                    fi.map_or("—".into(), |v| format!("{v:.2}")),
                    tr.map_or("—".into(), |v| format!("{v:.3}")),
                    if unit_unstated(f, &m.label()) {
                        " *"
                    } else {
                        ""
                    }
                )),
                None => md.push_str(" — |"),
            }
        }
        md.push('\n');
    }
    md.push_str(
        "\n\\* The source states this number without the ×10⁻² of the main table: it reads as \
         0.142 ×10⁻² or as the plain fraction 0.142 = 14.2 ×10⁻²; both verdicts are given under \
         Targets. arXiv v1 reports plain fractions (×100 to compare here): mass_spring ε_traj \
         Scratch 75.0, RO 4.9, MR 5.8.\n",
    );
    // The paper's ordering claim, checked per family on seed-0 ε_traj.
    md.push_str(
        "\n## Ordering: modulation < optimization-based < Scratch (ε_traj, seed 0)\n\n\
         Every modulation below every optimization-based method (MAML, ANIL, Reptile), every \
         optimization-based method below Scratch; exceptions listed with their ε_traj ×10⁻² \
         (`OrderingVerdict`).\n\n| family | verdict |\n|---|---|\n",
    );
    for &family in families {
        let results: Vec<(Method, f64)> = cells
            .iter()
            .filter(|c| c.family == family && c.seed == 0)
            .map(|c| {
                (
                    c.method,
                    c.report
                        .as_ref()
                        .map_or(f64::INFINITY, |r| r.traj_error().mean),
                )
            })
            .collect();
        md.push_str(&format!(
            "| {family} | {} |\n",
            OrderingVerdict::of(&results).describe()
        ));
    }
    // Details per family.
    for &family in families {
        md.push_str(&format!("\n## {family}\n\n| method | seed | ε_traj ×10⁻² | ε_field training box ×10⁻² | ε_field [−3, 3]² ×10⁻² | SSIM [−3, 3]² | structure | zero-start ε_traj | train s | it/s | adapt ms/instance | test-time adaptation |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"));
        for c in cells.iter().filter(|c| c.family == family) {
            let (traj, train_field, field, ssim, structure) = match &c.report {
                Some(r) => {
                    let structure = match (r.energy_drift(), r.generic_worst()) {
                        (Some(d), _) => format!("H drift {:.1e}", d.mean),
                        (_, Some((ls, me, de, ds))) => format!(
                            "‖L∇S‖ {ls:.0e}, ‖M∇E‖ {me:.0e}, max|Ė| {de:.0e}, min Ṡ {ds:.1e}"
                        ),
                        _ => "—".into(),
                    };
                    (
                        fmt_stat(r.traj_error().mean, r.traj_error().std),
                        r.field_error_train()
                            .map_or("—".into(), |f| fmt_stat(f.mean, f.std)),
                        fmt_stat(r.field_error().mean, r.field_error().std),
                        r.ssim().map_or("—".into(), |s| format!("{:.3}", s.mean)),
                        structure,
                    )
                }
                None => (
                    "diverged".into(),
                    "diverged".into(),
                    "diverged".into(),
                    "—".into(),
                    c.diverged.clone().unwrap_or_default(),
                ),
            };
            md.push_str(&format!(
                "| {} | {} | {traj} | {train_field} | {field} | {ssim} | {structure} | {} | {:.0} | {:.0} | {:.1} | {} |\n",
                c.method.label(),
                c.seed,
                c.zero_start.map_or("—".into(), |s| format!("{:.2}", s.mean * 100.0)),
                c.train_seconds,
                c.iterations_per_second,
                c.adapt_seconds_per_instance * 1e3,
                test_time_budget(c)
            ));
        }
        for c in cells
            .iter()
            .filter(|c| c.family == family && c.diverged.is_some())
        {
            md.push_str(&format!(
                "\n{} seed {}: {}\n",
                c.method.label(),
                c.seed,
                c.diverged.as_deref().unwrap_or("")
            ));
        }
    }
    if !superseded.is_empty() {
        md.push_str(&format!(
            "\n## Superseded: cells of an older protocol\n\nRun before protocol v{PROTOCOL} \
             (v1: 60 training instances, validation on 10 held-out instances, test-time adaptation \
             by 100 Adam steps at a constant rate); kept until the same command reruns them.\n\n\
             | family | method | seed | protocol | ε_traj ×10⁻² | ε_field [−3, 3]² ×10⁻² |\n|---|---|---|---|---|---|\n"
        ));
        for c in &superseded {
            let (traj, field) =
                c.report
                    .as_ref()
                    .map_or(("diverged".into(), "diverged".into()), |r| {
                        (
                            fmt_stat(r.traj_error().mean, r.traj_error().std),
                            fmt_stat(r.field_error().mean, r.field_error().std),
                        )
                    });
            md.push_str(&format!(
                "| {} | {} | {} | v{} | {traj} | {field} |\n",
                c.family,
                c.method.label(),
                c.seed,
                c.protocol
            ));
        }
    }
    // Figures: shots sweep per family. The report links them from where it is written.
    let figs = root.join("figures");
    fs::create_dir_all(&figs)?;
    let report_dir = match report.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let link = relative_to(&figs, report_dir);
    let link = link.display();
    md.push_str("\n## Figures\n\n");
    for &family in families {
        let series: Vec<Series> = cells
            .iter()
            .filter(|c| c.family == family && c.seed == 0 && !c.shots_sweep.is_empty())
            .map(|c| Series {
                label: c.method.label(),
                points: c.shots_sweep.iter().map(|&(k, e)| (k as f64, e)).collect(),
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let path = figs.join(format!("shots-{family}.png"));
        line_chart(
            &path,
            &format!("{family}: ε_traj vs shots (seed 0)"),
            "shots",
            "ε_traj",
            &series,
            true,
            true,
        )?;
        md.push_str(&format!("![{family} shots]({link}/shots-{family}.png)\n\n"));
        if let Some(fig) = portrait(root, family, data_dir, &figs)? {
            md.push_str(&format!("![{family} portrait]({link}/{fig})\n\n"));
        }
    }
    // Extras.
    let extras = read_extras(root);
    if !extras.is_empty() {
        md.push_str("## Extra experiments\n\n");
    }
    for e in &extras {
        md.push_str(&format!(
            "### {}\n\n| setting | ε_traj ×10⁻² | ε_field ×10⁻² or ε_traj std |\n|---|---|---|\n",
            e.name
        ));
        for (label, t, s, f) in &e.rows {
            md.push_str(&format!(
                "| {label} | {} | {:.2} |\n",
                fmt_stat(*t, *s),
                if f.is_finite() { f * 100.0 } else { s * 100.0 }
            ));
        }
        if let Some(method) = e.name.strip_prefix("locality-") {
            let values: Vec<Vec<f64>> = e
                .rows
                .chunks(3)
                .map(|r| r.iter().map(|x| x.1).collect())
                .collect();
            let path = figs.join(format!("{}.png", e.name));
            heatmap(
                &path,
                &format!("pendulum {method}: ε_traj"),
                &["1e-2".into(), "1e-3".into(), "1e-4".into()],
                &["1e-1".into(), "1e-2".into(), "1e-3".into()],
                ("λ_z", "λ_φ"),
                &values,
            )?;
            md.push_str(&format!("\n![{}]({link}/{}.png)\n", e.name, e.name));
        }
        md.push('\n');
    }
    // Hand-written analysis below the marker survives regeneration.
    if let Ok(previous) = fs::read_to_string(report)
        && let Some(at) = previous.find(ANALYSIS_MARKER)
    {
        md.push('\n');
        md.push_str(&previous[at..]);
    }
    write_atomic(report, &md)?;
    Ok(())
}

/// A phase portrait of one test instance: the true field and the seed-0 models of the best
/// modulated method and two baselines, each with a query trajectory (true in black, model
/// in red). Without the models (a clone holds the cells, not the models), the portrait an
/// earlier run drew, if any; `None` when there is none.
fn portrait(
    root: &Path,
    family: Family,
    data_dir: &Path,
    figs: &Path,
) -> Result<Option<String>, Box<dyn std::error::Error>> {
    if family.dim() != 2 && family != Family::Dno {
        return Ok(None);
    }
    let (data, _) = load_or_generate(data_dir, &DatasetSpec::new(family, 0), &|_| ())?;
    let tasks = TaskSet::new(&data);
    let instance = tasks.meta_test()[0];
    let sys = family.build(data.params_of(instance))?;
    let n = family.dim();
    let truth_traj: Vec<f64> = data.trajectory(instance, QUERY.start).to_vec();
    // The field's grid range, widened to hold the plotted trajectory.
    let extent = truth_traj
        .chunks(n)
        .fold(3.0f64, |m, x| m.max(x[0].abs()).max(x[1].abs()))
        * 1.05;
    let grid: Vec<(f64, f64)> = (0..15)
        .flat_map(|i| {
            (0..15).map(move |j| {
                (
                    -extent + 2.0 * extent * j as f64 / 14.0,
                    -extent + 2.0 * extent * i as f64 / 14.0,
                )
            })
        })
        .collect();
    let state = |q: f64, p: f64| -> Vec<f64> {
        let mut x = vec![0.0; n];
        x[0] = q;
        x[1] = p;
        x
    };
    let plane = |t: &[f64]| Series {
        label: String::new(),
        points: t.chunks(n).map(|x| (x[0], x[1])).collect(),
    };
    let mut panels = vec![FieldPanel {
        title: "truth".into(),
        arrows: grid
            .iter()
            .map(|&(q, p)| {
                let mut dx = vec![0.0; n];
                sys.eval(&state(q, p), &mut dx);
                (q, p, dx[0], dx[1])
            })
            .collect(),
        trajectories: vec![plane(&truth_traj)],
    }];
    let mut found = false;
    let modulated = Method::paper_grid(family)
        .into_iter()
        .find(|m| matches!(m, Method::Modulated(Modulation::Svd { .. })));
    for method in modulated.into_iter().chain([
        Method::Baseline(noether::meta::Baseline::Maml),
        Method::Baseline(noether::meta::Baseline::Scratch),
    ]) {
        let path = root.join("models").join(cell_name(family, method, 0));
        let Ok(model) = load_model::<Flex>(&path, &Default::default()) else {
            continue;
        };
        found = true;
        let params = ModelParams::from_model(&model);
        let shots = tasks.shots(instance, 10);
        let (cpu, z) = match method {
            Method::Modulated(_) => {
                let z0: Vec<f32> = model
                    .config
                    .mean_latent()
                    .iter()
                    .map(|v| *v as f32)
                    .collect();
                let a = adapt_latents(
                    &params,
                    std::slice::from_ref(&shots),
                    &z0,
                    &AdaptConfig::for_model(&model.config, 10),
                );
                (
                    CpuModel::from_params(&params, &model.config),
                    a.latents[0].clone(),
                )
            }
            Method::Baseline(b) => {
                let outcome = noether::meta::BaselineOutcome {
                    config: model.config.clone(),
                    params: params.clone(),
                    history: vec![],
                    diverged: None,
                };
                let p = noether::meta::adapt_baseline::<Flex>(
                    &outcome,
                    b,
                    &shots,
                    &Profile::Quick.baseline(0),
                    instance,
                    &Default::default(),
                );
                (
                    CpuModel::from_params(&p, &model.config),
                    vec![0.0; model.config.d_latent],
                )
            }
        };
        let xs: Vec<f32> = grid
            .iter()
            .flat_map(|&(q, p)| state(q, p).into_iter().map(|v| v as f32))
            .collect();
        let zs: Vec<f32> = (0..grid.len()).flat_map(|_| z.iter().copied()).collect();
        let mut f = vec![0.0f32; xs.len()];
        cpu.field(&xs, &zs, &mut f);
        let arrows = grid
            .iter()
            .zip(f.chunks(n))
            .map(|(&(q, p), d)| (q, p, f64::from(d[0]), f64::from(d[1])))
            .collect();
        let x0: Vec<f32> = truth_traj[..n].iter().map(|v| *v as f32).collect();
        let roll = noether::meta::eval::rollout_batch(&cpu, &z, &x0, data.dt, data.samples);
        let learned: Vec<f64> = roll.iter().flatten().map(|v| f64::from(*v)).collect();
        panels.push(FieldPanel {
            title: method.label(),
            arrows,
            trajectories: vec![plane(&truth_traj), plane(&learned)],
        });
    }
    let name = format!("portrait-{family}.png");
    if !found {
        // No model here (models are not committed; a fresh clone has the cells alone):
        // keep the portrait an earlier run drew from them, if there is one.
        return Ok(figs.join(&name).exists().then_some(name));
    }
    field_panels(
        &figs.join(&name),
        &format!("{family}, test instance {instance}: field and a query trajectory"),
        ("q", "p"),
        (-extent, extent),
        &panels,
    )?;
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_links_its_figures_from_where_it_is_written() {
        let figs = Path::new("results/paper/figures");
        assert_eq!(relative_to(figs, Path::new(".")), figs);
        assert_eq!(
            relative_to(figs, Path::new("results/paper")),
            Path::new("figures")
        );
        assert_eq!(
            relative_to(figs, Path::new("docs")),
            Path::new("../results/paper/figures")
        );
        assert_eq!(
            relative_to(Path::new("/a/b/figures"), Path::new("/a/c/d")),
            Path::new("../../b/figures")
        );
    }
}

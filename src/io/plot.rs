//! Figures (PNG, plotters' bitmap backend). Text uses the DejaVu Sans font embedded in the
//! binary (`assets/fonts/`), never a system font, so a figure's pixels depend only on its
//! data.

use std::{path::Path, sync::Once};

use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

/// The embedded font (DejaVu Sans, Bitstream Vera licence: `assets/fonts/DejaVu-LICENSE.txt`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Why a figure could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Registers the embedded font as `sans-serif` (once per process). Every figure calls it, so
/// text never falls back to a system font.
pub fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            unreachable!("the embedded font parses");
        }
    });
}

fn err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError {
        path: path.display().to_string(),
        message,
    }
}

/// Distinct series colours.
pub fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// A named polyline.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// Axis ranges covering every finite point, padded by 5%.
fn bounds(series: &[Series], log_x: bool, log_y: bool) -> ((f64, f64), (f64, f64)) {
    let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for p in series.iter().flat_map(|s| &s.points) {
        if ok(p.0, log_x) && ok(p.1, log_y) {
            (x0, x1, y0, y1) = (x0.min(p.0), x1.max(p.0), y0.min(p.1), y1.max(p.1));
        }
    }
    if !x0.is_finite() {
        return ((1.0, 10.0), (1.0, 10.0));
    }
    let pad = |lo: f64, hi: f64, log: bool| {
        if log {
            (lo / 1.3, hi * 1.3)
        } else {
            let d = (hi - lo).max(1e-12) * 0.05;
            (lo - d, hi + d)
        }
    };
    (pad(x0, x1, log_x), pad(y0, y1, log_y))
}

/// A line chart of several series, with optional log axes.
///
/// # Errors
/// [`PlotError`] when the file cannot be written.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
    log_y: bool,
) -> Result<(), PlotError> {
    fonts();
    let e = err(path);
    let tmp = super::temp_beside(path);
    let root = BitMapBackend::new(&tmp, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let ((x0, x1), (y0, y1)) = bounds(series, log_x, log_y);
    macro_rules! draw {
        ($xr:expr, $yr:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d($xr, $yr)
                .map_err(|x| e(x.to_string()))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|x| e(x.to_string()))?;
            for (i, s) in series.iter().enumerate() {
                let color = palette(i);
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| {
                        p.0.is_finite()
                            && p.1.is_finite()
                            && (!log_x || p.0 > 0.0)
                            && (!log_y || p.1 > 0.0)
                    })
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|x| e(x.to_string()))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(|x| e(x.to_string()))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }};
    }
    match (log_x, log_y) {
        (true, true) => draw!((x0..x1).log_scale(), (y0..y1).log_scale()),
        (true, false) => draw!((x0..x1).log_scale(), y0..y1),
        (false, true) => draw!(x0..x1, (y0..y1).log_scale()),
        (false, false) => draw!(x0..x1, y0..y1),
    }
    root.present().map_err(|x| e(x.to_string()))?;
    drop(root);
    // Drawn to a temporary file beside the figure, renamed over it when complete.
    std::fs::rename(&tmp, path).map_err(|x| e(x.to_string()))
}

/// One panel of a vector-field figure: arrows at `points` (x, y, u, v) and trajectories.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldPanel {
    /// Panel title.
    pub title: String,
    /// Arrows (x, y, u, v).
    pub arrows: Vec<(f64, f64, f64, f64)>,
    /// Trajectories in the plane.
    pub trajectories: Vec<Series>,
}

/// Side-by-side phase portraits: each panel's field as arrows (scaled to the grid spacing,
/// coloured by speed) over its trajectories.
///
/// # Errors
/// [`PlotError`] when the file cannot be written.
pub fn field_panels(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    range: (f64, f64),
    panels: &[FieldPanel],
) -> Result<(), PlotError> {
    fonts();
    let e = err(path);
    let tmp = super::temp_beside(path);
    let root = BitMapBackend::new(&tmp, (520 * panels.len() as u32, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 24))
        .map_err(|x| e(x.to_string()))?;
    let areas = root.split_evenly((1, panels.len()));
    let (lo, hi) = range;
    for (area, panel) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(45)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let vmax = panel
            .arrows
            .iter()
            .map(|a| a.2.hypot(a.3))
            .filter(|v| v.is_finite())
            .fold(1e-12, f64::max);
        let spacing = (hi - lo) / (panel.arrows.len() as f64).sqrt().max(1.0);
        for &(x, y, u, v) in &panel.arrows {
            let speed = u.hypot(v);
            if !speed.is_finite() {
                continue;
            }
            let scale = 0.9 * spacing / vmax;
            let (ex, ey) = (x + u * scale, y + v * scale);
            let c = ViridisRGB::get_color_normalized(speed, 0.0, vmax);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, y), (ex, ey)],
                    c.stroke_width(1),
                )))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(std::iter::once(Circle::new((ex, ey), 2, c.filled())))
                .map_err(|x| e(x.to_string()))?;
        }
        for (i, s) in panel.trajectories.iter().enumerate() {
            let color = if i % 2 == 0 { BLACK } else { RED };
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?;
        }
    }
    root.present().map_err(|x| e(x.to_string()))?;
    drop(root);
    // Drawn to a temporary file beside the figure, renamed over it when complete.
    std::fs::rename(&tmp, path).map_err(|x| e(x.to_string()))
}

/// A heat map of `values[row][col]` (log₁₀ colour scale) with the values printed in cells.
///
/// # Errors
/// [`PlotError`] when the file cannot be written.
pub fn heatmap(
    path: &Path,
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    axes: (&str, &str),
    values: &[Vec<f64>],
) -> Result<(), PlotError> {
    fonts();
    let e = err(path);
    let tmp = super::temp_beside(path);
    let root = BitMapBackend::new(&tmp, (700, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let (rows, cols) = (row_labels.len(), col_labels.len());
    let logs: Vec<f64> = values
        .iter()
        .flatten()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.log10())
        .collect();
    let (lo, hi) = logs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..cols as f64, 0.0..rows as f64)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        // Ticks every half cell: the centres carry the row and column labels, the edges none.
        .x_labels(2 * cols + 1)
        .y_labels(2 * rows + 1)
        .x_label_formatter(&|v| cell_label(col_labels, *v))
        .y_label_formatter(&|v| cell_label(row_labels, *v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (r, row) in values.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let color = if v.is_finite() && *v > 0.0 {
                ViridisRGB::get_color_normalized(v.log10(), lo, hi.max(lo + 1e-9))
            } else {
                RGBColor(200, 200, 200)
            };
            let (x, y) = (c as f64, r as f64);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    color.filled(),
                )))
                .map_err(|x| e(x.to_string()))?;
            let text = if v.is_finite() {
                format!("{v:.2e}")
            } else {
                "n/a".into()
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x + 0.2, y + 0.55),
                    ("sans-serif", 15).into_font().color(&WHITE),
                )))
                .map_err(|x| e(x.to_string()))?;
        }
    }
    root.present().map_err(|x| e(x.to_string()))?;
    drop(root);
    // Drawn to a temporary file beside the figure, renamed over it when complete.
    std::fs::rename(&tmp, path).map_err(|x| e(x.to_string()))
}

/// The label of the cell whose centre is at `v` (cells span [i, i + 1)); none off a centre.
fn cell_label(labels: &[String], v: f64) -> String {
    if (v - v.floor() - 0.5).abs() > 1e-6 {
        return String::new();
    }
    labels.get(v.floor() as usize).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heatmap_labels_the_centres_of_its_cells_only() {
        let labels = ["1e-2".to_owned(), "1e-3".to_owned(), "1e-4".to_owned()];
        let at = |v: f64| cell_label(&labels, v);
        assert_eq!(
            (at(0.5), at(1.5), at(2.5)),
            ("1e-2".into(), "1e-3".into(), "1e-4".into())
        );
        assert_eq!(
            (at(0.0), at(1.0), at(3.0), at(3.5)),
            (String::new(), String::new(), String::new(), String::new())
        );
    }

    /// The same data gives the same pixels (the font is embedded), and the files are PNGs.
    #[test]
    fn figures_are_deterministic_pngs() {
        let dir = std::env::temp_dir().join(format!("noether-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let series = vec![Series {
            label: "a".into(),
            points: vec![(1.0, 0.5), (10.0, 0.05), (100.0, 0.01)],
        }];
        let (p1, p2) = (dir.join("a.png"), dir.join("b.png"));
        line_chart(&p1, "t", "x", "y", &series, true, true).unwrap();
        line_chart(&p2, "t", "x", "y", &series, true, true).unwrap();
        let (a, b) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(a, b);
        heatmap(
            &dir.join("h.png"),
            "h",
            &["1".into(), "2".into()],
            &["a".into()],
            ("x", "y"),
            &[vec![0.1], vec![f64::NAN]],
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

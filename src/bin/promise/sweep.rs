//! `promise eval --sweep`: the test-time scaling curve. For every bundle, plain beam search
//! at K' in {1, 2, 4, 8, 16, 32} and PRM-guided search at K+ in {2K', 4K', 8K'}, each
//! over the same users; writes `sweep.json`, `sweep.md` and two PNG plots.
//!
//! The final pool is never smaller than N (K+ = max(m * K', N)), so every config returns N
//! items and Recall@10 compares like with like; a (K', K+) pair that this makes equal to
//! another one is run once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use promise_rt::{Model, SearchConfig};

pub const BEAMS: [usize; 6] = [1, 2, 4, 8, 16, 32];
pub const MULTS: [usize; 3] = [2, 4, 8];

#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub model: String,
    pub numeric: String,
    pub device: String,
    /// "plain" or "prm K+=mK'" (the curve this point belongs to).
    pub curve: String,
    pub beams: usize,
    pub candidates: usize,
    pub prm: bool,
    pub mix: f32,
    pub users: usize,
    #[serde(rename = "recall@5")]
    pub recall5: f64,
    #[serde(rename = "recall@10")]
    pub recall10: f64,
    #[serde(rename = "ndcg@5")]
    pub ndcg5: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg10: f64,
    pub ms_per_request: f64,
}

/// The grid for one bundle: (curve name, config), duplicates dropped.
pub fn grid(results: usize, mix: f32) -> Vec<(String, SearchConfig)> {
    let mut out: Vec<(String, SearchConfig)> = Vec::new();
    for &k in &BEAMS {
        out.push(("plain".into(), SearchConfig::plain(k, results)));
        for &m in &MULTS {
            let cfg = SearchConfig {
                beams: k,
                candidates: (m * k).max(results),
                results,
                prm: true,
                mix,
            };
            if !out.iter().any(|(_, c)| *c == cfg) {
                out.push((format!("prm K+={m}K'"), cfg));
            }
        }
    }
    out
}

/// The model's name in tables: the bundle directory's last component.
pub fn label(bundle: &Path) -> String {
    bundle
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| crate::shown(bundle))
}

pub fn write_outputs(rows: &[Row], out: &Path, command: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", crate::shown(out)))?;
    let json = out.join("sweep.json");
    let doc = serde_json::json!({"command": command, "rows": rows});
    std::fs::write(&json, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("cannot write {}", crate::shown(&json)))?;
    let md = out.join("sweep.md");
    let mut s = format!("Made by `{command}`.\n\n");
    s.push_str(
        "| model | search | K' | K+ | Recall@5 | Recall@10 | NDCG@5 | NDCG@10 | ms/request |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} |\n",
            r.model,
            r.curve,
            r.beams,
            r.candidates,
            r.recall5,
            r.recall10,
            r.ndcg5,
            r.ndcg10,
            r.ms_per_request
        ));
    }
    std::fs::write(&md, s).with_context(|| format!("cannot write {}", crate::shown(&md)))?;
    let p1 = out.join("recall_vs_latency.png");
    plot(rows, &p1, true)?;
    let p2 = out.join("recall_vs_beams.png");
    plot(rows, &p2, false)?;
    Ok(vec![json, md, p1, p2])
}

const FONT: &[u8] = include_bytes!("assets/DejaVuSans.ttf");

/// Recall@10 against mean latency per request (`by_latency`) or against K', one line per
/// (model, curve), both axes log-scaled on x.
fn plot(rows: &[Row], path: &Path, by_latency: bool) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the embedded plot font is not a valid TrueType font"))?;
    let x = |r: &Row| {
        if by_latency {
            r.ms_per_request
        } else {
            r.beams as f64
        }
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for r in rows {
        x0 = x0.min(x(r));
        x1 = x1.max(x(r));
        y0 = y0.min(r.recall10);
        y1 = y1.max(r.recall10);
    }
    let pad = (y1 - y0).max(1e-3) * 0.08;
    let (x0, x1) = (x0 / 1.3, x1 * 1.3);
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    let e =
        |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("cannot draw {}: {e:?}", crate::shown(path));
    root.fill(&WHITE).map_err(e)?;
    let title = if by_latency {
        "Test-time scaling on MovieLens-1M: Recall@10 vs latency per request"
    } else {
        "Recall@10 vs beams K'"
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), (y0 - pad)..(y1 + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(if by_latency {
            "mean latency per request (ms, log scale, 1 thread)"
        } else {
            "K' (log scale)"
        })
        .y_desc("Recall@10 (test split)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    models.dedup();
    let curves = ["plain", "prm K+=2K'", "prm K+=4K'", "prm K+=8K'"];
    let palette = [
        [
            RGBColor(120, 120, 120),
            RGBColor(31, 119, 180),
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
        ],
        [
            RGBColor(40, 40, 40),
            RGBColor(214, 39, 40),
            RGBColor(255, 127, 14),
            RGBColor(140, 86, 75),
        ],
    ];
    for (mi, model) in models.iter().enumerate() {
        for (ci, curve) in curves.iter().enumerate() {
            let mut pts: Vec<(f64, f64, usize)> = rows
                .iter()
                .filter(|r| r.model == *model && r.curve == *curve)
                .map(|r| (x(r), r.recall10, r.beams))
                .collect();
            if pts.is_empty() {
                continue;
            }
            pts.sort_by_key(|p| p.2);
            let color = palette[mi % 2][ci];
            let style = ShapeStyle::from(&color).stroke_width(if ci == 0 { 3 } else { 2 });
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), style))
                .map_err(e)?
                .label(format!("{model}: {curve}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
                )
                .map_err(e)?;
            if ci == 0 && by_latency {
                chart
                    .draw_series(
                        pts.iter().map(|p| {
                            Text::new(format!("K'={}", p.2), (p.0, p.1), ("sans-serif", 13))
                        }),
                    )
                    .map_err(e)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// A `Model`'s numeric format and device, for the rows.
pub fn describe_model(model: &Model) -> (String, String) {
    (
        model.bundle().manifest().numeric.as_str().to_string(),
        format!("{:?}", model.device()).to_lowercase(),
    )
}

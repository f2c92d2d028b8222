//! Benchmark result records: one JSON object a line in `target/bench/results.jsonl`, and the Markdown
//! table in `docs/benchmarks.md`.

use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// One measured figure and what it is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// What was measured.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The same figure for the baseline, measured in the same run.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_name: String,
    /// value / baseline.
    pub ratio: Option<f64>,
    /// Goal, in words (e.g. "ratio <= 1.05").
    pub goal: String,
}

impl Record {
    /// A record with a baseline.
    pub fn compared(
        name: &str,
        value: f64,
        unit: &str,
        baseline: f64,
        baseline_name: &str,
        goal: &str,
    ) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: Some(baseline),
            baseline_name: baseline_name.into(),
            ratio: (baseline > 0.0).then(|| value / baseline),
            goal: goal.into(),
        }
    }
}

/// Percentile of a sorted slice (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes the JSONL file.
pub fn write_jsonl(path: &Path, records: &[Record]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut file = std::fs::File::create(path)?;
    for record in records {
        writeln!(
            file,
            "{}",
            serde_json::to_string(record).unwrap_or_default()
        )?;
    }
    Ok(())
}

/// Renders the Markdown table.
pub fn markdown_table(records: &[Record]) -> String {
    let mut out = String::from(
        "| measurement | value | baseline | ratio | goal |\n|---|---:|---|---:|---|\n",
    );
    for r in records {
        let baseline = r.baseline.map_or_else(
            || "—".to_owned(),
            |b| format!("{b:.1} {} ({})", r.unit, r.baseline_name),
        );
        let ratio = r
            .ratio
            .map_or_else(|| "—".to_owned(), |x| format!("{x:.3}"));
        let _ = writeln!(
            out,
            "| {} | {:.1} {} | {} | {} | {} |",
            r.name, r.value, r.unit, baseline, ratio, r.goal
        );
    }
    out
}

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
        let _ = writeln!(out, "{}", table_row(r));
    }
    out
}

fn table_row(r: &Record) -> String {
    let baseline = r.baseline.map_or_else(
        || "—".to_owned(),
        |b| format!("{b:.1} {} ({})", r.unit, r.baseline_name),
    );
    let ratio = r
        .ratio
        .map_or_else(|| "—".to_owned(), |x| format!("{x:.3}"));
    format!(
        "| {} | {:.1} {} | {} | {} | {} |",
        r.name, r.value, r.unit, baseline, ratio, r.goal
    )
}

/// The Markdown document `doc` with the rows of `records` measured again: a row of the same
/// measurement is replaced where it stands, a new one goes after the table's last row, and the line
/// under the heading says which rows were re-measured when — so running one part of the benchmark
/// (hours less than all of them) keeps the document whole and honest about its dates.
pub fn merge_rows(doc: &str, records: &[Record], when: &str) -> String {
    const REMEASURED: &str = "Re-measured since: ";
    let mut lines: Vec<String> = doc.lines().map(str::to_owned).collect();
    for record in records {
        let prefix = format!("| {} |", record.name);
        if let Some(line) = lines.iter_mut().find(|line| line.starts_with(&prefix)) {
            *line = table_row(record);
        } else if let Some(last) = lines.iter().rposition(|line| line.starts_with("| ")) {
            lines.insert(last + 1, table_row(record));
        } else {
            lines.push(table_row(record));
        }
    }
    let names: Vec<String> = records.iter().map(|r| format!("“{}”", r.name)).collect();
    let note = format!("{REMEASURED}{when}: {}.", names.join(", "));
    if let Some(line) = lines.iter_mut().find(|line| line.starts_with(REMEASURED)) {
        *line = note;
    } else if let Some(table) = lines.iter().position(|line| line.starts_with("| ")) {
        lines.insert(table, String::new());
        lines.insert(table, note);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Benchmarks\n\nProduced on day 1.\n\n| measurement | value | baseline | ratio | goal |\n|---|---:|---|---:|---|\n| a | 1.0 s | — | — | — |\n| b | 2.0 s | — | — | — |\n\nNotes.\n";

    fn record(name: &str, value: f64) -> Record {
        Record::compared(name, value, "s", 1.0, "one", "-")
    }

    #[test]
    fn re_measured_rows_replace_their_old_ones_and_new_rows_join_the_table() {
        let merged = merge_rows(DOC, &[record("b", 4.0), record("c", 3.0)], "day 2");
        let rows: Vec<&str> = merged.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 4, "the heading, a, b and c: {merged}");
        assert_eq!(rows[1], "| a | 1.0 s | — | — | — |");
        assert!(
            rows[2].starts_with("| b | 4.0 s | 1.0 s (one) | 4.000 |"),
            "{merged}"
        );
        assert!(rows[3].starts_with("| c | 3.0 s |"), "{merged}");
        assert!(merged.ends_with("Notes.\n"), "{merged}");
        assert!(
            merged.contains("Re-measured since: day 2: “b”, “c”."),
            "{merged}"
        );

        let again = merge_rows(&merged, &[record("a", 5.0)], "day 3");
        assert_eq!(again.matches("Re-measured since").count(), 1, "{again}");
        assert!(again.contains("Re-measured since: day 3: “a”."));
        assert!(again.contains("| b | 4.0 s |"));
    }
}

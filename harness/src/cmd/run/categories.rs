//! Scores broken down by the prompt file's categories (PartiPrompts' `Category` and
//! `Challenge`): per model state and eval sampler, the mean of each CLIP-based score over the
//! images of each category, all seeds pooled. Written as `categories.csv` / `.parquet` and a
//! report table.

use std::collections::BTreeMap;
use std::path::Path;

use super::intervals::ScoredCell;

/// One row of the breakdown.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CategoryRow {
    pub model: String,
    pub method: String,
    pub train_sampler: String,
    pub eval_sampler: String,
    /// The category column (`Category`, `Challenge`).
    pub field: String,
    pub category: String,
    pub metric: String,
    /// Mean over the category's images and every seed.
    pub value: f64,
    /// Images behind the mean.
    pub n: usize,
}

/// The breakdown of `scored` by `categories` (each a field with one value per prompt; the
/// i-th score of a cell belongs to prompt i).
pub fn rows(scored: &[ScoredCell], categories: &[(String, Vec<String>)]) -> Vec<CategoryRow> {
    type Key = (String, String, String, String, String, String, String);
    let mut acc: BTreeMap<Key, (f64, usize)> = BTreeMap::new();
    for c in scored {
        for (field, values) in categories {
            for (i, v) in c.per_sample.iter().enumerate() {
                let Some(cat) = values.get(i) else { continue };
                if !v.is_finite() {
                    continue;
                }
                let e = acc
                    .entry((
                        c.cell.model.clone(),
                        c.cell.method.clone(),
                        c.cell.train_sampler.clone(),
                        c.cell.eval_sampler.clone(),
                        field.clone(),
                        cat.clone(),
                        c.metric.clone(),
                    ))
                    .or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
    }
    acc.into_iter()
        .map(
            |((model, method, train_sampler, eval_sampler, field, category, metric), (s, n))| {
                CategoryRow {
                    model,
                    method,
                    train_sampler,
                    eval_sampler,
                    field,
                    category,
                    metric,
                    value: s / n as f64,
                    n,
                }
            },
        )
        .collect()
}

/// Write `categories.csv` and `categories.parquet` into `dir`.
pub fn write(rows: &[CategoryRow], dir: &Path) -> anyhow::Result<()> {
    let p = dir.join("categories.csv");
    let mut w = csv::Writer::from_path(&p)?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    adt_reports::csv_to_parquet(&p)?;
    Ok(())
}

/// One report table per category field: a row per category, a column per (metric, model
/// state, eval sampler).
pub fn tables(rows: &[CategoryRow]) -> Vec<adt_reports::render::Table> {
    let mut fields: Vec<&str> = rows.iter().map(|r| r.field.as_str()).collect();
    fields.dedup();
    fields.sort();
    fields.dedup();
    let mut out = Vec::new();
    for field in fields {
        let of: Vec<&CategoryRow> = rows.iter().filter(|r| r.field == field).collect();
        let mut cols: Vec<(String, String, String, String, String)> = of
            .iter()
            .map(|r| {
                (
                    r.metric.clone(),
                    r.model.clone(),
                    r.method.clone(),
                    r.train_sampler.clone(),
                    r.eval_sampler.clone(),
                )
            })
            .collect();
        cols.sort();
        cols.dedup();
        let mut cats: Vec<&str> = of.iter().map(|r| r.category.as_str()).collect();
        cats.sort();
        cats.dedup();
        let mut header = vec![field.to_string(), "n".to_string()];
        header.extend(cols.iter().map(|(metric, model, method, ts, es)| {
            if ts == "-" {
                format!("{metric} {model} {method} @ {es}")
            } else {
                format!("{metric} {model} {method} ({ts}) @ {es}")
            }
        }));
        let rows_out = cats
            .iter()
            .map(|cat| {
                let mut line = vec![cat.to_string()];
                let n = of
                    .iter()
                    .filter(|r| r.category == *cat)
                    .map(|r| r.n)
                    .max()
                    .unwrap_or(0);
                line.push(n.to_string());
                for (metric, model, method, ts, es) in &cols {
                    line.push(
                        of.iter()
                            .find(|r| {
                                r.category == *cat
                                    && &r.metric == metric
                                    && &r.model == model
                                    && &r.method == method
                                    && &r.train_sampler == ts
                                    && &r.eval_sampler == es
                            })
                            .map_or("–".into(), |r| format!("{:.4}", r.value)),
                    );
                }
                line
            })
            .collect();
        out.push(adt_reports::render::Table {
            title: format!("Scores by {field}"),
            header,
            rows: rows_out,
            note: format!(
                "Mean of each score over the images whose prompt has this {field}, all seeds \
                 pooled (n: images per cell and seed). Small categories are noisy."
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use adt_reports::metrics::MetricRow;

    #[test]
    fn scores_average_within_each_category_over_seeds() {
        let cell =
            |seed, method: &str| MetricRow::cell("sd15", method, "-", "ddim:4", 4, 7.5, Some(seed));
        let scored = vec![
            ScoredCell {
                cell: cell(0, "base"),
                metric: "clipscore".into(),
                per_sample: vec![1.0, 2.0, 3.0],
            },
            ScoredCell {
                cell: cell(1, "base"),
                metric: "clipscore".into(),
                per_sample: vec![3.0, 4.0, f64::NAN],
            },
        ];
        let cats = vec![(
            "Category".to_string(),
            vec!["A".into(), "B".into(), "A".into()],
        )];
        let r = rows(&scored, &cats);
        assert_eq!(r.len(), 2);
        let a = r.iter().find(|r| r.category == "A").unwrap();
        assert_eq!(
            (a.value, a.n),
            ((1.0 + 3.0 + 3.0) / 3.0, 3),
            "the NaN is left out"
        );
        let b = r.iter().find(|r| r.category == "B").unwrap();
        assert_eq!((b.value, b.n), (3.0, 2));
        let t = tables(&r);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].rows.len(), 2);
        assert_eq!(t[0].header[2], "clipscore sd15 base @ ddim:4");
        assert_eq!(t[0].rows[0][2], "2.3333");
    }
}

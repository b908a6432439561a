//! What a run is, as MLflow params and tags: the topology's keys as written (with `--set`
//! overrides), flattened to `section.key`, and the plan's summary as `plan.*`.

use crate::job::{Explain, Job};
use brigade_partitioner::apply_override;
use toml::{Table, Value};

/// The run's params: `section.key` for every key the topology sets, then `plan.*`.
pub fn params(job: &Job) -> Vec<(String, String)> {
    let src = &job.plan.topology;
    let mut table: Table = src.toml.parse().unwrap_or_default();
    for o in &src.overrides {
        // Checked when the job was loaded.
        let _ = apply_override(&src.file, &mut table, o);
    }
    let mut out = Vec::new();
    flatten("", &Value::Table(table), &mut out);
    out.extend(plan_summary(job));
    // The server refuses a batch naming a key twice.
    let mut seen = std::collections::HashSet::new();
    out.into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .map(|(k, v)| (k, super::mlflow::param_value(&v)))
        .collect()
}

/// Tags set when the run is created.
pub fn tags(job: &Job, run_id: u64) -> Vec<(String, String)> {
    vec![
        ("brigade.run_id".into(), format!("{run_id:016x}")),
        ("brigade.topology".into(), job.plan.topology.file.clone()),
        ("brigade.job_hash".into(), job.hash_hex()),
        ("mlflow.source.name".into(), "brigade".into()),
        ("mlflow.source.type".into(), "JOB".into()),
    ]
}

fn plan_summary(job: &Job) -> Vec<(String, String)> {
    let topo = &job.topo;
    let mut out = vec![
        ("plan.stages".to_string(), job.ranks().to_string()),
        ("plan.chunks".into(), job.chunks().len().to_string()),
        ("plan.schedule".into(), job.plan.schedule.clone()),
        (
            "plan.microbatches".into(),
            job.plan.microbatches.to_string(),
        ),
        ("plan.replicas".into(), topo.partition.replicas.to_string()),
        ("brigade.version".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    let explain = job
        .plan
        .explain
        .as_ref()
        .and_then(|v| serde_json::from_value::<Explain>(v.clone()).ok());
    if let Some(e) = explain {
        out.push((
            "plan.predicted_step_ms".into(),
            format!("{:.3}", e.plan.step_ms),
        ));
        out.push((
            "plan.predicted_bubble".into(),
            format!("{:.4}", e.plan.bubble_fraction),
        ));
        out.push(("plan.method".into(), e.plan.method));
    }
    out
}

/// `section.key = value` for each scalar; arrays of scalars as TOML; arrays of tables (layers,
/// hosts) as their count and, for layers, the kinds in order.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_table) => {
            out.push((format!("{prefix}.count"), items.len().to_string()));
            let kinds: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("kind").and_then(Value::as_str))
                .collect();
            if !kinds.is_empty() {
                out.push((format!("{prefix}.kinds"), kinds.join(",")));
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topologies_flatten_to_section_keys() {
        let t: Table = r#"
            name = "q"
            [model]
            input = [784]
            layers = [{ kind = "linear", out = 8 }, { kind = "relu" }]
            [train]
            lr = 0.1
            schedule = "1f1b"
        "#
        .parse()
        .unwrap();
        let mut out = Vec::new();
        flatten("", &Value::Table(t), &mut out);
        let want: Vec<(String, String)> = [
            ("model.input", "[784]"),
            ("model.layers.count", "2"),
            ("model.layers.kinds", "linear,relu"),
            ("name", "q"),
            ("train.lr", "0.1"),
            ("train.schedule", "1f1b"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(out, want);
    }
}

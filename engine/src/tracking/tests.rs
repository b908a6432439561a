//! The REST calls and the outbox's decisions, by table: no server needed.

use super::mlflow::{self, Answer, Metric, Status};
use super::outbox::{Outbox, Request, Setup, Step};
use serde_json::json;

fn setup(params: usize) -> Setup {
    Setup {
        experiment: "quickstart".into(),
        run_name: None,
        resume_run: None,
        tags: vec![("brigade.run_id".into(), "00ab".into())],
        params: (0..params)
            .map(|i| (format!("p{i}"), i.to_string()))
            .collect(),
        start_ms: 1,
    }
}

fn metric(key: &str, step: u64, value: f64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp: 5,
        step,
    }
}

fn ok(v: serde_json::Value) -> Answer {
    Answer::Ok(v)
}

fn run_created() -> Answer {
    ok(
        json!({"run": {"info": {"run_id": "r1", "experiment_id": "7", "artifact_uri": "mlflow-artifacts:/7/r1/artifacts"}}}),
    )
}

/// Drives `outbox` through `answers`, one per request it asks for; returns the requests.
fn drive(outbox: &mut Outbox, answers: Vec<Answer>) -> Vec<(Request, Step)> {
    answers
        .into_iter()
        .map(|a| {
            let req = outbox.next().expect("a request");
            let step = outbox.answered(&req, a);
            (req, step)
        })
        .collect()
}

#[test]
fn calls_are_mlflows_rest_api() {
    let c = mlflow::get_experiment("my exp/1");
    assert_eq!(
        (c.method, c.path.as_str()),
        (
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=my%20exp%2F1"
        )
    );
    let c = mlflow::log_batch(
        "r1",
        &[metric("loss", 3, 0.5), metric("loss", 4, f64::NAN)],
        &[("a".into(), "b".into())],
    );
    assert_eq!(c.path, "/api/2.0/mlflow/runs/log-batch");
    let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        body,
        json!({"run_id": "r1", "metrics": [
            {"key": "loss", "value": 0.5, "timestamp": 5, "step": 3},
            {"key": "loss", "value": "NaN", "timestamp": 5, "step": 4},
        ], "params": [{"key": "a", "value": "b"}], "tags": []})
    );
    let c = mlflow::update_run("r1", Status::Killed, Some(9));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&c.body).unwrap(),
        json!({"run_id": "r1", "status": "KILLED", "end_time": 9})
    );
    let up = |uri: &str| mlflow::upload(uri, "m.jsonl", vec![1]).map(|c| c.path);
    for (uri, want) in [
        (
            "mlflow-artifacts:/7/r1/artifacts",
            Ok("/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/m.jsonl"),
        ),
        (
            "mlflow-artifacts://h:5000/7/r1/artifacts/",
            Ok("/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/m.jsonl"),
        ),
        ("s3://bucket/7/r1/artifacts", Err(())),
    ] {
        assert_eq!(up(uri).map_err(|_| ()), want.map(str::to_string), "{uri}");
    }
}

#[test]
fn answers_are_read_by_status_and_body() {
    assert_eq!(mlflow::answer(200, b"{\"a\": 1}"), ok(json!({"a": 1})));
    assert_eq!(mlflow::answer(200, b""), ok(json!({})));
    assert!(
        matches!(mlflow::answer(200, b"<html>hello"), Answer::Failed(w) if w.contains("not MLflow's JSON"))
    );
    assert!(matches!(mlflow::answer(500, b"{}"), Answer::Failed(w) if w.contains("500")));
    assert!(matches!(
        mlflow::answer(0, b"connection refused"),
        Answer::Failed(_)
    ));
    assert_eq!(
        mlflow::answer(
            404,
            br#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}"#
        ),
        Answer::Refused {
            status: 404,
            code: "RESOURCE_DOES_NOT_EXIST".into(),
            message: "no".into()
        }
    );
    assert!(
        matches!(mlflow::answer(403, b"forbidden"), Answer::Refused { status: 403, message, .. } if message == "forbidden")
    );
}

#[test]
fn a_new_experiment_and_run_then_batches_then_the_end() {
    let mut o = Outbox::new(setup(150), 100);
    o.metric(metric("loss", 1, 2.0));
    let not_found = Answer::Refused {
        status: 404,
        code: "RESOURCE_DOES_NOT_EXIST".into(),
        message: String::new(),
    };
    let steps = drive(
        &mut o,
        vec![
            not_found,
            ok(json!({"experiment_id": "7"})),
            run_created(),
            ok(json!({})),
            ok(json!({})),
            ok(json!({})),
        ],
    );
    let reqs: Vec<Request> = steps.iter().map(|s| s.0.clone()).collect();
    assert_eq!(
        reqs,
        [
            Request::FindExperiment("quickstart".into()),
            Request::CreateExperiment("quickstart".into()),
            Request::CreateRun {
                experiment_id: "7".into()
            },
            Request::Log {
                metrics: 0,
                params: 0..100
            },
            Request::Log {
                metrics: 0,
                params: 100..150
            },
            Request::Log {
                metrics: 1,
                params: 150..150
            },
        ]
    );
    assert!(steps.iter().all(|s| s.1 == Step::Done));
    assert_eq!(o.next(), None);
    o.artifact("/tmp/plan.json".into());
    o.end(Status::Finished, 10);
    assert!(!o.settled());
    drive(&mut o, vec![ok(json!({})), ok(json!({}))]);
    assert!(o.settled());
    assert!(o.undelivered().is_empty(), "{:?}", o.undelivered());
}

#[test]
fn a_failing_server_keeps_everything_and_retries_the_same_request() {
    let mut o = Outbox::new(setup(0), 100);
    drive(
        &mut o,
        vec![
            ok(json!({"experiment": {"experiment_id": "7", "lifecycle_stage": "active"}})),
            run_created(),
        ],
    );
    for s in 1..=3 {
        o.metric(metric("loss", s, 1.0));
    }
    let first = o.next().unwrap();
    assert_eq!(
        o.answered(&first, Answer::Failed("down".into())),
        Step::Retry("down".into())
    );
    assert_eq!(o.next(), Some(first.clone()));
    assert_eq!(o.undelivered().metric_values, 3);
    o.answered(&first, ok(json!({})));
    assert_eq!(o.undelivered().metric_values, 0);
}

#[test]
fn restarted_steps_are_not_sent_twice_and_overflow_is_counted() {
    let mut o = Outbox::new(setup(0), 3);
    for s in [1, 2, 3, 2, 3, 4] {
        o.metric(metric("loss", s, 1.0));
    }
    o.metric(metric("val_loss", 4, 1.0));
    // 1 2 3 4 val4 queued, capacity 3: the two oldest dropped.
    assert_eq!(o.pending_values(), 3);
    assert_eq!(o.undelivered().metric_values, 5);
}

#[test]
fn refusals_drop_a_batch_or_end_tracking() {
    let mut o = Outbox::new(setup(2), 100);
    drive(
        &mut o,
        vec![
            ok(json!({"experiment": {"experiment_id": "7"}})),
            run_created(),
        ],
    );
    o.metric(metric("loss", 1, 1.0));
    let bad_param = Answer::Refused {
        status: 400,
        code: "INVALID_PARAMETER_VALUE".into(),
        message: "changed param".into(),
    };
    let steps = drive(&mut o, vec![bad_param]);
    assert!(matches!(&steps[0].1, Step::Dropped(w) if w.contains("changed param")));
    let lost = o.undelivered();
    // The params' batch was refused; the metric still waits for its own.
    assert_eq!((lost.metric_values, lost.params), (1, 2));
    drive(&mut o, vec![ok(json!({}))]);
    assert_eq!(o.undelivered().metric_values, 0);
    o.metric(metric("loss", 2, 1.0));
    let steps = drive(
        &mut o,
        vec![Answer::Refused {
            status: 401,
            code: String::new(),
            message: "no token".into(),
        }],
    );
    assert!(matches!(&steps[0].1, Step::GiveUp(w) if w.contains("MLFLOW_TRACKING_TOKEN")));
    assert_eq!(o.next(), None);
    o.end(Status::Finished, 1);
    assert!(o.settled());
    assert!(o.undelivered().status);
}

#[test]
fn a_deleted_experiment_or_a_continued_run() {
    let mut o = Outbox::new(setup(0), 10);
    let steps = drive(
        &mut o,
        vec![ok(
            json!({"experiment": {"experiment_id": "7", "lifecycle_stage": "deleted"}}),
        )],
    );
    assert!(matches!(&steps[0].1, Step::GiveUp(w) if w.contains("deleted")));
    let mut s = setup(0);
    s.resume_run = Some("r1".into());
    let mut o = Outbox::new(s, 10);
    let steps = drive(&mut o, vec![run_created(), ok(json!({}))]);
    assert_eq!(steps[0].0, Request::GetRun("r1".into()));
    assert_eq!(steps[1].0, Request::Reopen("r1".into()));
    assert_eq!(o.run.artifact_uri, "mlflow-artifacts:/7/r1/artifacts");
}

#[test]
fn credentials_come_from_mlflows_variables() {
    use super::http::auth_header;
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| vars.iter().find(|v| v.0 == k).map(|v| v.1.to_string())
    };
    assert_eq!(
        auth_header(env(&[("MLFLOW_TRACKING_TOKEN", "t")])),
        Some("Bearer t".into())
    );
    assert_eq!(
        auth_header(env(&[
            ("MLFLOW_TRACKING_USERNAME", "u"),
            ("MLFLOW_TRACKING_PASSWORD", "p")
        ])),
        Some("Basic dTpw".into())
    );
    assert_eq!(auth_header(env(&[("MLFLOW_TRACKING_USERNAME", "u")])), None);
}

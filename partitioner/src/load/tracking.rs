//! `[tracking]`: an MLflow server for the run's parameters, metrics and artifacts.

use crate::error::ConfigError;
use crate::reader::Section;
use crate::topology::Tracking;

pub(super) const TRACKING_KEYS: &[&str] = &["mlflow", "experiment", "run_name"];

pub(super) fn tracking(s: &Section) -> Result<Tracking, ConfigError> {
    let mlflow = s.opt_str("mlflow")?.map(str::to_string);
    if let Some(uri) = &mlflow
        && let Err(why) = Tracking::check_uri(uri)
    {
        return Err(s.err(
            "mlflow",
            why,
            "Write the tracking server's address, e.g. `mlflow = \"http://mlflow.example:5000\"`.",
        ));
    }
    let named = |key: &str| -> Result<Option<String>, ConfigError> {
        match s.opt_str(key)? {
            Some(v) if v.trim().is_empty() => Err(s.err(
                key,
                "is empty",
                format!("Give it a name or remove `{key}`."),
            )),
            v => Ok(v.map(str::to_string)),
        }
    };
    let experiment = named("experiment")?;
    let run_name = named("run_name")?;
    Ok(Tracking {
        mlflow,
        experiment,
        run_name,
    })
}

//! Checkpoints that do not depend on the split and never look complete when they are not.
//!
//! `ROOT/step-<8 digits>/` holds, for every layer i, `layer-<i>.safetensors` (its parameters,
//! f32, named by path inside the layer, e.g. `linear.weight`) and `layer-<i>.optim` (its
//! optimizer state, burn's burnpack record). Each stage writes its layers' files (temporary
//! file, fsync, rename), then `stage-<k>.done` — its manifest — last. A checkpoint is complete
//! when the manifests' layer ranges cover every layer of the model exactly once, so a crash
//! mid-write leaves an incomplete checkpoint that resume skips. The data position and every
//! random stream are functions of (seed, step), so the step in the manifest restores them.

use crate::params::NamedParam;
use crate::stage::Stage;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped when the layout changes.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Corrupt { path: String, why: String },
    #[error(
        "{path}: written with train.seed = {found}, this run has {expected}; resume with the same topology"
    )]
    Seed {
        path: String,
        found: u64,
        expected: u64,
    },
}

/// A stage's manifest (`stage-<k>.done`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// Optimizer steps completed.
    pub step: u64,
    pub stage: usize,
    pub stages: usize,
    /// `[start, end)` layers this stage wrote.
    pub layers: [usize; 2],
    pub train_seed: u64,
    pub data_seed: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` so that `path` is either absent or complete.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The directory of the checkpoint after `step` steps.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// A stage's checkpoint in memory: every file's bytes, ready to be written. Taking it is the
/// compute thread's part (a copy of the parameters); [`Snapshot::write`] — files, fsync,
/// renames — can run anywhere.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub manifest: Manifest,
    /// (file name, bytes), the manifest excluded.
    files: Vec<(String, Vec<u8>)>,
}

/// Takes `stage`'s checkpoint after its current step (`stages`: how many stages the job has).
pub fn snapshot(
    stage: &Stage,
    stages: usize,
    train_seed: u64,
    data_seed: u64,
) -> Result<Snapshot, CheckpointError> {
    let label = || format!("stage {} at step {}", stage.index(), stage.step());
    let mut files = Vec::new();
    // A tied head's weight is the embedding's: stored once, in the embedding's file.
    let tied_head = stage.tie().map(|t| t.head);
    for (i, params) in stage.parameters() {
        let views: Vec<(String, TensorView<'_>)> = params
            .iter()
            .filter(|_| Some(i) != tied_head)
            .map(|p| {
                let bytes: &[u8] = bytemuck_f32(&p.values);
                TensorView::new(Dtype::F32, p.shape.clone(), bytes).map(|v| (p.path.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| CheckpointError::Corrupt {
                path: label(),
                why: e.to_string(),
            })?;
        let name = format!("layer-{i}.safetensors");
        let bytes = safetensors::serialize(views, None).map_err(|e| CheckpointError::Corrupt {
            path: format!("{} ({name})", label()),
            why: e.to_string(),
        })?;
        files.push((name, bytes));
    }
    for (i, state) in stage.optimizer_states() {
        let name = format!("layer-{i}.optim");
        let bytes = state.map_err(|why| CheckpointError::Corrupt {
            path: format!("{} ({name})", label()),
            why,
        })?;
        files.push((name, bytes));
    }
    let layers = stage.layers();
    Ok(Snapshot {
        manifest: Manifest {
            format: FORMAT,
            step: stage.step(),
            stage: stage.index(),
            stages,
            layers: [layers.start, layers.end],
            train_seed,
            data_seed,
        },
        files,
    })
}

impl Snapshot {
    /// Writes the checkpoint under `root` (its manifest last); returns the step directory.
    pub fn write(&self, root: &Path) -> Result<PathBuf, CheckpointError> {
        let dir = step_dir(root, self.manifest.step);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("stage-{}.done", self.manifest.stage);
        drop_stale_manifests(&dir, &name, self.manifest.layers);
        for (name, bytes) in &self.files {
            write_atomic(&dir.join(name), bytes)?;
        }
        let path = dir.join(name);
        write_atomic(
            &path,
            &serde_json::to_vec_pretty(&self.manifest).expect("a manifest serialises"),
        )?;
        Ok(dir)
    }
}

/// Removes manifests in `dir` (other than `ours`) whose layers overlap `layers`: a checkpoint of
/// this step begun under another split (before a restart re-planned the job) would otherwise
/// cover those layers twice and never look complete. Their files hold the same values (training
/// is a function of the step), and this split's stages never overlap each other.
fn drop_stale_manifests(dir: &Path, ours: &str, layers: [usize; 2]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(ours);
        if name == ours || path.extension().is_none_or(|e| e != "done") {
            continue;
        }
        let Ok(m) = std::fs::read(&path).map(|b| serde_json::from_slice::<Manifest>(&b)) else {
            continue;
        };
        if m.is_ok_and(|m| m.layers[0] < layers[1] && layers[0] < m.layers[1]) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Saves `stage`'s layers after its current step; returns the checkpoint directory.
pub fn save(
    stage: &Stage,
    root: &Path,
    stages: usize,
    train_seed: u64,
    data_seed: u64,
) -> Result<PathBuf, CheckpointError> {
    snapshot(stage, stages, train_seed, data_seed)?.write(root)
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns; u8 has alignment 1; the length is
    // the byte length of the same allocation. The wire and files are little-endian (checked at
    // compile time in the codec).
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Whether the checkpoint in `dir` covers layers `0..layers` exactly once, with its step.
pub fn complete(dir: &Path, layers: usize) -> Option<u64> {
    let mut covered = vec![0u8; layers];
    let mut step = None;
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "done") {
            continue;
        }
        let m: Manifest = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        // A manifest that does not describe a layer range of this model makes the checkpoint
        // unusable, not the process.
        if m.format != FORMAT
            || *step.get_or_insert(m.step) != m.step
            || m.layers[0] > m.layers[1]
            || m.layers[1] > layers
        {
            return None;
        }
        for c in &mut covered[m.layers[0]..m.layers[1]] {
            *c += 1;
        }
    }
    (covered.iter().all(|&c| c == 1)).then_some(step?)
}

/// The newest complete checkpoint under `root` for a model of `layers` layers.
pub fn latest(root: &Path, layers: usize) -> Option<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .filter_map(|p| complete(&p, layers).map(|s| (s, p)))
        .collect();
    found.sort();
    found.pop()
}

/// Loads `stage`'s layers from the checkpoint in `dir`.
pub fn load(stage: &mut Stage, dir: &Path, train_seed: u64) -> Result<u64, CheckpointError> {
    let mut step = None;
    for entry in std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "done") {
            let m: Manifest = serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?)
                .map_err(|e| CheckpointError::Corrupt {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
            if m.train_seed != train_seed {
                return Err(CheckpointError::Seed {
                    path: path.display().to_string(),
                    found: m.train_seed,
                    expected: train_seed,
                });
            }
            step = Some(m.step);
        }
    }
    let step = step.ok_or_else(|| CheckpointError::Corrupt {
        path: dir.display().to_string(),
        why: "no manifest".into(),
    })?;
    for i in stage.layers() {
        let path = dir.join(format!("layer-{i}.safetensors"));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let corrupt = |why: String| CheckpointError::Corrupt {
            path: path.display().to_string(),
            why,
        };
        let st =
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut values = HashMap::new();
        if let Some(tie) = stage.tie().filter(|t| t.head == i) {
            let head = tied_head_weight(dir, tie)?;
            values.insert(head.path.clone(), head);
        }
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(corrupt(format!(
                    "{name} is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let v = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            values.insert(
                name.clone(),
                NamedParam {
                    path: name,
                    shape: view.shape().to_vec(),
                    values: v,
                },
            );
        }
        stage.load_layer_parameters(i, &values).map_err(corrupt)?;
        let opath = dir.join(format!("layer-{i}.optim"));
        let state = std::fs::read(&opath).map_err(io(&opath))?;
        // After a step, Adam and momentum keep state for every parameter.
        let stateful = step > 0 && stage.stateful_optimizer();
        stage
            .load_optimizer_state(i, state, stateful)
            .map_err(|why| CheckpointError::Corrupt {
                path: opath.display().to_string(),
                why,
            })?;
    }
    stage.set_step(step);
    Ok(step)
}

/// A tied head's weight, from the embedding's file in `dir` (transposed to the head's layout).
fn tied_head_weight(dir: &Path, tie: crate::stage::Tie) -> Result<NamedParam, CheckpointError> {
    let path = dir.join(format!("layer-{}.safetensors", tie.embedding));
    let corrupt = |why: String| CheckpointError::Corrupt {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let view = st
        .tensor("embedding.weight")
        .map_err(|_| corrupt("no embedding.weight, which the tied head shares".into()))?;
    let [vocab, dim] = tie.shape;
    if view.dtype() != Dtype::F32 || view.shape() != [vocab, dim] {
        return Err(corrupt(format!(
            "embedding.weight is {:?} {:?}, expected F32 [{vocab}, {dim}]",
            view.dtype(),
            view.shape()
        )));
    }
    let e: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NamedParam {
        path: "linear.weight".into(),
        shape: vec![dim, vocab],
        values: crate::hf::transpose(&e, vocab, dim),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, stage: usize, layers: [usize; 2]) {
        let m = Manifest {
            format: FORMAT,
            step: 4,
            stage,
            stages: 2,
            layers,
            train_seed: 1,
            data_seed: 1,
        };
        std::fs::write(
            dir.join(format!("stage-{stage}.done")),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn completeness_needs_every_layer_exactly_once() {
        let root = std::env::temp_dir().join(format!("brigade-ckpt-unit-{}", std::process::id()));
        let dir = step_dir(&root, 4);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&dir).unwrap();
        manifest(&dir, 0, [0, 3]);
        assert_eq!(complete(&dir, 6), None, "layers 3..6 missing");
        manifest(&dir, 1, [3, 6]);
        assert_eq!(complete(&dir, 6), Some(4));
        assert_eq!(latest(&root, 6).map(|(s, _)| s), Some(4));
        manifest(&dir, 1, [2, 6]);
        assert_eq!(complete(&dir, 6), None, "layer 2 twice");
        manifest(&dir, 1, [6, 3]);
        assert_eq!(
            complete(&dir, 6),
            None,
            "a reversed range is refused, not a panic"
        );
        std::fs::write(dir.join("stage-1.done"), b"{not json").unwrap();
        assert_eq!(complete(&dir, 6), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_split_writing_over_another_splits_partial_checkpoint_drops_the_overlapping_manifests() {
        let root = std::env::temp_dir().join(format!("brigade-ckpt-stale-{}", std::process::id()));
        let dir = step_dir(&root, 4);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&dir).unwrap();
        // Three stages began step 4; stages 0 and 2 wrote theirs, then the job lost a rank.
        manifest(&dir, 0, [0, 2]);
        manifest(&dir, 2, [4, 6]);
        // Re-planned on two stages: stage 1 now holds layers 3..6.
        drop_stale_manifests(&dir, "stage-1.done", [3, 6]);
        manifest(&dir, 1, [3, 6]);
        assert!(!dir.join("stage-2.done").exists());
        drop_stale_manifests(&dir, "stage-0.done", [0, 3]);
        manifest(&dir, 0, [0, 3]);
        assert_eq!(complete(&dir, 6), Some(4));
        let _ = std::fs::remove_dir_all(&root);
    }
}

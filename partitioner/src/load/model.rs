//! The `[model]`, `[data]` and `[train]` sections.

use crate::error::{ConfigError, did_you_mean};
use crate::layers::{KIND_NAMES, LayerKind};
use crate::reader::{MAX_DIM, Section};
use crate::topology::*;
use toml::{Table, Value};

pub(super) const MODEL_KEYS: &[&str] = &[
    "input",
    "layers",
    "loss",
    "hf",
    "seq",
    "tie_word_embeddings",
];
/// `[data]` keys: `source`, `seed`, and those only a Parquet source reads.
pub(super) fn data_keys() -> Vec<&'static str> {
    [&["source", "seed"][..], PARQUET_KEYS].concat()
}
pub(super) const EVAL_KEYS: &[&str] = &["every"];
/// Keys only a Parquet source reads.
const PARQUET_KEYS: &[&str] = &[
    "path",
    "features",
    "label",
    "tokens",
    "validation",
    "validation_fraction",
    "shuffle_buffer",
    "shuffle",
    "prefetch",
];
pub(super) const TRAIN_KEYS: &[&str] = &[
    "steps",
    "batch",
    "microbatches",
    "schedule",
    "optimizer",
    "lr",
    "seed",
    "momentum",
    "weight_decay",
    "beta1",
    "beta2",
    "eps",
    "recompute",
    "dtype",
    "batch_weight_grads",
    "lr_schedule",
    "warmup_steps",
    "min_lr",
    "clip_grad_norm",
];

/// `[model]`; `base`: the topology file relative paths start from.
pub(super) fn model(s: &Section, base: &str) -> Result<Model, ConfigError> {
    if s.get("hf").is_some() {
        return super::hf::model(s, base);
    }
    if s.get("seq").is_some() {
        return Err(s.err(
            "seq",
            "is read only with model.hf",
            "Write `input = [L]` for a model written as layers.",
        ));
    }
    let input = s.usize_list("input")?.ok_or_else(|| {
        s.err(
            "input",
            "missing",
            "Add one sample's shape, e.g. `input = [64]`.",
        )
    })?;
    if input.is_empty() {
        return Err(s.err(
            "input",
            "is empty",
            "Give one sample's shape, e.g. `input = [64]`.",
        ));
    }
    let items = s
        .opt_array("layers")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            s.err(
                "layers",
                "no layers",
                "Add `layers = [ { kind = \"linear\", out = 10 } ]` to [model].",
            )
        })?;
    check_elements(s, "input", &input)?;
    let names = layer_names(items);
    let mut layers: Vec<Layer> = Vec::with_capacity(items.len());
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (layer, shape) = graph_layer(s, item, i, &names, &input, &shapes)?;
        shapes.push(shape);
        layers.push(layer);
    }
    let shape = shapes.last().cloned().unwrap_or_default();
    check_used(s.file, &layers, &names)?;
    let loss = match s.choice("loss", "cross_entropy", &["cross_entropy", "mse"])? {
        "mse" => Loss::Mse,
        _ => Loss::CrossEntropy,
    };
    if loss == Loss::CrossEntropy && shape.len() > 2 {
        return Err(s.err(
            "loss",
            format!("cross_entropy needs an output shaped [classes] or [tokens, vocab], the model ends with {shape:?}"),
            "Add a flatten and a linear layer before the end, or use loss = \"mse\".",
        ));
    }
    let mut m = Model::new(input, layers, loss);
    if s.opt_bool("tie_word_embeddings")? == Some(true) {
        super::tie::check(s, &m)?;
        m.tie_word_embeddings = true;
    }
    Ok(m)
}

/// Every layer's name first: `inputs` naming a later layer is a clearer error than an unknown
/// name.
fn layer_names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let t = item.as_table();
            t.and_then(|t| t.get("name")?.as_str().map(str::to_string))
                .unwrap_or_else(|| {
                    let kind = t.and_then(|t| t.get("kind")?.as_str()).unwrap_or("layer");
                    format!("{kind}{i}")
                })
        })
        .collect()
}

/// Layer `i` of the model with its inputs resolved and its output shape, given the shapes of
/// the layers before it.
fn graph_layer(
    s: &Section,
    item: &Value,
    i: usize,
    names: &[String],
    input: &[usize],
    shapes: &[Vec<usize>],
) -> Result<(Layer, Vec<usize>), ConfigError> {
    let path = format!("model.layers[{i}]");
    let Value::Table(t) = item else {
        return Err(s.err(
            &format!("layers[{i}]"),
            format!("expected a table, found `{item}`"),
            "Write each layer as `{ kind = \"relu\" }`.",
        ));
    };
    let mut layer = layer(s.file, &path, t, i)?;
    if layer.kind.token_vocab().is_some() && i != 0 {
        return Err(ConfigError::invalid(
            s.file,
            format!("{path}.kind"),
            format!(
                "{} reads token ids: it can only be the first layer",
                layer.kind.name()
            ),
            "Move it to the start of model.layers.",
        ));
    }
    layer.inputs = inputs(s.file, &path, t, i, names, &layer.kind)?;
    let sources: Vec<usize> = if !layer.inputs.is_empty() {
        layer.inputs.clone()
    } else if i == 0 {
        Vec::new()
    } else {
        vec![i - 1]
    };
    let from = |j: &usize| format!("model.layers[{j}] ({})", names[*j]);
    let shape = if layer.kind.is_merge() {
        let ins: Vec<Vec<usize>> = sources.iter().map(|&j| shapes[j].clone()).collect();
        layer.kind.settle(&ins);
        layer.kind.merge_shape(&ins).map_err(|m| {
            let list: Vec<String> = sources.iter().map(from).collect();
            ConfigError::invalid(
                s.file,
                path.clone(),
                format!("{m} (its inputs come from {})", list.join(", ")),
                "Change the merged layers, or merge outputs of one shape (add) or differing only along `dim` (concat).",
            )
        })?
    } else {
        let in_shape = sources.first().map_or(input, |&j| &shapes[j]);
        layer.kind.output_shape(in_shape).map_err(|m| {
            ConfigError::invalid(
                s.file,
                path.clone(),
                format!(
                    "{m} (its input comes from {})",
                    sources.first().map_or("model.input".to_string(), from)
                ),
                "Change this layer or the one before it so the shapes match.",
            )
        })?
    };
    check_elements(s, &format!("layers[{i}]"), &shape)?;
    Ok((layer, shape))
}

/// A layer whose output nobody takes is a mistake in the graph (the model ends at the last).
fn check_used(file: &str, layers: &[Layer], names: &[String]) -> Result<(), ConfigError> {
    let mut used = vec![false; layers.len()];
    for (i, l) in layers.iter().enumerate() {
        match l.inputs.as_slice() {
            [] if i > 0 => used[i - 1] = true,
            ins => ins.iter().for_each(|&j| used[j] = true),
        }
    }
    match (0..layers.len().saturating_sub(1)).find(|&j| !used[j]) {
        Some(j) => Err(ConfigError::invalid(
            file,
            format!("model.layers[{j}]"),
            format!("the output of \"{}\" is taken by no layer", names[j]),
            "Name it in a later layer's `inputs`, or remove the layer (the model's output is its last layer).",
        )),
        None => Ok(()),
    }
}

/// Layer `i`'s `inputs = ["name", ...]`, resolved to earlier layers' indices (empty: absent).
fn inputs(
    file: &str,
    path: &str,
    t: &Table,
    i: usize,
    names: &[String],
    kind: &LayerKind,
) -> Result<Vec<usize>, ConfigError> {
    let key = format!("{path}.inputs");
    let err = |why: String, fix: &str| ConfigError::invalid(file, key.clone(), why, fix);
    let Some(v) = t.get("inputs") else {
        if kind.is_merge() {
            return Err(err(
                format!(
                    "{} merges several layers' outputs: it needs `inputs`",
                    kind.name()
                ),
                "Name them, e.g. `inputs = [\"block1\", \"relu3\"]`.",
            ));
        }
        return Ok(Vec::new());
    };
    let Some(list) = v.as_array() else {
        return Err(err(
            format!("expected a list of layer names, found `{v}`"),
            "Write it as `inputs = [\"name\", ...]`.",
        ));
    };
    if i == 0 {
        return Err(err(
            "the first layer reads model.input; it takes no `inputs`".into(),
            "Remove the key.",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Some(name) = item.as_str() else {
            return Err(err(
                format!("expected a layer name (a string), found `{item}`"),
                "Write it as `inputs = [\"name\", ...]`.",
            ));
        };
        let found: Vec<usize> = (0..names.len()).filter(|&j| names[j] == name).collect();
        let j = match found.as_slice() {
            [] => {
                let all: Vec<&str> = names.iter().map(String::as_str).collect();
                return Err(err(
                    format!("no layer is named \"{name}\""),
                    &format!(
                        "Name an earlier layer (layers are named by `name`, or `<kind><index>` such as relu1; model.input feeds the first layer only).{}",
                        did_you_mean(name, &all)
                    ),
                ));
            }
            [j] => *j,
            _ => {
                return Err(err(
                    format!("two layers are named \"{name}\" (model.layers{found:?})"),
                    "Give every layer a different name.",
                ));
            }
        };
        if j == i {
            return Err(err(
                format!("the layer takes its own output (\"{name}\"): a cycle"),
                "Name an earlier layer.",
            ));
        }
        if j > i {
            return Err(err(
                format!(
                    "\"{name}\" is model.layers[{j}], which comes after this layer: a layer can only take earlier layers' outputs (this would be a cycle)"
                ),
                "Reorder the layers so that every layer comes after the layers it takes.",
            ));
        }
        if out.contains(&j) {
            return Err(err(
                format!("\"{name}\" is listed twice"),
                "List each input once.",
            ));
        }
        out.push(j);
    }
    match (kind.is_merge(), out.len()) {
        (true, n) if n < 2 => Err(err(
            format!(
                "{} merges at least two layers' outputs, got {n}",
                kind.name()
            ),
            "Name two or more layers.",
        )),
        (false, n) if n != 1 => Err(err(
            format!("{} takes one input, got {n}", kind.name()),
            "Merge them first with an `add` or `concat` layer.",
        )),
        // One explicit input equal to the default is still the default (a chain stays a chain).
        (false, _) if out == [i - 1] => Ok(Vec::new()),
        _ => Ok(out),
    }
}

/// Refuses samples of more than 2^32 elements (the products in cost estimates stay in range).
fn check_elements(s: &Section, key: &str, shape: &[usize]) -> Result<(), ConfigError> {
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    match n {
        Some(n) if n <= 1 << 32 => Ok(()),
        _ => Err(s.err(
            key,
            format!("one sample of shape {shape:?} is too large"),
            "Use smaller dimensions (at most 2^32 elements per sample).",
        )),
    }
}

fn layer(file: &str, path: &str, t: &Table, index: usize) -> Result<Layer, ConfigError> {
    let kind_val = t.get("kind").ok_or_else(|| {
        ConfigError::invalid(
            file,
            format!("{path}.kind"),
            "missing",
            format!("Give the layer a kind: one of {}.", KIND_NAMES.join(", ")),
        )
    })?;
    let Value::String(kind) = kind_val else {
        return Err(ConfigError::invalid(
            file,
            format!("{path}.kind"),
            format!("expected a string, found `{kind_val}`"),
            "Write it as `kind = \"linear\"`.",
        ));
    };
    let Some(keys) = LayerKind::keys(kind) else {
        return Err(ConfigError::invalid(
            file,
            format!("{path}.kind"),
            format!("unknown layer kind \"{kind}\""),
            format!(
                "Use one of: {}.{}",
                KIND_NAMES.join(", "),
                did_you_mean(kind, KIND_NAMES)
            ),
        ));
    };
    let mut known = vec!["kind", "name", "inputs"];
    known.extend_from_slice(keys);
    let s = Section::new(file, path, t, &known)?;
    let kind = LayerKind::parse(kind, &s).expect("a kind with keys is registered")?;
    let name = s
        .opt_str("name")?
        .map_or_else(|| format!("{}{index}", kind.name()), str::to_string);
    Ok(Layer {
        name,
        kind,
        inputs: Vec::new(),
    })
}

pub(super) fn data(s: &Section, model: &Model) -> Result<Data, ConfigError> {
    let source = s.choice("source", "synthetic", &["synthetic", "parquet"])?;
    let seed = s.u64_or("seed", 0)?;
    if source == "synthetic" {
        if let Some(k) = PARQUET_KEYS.iter().find(|k| s.get(k).is_some()) {
            return Err(s.err(
                k,
                "is only read when source = \"parquet\"",
                "Add `source = \"parquet\"` to [data], or remove the key.",
            ));
        }
        return Ok(Data {
            source: DataSource::Synthetic,
            seed,
        });
    }
    let path = s.req_str("path", "\"data/train.parquet\"")?.to_string();
    let tokens_model = model.token_input();
    let columns = match (s.get("tokens"), tokens_model) {
        (Some(_), true) => {
            for k in ["features", "label"] {
                if s.get(k).is_some() {
                    return Err(s.err(
                        k,
                        "a token model reads only the `tokens` column (inputs and next-token targets)",
                        "Remove the key.",
                    ));
                }
            }
            Columns::Tokens {
                tokens: s.req_str("tokens", "\"tokens\"")?.to_string(),
            }
        }
        (None, true) => {
            return Err(s.err(
                "tokens",
                "missing: the model starts with an embedding, so it reads token sequences",
                "Name the list-of-integers column, e.g. `tokens = \"tokens\"`.",
            ));
        }
        (Some(_), false) => {
            return Err(s.err(
                "tokens",
                "is for models that start with an embedding",
                "Use `features` and `label` for this model.",
            ));
        }
        (None, false) => {
            let features = names(s, "features", "\"features\" or [\"x0\", \"x1\"]")?;
            let label = names(s, "label", "\"label\"")?;
            if model.loss == Loss::CrossEntropy && label.len() != 1 {
                return Err(s.err(
                    "label",
                    "cross-entropy reads one integer column of class ids",
                    "Name one column, e.g. `label = \"label\"`.",
                ));
            }
            Columns::Features { features, label }
        }
    };
    let validation = match (s.opt_str("validation")?, s.opt_f64("validation_fraction")?) {
        (Some(_), Some(_)) => {
            return Err(s.err(
                "validation_fraction",
                "given together with `validation`",
                "Keep one: a validation path, or a fraction of the training row groups.",
            ));
        }
        (Some(p), None) => Some(Validation::Path(p.to_string())),
        (None, Some(f)) if f > 0.0 && f < 1.0 => Some(Validation::Fraction(f)),
        (None, Some(f)) => {
            return Err(s.err(
                "validation_fraction",
                format!("{f} is not between 0 and 1"),
                "Hold out a fraction such as 0.1 of the row groups.",
            ));
        }
        (None, None) => None,
    };
    // `shuffle = false`: rows in file order (step b takes rows b·B … b·B + B − 1, micro-batch m
    // the m-th slice of those), so another framework can replay the run.
    let shuffle_buffer = match s.opt_bool("shuffle")? {
        Some(false) if s.get("shuffle_buffer").is_some() => {
            return Err(s.err(
                "shuffle_buffer",
                "is given with shuffle = false",
                "Remove one: shuffle = false reads rows in file order, with no buffer.",
            ));
        }
        Some(false) => 0,
        _ => s.u64_or("shuffle_buffer", 8192)?.min(MAX_DIM) as usize,
    };
    let prefetch = s.u64_or("prefetch", 2)?;
    let prefetch = s.positive("prefetch", prefetch, "Prepare at least one step ahead.")?;
    Ok(Data {
        source: DataSource::Parquet(ParquetSource {
            path,
            columns,
            validation,
            shuffle_buffer,
            prefetch,
            base: String::new(),
        }),
        seed,
    })
}

/// One column name or a list of them.
fn names(s: &Section, key: &str, example: &str) -> Result<Vec<String>, ConfigError> {
    let bad = || {
        s.err(
            key,
            "expected a column name or a list of column names",
            format!("Write it like `{key} = {example}`."),
        )
    };
    match s.get(key) {
        None => Err(s.err(
            key,
            "missing",
            format!("Name the column: `{key} = {example}`."),
        )),
        Some(Value::String(c)) if !c.is_empty() => Ok(vec![c.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(c) if !c.is_empty() => Ok(c.clone()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

pub(super) fn eval(s: &Section, data: &Data) -> Result<Eval, ConfigError> {
    let every = s.u64_or("every", 0)?;
    let has_validation = data.parquet().is_some_and(|p| p.validation.is_some());
    if s.get("every").is_some() && !has_validation {
        return Err(s.err(
            "every",
            "there is no validation data to evaluate on",
            "Add `validation = \"PATH\"` or `validation_fraction = 0.1` to a [data] section with source = \"parquet\".",
        ));
    }
    Ok(Eval { every })
}

pub(super) fn train(s: &Section) -> Result<Train, ConfigError> {
    let steps = s.u64_or("steps", 100)?;
    let steps = s.positive("steps", steps, "Train for at least one step.")?;
    let batch = s.u64_or("batch", 32)?;
    let batch = s.positive("batch", batch, "A batch holds at least one sample.")?;
    let mbs = s.u64_or("microbatches", 1)?;
    let microbatches = s.positive(
        "microbatches",
        mbs,
        "Use at least 1 micro-batch per step (4 × stages is a good start).",
    )?;
    if batch % microbatches != 0 {
        return Err(s.err(
            "batch",
            format!("batch = {batch} is not divisible by microbatches = {microbatches}"),
            format!(
                "Make batch a multiple of microbatches, e.g. batch = {}.",
                batch.div_ceil(microbatches) * microbatches
            ),
        ));
    }
    let schedule = ScheduleKind::from_name(s.choice(
        "schedule",
        "gpipe",
        &ScheduleKind::ALL.map(ScheduleKind::name),
    )?)
    .expect("a listed choice");
    let lr = s.opt_f64("lr")?.unwrap_or(0.01);
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(s.err(
            "lr",
            format!("must be a positive number, found {lr}"),
            "Use a learning rate such as 0.01.",
        ));
    }
    let optimizer = super::optim::optimizer(s)?;
    let lr_schedule = super::optim::lr_schedule(s, lr, steps)?;
    let clip_grad_norm = super::optim::clip(s)?;
    Ok(Train {
        steps,
        batch,
        microbatches,
        schedule,
        optimizer,
        lr,
        lr_schedule,
        clip_grad_norm,
        seed: s.u64_or("seed", 0)?,
        recompute: matches!(s.get("recompute"), Some(Value::Boolean(true))),
        recompute_chunks: match s.get("recompute") {
            None | Some(Value::Boolean(_)) => Vec::new(),
            Some(Value::Array(_)) => s.index_list("recompute")?.unwrap_or_default(),
            Some(other) => {
                return Err(s.err(
                    "recompute",
                    format!("expected true, false or a list of chunk ids, found `{other}`"),
                    "Write `recompute = true` (every chunk) or e.g. `recompute = [0, 1]`.",
                ));
            }
        },
        dtype: match s.choice("dtype", "f32", &["f32", "bf16", "f16"])? {
            "bf16" => TrainDType::Bf16,
            "f16" => TrainDType::F16,
            _ => TrainDType::F32,
        },
        batch_weight_grads: s.opt_bool("batch_weight_grads")?.unwrap_or(false),
    })
}

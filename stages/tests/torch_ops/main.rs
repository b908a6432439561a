//! Ground truth from outside brigade: layer kinds, losses and optimizers checked against
//! PyTorch on the fixtures tests/fixtures/make.py wrote (tests/fixtures/README.md). No Python
//! runs here: the fixtures are committed.

mod fixture;
mod layers;
mod llama;
mod losses;
mod mapping;
mod optim;

use brigade_layers::KIND_NAMES;

/// One test per kind, so a failure names it.
macro_rules! kinds {
    ($($test:ident => $kind:literal,)*) => {
        $(
            #[test]
            fn $test() {
                layers::check_kind($kind);
            }
        )*

        /// Every kind brigade registers has its fixture test above (the Llama kinds in the
        /// tiny Llamas).
        #[test]
        fn every_kind_is_checked() {
            let tested = [$($kind,)* "llama_block", "rms_norm"];
            for k in KIND_NAMES {
                assert!(tested.contains(k), "layer kind {k} has no PyTorch fixture test");
            }
        }
    };
}

kinds! {
    linear => "linear",
    conv2d => "conv2d",
    max_pool2d => "max_pool2d",
    avg_pool2d => "avg_pool2d",
    layer_norm => "layer_norm",
    relu => "relu",
    gelu => "gelu",
    tanh => "tanh",
    sigmoid => "sigmoid",
    dropout => "dropout",
    flatten => "flatten",
    embedding => "embedding",
    upsample2d => "upsample2d",
    transformer_block => "transformer_block",
    add => "add",
    concat => "concat",
}

#[test]
fn cross_entropy() {
    losses::check_loss("cross_entropy");
}

#[test]
fn mse() {
    losses::check_loss("mse");
}

#[test]
fn sgd() {
    optim::check_optimizer("optim_sgd");
}

#[test]
fn sgd_with_momentum_and_weight_decay() {
    optim::check_optimizer("optim_sgd_momentum_decay");
}

#[test]
fn adam() {
    optim::check_optimizer("optim_adam");
}

#[test]
fn adam_with_weight_decay() {
    optim::check_optimizer("optim_adam_decay");
}

#[test]
fn adamw() {
    optim::check_optimizer("optim_adamw");
}

#[test]
fn llama_one_batch() {
    llama::check_one_batch("untied-llama3");
}

#[test]
fn llama_twenty_adamw_steps() {
    llama::check_training("untied-llama3");
}

#[test]
fn llama_tied_copies_sum_to_the_tied_gradient() {
    llama::check_tied_gradient();
}

#[test]
fn llama_grouped_queries_tied_model_untied() {
    llama::check_tied_as_untied();
}

//! brigade's losses (stages/src/loss.rs) against `F.cross_entropy` and `F.mse_loss`: the value
//! and the gradient of the output.

use crate::fixture::{Fixture, cases, check};
use crate::layers::TOL;
use brigade_stages::Act;
use brigade_stages::loss::{Target, loss};
use burn::prelude::*;

/// Runs every loss case of `kind` (`cross_entropy` or `mse`); returns how many there were.
pub fn check_loss(kind: &str) -> usize {
    let all = cases();
    let mut n = 0;
    for case in all["losses"].as_array().expect("losses") {
        if case["loss"] != kind {
            continue;
        }
        n += 1;
        let name = case["name"].as_str().unwrap();
        let f = Fixture::open(case["file"].as_str().unwrap());
        let device = Device::flex().autodiff();
        let o = f.get("output");
        let out = Act::from_f32(o.f32.clone(), &o.shape, &device).require_grad();
        let t = f.get("target");
        let target = match (t.int, t.shape.len()) {
            (true, 1) => Target::Classes(Tensor::from_data(
                TensorData::new(t.i64.clone(), t.shape.clone()),
                &device,
            )),
            (true, 2) => Target::Tokens(Tensor::from_data(
                TensorData::new(t.i64.clone(), t.shape.clone()),
                &device,
            )),
            (false, _) => Target::Values(Act::from_f32(t.f32.clone(), &t.shape, &device)),
            (true, r) => panic!("{name}: integer target of rank {r}"),
        };
        let l = loss(&out, &target);
        let value = l
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        check(&format!("{name}: loss"), (&[], &value), f.get("loss"), TOL);
        let grads = l.backward();
        let g = out.grad(&grads).expect("the output's gradient");
        let gv = g.to_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        check(
            &format!("{name}: output gradient"),
            (&g.dims(), &gv),
            f.get("grad_output"),
            TOL,
        );
    }
    assert!(n > 0, "no fixture case for loss {kind}");
    n
}

//! What a chunk's gradient all-reduce costs in the plan: its buckets
//! ([`brigade_partitioner::buckets`]), each summed by the algorithm the run will choose
//! ([`Algo::choose`]) over the modelled link to the next replica, overlapped with making the
//! next bucket — with batched weight gradients, its layers' weight products.

use crate::allreduce::Algo;
use crate::planning::Planned;
use brigade_partitioner::buckets;

/// A chunk's all-reduce per step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceCost {
    pub buckets: usize,
    /// Gradient bytes summed.
    pub bytes: u64,
    /// Every bucket's reduction, end to end.
    pub reduce_ms: f64,
    /// What no work hides: the time charged on the rank's clock.
    pub exposed_ms: f64,
}

impl Planned {
    /// Chunk `c`'s all-reduce over its replicas (zero with one replica).
    pub fn reduce_cost(&self, c: usize) -> ReduceCost {
        let d = self.topo.partition.replicas;
        if d <= 1 {
            return ReduceCost::default();
        }
        let st = &self.plan.stages[c];
        let layers = st.layers[0]..st.layers[1];
        let sizes: Vec<u64> = layers
            .clone()
            .map(|l| self.graph.layer(l).cost.params * 4)
            .collect();
        let cut = buckets::cut(&sizes, self.topo.partition.bucket_bytes() as u64);
        let speed = brigade_partitioner::plan::rank_speed(&self.topo, &self.costs, &self.places[c]);
        let per_replica = (self.topo.train.microbatches / d) as f64;
        let (mut work, mut reduce) = (Vec::new(), Vec::new());
        for bucket in &cut {
            let bytes: u64 = bucket.iter().map(|&j| sizes[j]).sum();
            // Under batched weight gradients the bucket's weight products run just before it
            // (for all the replica's micro-batches at once); otherwise its gradients are ready.
            let products: f64 = bucket
                .iter()
                .map(|&j| {
                    let l = layers.start + j;
                    self.products_ms(l..l + 1, speed).1
                })
                .sum();
            work.push(products * per_replica);
            reduce.push(self.bucket_ms(c, bytes));
        }
        ReduceCost {
            buckets: cut.len(),
            bytes: sizes.iter().sum(),
            reduce_ms: reduce.iter().sum(),
            exposed_ms: buckets::exposed_ms(&work, &reduce),
        }
    }

    /// One bucket of `bytes` of chunk `c`'s gradients: a ring's 2·(D−1) steps of bytes/D each,
    /// or two replicas swapping the whole bucket, over the link from replica 0's rank to
    /// replica 1's (which every hop of a symmetric ring resembles).
    fn bucket_ms(&self, c: usize, bytes: u64) -> f64 {
        let d = self.topo.partition.replicas;
        let all = self.topo.all_placements();
        let k = self.topo.partition.stages;
        let (a, b) = (&all[self.chunk_rank[c]], &all[k + self.chunk_rank[c]]);
        match Algo::choose(bytes as usize, d) {
            Algo::Direct => self.topo.transfer_ms(a.host, b.host, bytes),
            Algo::Ring => {
                2.0 * (d - 1) as f64
                    * self
                        .topo
                        .transfer_ms(a.host, b.host, bytes.div_ceil(d as u64))
            }
        }
    }
}

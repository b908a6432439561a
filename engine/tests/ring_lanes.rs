//! Buckets large enough to be cut into lanes, summed over real `ipc://` links by two and three
//! ranks (a thread each, a `NetTransport` each): two buckets in flight at once, two steps in a
//! row, every member ends with the exact sum (integer values: any order of addition is exact)
//! and the same bits.

use brigade_engine::allreduce::{Algo, SEGMENT_VALUES};
use brigade_engine::endpoints::{InRoute, Listen, OutPeer, RankLinks};
use brigade_engine::message::{Arrived, ReduceJob};
use brigade_engine::transport::Transport;
use brigade_engine::transport::net::{NetConfig, NetTransport};
use brigade_stages::codec::Kind;
use burn::prelude::Device;
use std::path::Path;
use std::time::Duration;

/// Values in each bucket: bucket 0 three lanes over two members, bucket 1 one lane.
const SIZES: [usize; 2] = [5 * SEGMENT_VALUES + 3, 1000];

fn transport(dir: &Path, members: usize, me: usize) -> NetTransport {
    let endpoint = |i: usize| format!("ipc://{}/r{i}.ipc", dir.display());
    let (prev, next) = ((me + members - 1) % members, (me + 1) % members);
    let links = RankLinks {
        listen: Some(Listen {
            endpoint: endpoint(me),
            routes: vec![InRoute {
                edge: 0,
                kind: Kind::Reduce,
                peer: prev,
                shape: vec![1, SEGMENT_VALUES],
                max_bytes: SEGMENT_VALUES as u64 * 4,
            }],
        }),
        out: vec![OutPeer {
            peer: next,
            endpoint: endpoint(next),
        }],
    };
    NetTransport::start(NetConfig {
        stage: me,
        run_id: 5,
        job_hash: 6,
        links,
        device: Device::flex(),
        heartbeat: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(20),
        trace: false,
        keys: None,
    })
    .expect("the transport starts")
}

fn value(member: usize, step: u64, j: usize) -> f32 {
    ((member * 7 + j * 3 + step as usize) % 1000) as f32
}

/// Member `me`'s sums of both buckets for steps 1 and 2, by step and bucket.
fn member(dir: &Path, members: usize, me: usize) -> Vec<Vec<Vec<f32>>> {
    let mut t = transport(dir, members, me);
    let mut steps = Vec::new();
    for step in 1..=2u64 {
        for (bucket, &n) in SIZES.iter().enumerate() {
            let data = (0..n).map(|j| value(me, step, j)).collect();
            let job = ReduceJob {
                edge: 0,
                bucket: bucket as u32,
                step,
                ring: (0..members).collect(),
                me,
                algo: Algo::choose(n * 4, members),
                data,
            };
            t.reduce(job).expect("the reduction starts");
        }
        let mut sums = vec![Vec::new(); SIZES.len()];
        for _ in 0..SIZES.len() {
            match t.recv(Duration::from_secs(30)).expect("the transport") {
                Some(Arrived::Reduced(r)) => {
                    assert_eq!(r.step, step);
                    sums[r.bucket as usize] = r.sum.into_vec();
                }
                other => panic!("member {me}: {:?} instead of a sum", other.is_some()),
            }
        }
        steps.push(sums);
    }
    t.finish().expect("the transport finishes");
    steps
}

#[test]
fn lanes_of_a_large_bucket_sum_exactly_on_every_member() {
    for members in [2, 3] {
        let dir = std::env::temp_dir().join(format!(
            "brigade-test-{}-lanes-{members}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let got: Vec<_> = std::thread::scope(|s| {
            let ranks: Vec<_> = (0..members)
                .map(|me| {
                    let dir = dir.as_path();
                    s.spawn(move || member(dir, members, me))
                })
                .collect();
            ranks.into_iter().map(|r| r.join().unwrap()).collect()
        });
        std::fs::remove_dir_all(&dir).unwrap();
        for (i, step) in [1u64, 2].into_iter().enumerate() {
            for (bucket, &n) in SIZES.iter().enumerate() {
                let want: Vec<f32> = (0..n)
                    .map(|j| (0..members).map(|m| value(m, step, j)).sum())
                    .collect();
                for (me, sums) in got.iter().enumerate() {
                    assert!(
                        sums[i][bucket] == want,
                        "{members} members: member {me}'s bucket {bucket} of step {step}"
                    );
                }
            }
        }
    }
}

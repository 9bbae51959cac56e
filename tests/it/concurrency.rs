//! One model shared by 8 threads, each with its own session, gives exactly the
//! single-threaded results.

use std::sync::Arc;

use promise_rt::{Bundle, Device, Model, Recommendation, SearchConfig};

use crate::util::repo;

#[test]
fn eight_threads_share_one_model_and_agree_with_one_thread() {
    let model = Arc::new(
        Model::load(
            &Bundle::open(repo().join("models/ml1m")).unwrap(),
            Device::Cpu,
        )
        .unwrap(),
    );
    let histories: Vec<Vec<u32>> = (0..48u32)
        .map(|u| {
            (0..(1 + u % 30))
                .map(|j| (u * 977 + j * 131) % 3706)
                .collect()
        })
        .collect();
    let cfg = SearchConfig {
        beams: 8,
        candidates: 32,
        results: 10,
        prm: true,
        mix: 0.5,
    };
    let mut single = model.session(cfg).unwrap();
    let expected: Vec<Vec<Recommendation>> = histories
        .iter()
        .map(|h| single.recommend(h).unwrap().to_vec())
        .collect();
    let histories = Arc::new(histories);
    let expected = Arc::new(expected);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (model, histories, expected) = (model.clone(), histories.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut s = model.session(cfg).unwrap();
                for round in 0..3 {
                    for i in 0..histories.len() {
                        let j = (i + t * 5 + round) % histories.len();
                        assert_eq!(
                            s.recommend(&histories[j]).unwrap(),
                            &expected[j][..],
                            "thread {t}, history {j}"
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a worker thread failed");
    }
}

//! Search invariants on random synthetic tries with a fake deterministic scorer, against
//! a naive reference written the obvious way (full sorts, fresh vectors).

use promise_rt::bundle::catalog::{build, Catalog};
use promise_rt::{Scorer, SearchConfig, Searcher};

use crate::fake::Fake;
use proptest::prelude::*;

/// Unseen leaves under `node`, the obvious way: walk the subtree.
fn naive_unseen(cat: &Catalog, node: u32, history: &[u32]) -> usize {
    if cat.is_leaf(node) {
        return usize::from(!history.contains(&cat.leaf_item(node)));
    }
    cat.children(node)
        .map(|c| naive_unseen(cat, c, history))
        .sum()
}

/// The obvious implementation of the search's semantics (src/search/mod.rs docs), for
/// comparison.
fn naive(
    cat: &Catalog,
    f: &mut Fake,
    cfg: &SearchConfig,
    history: &[u32],
    h: usize,
) -> Vec<(u32, f32)> {
    let l = cat.levels();
    let n = history.len().min(h);
    let mut codes = vec![0i64; h * l];
    let mut mask = vec![0f32; h];
    for (j, &it) in history[history.len() - n..].iter().enumerate() {
        mask[h - n + j] = 1.0;
        for lv in 0..l {
            codes[(h - n + j) * l + lv] = cat.item_code(it, lv) as i64;
        }
    }
    f.encode(&codes, &mask).unwrap();
    let c = f.c;
    let mut beams: Vec<(u32, f32, Vec<i64>)> = vec![(0, 0.0, vec![])];
    for level in 0..l {
        let last = level + 1 == l;
        let w = (l - 1).max(1);
        let mut pre = vec![0i64; beams.len() * w];
        for (i, b) in beams.iter().enumerate() {
            for (j, &x) in b.2.iter().enumerate() {
                pre[i * w + j] = x;
            }
        }
        let mut lp = vec![0f32; beams.len() * c];
        f.decode(level, &pre, beams.len(), &mut lp).unwrap();
        let mut pool: Vec<(u32, usize, f32, f32)> = vec![];
        for (i, b) in beams.iter().enumerate() {
            for ch in cat.children(b.0) {
                if naive_unseen(cat, ch, history) == 0 {
                    continue;
                }
                let cum = b.1 + lp[i * c + cat.node_code(ch) as usize];
                pool.push((ch, i, cum, cum));
            }
        }
        pool.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        pool.truncate(cfg.candidates);
        if cfg.prm {
            let nodes: Vec<i64> = pool.iter().map(|p| p.0 as i64).collect();
            let mut s = vec![0f32; nodes.len()];
            f.score(&nodes, &mut s).unwrap();
            for (p, s) in pool.iter_mut().zip(s) {
                p.3 = if cfg.mix == 0.0 {
                    s
                } else {
                    (1.0 - cfg.mix) * s + cfg.mix * p.2
                };
            }
        }
        pool.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.0.cmp(&b.0)));
        if last {
            return pool
                .iter()
                .take(cfg.results)
                .map(|p| (cat.leaf_item(p.0), p.3))
                .collect();
        }
        // K', then the full-feed rule: more in key order until they hold N unseen leaves
        let mut keep = cfg.beams.min(pool.len());
        while keep < pool.len()
            && pool[..keep]
                .iter()
                .map(|p| naive_unseen(cat, p.0, history))
                .sum::<usize>()
                < cfg.results
        {
            keep += 1;
        }
        pool.truncate(keep);
        beams = pool
            .iter()
            .map(|p| {
                let mut codes = beams[p.1].2.clone();
                codes.push(cat.node_code(p.0) as i64);
                (p.0, p.2, codes)
            })
            .collect();
    }
    vec![]
}

fn arb_catalog() -> impl Strategy<Value = (Vec<Vec<u16>>, Vec<u32>)> {
    (1usize..=4, 2u32..6).prop_flat_map(|(levels, cb)| {
        let codebook = vec![cb; levels];
        let max_items = (cb as usize).pow(levels as u32).min(60);
        proptest::collection::btree_set(
            proptest::collection::vec(0u16..cb as u16, levels),
            1..=max_items,
        )
        .prop_map(move |set| (set.into_iter().collect::<Vec<_>>(), codebook.clone()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn search_equals_the_naive_reference_and_keeps_its_invariants(
        (sids, codebook) in arb_catalog(),
        beams in 1usize..6, extra in 0usize..6, results in 1usize..8, prm: bool, mix_on: bool,
        salt: u64, hist_seed in proptest::collection::vec(any::<u32>(), 1..12),
    ) {
        // shuffle item order relative to SID order so item ids are not trie order
        let cat = Catalog::from_bytes(build(&sids, &codebook).unwrap()).unwrap();
        let n_items = cat.num_items() as u32;
        let history: Vec<u32> = hist_seed.iter().map(|x| x % n_items).collect();
        let candidates = (beams + extra).max(results);
        let cfg = SearchConfig { beams, candidates, results, prm, mix: if mix_on { 0.25 } else { 0.0 } };
        let h = 4;
        let mut s = Searcher::new(cfg, &cat, h).unwrap();
        let mut f = Fake::new(codebook[0] as usize, cat.levels(), salt);
        let got: Vec<(u32, f32)> = s.run(&cat, &mut f, &history).unwrap().iter().map(|r| (r.item, r.score)).collect();
        let want = naive(&cat, &mut Fake::new(codebook[0] as usize, cat.levels(), salt), &cfg, &history, h);
        prop_assert_eq!(&got, &want);
        // invariants: the full feed, min(N, unseen items)
        let mut distinct = history.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(got.len(), results.min(n_items as usize - distinct.len()));
        let mut items: Vec<u32> = got.iter().map(|g| g.0).collect();
        prop_assert!(items.iter().all(|i| !history.contains(i)), "a seen item was recommended");
        prop_assert!(items.iter().all(|&i| i < n_items));
        prop_assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "scores not descending");
        items.sort();
        items.dedup();
        prop_assert_eq!(items.len(), got.len(), "duplicate items");
        // a second run on the same session gives the same answer (no state leaks)
        let again: Vec<(u32, f32)> = s.run(&cat, &mut f, &history).unwrap().iter().map(|r| (r.item, r.score)).collect();
        prop_assert_eq!(&again, &got);
    }

    #[test]
    fn every_nodes_path_is_found_by_walking_down_the_trie(
        (sids, codebook) in arb_catalog(), width in 6usize..9,
    ) {
        // the PRM's path input (model.prm_query "path") read with binary searches over
        // first_child, against the path each node is reached by from the root
        let cat = Catalog::from_bytes(build(&sids, &codebook).unwrap()).unwrap();
        let l = cat.levels();
        let mut want = vec![vec![(l * width) as i64; l]; cat.num_nodes()];
        for depth in 0..l {
            for node in cat.depth_nodes(depth) {
                for child in cat.children(node) {
                    let mut rows = want[node as usize].clone();
                    rows[depth] = (depth * width + cat.node_code(child) as usize) as i64;
                    want[child as usize] = rows;
                }
            }
        }
        let mut got = vec![0i64; l];
        for node in 0..cat.num_nodes() as u32 {
            cat.path_rows(node, width, &mut got).unwrap();
            prop_assert_eq!(&got, &want[node as usize], "node {}", node);
            let depth = cat.depth(node).unwrap();
            prop_assert!(cat.depth_nodes(depth).contains(&node));
            match cat.parent(node) {
                Some(p) => prop_assert!(cat.children(p).contains(&node)),
                None => prop_assert_eq!(node, 0),
            }
        }
        // past the trie, a short output, a narrow width: errors, not panics
        let past = cat.num_nodes() as u32;
        prop_assert!(cat.depth(past).is_none() && cat.parent(past).is_none());
        prop_assert!(cat.path_rows(past, width, &mut got).is_err());
        prop_assert!(cat.path_rows(0, width, &mut got[..l - 1]).is_err());
        prop_assert!(cat.path_rows(0, 1, &mut got).is_err());
    }

    #[test]
    fn exhaustive_plain_search_returns_the_best_unseen_items(
        (sids, codebook) in arb_catalog(), salt: u64, results in 1usize..6,
    ) {
        // with K' >= the widest level, plain beam search is exhaustive: the result is the
        // top-N of all unseen leaves by total log-prob
        let cat = Catalog::from_bytes(build(&sids, &codebook).unwrap()).unwrap();
        let wide = cat.num_items().max(results);
        let cfg = SearchConfig { beams: wide, candidates: wide * codebook[0] as usize, results, prm: false, mix: 0.0 };
        let history = vec![0u32];
        let mut s = Searcher::new(cfg, &cat, 3).unwrap();
        let mut f = Fake::new(codebook[0] as usize, cat.levels(), salt);
        let got: Vec<u32> = s.run(&cat, &mut f, &history).unwrap().iter().map(|r| r.item).collect();
        let want: Vec<u32> = naive(&cat, &mut Fake::new(codebook[0] as usize, cat.levels(), salt),
            &SearchConfig { beams: wide, candidates: wide * codebook[0] as usize, results: cat.num_items(), prm: false, mix: 0.0 }, &history, 3)
            .into_iter().take(results).map(|x| x.0).collect();
        prop_assert_eq!(got.len(), results.min(cat.num_items() - 1));
        prop_assert_eq!(got, want);
    }
}

/// A catalog of 3 levels, and histories that leave 0, 1, 3, N-1, N, N+1 items unseen, or
/// cover whole level-1 subtrees: the feed always holds min(N, unseen) distinct unseen
/// items, and equals the naive reference.
#[test]
fn the_feed_is_full_for_histories_that_cover_most_of_the_catalog() {
    let sids: Vec<Vec<u16>> = (0..120u16)
        .map(|i| vec![i % 6, (i / 6) % 5, i / 30])
        .collect();
    let cat = Catalog::from_bytes(build(&sids, &[6, 5, 4]).unwrap()).unwrap();
    let n_items = cat.num_items() as u32;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for &(beams, results, prm) in &[
        (1usize, 10usize, false),
        (4, 10, true),
        (2, 7, true),
        (16, 10, false),
    ] {
        let cfg = SearchConfig {
            beams,
            candidates: (4 * beams).max(results),
            results,
            prm,
            mix: 0.5,
        };
        let mut histories: Vec<Vec<u32>> = Vec::new();
        for left in [0, 1, 3, results - 1, results, results + 1] {
            // a random order of all items; the last `left` stay unseen
            let mut all: Vec<u32> = (0..n_items).collect();
            for i in (1..all.len()).rev() {
                all.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            all.truncate(all.len() - left);
            histories.push(all);
        }
        // whole level-1 subtrees (code 0 and 3), plus repeats of one item
        let mut cover: Vec<u32> = (0..n_items).filter(|i| i % 6 == 0 || i % 6 == 3).collect();
        cover.extend([5, 5, 5]);
        histories.push(cover);
        for history in &histories {
            let mut s = Searcher::new(cfg, &cat, 4).unwrap();
            let mut f = Fake::new(6, 3, 7);
            let got: Vec<(u32, f32)> = s
                .run(&cat, &mut f, history)
                .unwrap()
                .iter()
                .map(|r| (r.item, r.score))
                .collect();
            let mut distinct = history.clone();
            distinct.sort();
            distinct.dedup();
            let unseen = n_items as usize - distinct.len();
            assert_eq!(got.len(), results.min(unseen), "{cfg:?}, {unseen} unseen");
            assert!(
                got.iter().all(|g| !history.contains(&g.0)),
                "a seen item came back"
            );
            let mut items: Vec<u32> = got.iter().map(|g| g.0).collect();
            items.sort();
            items.dedup();
            assert_eq!(items.len(), got.len(), "duplicates");
            let want = naive(&cat, &mut Fake::new(6, 3, 7), &cfg, history, 4);
            assert_eq!(got, want, "{cfg:?}, {unseen} unseen");
        }
    }
}

#[test]
fn leaf_ranges_hold_exactly_the_leaves_under_each_node() {
    let sids: Vec<Vec<u16>> = (0..90u16)
        .map(|i| vec![i % 4, (i / 4) % 3, i / 12])
        .collect();
    let cat = Catalog::from_bytes(build(&sids, &[4, 3, 8]).unwrap()).unwrap();
    for depth in 0..=cat.levels() {
        for node in cat.depth_nodes(depth) {
            let r = cat.leaf_range(node, depth);
            assert_eq!(r.len(), naive_unseen(&cat, node, &[]), "node {node}");
            for leaf in r {
                // the leaf's path passes through node
                let mut n = 0;
                for lv in 0..depth {
                    n = cat
                        .child_with_code(n, cat.item_code(cat.leaf_item(leaf), lv))
                        .unwrap();
                }
                assert_eq!(n, node, "leaf {leaf} under node {node}");
            }
        }
    }
}

#[test]
fn trie_lookup_agrees_with_a_linear_scan() {
    let sids: Vec<Vec<u16>> = (0..200u16)
        .map(|i| vec![i % 7, (i / 7) % 5, i / 35])
        .collect();
    let cat = Catalog::from_bytes(build(&sids, &[7, 5, 6]).unwrap()).unwrap();
    for node in 0..cat.num_nodes() as u32 {
        for code in 0..8u16 {
            let linear = cat.children(node).find(|&c| cat.node_code(c) == code);
            assert_eq!(
                cat.child_with_code(node, code),
                linear,
                "node {node} code {code}"
            );
        }
    }
    for (i, s) in sids.iter().enumerate() {
        let leaf = cat.item_leaf(i as u32);
        assert_eq!(cat.leaf_item(leaf), i as u32);
        for (l, &c) in s.iter().enumerate() {
            assert_eq!(cat.item_code(i as u32, l), c);
        }
    }
}

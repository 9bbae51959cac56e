//! Top-k selection with the search's one deterministic order: higher score first, ties
//! broken by the smaller node id (node ids are breadth-first, so within a level this is
//! lexicographic SID order). Scores compare with `f32::total_cmp`, so the order is total
//! even for NaN; nothing here allocates.

use std::cmp::Ordering;

/// A scored trie node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Trie node id.
    pub node: u32,
    /// Index of the beam this candidate extends (or any payload).
    pub parent: u32,
    /// Cumulative generator log-probability of the prefix.
    pub cum: f32,
    /// Selection key (PRM score, mix, or `cum`).
    pub key: f32,
    /// Unseen leaves under the node (the search's full-feed rule; any payload elsewhere).
    pub unseen: u32,
}

/// The search order on keys: descending key, then ascending node.
#[inline]
pub fn by_key(a: &Scored, b: &Scored) -> Ordering {
    b.key.total_cmp(&a.key).then(a.node.cmp(&b.node))
}

/// The pool order: descending cumulative log-prob, then ascending node.
#[inline]
pub fn by_cum(a: &Scored, b: &Scored) -> Ordering {
    b.cum.total_cmp(&a.cum).then(a.node.cmp(&b.node))
}

/// Keep the first `k` elements of `v` under `order`, sorted; truncates `v` to `min(k, len)`.
/// O(n + k log k), in place, no allocation.
pub fn top_k(v: &mut Vec<Scored>, k: usize, order: fn(&Scored, &Scored) -> Ordering) {
    if k == 0 {
        v.clear();
        return;
    }
    if v.len() > k {
        v.select_nth_unstable_by(k - 1, order);
        v.truncate(k);
    }
    v.sort_unstable_by(order);
}

/// Keep the first `k` elements of `v` under `order` as a set, in no particular order:
/// `top_k` without its sort, for a cut whose order nothing reads (the candidates the PRM
/// scores are ranked again by key). O(n), in place, no allocation; which elements are kept
/// is `top_k`'s choice (the order is total), so the search's results do not change.
pub fn select_k(v: &mut Vec<Scored>, k: usize, order: fn(&Scored, &Scored) -> Ordering) {
    if k == 0 {
        v.clear();
    } else if v.len() > k {
        v.select_nth_unstable_by(k - 1, order);
        v.truncate(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(v: &[Scored], k: usize, order: fn(&Scored, &Scored) -> Ordering) -> Vec<Scored> {
        let mut w = v.to_vec();
        w.sort_by(order);
        w.truncate(k);
        w
    }

    #[test]
    fn matches_a_full_sort_on_random_inputs_with_ties() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..500 {
            let n = (rnd() % 200) as usize;
            let k = (rnd() % 40) as usize;
            let v: Vec<Scored> = (0..n)
                .map(|i| Scored {
                    node: (rnd() % 1000) as u32 * 1000 + i as u32,
                    parent: 0,
                    // few distinct values: many exact ties
                    cum: (rnd() % 7) as f32 * -0.5,
                    key: (rnd() % 5) as f32 * 0.25,
                    unseen: 1,
                })
                .collect();
            for order in [by_key as fn(&Scored, &Scored) -> Ordering, by_cum] {
                let mut got = v.clone();
                top_k(&mut got, k, order);
                assert_eq!(got, naive(&v, k, order), "case {case}, n {n}, k {k}");
                // select_k keeps the same set
                let mut set = v.clone();
                select_k(&mut set, k, order);
                set.sort_by(order);
                assert_eq!(set, got, "select_k, case {case}, n {n}, k {k}");
            }
        }
    }
}

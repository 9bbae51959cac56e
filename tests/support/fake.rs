//! The fake scorer the search's tests and benches share (tests/alloc.rs,
//! tests/it/search_props.rs, benches/search.rs): scores are pseudo-random but a pure
//! function of their inputs, computed without allocating, and drawn from a few values so
//! exact ties happen.

use promise_rt::{Error, Scorer};

/// A deterministic scorer for a catalog with `c` codes per level (the widest) and `l`
/// levels; `salt` picks one of many such scorers.
pub struct Fake {
    pub c: usize,
    pub l: usize,
    pub salt: u64,
    pub hist: u64,
}

impl Fake {
    pub fn new(c: usize, l: usize, salt: u64) -> Fake {
        Fake {
            c,
            l,
            salt,
            hist: 0,
        }
    }
}

pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

fn unit(x: u64) -> f32 {
    // a few distinct values, so exact ties happen
    ((mix64(x) % 17) as f32) * -0.25
}

impl Scorer for Fake {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<(), Error> {
        self.hist = codes
            .iter()
            .zip(mask.iter().cycle())
            .fold(self.salt, |h, (&c, &m)| {
                mix64(h ^ (c as u64) ^ ((m as u64) << 40))
            });
        Ok(())
    }
    fn decode(
        &mut self,
        level: usize,
        prefixes: &[i64],
        k: usize,
        out: &mut [f32],
    ) -> Result<(), Error> {
        let w = (self.l - 1).max(1);
        for i in 0..k {
            let p = prefixes[i * w..(i + 1) * w]
                .iter()
                .fold(self.hist ^ level as u64, |h, &c| mix64(h ^ c as u64));
            for c in 0..self.c {
                out[i * self.c + c] = unit(p ^ (c as u64) << 20);
            }
        }
        Ok(())
    }
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<(), Error> {
        for (o, &n) in out.iter_mut().zip(nodes) {
            *o = unit(self.hist ^ 0xABCDEF ^ (n as u64) << 8);
        }
        Ok(())
    }
}

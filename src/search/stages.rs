//! Where a request's time goes: the encoder, the decoder and the PRM per level, and the
//! search's own bookkeeping (the beams' selection, the pool, the seen-item masking, the
//! feed), measured by wrapping the backend's [`Scorer`] in `Timed`.
//!
//! Bookkeeping is the request's wall time less the scorer calls, so the four parts add up
//! to the request. Nothing is allocated: the per-level times are fixed arrays of
//! [`MAX_LEVELS`]. A backend that queues work (the GPU) is timed at its calls: a call that
//! only records work shows little and the call that waits shows the rest, so the breakdown
//! is meaningful on the CPU engines and for the GPU's host-side search only.

use std::time::{Duration, Instant};

use super::Scorer;
use crate::bundle::catalog::MAX_LEVELS;
use crate::Result;

/// One request's time by stage ([`crate::Session::stage_times`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// The encoder over the history.
    pub encoder: Duration,
    /// The decoder, per level (0-based; levels past the bundle's stay zero).
    pub decoder: [Duration; MAX_LEVELS],
    /// The PRM, per level (zero where the search did not call it).
    pub prm: [Duration; MAX_LEVELS],
    /// The whole request, from the checked history to the feed.
    pub total: Duration,
}

impl StageTimes {
    /// The search's own work: the request less the encoder, decoder and PRM calls.
    pub fn bookkeeping(&self) -> Duration {
        let scored = self.encoder
            + self.decoder.iter().sum::<Duration>()
            + self.prm.iter().sum::<Duration>();
        self.total.saturating_sub(scored)
    }
}

/// A [`Scorer`] that times every call of the one it wraps into a [`StageTimes`]. The PRM's
/// calls are counted at the level of the decoder call before them (the search scores a
/// level's pool after decoding it).
pub(crate) struct Timed<'a, S: Scorer + ?Sized> {
    inner: &'a mut S,
    times: &'a mut StageTimes,
    level: usize,
}

impl<'a, S: Scorer + ?Sized> Timed<'a, S> {
    /// Wrap `inner`, clearing `times`.
    pub(crate) fn new(inner: &'a mut S, times: &'a mut StageTimes) -> Self {
        *times = StageTimes::default();
        Timed {
            inner,
            times,
            level: 0,
        }
    }
}

impl<S: Scorer + ?Sized> Scorer for Timed<'_, S> {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.encode(codes, mask);
        self.times.encoder += t.elapsed();
        r
    }
    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.decode(level, prefixes, k, out);
        self.level = level.min(MAX_LEVELS - 1);
        self.times.decoder[self.level] += t.elapsed();
        r
    }
    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.score(nodes, out);
        self.times.prm[self.level] += t.elapsed();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scorer that sleeps a known time per call kind and records the call order.
    struct Slow {
        calls: Vec<(char, usize)>,
        level: usize,
    }
    impl Scorer for Slow {
        fn encode(&mut self, _: &[i64], _: &[f32]) -> Result<()> {
            self.calls.push(('e', 0));
            std::thread::sleep(Duration::from_millis(3));
            Ok(())
        }
        fn decode(&mut self, level: usize, _: &[i64], _: usize, _: &mut [f32]) -> Result<()> {
            self.calls.push(('d', level));
            self.level = level;
            std::thread::sleep(Duration::from_millis(1 + level as u64));
            Ok(())
        }
        fn score(&mut self, _: &[i64], _: &mut [f32]) -> Result<()> {
            self.calls.push(('s', self.level));
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        }
    }

    #[test]
    fn every_call_lands_in_its_stage_and_level() {
        let mut s = Slow {
            calls: Vec::new(),
            level: 0,
        };
        let mut times = StageTimes {
            encoder: Duration::from_secs(9),
            ..StageTimes::default()
        };
        {
            let mut t = Timed::new(&mut s, &mut times);
            t.encode(&[], &[]).unwrap();
            for level in 0..3 {
                t.decode(level, &[], 0, &mut []).unwrap();
                if level > 0 {
                    t.score(&[], &mut []).unwrap();
                }
            }
        }
        // the stale 9 s were cleared; each stage holds at least its sleep
        assert!(
            times.encoder >= Duration::from_millis(3) && times.encoder < Duration::from_secs(9)
        );
        for level in 0..3 {
            assert!(times.decoder[level] >= Duration::from_millis(1 + level as u64));
        }
        assert_eq!(times.prm[0], Duration::ZERO, "no PRM call at level 0");
        assert!(
            times.prm[1] >= Duration::from_millis(2) && times.prm[2] >= Duration::from_millis(2)
        );
        assert_eq!(times.decoder[3..], [Duration::ZERO; MAX_LEVELS - 3]);
        // bookkeeping is what the total holds beyond the calls, never negative
        times.total = times.encoder + Duration::from_millis(100);
        assert!(times.bookkeeping() < Duration::from_millis(100));
        times.total = Duration::ZERO;
        assert_eq!(times.bookkeeping(), Duration::ZERO);
    }
}

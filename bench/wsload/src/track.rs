//! Owns one subscriber's accounting of the events it was delivered: each arrives with its
//! channel's sequence number, and in a good run they arrive in order, each once. The fast path
//! is one comparison; a gap is remembered as a range of missing numbers, so memory grows with
//! the gaps, not with the events (a million subscribers × a long run fit). A number below the
//! next expected one is either a late arrival filling a gap (out of order) or a duplicate.
//! What never arrived — the gaps still open, and everything after the last one received up to
//! what was published on the channel — is lost, less what the publisher knows it failed to
//! publish.

/// How one arrival relates to the ones before it.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    InOrder,
    /// It skipped this many numbers (they are missing until they turn up).
    Gap(u64),
    /// It fills part of an earlier gap.
    Late,
    Duplicate,
}

#[derive(Debug, Default)]
pub struct Track {
    /// One past the highest number seen.
    next: u64,
    /// Numbers skipped and not seen since: [start, end) ranges in increasing order.
    missing: Vec<(u64, u64)>,
}

impl Track {
    pub fn record(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            return Seen::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            self.missing.push((self.next, seq));
            self.next = seq + 1;
            return Seen::Gap(skipped);
        }
        let i = self.missing.partition_point(|&(_, end)| end <= seq);
        match self.missing.get(i).copied() {
            Some((start, end)) if start <= seq => {
                // Split the range around it, dropping the parts left empty.
                let parts = [(start, seq), (seq + 1, end)];
                self.missing
                    .splice(i..=i, parts.into_iter().filter(|(a, b)| a < b));
                Seen::Late
            }
            _ => Seen::Duplicate,
        }
    }

    /// Events lost, given that `published` events (numbers 0..published) were sent on the
    /// channel and those in `failed` (sorted) were not accepted by the server.
    pub fn lost(&self, published: u64, failed: &[u64]) -> u64 {
        let gaps: u64 = self.missing.iter().map(|(a, b)| b - a).sum();
        let tail = published.saturating_sub(self.next);
        let excused = failed.iter().filter(|&&s| self.is_missing(s, published));
        gaps + tail - excused.count() as u64
    }

    fn is_missing(&self, seq: u64, published: u64) -> bool {
        if seq >= self.next {
            return seq < published;
        }
        let i = self.missing.partition_point(|&(_, end)| end <= seq);
        self.missing.get(i).is_some_and(|&(start, _)| start <= seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_nothing_lost() {
        let mut t = Track::default();
        for s in 0..100 {
            assert_eq!(t.record(s), Seen::InOrder);
        }
        assert_eq!(t.lost(100, &[]), 0);
        // The last five never came.
        assert_eq!(t.lost(105, &[]), 5);
        // Two of those were never accepted by the server: not lost.
        assert_eq!(t.lost(105, &[101, 103]), 3);
        assert!(t.missing.is_empty());
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates() {
        let mut t = Track::default();
        assert_eq!(t.record(0), Seen::InOrder);
        assert_eq!(t.record(5), Seen::Gap(4)); // 1..5 missing
        assert_eq!(t.record(3), Seen::Late); // 1,2 and 4 left
        assert_eq!(t.missing, vec![(1, 3), (4, 5)]);
        assert_eq!(t.record(3), Seen::Duplicate);
        assert_eq!(t.record(5), Seen::Duplicate);
        assert_eq!(t.record(0), Seen::Duplicate);
        assert_eq!(t.record(4), Seen::Late);
        assert_eq!(t.record(1), Seen::Late);
        assert_eq!(t.missing, vec![(2, 3)]);
        assert_eq!(t.record(6), Seen::InOrder);
        assert_eq!(t.record(9), Seen::Gap(2)); // 7, 8
        // Missing: 2, 7, 8, and 10..12 at the end.
        assert_eq!(t.lost(12, &[]), 5);
        // 7 and 11 failed to publish, 6 did not matter (it arrived).
        assert_eq!(t.lost(12, &[6, 7, 11]), 3);
        assert_eq!(t.record(2), Seen::Late);
        assert_eq!(t.lost(10, &[]), 2);
    }
}

//! Owns how a target cuts a byte stream into the pieces a socket might deliver: piece lengths
//! come from the fuzz input, so the fuzzer chooses where every cut falls.

/// Cuts `data` into pieces whose lengths cycle through `lengths` (each taken as 1..=256 times
/// `scale`; no lengths at all means `scale` bytes at a time). Every piece is non-empty and the
/// pieces concatenate to `data`. An iterator, so that cutting allocates nothing.
pub fn pieces<'a>(data: &'a [u8], lengths: &'a [u8], scale: usize) -> Pieces<'a> {
    Pieces {
        rest: data,
        max_pieces: usize::MAX,
        lengths,
        scale: scale.max(1),
        i: 0,
    }
}

impl Pieces<'_> {
    /// At most `n` pieces: the last holds all that is left.
    pub fn at_most(mut self, n: usize) -> Self {
        self.max_pieces = n.max(1) - 1;
        self
    }
}

pub struct Pieces<'a> {
    rest: &'a [u8],
    max_pieces: usize,
    lengths: &'a [u8],
    scale: usize,
    i: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        if self.i == self.max_pieces {
            // The rest in one piece: cutting a long stream fine all the way costs more time
            // than it finds (the cuts before this one are where the fuzzer put them).
            let piece = std::mem::take(&mut self.rest);
            return Some(piece);
        }
        let len = match self.lengths {
            [] => self.scale,
            l => (usize::from(l[self.i % l.len()]) + 1) * self.scale,
        };
        self.i += 1;
        let (piece, tail) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = tail;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input() {
        let data: Vec<u8> = (0..100).collect();
        for lengths in [&[][..], &[0], &[3, 0, 7], &[255]] {
            let p: Vec<&[u8]> = pieces(&data, lengths, 1).collect();
            assert!(p.iter().all(|p| !p.is_empty()));
            assert_eq!(p.concat(), data);
            let p: Vec<&[u8]> = pieces(&data, lengths, 1).at_most(3).collect();
            assert!(p.len() <= 3);
            assert_eq!(p.concat(), data);
        }
    }
}

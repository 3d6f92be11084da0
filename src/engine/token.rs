//! Owns the encoding of io_uring `user_data`: which operation a completion belongs to, and for
//! connection operations, which slab slot and which generation of that slot. The generation is
//! what lets a late completion for a closed connection be recognised and ignored even if its slot
//! has since been given to a new connection.

/// The kind of operation a completion reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept; `slot` is the listener's index.
    Accept = 1,
    /// Multishot recv from the provided buffer ring.
    Recv = 2,
    Send = 3,
    /// `shutdown(SHUT_WR)` before a lingering close.
    Shutdown = 4,
    /// An `AsyncCancel`; its own completion carries nothing we need.
    Cancel = 5,
    /// A `close` of a socket whose slot is already freed.
    Close = 6,
    /// A read on the worker's wake-up eventfd (shutdown, reload).
    Wake = 7,
}

/// Generations are 24 bits; the slot gets the low 32.
pub const GEN_MASK: u32 = 0x00FF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub slot: u32,
    pub generation: u32,
}

impl Token {
    pub fn new(op: Op, slot: usize, generation: u32) -> Token {
        debug_assert!(slot <= u32::MAX as usize);
        Token {
            op,
            slot: slot as u32,
            generation: generation & GEN_MASK,
        }
    }

    pub fn encode(self) -> u64 {
        (self.op as u64) << 56 | (self.generation as u64) << 32 | self.slot as u64
    }

    /// `None` for user_data we never produced (a kernel or library bug; ignored, never a panic).
    pub fn decode(user_data: u64) -> Option<Token> {
        let op = match (user_data >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Shutdown,
            5 => Op::Cancel,
            6 => Op::Close,
            7 => Op::Wake,
            _ => return None,
        };
        Some(Token {
            op,
            slot: user_data as u32,
            generation: (user_data >> 32) as u32 & GEN_MASK,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        for op in [
            Op::Accept,
            Op::Recv,
            Op::Send,
            Op::Shutdown,
            Op::Cancel,
            Op::Close,
            Op::Wake,
        ] {
            for (slot, generation) in [(0, 0), (1, 1), (u32::MAX as usize, GEN_MASK), (77, 12345)] {
                let t = Token::new(op, slot, generation);
                assert_eq!(Token::decode(t.encode()), Some(t));
            }
        }
    }

    #[test]
    fn generation_wraps_into_24_bits() {
        let t = Token::new(Op::Recv, 5, GEN_MASK + 3);
        assert_eq!(Token::decode(t.encode()).unwrap().generation, 2);
    }

    #[test]
    fn foreign_user_data_is_rejected() {
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(0xFF << 56), None);
    }
}

//! Owns HPACK's Huffman decoding (RFC 7541 §5.2): a string is read four bits at a time
//! through a state machine whose states are the code tree's 256 inner nodes. Each (state,
//! nibble) gives the next state, at most one symbol (no code is shorter than five bits) and
//! whether stopping there leaves valid padding. The table (8 KiB) is built once, at the first
//! Huffman string, from the code in `tables`.

use super::tables::HUFFMAN;
use std::sync::OnceLock;

const EOS: u16 = 256;

/// One (state, nibble) step.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    /// The symbol completed in this nibble, if any.
    emit: Option<u8>,
    /// EOS was reached: the string is malformed (RFC 7541 §5.2).
    eos: bool,
    /// Stopping after this nibble leaves at most seven bits of EOS's prefix (all ones).
    accept: bool,
}

struct Machine {
    steps: Box<[[Step; 16]; 256]>,
}

/// The code tree: inner nodes with their two children (a leaf is a symbol).
#[derive(Clone, Copy)]
enum Child {
    Inner(u8),
    Leaf(u16),
    None,
}

fn machine() -> &'static Machine {
    static M: OnceLock<Machine> = OnceLock::new();
    M.get_or_init(build)
}

fn build() -> Machine {
    // Inner nodes, root first: [zero child, one child].
    let mut tree: Vec<[Child; 2]> = vec![[Child::None; 2]];
    for (symbol, &(code, len)) in HUFFMAN.iter().enumerate() {
        let mut node = 0usize;
        for i in (0..len).rev() {
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                tree[node][bit] = Child::Leaf(symbol as u16);
            } else {
                node = match tree[node][bit] {
                    Child::Inner(n) => usize::from(n),
                    _ => {
                        tree.push([Child::None; 2]);
                        let n = tree.len() - 1;
                        tree[node][bit] = Child::Inner(n as u8);
                        n
                    }
                };
            }
        }
    }
    debug_assert_eq!(tree.len(), 256);
    // Each inner node's depth and whether the path to it is all ones (EOS's prefix).
    let mut ones_depth: Vec<Option<u8>> = vec![None; tree.len()];
    ones_depth[0] = Some(0);
    let mut n = 0usize;
    while let Child::Inner(c) = tree[n][1] {
        ones_depth[usize::from(c)] = ones_depth[n].map(|d| d + 1);
        n = usize::from(c);
    }
    let mut steps = Box::new([[Step::default(); 16]; 256]);
    for (state, row) in steps.iter_mut().enumerate() {
        for (nibble, step) in row.iter_mut().enumerate() {
            let mut node = state;
            let mut s = Step::default();
            for i in (0..4).rev() {
                let bit = (nibble >> i) & 1;
                match tree[node][bit] {
                    Child::Inner(c) => node = usize::from(c),
                    Child::Leaf(EOS) => {
                        s.eos = true;
                        break;
                    }
                    Child::Leaf(sym) => {
                        s.emit = Some(sym as u8);
                        node = 0;
                    }
                    Child::None => unreachable!("the HPACK code is complete"),
                }
            }
            s.next = node as u8;
            s.accept = ones_depth[node].is_some_and(|d| d <= 7);
            *step = s;
        }
    }
    Machine { steps }
}

/// A Huffman string that is malformed: EOS inside it, or padding longer than seven bits or
/// not EOS's prefix.
#[derive(Debug)]
pub struct Malformed;

/// Appends the decoded string to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
    let m = machine();
    let mut state = 0usize;
    let mut accept = true;
    for &b in input {
        for nibble in [b >> 4, b & 0xf] {
            let s = m.steps[state][usize::from(nibble)];
            if s.eos {
                return Err(Malformed);
            }
            if let Some(sym) = s.emit {
                out.push(sym);
            }
            state = usize::from(s.next);
            accept = s.accept;
        }
    }
    if accept { Ok(()) } else { Err(Malformed) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &c in s {
            let (code, len) = HUFFMAN[usize::from(c)];
            acc = acc << len | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
        }
        out
    }

    #[test]
    fn the_rfc_examples_decode() {
        // RFC 7541 C.4.1 and C.4.2.
        let mut out = Vec::new();
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        decode(&www, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        out.clear();
        decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], &mut out).unwrap();
        assert_eq!(out, b"no-cache");
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        decode(&encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // "a" is 00011 (5 bits): padded with zeros instead of ones.
        assert!(decode(&[0b0001_1000], &mut out).is_err());
        // A whole byte of padding (eight ones after a full symbol).
        assert!(decode(&[0b0001_1111, 0xff], &mut out).is_err());
        // EOS itself (30 ones) inside the string.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
        // The empty string is fine.
        assert!(decode(&[], &mut out).is_ok());
    }
}

//! Owns HPACK decoding (RFC 7541) for the server side: integers, strings (Huffman through
//! `huffman`), the static table and a connection's dynamic table with its size updates.
//! Encoding needs none of this state: responses never index (see `headers`).

pub mod huffman;
pub mod tables;

use std::collections::VecDeque;
use tables::STATIC;

/// A header block that cannot be decoded: the connection's HPACK state is lost
/// (COMPRESSION_ERROR).
#[derive(Debug, PartialEq, Eq)]
pub struct Error(pub &'static str);

/// A dynamic table entry: name and value.
type Field = (Box<[u8]>, Box<[u8]>);

/// A connection's decoding state: the dynamic table (RFC 7541 §2.3.2).
pub struct Decoder {
    /// Newest first, as indices count them.
    entries: VecDeque<Field>,
    /// The table's size as RFC 7541 §4.1 counts it (lengths plus 32 per entry).
    size: usize,
    /// The size the peer last chose (a size update), at most `limit`.
    max: usize,
    /// What we allow (our SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// Huffman strings are decoded into these (kept to avoid an allocation per string).
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl Decoder {
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Decodes a whole header block, calling `field` with each name and value in order.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        let mut first = true;
        while let Some(&b) = block.first() {
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let (i, n) = integer(block, 7)?;
                block = &block[n..];
                let (name, value) = lookup(&self.entries, i)?;
                field(name, value);
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only at the start of a block (§4.2).
                if !first {
                    return Err(Error("a table size update after a field"));
                }
                let (size, n) = integer(block, 5)?;
                block = &block[n..];
                if size > self.limit {
                    return Err(Error("a table size over our limit"));
                }
                self.max = size;
                self.evict(0);
                continue; // several updates may start a block
            } else {
                // Literal field (§6.2): with incremental indexing (01), without (0000) or
                // never indexed (0001).
                let (indexing, prefix) = if b & 0x40 != 0 { (true, 6) } else { (false, 4) };
                let (i, n) = integer(block, prefix)?;
                block = &block[n..];
                let name_from_table = i != 0;
                if name_from_table {
                    let (name, _) = lookup(&self.entries, i)?;
                    self.name_buf.clear();
                    self.name_buf.extend_from_slice(name);
                } else {
                    block = string(block, &mut self.name_buf)?;
                }
                block = string(block, &mut self.value_buf)?;
                field(&self.name_buf, &self.value_buf);
                if indexing {
                    let entry = (
                        self.name_buf.clone().into_boxed_slice(),
                        self.value_buf.clone().into_boxed_slice(),
                    );
                    self.insert(entry);
                }
            }
            first = false;
        }
        Ok(())
    }

    /// Adds an entry, evicting the oldest to make room; one larger than the table empties it
    /// and is not kept (§4.4).
    fn insert(&mut self, entry: Field) {
        let size = entry.0.len() + entry.1.len() + 32;
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.entries.push_front(entry);
    }

    /// Evicts the oldest entries until `room` more fits within the maximum.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.entries.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
        if self.entries.is_empty() {
            self.entries = VecDeque::new(); // an idle connection keeps no table memory
        }
    }
}

/// The field at `index` of the static table, then the dynamic one (§2.3.3).
fn lookup(entries: &VecDeque<Field>, index: usize) -> Result<(&[u8], &[u8]), Error> {
    match index {
        0 => Err(Error("index 0")),
        1..=61 => Ok(STATIC[index - 1]),
        _ => entries
            .get(index - 62)
            .map(|(n, v)| (&n[..], &v[..]))
            .ok_or(Error("an index past the tables")),
    }
}

/// An integer with an N-bit prefix (§5.1), and the bytes it took. Values past 2^28 are
/// refused: nothing legitimate is that large, and the shifts stay far from overflowing.
fn integer(b: &[u8], prefix: u8) -> Result<(usize, usize), Error> {
    let max = (1usize << prefix) - 1;
    let first = usize::from(*b.first().ok_or(Error("truncated"))?) & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    let mut shift = 0;
    for (i, &byte) in b[1..].iter().enumerate() {
        // Continuation bytes of zeros add nothing but would shift past the word: bounded too.
        if shift > 28 {
            return Err(Error("an integer too long"));
        }
        value += usize::from(byte & 0x7f) << shift;
        if value > 1 << 28 {
            return Err(Error("an integer too large"));
        }
        if byte & 0x80 == 0 {
            return Ok((value, i + 2));
        }
        shift += 7;
    }
    Err(Error("truncated"))
}

/// A string literal (§5.2) decoded into `out` (cleared first); returns the rest of `b`.
fn string<'a>(b: &'a [u8], out: &mut Vec<u8>) -> Result<&'a [u8], Error> {
    let huffman = b.first().ok_or(Error("truncated"))? & 0x80 != 0;
    let (len, n) = integer(b, 7)?;
    let body = b.get(n..n + len).ok_or(Error("truncated"))?;
    out.clear();
    if huffman {
        huffman::decode(body, out).map_err(|_| Error("bad Huffman"))?;
    } else {
        out.extend_from_slice(body);
    }
    Ok(&b[n + len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut got = Vec::new();
        d.decode(block, |n, v| {
            got.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Ok(got)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_rfc_request_examples_with_huffman_decode_in_order() {
        // RFC 7541 C.4: three requests on one connection, sharing the dynamic table.
        let mut d = Decoder::new(4096);
        let first = all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(first[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(d.size, 57);
        let second = all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        let third = all(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        )
        .unwrap();
        assert_eq!(third[1], (":scheme".into(), "https".into()));
        assert_eq!(third[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn eviction_and_size_updates_follow_the_rfc() {
        // RFC 7541 C.5 with a 256-byte table: the third response evicts.
        let mut d = Decoder::new(4096);
        assert!(all(&mut d, &[0x3f, 0xe1, 0x01]).unwrap().is_empty()); // size update to 256
        all(&mut d, &hex("4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")).unwrap();
        assert_eq!(d.size, 222);
        all(&mut d, &hex("4803 3330 37c1 c0bf")).unwrap();
        assert_eq!(d.size, 222);
        assert_eq!(d.entries.len(), 4);
        // Over our limit, or after a field: refused.
        assert!(all(&mut Decoder::new(4096), &[0x3f, 0xe2, 0x1f]).is_err());
        assert!(all(&mut Decoder::new(4096), &[0x82, 0x20]).is_err());
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        for block in [
            &[0x80][..],                     // index 0
            &[0xbf, 0x01],                   // index 64 with an empty dynamic table
            &[0x82, 0x0f],                   // a truncated integer
            &[0x10, 0x05, b'a'],             // a truncated string
            &[0xff, 0xff, 0xff, 0xff, 0x7f], // an integer too large
            &[
                0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ], // too long
            &[0x10, 0x81, 0x00, 0x00],       // bad Huffman (zero padding)
        ] {
            assert!(all(&mut Decoder::new(4096), block).is_err(), "{block:?}");
        }
    }
}

//! Owns the small byte-string rules that several protocols share (HTTP field values and the
//! WebSocket extension header are both RFC 9110 lists), so each is written once.

/// Strips optional whitespace (OWS: spaces and tabs, RFC 9110 §5.6.3) from both ends.
pub fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let Some(start) = start else {
        return &[];
    };
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .unwrap_or(start);
    &s[start..=end]
}

//! Owns the session-ticket keys: which key seals new tickets, which keys still open old ones, and
//! when they rotate. Two sources:
//!
//! - **generated** (no `tls.ticket_key_file`): a random key, replaced every `tls.ticket_rotation`;
//!   the previous key keeps opening tickets for one more period, so a ticket issued just before a
//!   rotation still resumes.
//! - **a shared key file** (`tls.ticket_key_file`): every holdfast process (and host) that reads
//!   the same file seals and opens with the same keys, so a session from one resumes at another.
//!   The file is re-read every `tls.ticket_rotation` and on SIGHUP; a file that fails to read
//!   keeps the keys in use and says why.
//!
//! File format (see tuning/TLS.md): one key per line, 64 hex digits (32 random bytes, e.g.
//! `openssl rand -hex 32`); `#` starts a comment. The first key seals new tickets; every key in
//! the file opens them. A ticket is `key name (16) | nonce (12) | AES-256-GCM(state) | tag (16)`,
//! the key name being the first 16 bytes of SHA-256 over the key, so a ticket names its key.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// RFC 8446 §4.6.1: a ticket lifetime must not exceed seven days.
const MAX_LIFETIME_SECS: u64 = 7 * 24 * 3600;

struct TicketKey {
    name: [u8; NAME_LEN],
    /// Kept so that a generated key can move to "previous" (LessSafeKey is not Clone).
    secret: [u8; KEY_LEN],
    key: LessSafeKey,
}

impl TicketKey {
    fn new(secret: &[u8; KEY_LEN]) -> TicketKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, secret);
        let mut name = [0; NAME_LEN];
        name.copy_from_slice(&digest.as_ref()[..NAME_LEN]);
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, secret).expect("a 32-byte key is valid for AES-256"),
        );
        TicketKey {
            name,
            secret: *secret,
            key,
        }
    }
}

/// The keys in force: `keys[0]` seals, all of them open.
struct KeySet {
    keys: Vec<TicketKey>,
}

enum Source {
    Generated,
    File(PathBuf),
}

/// The ticketer handed to rustls; shared by every worker (tickets from one worker resume at
/// any other).
pub struct TicketKeys {
    source: Source,
    rotation: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last rotated (or the file last read); checked on each ticket, so no
    /// thread or timer is needed and an idle server does no work.
    rotated_at: Mutex<Instant>,
    rng: SystemRandom,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKeys")
    }
}

impl TicketKeys {
    /// Random keys rotated every `rotation`.
    pub fn generated(rotation: Duration) -> Result<TicketKeys, String> {
        let rng = SystemRandom::new();
        let first = random_key(&rng)?;
        Ok(TicketKeys::with(
            Source::Generated,
            rotation,
            KeySet { keys: vec![first] },
            rng,
        ))
    }

    /// Keys read from a file shared between processes; the error names the file and the line.
    pub fn from_file(path: &Path, rotation: Duration) -> Result<TicketKeys, String> {
        let keys = read_key_file(path)?;
        let source = Source::File(path.to_path_buf());
        Ok(TicketKeys::with(
            source,
            rotation,
            keys,
            SystemRandom::new(),
        ))
    }

    fn with(source: Source, rotation: Duration, keys: KeySet, rng: SystemRandom) -> TicketKeys {
        TicketKeys {
            source,
            rotation,
            keys: RwLock::new(Arc::new(keys)),
            rotated_at: Mutex::new(Instant::now()),
            rng,
        }
    }

    /// Re-reads the key file now (SIGHUP). Generated keys are left alone: rotating them on
    /// every reload would cut resumption short for no gain.
    pub fn reload(&self) -> Result<(), String> {
        let Source::File(path) = &self.source else {
            return Ok(());
        };
        let keys = read_key_file(path)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        *self.rotated_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    /// Rotates if a period has passed: a new generated key in front of the previous one, or a
    /// fresh read of the key file.
    fn rotate_if_due(&self) {
        let mut at = self.rotated_at.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = at.elapsed();
        if elapsed < self.rotation {
            return;
        }
        *at = Instant::now();
        drop(at);
        // Rotation is lazy (checked when a ticket is sealed or opened): after two or more idle
        // periods the previous key is as stale as the current one, and both go.
        self.rotate(elapsed < self.rotation * 2);
    }

    /// Puts a new generated key in front of the previous one (or alone, when the previous one
    /// has outlived its second period), or reads the key file again.
    fn rotate(&self, keep_previous: bool) {
        match &self.source {
            Source::Generated => {
                let Ok(fresh) = random_key(&self.rng) else {
                    return;
                };
                let mut guard = self.keys.write().unwrap_or_else(|e| e.into_inner());
                let previous = guard
                    .keys
                    .first()
                    .filter(|_| keep_previous)
                    .map(|k| TicketKey::new(&k.secret));
                let mut keys = vec![fresh];
                keys.extend(previous);
                *guard = Arc::new(KeySet { keys });
            }
            Source::File(path) => match read_key_file(path) {
                Ok(keys) => *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys),
                Err(e) => {
                    crate::log::limited!(Warn, "tls.ticket_key_file: {e}; keeping the keys in use")
                }
            },
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.rotate_if_due();
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    /// A ticket opens while its key is current or previous: between one and two rotation
    /// periods. Advertising two keeps clients from discarding tickets that would still resume.
    fn lifetime(&self) -> u32 {
        (self.rotation.as_secs() * 2).clamp(1, MAX_LIFETIME_SECS) as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let set = self.current();
        let key = set.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&key.name);
        ticket.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut body,
            )
            .ok()?;
        ticket.extend_from_slice(&body);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let set = self.current();
        let key = set.keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain_len = key
            .key
            .open_in_place(nonce, Aad::from(&key.name), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

fn random_key(rng: &SystemRandom) -> Result<TicketKey, String> {
    let mut secret = [0u8; KEY_LEN];
    rng.fill(&mut secret)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(TicketKey::new(&secret))
}

/// A fresh key as one line of a key file (64 hex digits), for a supervisor that writes the file
/// its processes share.
pub fn random_key_hex() -> Result<String, String> {
    let mut secret = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| "the system random source failed".to_string())?;
    Ok(secret.iter().map(|b| format!("{b:02x}")).collect())
}

/// Parses the shared key file: 64 hex digits a line, `#` comments, at least one key.
fn read_key_file(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_keys(text: &str) -> Result<KeySet, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let secret = decode_hex_key(line)
            .ok_or_else(|| format!("line {}: expected 64 hex digits (32 bytes)", n + 1))?;
        keys.push(TicketKey::new(&secret));
    }
    if keys.is_empty() {
        return Err("no keys (write one per line: `openssl rand -hex 32`)".into());
    }
    Ok(KeySet { keys })
}

fn decode_hex_key(s: &str) -> Option<[u8; KEY_LEN]> {
    let s = s.as_bytes();
    if s.len() != KEY_LEN * 2 {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    const HOUR: Duration = Duration::from_secs(3600);
    const KEY_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn key_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("holdfast-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_ticket_opens_and_a_tampered_one_does_not() {
        let keys = TicketKeys::generated(HOUR).unwrap();
        let ticket = keys.encrypt(b"session state").unwrap();
        assert_eq!(keys.decrypt(&ticket).unwrap(), b"session state");
        let mut bad = ticket.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(keys.decrypt(&bad), None);
        assert_eq!(keys.decrypt(&ticket[..20]), None);
        assert_eq!(keys.decrypt(b""), None);
    }

    #[test]
    fn a_ticket_survives_one_rotation_but_not_two() {
        let keys = TicketKeys::generated(HOUR).unwrap();
        let ticket = keys.encrypt(b"s").unwrap();
        keys.rotate(true);
        assert_eq!(
            keys.decrypt(&ticket).unwrap(),
            b"s",
            "previous key still opens"
        );
        let newer = keys.encrypt(b"t").unwrap();
        assert_ne!(
            newer[..NAME_LEN],
            ticket[..NAME_LEN],
            "new tickets use the new key"
        );
        keys.rotate(true);
        assert_eq!(
            keys.decrypt(&ticket),
            None,
            "two rotations later the key is gone"
        );
        assert_eq!(keys.decrypt(&newer).unwrap(), b"t");
        // After two idle periods nothing old survives.
        keys.rotate(false);
        assert_eq!(keys.decrypt(&newer), None);
    }

    #[test]
    fn processes_sharing_a_key_file_open_each_others_tickets() {
        let path = key_file("shared-keys", &format!("# current\n{KEY_A}\n"));
        let one = TicketKeys::from_file(&path, HOUR).unwrap();
        let two = TicketKeys::from_file(&path, HOUR).unwrap();
        let ticket = one.encrypt(b"state").unwrap();
        assert_eq!(two.decrypt(&ticket).unwrap(), b"state");
        // The documented rotation: a new key on top, the old one kept below it.
        std::fs::write(&path, format!("{KEY_B}\n{KEY_A}  # previous\n")).unwrap();
        two.reload().unwrap();
        assert_eq!(two.decrypt(&ticket).unwrap(), b"state");
        let newer = two.encrypt(b"newer").unwrap();
        assert_eq!(
            one.decrypt(&newer),
            None,
            "not re-read yet: it lacks the new key"
        );
        one.reload().unwrap();
        assert_eq!(one.decrypt(&newer).unwrap(), b"newer");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_bad_key_file_names_the_line_and_keeps_the_old_keys() {
        let path = key_file("bad-keys", &format!("{KEY_A}\nnot-hex\n"));
        let err = TicketKeys::from_file(&path, HOUR).unwrap_err();
        assert!(err.contains("line 2: expected 64 hex digits"), "{err}");
        std::fs::write(&path, format!("{KEY_A}\n")).unwrap();
        let keys = TicketKeys::from_file(&path, HOUR).unwrap();
        let ticket = keys.encrypt(b"x").unwrap();
        std::fs::write(&path, "# no keys at all\n").unwrap();
        assert!(keys.reload().unwrap_err().contains("no keys"));
        assert_eq!(keys.decrypt(&ticket).unwrap(), b"x");
        let _ = std::fs::remove_file(&path);
        assert!(
            TicketKeys::from_file(&path, HOUR)
                .unwrap_err()
                .contains("cannot read")
        );
    }
}

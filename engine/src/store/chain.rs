//! The journal's hash chain: every entry commits to the one before it.
//!
//! ```text
//! link(-1) = SHA-256("tollgate/v1/journal-genesis\0" ‖ run id)
//! link(i)  = SHA-256("tollgate/v1/journal\0" ‖ link(i-1) ‖ SHA-256(event JSON of entry i))
//! ```
//! An entry's sealed plaintext is `CHAINED ‖ link(i-1) ‖ event JSON`: the link it follows is
//! inside the sealed record, so an entry re-sealed with other content (by someone holding the
//! key) breaks the link of the entry after it, and a receipt's chain can be recomputed from the
//! events' digests alone (`receipt`), without the events' content.
//!
//! The writer (the run actor) keeps the head ([`JournalHead`]) in memory: appending costs one
//! hash per event and no read.

use sha2::{Digest, Sha256};

use crate::ids::RunId;

/// First byte of a chained entry's plaintext (event JSON starts with `{`, so an entry written
/// before the chain is recognised, and refused).
const CHAINED: u8 = 0x02;
const LINK_LEN: usize = 32;

/// One link of a run's chain (a SHA-256 value).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainLink(pub [u8; LINK_LEN]);

impl std::fmt::Debug for ChainLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainLink({})", self.to_hex())
    }
}

impl ChainLink {
    /// The link before a run's first entry: bound to the run, so entries cannot move between runs.
    pub fn genesis(run: &RunId) -> ChainLink {
        let mut h = Sha256::new();
        h.update(b"tollgate/v1/journal-genesis\0");
        h.update(run.as_str().as_bytes());
        ChainLink(h.finalize().into())
    }

    /// The link of an entry that follows `self` and holds an event with this digest.
    pub fn next(&self, event_digest: &[u8; LINK_LEN]) -> ChainLink {
        let mut h = Sha256::new();
        h.update(b"tollgate/v1/journal\0");
        h.update(self.0);
        h.update(event_digest);
        ChainLink(h.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<ChainLink> {
        // Lower-case only: one text per link, so an edited letter case is an edit.
        if s.len() != 2 * LINK_LEN || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; LINK_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChainLink(out))
    }
}

/// The digest an entry's link commits to: SHA-256 of the event's JSON as journaled.
pub fn event_digest(event_json: &[u8]) -> [u8; LINK_LEN] {
    Sha256::digest(event_json).into()
}

/// Where a run's journal ends: its length and its last link. The run actor holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalHead {
    pub len: u64,
    pub link: ChainLink,
}

impl JournalHead {
    /// The head of an empty journal.
    pub fn empty(run: &RunId) -> JournalHead {
        JournalHead { len: 0, link: ChainLink::genesis(run) }
    }
}

/// One journal entry as the chain sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedEntry {
    /// The link this entry follows (the previous entry's, or the run's genesis).
    pub prev: ChainLink,
    /// SHA-256 of the entry's event JSON.
    pub digest: [u8; LINK_LEN],
    /// This entry's own link.
    pub link: ChainLink,
}

/// The plaintext to seal for an event that follows `prev`, the event's JSON written by
/// `write_json` straight after the link (no second copy), and the entry's own link.
pub(crate) fn frame(prev: &ChainLink, write_json: impl FnOnce(&mut Vec<u8>)) -> (Vec<u8>, ChainLink) {
    let mut out = Vec::with_capacity(256);
    out.push(CHAINED);
    out.extend_from_slice(&prev.0);
    write_json(&mut out);
    let link = prev.next(&event_digest(&out[1 + LINK_LEN..]));
    (out, link)
}

/// Split an opened entry into the link it claims to follow and its event JSON.
pub(crate) fn unframe(plain: &[u8]) -> Result<(ChainLink, &[u8]), &'static str> {
    match plain.first() {
        Some(&CHAINED) if plain.len() > 1 + LINK_LEN => {
            let prev: [u8; LINK_LEN] = plain[1..1 + LINK_LEN].try_into().expect("length checked");
            Ok((ChainLink(prev), &plain[1 + LINK_LEN..]))
        }
        Some(b'{') => Err("the entry predates the journal's hash chain (written by an older version)"),
        _ => Err("the entry is not a chained journal entry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_depend_on_the_run_the_previous_link_and_the_event() {
        let a = ChainLink::genesis(&RunId::new("r1"));
        let b = ChainLink::genesis(&RunId::new("r2"));
        assert_ne!(a, b);
        let d = event_digest(br#"{"event":"run_started"}"#);
        assert_ne!(a.next(&d), b.next(&d));
        assert_ne!(a.next(&d), a.next(&event_digest(br#"{"event":"cancelled"}"#)));
        assert_eq!(a.next(&d), a.next(&d));
    }

    #[test]
    fn frames_round_trip_and_old_entries_are_named() {
        let prev = ChainLink::genesis(&RunId::new("r1"));
        let (framed, link) = frame(&prev, |b| b.extend_from_slice(b"{\"x\":1}"));
        assert_eq!(unframe(&framed).unwrap(), (prev, &b"{\"x\":1}"[..]));
        assert_eq!(link, prev.next(&event_digest(b"{\"x\":1}")));
        assert!(unframe(b"{\"event\":\"run_started\"}").unwrap_err().contains("predates"));
        assert!(unframe(&[]).is_err());
    }

    #[test]
    fn hex_is_lower_case_and_exact() {
        let l = ChainLink::genesis(&RunId::new("r1"));
        assert_eq!(ChainLink::from_hex(&l.to_hex()), Some(l));
        assert_eq!(ChainLink::from_hex(&l.to_hex().to_uppercase()), None);
        assert_eq!(ChainLink::from_hex(&l.to_hex()[2..]), None);
    }
}

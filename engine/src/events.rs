//! The internal event bus port: named events with a JSON payload, published by `event` steps,
//! `POST /api/events` and triggers, read back by name from a point in time (a `wait`'s
//! lookback), and tailed in order by each process to wake the runs waiting for them.
//!
//! Events cross workflows but not owners: an event lives in the scope of an owner (the user or
//! group that owns workflows — [`EventName`]), so one owner's runs and triggers never see, and
//! cannot be woken by, another owner's events, whatever names they pick. Events are sealed with
//! the service's events key (not a workflow's) and stored under a keyed hash of owner and name
//! ([`EventCodec::name_id`]): store keys and stream keys hold neither. Backends: Redis streams (`tollgate-connectors`), and on the
//! embedded backend a durable SQLite table with an in-process wake-up.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{MasterKey, RecordKey};
use crate::store::StoreError;

/// Where an event is published and looked for: its owner's scope and its name. A workflow's
/// `event` steps and event triggers use the workflow's owner; `POST /api/events` a scope the
/// caller acts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventName<'a> {
    pub owner: &'a str,
    pub name: &'a str,
}

impl<'a> EventName<'a> {
    pub fn new(owner: &'a str, name: &'a str) -> Self {
        Self { owner, name }
    }
}

/// An event as the bus holds it. `id` orders events (per backend); `at` is when the bus
/// recorded it (ms since the epoch, on the bus's clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub payload: Value,
    pub at: u64,
}

impl BusEvent {
    /// What a `wait`'s correlation sees as `event`, and what the run journals.
    pub fn to_value(&self) -> Value {
        json!({ "id": self.id, "owner": self.owner, "name": self.name, "payload": self.payload, "at": self.at })
    }
}

/// The result of a publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub id: String,
    pub at: u64,
    /// The dedup key had been used already: nothing new was published; `id` is the first one's.
    pub duplicate: bool,
}

/// A new event seen by [`EventBus::tail`]: which name (keyed hash) and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tailed {
    pub name_id: String,
    pub id: String,
}

/// Where a tail has got to; opaque to callers. There is no "from now" cursor: a follower
/// takes one with [`EventBus::end`] *before* it looks at what is already on the bus, so an
/// event published in between is either seen by that look or tailed afterwards — a cursor
/// fixed by the first tail call would skip it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailCursor(pub String);

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Record an event durably. With a `dedup` key, an event published under the same key
    /// within the retention period is not published again (atomically: one of concurrent
    /// publishers wins).
    /// Dedup keys are per owner.
    async fn publish(
        &self,
        event: EventName<'_>,
        payload: &Value,
        dedup: Option<&str>,
    ) -> Result<Published, StoreError>;

    /// Events of `event`'s owner and name recorded at or after `from_ms`, oldest first, at most `limit`.
    async fn read_since(&self, event: EventName<'_>, from_ms: u64, limit: usize) -> Result<Vec<BusEvent>, StoreError>;

    /// A cursor at the end of the bus now: a tail from it sees every event recorded after
    /// this call returns.
    async fn end(&self) -> Result<TailCursor, StoreError>;

    /// Events recorded after `cursor`, oldest first, advancing it; waits up to `wait` for one
    /// when there is none. Concurrent tails (one per follower) do not hold each other up.
    async fn tail(&self, cursor: &mut TailCursor, wait: Duration) -> Result<Vec<Tailed>, StoreError>;

    /// The keyed hash the bus files `event` under (what [`Tailed::name_id`] holds).
    fn name_id(&self, event: EventName<'_>) -> String;
}

/// Seals and opens bus events, and hashes names into ids. Shared by every bus backend.
#[derive(Clone)]
pub struct EventCodec {
    key: RecordKey,
    name_secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EventCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventCodec(…)")
    }
}

/// What is sealed: owner and name travel inside so a record cannot pose as another's.
#[derive(Serialize, Deserialize)]
struct SealedEvent {
    owner: String,
    name: String,
    payload: Value,
}

impl EventCodec {
    pub fn new(master: &MasterKey) -> Self {
        Self { key: master.events_key(), name_secret: master.mac_key("event-names") }
    }

    /// HMAC-SHA256 of owner and name, 128 bits in hex. (Neither may hold a NUL: owners are
    /// ids and names are checked by `valid_event_name`, so the encoding is unambiguous.)
    pub fn name_id(&self, event: EventName<'_>) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.name_secret[..]).expect("HMAC takes any key length");
        mac.update(b"owner\0");
        mac.update(event.owner.as_bytes());
        mac.update(b"\0");
        mac.update(event.name.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn aad(name_id: &str) -> String {
        format!("events/{name_id}")
    }

    pub fn seal(&self, event: EventName<'_>, payload: &Value) -> Vec<u8> {
        let sealed =
            SealedEvent { owner: event.owner.to_string(), name: event.name.to_string(), payload: payload.clone() };
        let plain = serde_json::to_vec(&sealed).expect("JSON serialises");
        self.key.seal(Self::aad(&self.name_id(event)).as_bytes(), &plain)
    }

    /// Open an event filed under `name_id`.
    pub fn open(&self, name_id: &str, id: String, at: u64, sealed: &[u8]) -> Result<BusEvent, StoreError> {
        let where_ = || format!("event {id}");
        let plain = self.key.open(Self::aad(name_id).as_bytes(), sealed).map_err(|_| StoreError::Sealed(where_()))?;
        let e: SealedEvent =
            serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt { key: where_(), reason: e.to_string() })?;
        Ok(BusEvent { id, owner: e.owner, name: e.name, payload: e.payload, at })
    }

    /// A dedup key as stored: hashed, so a caller's key (which may carry data) is not kept, and
    /// per owner, so one owner's keys cannot suppress another's events.
    pub fn dedup_id(&self, owner: &str, dedup: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.name_secret[..]).expect("HMAC takes any key length");
        mac.update(b"dedup\0");
        mac.update(owner.as_bytes());
        mac.update(b"\0");
        mac.update(dedup.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// The store index of runs waiting for events of a name (members: run ids).
pub fn waiters_key(name_id: &str) -> String {
    format!("event-waits/{name_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_do_not_open_under_another_name() {
        let codec = EventCodec::new(&MasterKey::generate());
        let payload = json!({"order": "A-1"});
        let paid = EventName::new("ops", "paid");
        let sealed = codec.seal(paid, &payload);
        let e = codec.open(&codec.name_id(paid), "1".into(), 7, &sealed).unwrap();
        assert_eq!((e.owner.as_str(), e.name.as_str(), &e.payload, e.at), ("ops", "paid", &payload, 7));
        assert!(codec.open(&codec.name_id(EventName::new("ops", "refunded")), "1".into(), 7, &sealed).is_err());
        assert_ne!(codec.name_id(paid), codec.name_id(EventName::new("ops", "refunded")));
        assert_eq!(codec.name_id(paid).len(), 32);
    }

    #[test]
    fn owners_do_not_share_names_or_dedup_keys() {
        let codec = EventCodec::new(&MasterKey::generate());
        let ours = EventName::new("ops", "paid");
        let theirs = EventName::new("sales", "paid");
        assert_ne!(codec.name_id(ours), codec.name_id(theirs));
        // A record of one owner's event does not open as the other's.
        assert!(codec.open(&codec.name_id(theirs), "1".into(), 7, &codec.seal(ours, &json!(1))).is_err());
        assert_ne!(codec.dedup_id("ops", "k"), codec.dedup_id("sales", "k"));
        // The separator keeps ("a", "b.c") and ("a\0b", "c")-like splits apart.
        assert_ne!(codec.name_id(EventName::new("ab", "c")), codec.name_id(EventName::new("a", "bc")));
    }
}

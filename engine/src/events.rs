//! The internal event bus port: named events with a JSON payload, published by `event` steps,
//! `POST /api/events` and triggers, read back by name from a point in time (a `wait`'s
//! lookback), and tailed in order by each process to wake the runs waiting for them.
//!
//! Events cross workflows, so they are sealed with the service's events key (not a workflow's)
//! and stored under a keyed hash of their name ([`EventCodec::name_id`]): store keys and
//! stream keys hold no names. Backends: Redis streams (`tollgate-connectors`), and on the
//! embedded backend a durable SQLite table with an in-process wake-up.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{MasterKey, RecordKey};
use crate::store::StoreError;

/// An event as the bus holds it. `id` orders events (per backend); `at` is when the bus
/// recorded it (ms since the epoch, on the bus's clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    pub id: String,
    pub name: String,
    pub payload: Value,
    pub at: u64,
}

impl BusEvent {
    /// What a `wait`'s correlation sees as `event`, and what the run journals.
    pub fn to_value(&self) -> Value {
        json!({ "id": self.id, "name": self.name, "payload": self.payload, "at": self.at })
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

/// Where a tail has got to; opaque to callers. Starts empty: "from now".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailCursor(pub String);

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Record an event durably. With a `dedup` key, an event published under the same key
    /// within the retention period is not published again (atomically: one of concurrent
    /// publishers wins).
    async fn publish(&self, name: &str, payload: &Value, dedup: Option<&str>) -> Result<Published, StoreError>;

    /// Events named `name` recorded at or after `from_ms`, oldest first, at most `limit`.
    async fn read_since(&self, name: &str, from_ms: u64, limit: usize) -> Result<Vec<BusEvent>, StoreError>;

    /// Events recorded after `cursor`, oldest first, advancing it; waits up to `wait` for one
    /// when there is none. An empty cursor starts from now.
    async fn tail(&self, cursor: &mut TailCursor, wait: Duration) -> Result<Vec<Tailed>, StoreError>;

    /// The keyed hash the bus files `name` under (what [`Tailed::name_id`] holds).
    fn name_id(&self, name: &str) -> String;
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

/// What is sealed: the name travels inside so a record cannot pose as another name's.
#[derive(Serialize, Deserialize)]
struct SealedEvent {
    name: String,
    payload: Value,
}

impl EventCodec {
    pub fn new(master: &MasterKey) -> Self {
        Self { key: master.events_key(), name_secret: master.mac_key("event-names") }
    }

    /// HMAC-SHA256 of the name, 128 bits in hex.
    pub fn name_id(&self, name: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.name_secret[..]).expect("HMAC takes any key length");
        mac.update(name.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn aad(name_id: &str) -> String {
        format!("events/{name_id}")
    }

    pub fn seal(&self, name: &str, payload: &Value) -> Vec<u8> {
        let plain = serde_json::to_vec(&SealedEvent { name: name.to_string(), payload: payload.clone() }).expect("JSON serialises");
        self.key.seal(Self::aad(&self.name_id(name)).as_bytes(), &plain)
    }

    /// Open an event filed under `name_id`.
    pub fn open(&self, name_id: &str, id: String, at: u64, sealed: &[u8]) -> Result<BusEvent, StoreError> {
        let where_ = || format!("event {id}");
        let plain = self.key.open(Self::aad(name_id).as_bytes(), sealed).map_err(|_| StoreError::Sealed(where_()))?;
        let e: SealedEvent = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt { key: where_(), reason: e.to_string() })?;
        Ok(BusEvent { id, name: e.name, payload: e.payload, at })
    }

    /// A dedup key as stored: hashed, so a caller's key (which may carry data) is not kept.
    pub fn dedup_id(&self, dedup: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.name_secret[..]).expect("HMAC takes any key length");
        mac.update(b"dedup\0");
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
        let sealed = codec.seal("paid", &payload);
        let e = codec.open(&codec.name_id("paid"), "1".into(), 7, &sealed).unwrap();
        assert_eq!((e.name.as_str(), &e.payload, e.at), ("paid", &payload, 7));
        assert!(codec.open(&codec.name_id("refunded"), "1".into(), 7, &sealed).is_err());
        assert_ne!(codec.name_id("paid"), codec.name_id("refunded"));
        assert_eq!(codec.name_id("paid").len(), 32);
    }
}

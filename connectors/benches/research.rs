//! `research` throughput on the embedded (SQLite) store: ingestion in documents/s (extract,
//! chunk, index, seal, write; batches of 100 Markdown documents of about 3 KB) and search in
//! queries/s with p50/p99 latency (the opened index cached, as a long-running process has it),
//! plus the first query after an ingest (the index read back from the store and unsealed).
//! Run: `cargo bench -p tollgate-connectors --bench research` (release profile).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_connectors::docs::{DocStore, Format, SourceDoc};
use tollgate_connectors::store::SqliteBackend;
use tollgate_engine::crypto::MasterKey;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::store::Store;

const DOCS: usize = 1000;
const BATCH: usize = 100;
const QUERIES: usize = 2000;

const WORDS: &[&str] = &[
    "client",
    "matter",
    "engagement",
    "letter",
    "retainer",
    "invoice",
    "conflict",
    "register",
    "party",
    "adverse",
    "indemnification",
    "liability",
    "cap",
    "fees",
    "hourly",
    "billing",
    "scope",
    "services",
    "staffing",
    "court",
    "filing",
    "deadline",
    "contract",
    "clause",
    "termination",
    "notice",
    "jurisdiction",
    "governing",
    "law",
    "dispute",
    "arbitration",
    "settlement",
    "payment",
    "terms",
    "confidentiality",
    "privilege",
    "discovery",
    "witness",
    "expert",
    "report",
    "memo",
    "research",
    "precedent",
    "appeal",
    "judgment",
    "damages",
    "insurance",
    "policy",
    "renewal",
];

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self) -> &'static str {
        WORDS[(self.next() % WORDS.len() as u64) as usize]
    }
}

fn document(rng: &mut Rng, n: usize) -> SourceDoc {
    let mut text = format!("# Matter {n}: {} {}\n\n", rng.word(), rng.word());
    while text.len() < 3000 {
        for _ in 0..(8 + rng.next() % 12) {
            text.push_str(rng.word());
            text.push(' ');
        }
        text.push_str(&format!("ref-{n}-{}.\n\n", rng.next() % 1000));
    }
    SourceDoc { source: format!("matters/{n:05}.md"), format: Format::Markdown, bytes: text.into_bytes() }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(SqliteBackend::open(&dir.path().join("bench.db")).await.unwrap());
    let store = Arc::new(Store::new(backend, MasterKey::generate()));
    let docs = DocStore::new(store.clone());
    let owner = OwnerId::from("bench");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let started = Instant::now();
    let mut bytes = 0;
    let mut chunks = 0;
    for b in 0..DOCS / BATCH {
        let batch: Vec<SourceDoc> = (0..BATCH).map(|i| document(&mut rng, b * BATCH + i)).collect();
        bytes += batch.iter().map(|d| d.bytes.len()).sum::<usize>();
        chunks = docs.ingest(&owner, "matters", batch).await.unwrap().total_chunks;
    }
    let took = started.elapsed();
    println!(
        "ingest: {DOCS} documents ({:.1} MB, {chunks} chunks) in batches of {BATCH}: {:.2?}, {:.0} documents/s",
        bytes as f64 / 1e6,
        took,
        DOCS as f64 / took.as_secs_f64()
    );

    // The first query after the ingest opens the collection from the store in a fresh reader.
    let reader = DocStore::new(store.clone());
    let t = Instant::now();
    let hits = reader.search(&owner, "matters", "indemnification liability cap", 5).await.unwrap();
    println!("first query (index read from the store and unsealed): {:.2?}, {} hits", t.elapsed(), hits.len());

    let mut lat = Vec::with_capacity(QUERIES);
    let started = Instant::now();
    for _ in 0..QUERIES {
        let q = format!("{} {} {}", rng.word(), rng.word(), rng.word());
        let t = Instant::now();
        let hits = reader.search(&owner, "matters", &q, 5).await.unwrap();
        lat.push(t.elapsed());
        assert!(!hits.is_empty());
    }
    let took = started.elapsed();
    lat.sort();
    println!(
        "search: {QUERIES} queries (top 5 with snippets): {:.0} queries/s, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        QUERIES as f64 / took.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

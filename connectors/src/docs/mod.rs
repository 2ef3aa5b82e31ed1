//! Document collections: `tollgate docs ingest` and the `research` step. Each owner has named
//! collections; a collection is a full-text index (tantivy, BM25) over the chunks of the
//! documents ingested into it (text, Markdown, HTML, PDF).
//!
//! **Encrypted at rest as sealed segments in the store**: the index is built in memory and each
//! of its files is sealed with the owner's `docs` key (bound to its store key) and written under
//! `docs/{owner}/{collection}/file/{name}`; a sealed manifest names the live files and holds the
//! index metadata, so a reader sees one consistent generation. Segment files are immutable, so
//! an ingest writes only new segments, then the manifest, then deletes what it replaced.
//! Writers take the collection's lease (one ingest or delete at a time). Readers cache the
//! opened index per collection and generation: a query reads one record when nothing changed.

mod chunk;
pub mod extract;
mod index;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_engine::crypto::RecordKey;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::is_collection_name;
use tollgate_engine::store::{Lease, LeaseGrant, Store, StoreError, keys};

pub use extract::{Format, KNOWN_EXTENSIONS};
pub use index::IndexHit;
use index::{ChunkDoc, CollectionIndex, IndexError, META_FILE};

/// The purpose the owner's docs key is derived for.
const KEY_PURPOSE: &str = "docs";
/// How long a writer may hold a collection before another may take it over.
const LEASE_TTL: Duration = Duration::from_secs(300);
/// How long an ingest waits for another writer of the same collection.
const LEASE_WAIT: Duration = Duration::from_secs(30);

/// A document to ingest: its name in hits (`source`), its format and its bytes.
#[derive(Clone, Debug)]
pub struct SourceDoc {
    pub source: String,
    pub format: Format,
    pub bytes: Vec<u8>,
}

/// What an ingest did with one document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestedDoc {
    pub source: String,
    pub format: Format,
    pub chunks: u32,
    /// The document was already in the collection with the same content: nothing changed.
    pub unchanged: bool,
}

/// What an ingest did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestReport {
    pub collection: String,
    pub documents: Vec<IngestedDoc>,
    /// Documents and chunks in the collection afterwards.
    pub total_documents: usize,
    pub total_chunks: u64,
}

/// A collection as `tollgate docs list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub documents: Vec<DocumentInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    pub source: String,
    pub format: Format,
    pub bytes: u64,
    pub chunks: u32,
    /// SHA-256 of the content (hex), to skip a re-ingest of the same bytes.
    pub sha256: String,
}

/// A search hit, numbered (`id`) so a summary can cite it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub id: String,
    #[serde(flatten)]
    pub hit: IndexHit,
}

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("`{0}` is not a valid name: use 1 to 64 letters, digits, `_`, `.`, `-`")]
    BadName(String),
    #[error("no collection `{collection}` for owner `{owner}` (ingest documents with `tollgate docs ingest`)")]
    NotFound { owner: String, collection: String },
    #[error("{document}: {message}")]
    Unreadable { document: String, message: String },
    #[error("the query is empty")]
    EmptyQuery,
    #[error("collection `{0}` is being written by another process; try again")]
    Busy(String),
    #[error("the index of collection `{collection}`: {message}")]
    Index { collection: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sealed record naming a collection's live index files.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Grows with every write; readers cache by it.
    generation: u64,
    /// The index metadata (`meta.json`), kept here so it changes with the manifest atomically.
    meta: String,
    /// Immutable segment files, stored under `docs_file`.
    files: Vec<String>,
    documents: BTreeMap<String, DocumentInfo>,
}

struct Cached {
    generation: u64,
    index: Arc<CollectionIndex>,
}

/// The owners' document collections, in the store.
pub struct DocStore {
    store: Arc<Store>,
    /// This instance's lease holder id.
    holder: String,
    cache: Mutex<HashMap<(OwnerId, String), Cached>>,
}

impl DocStore {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, holder: format!("docs-{}", ulid::Ulid::generate()), cache: Mutex::new(HashMap::new()) }
    }

    fn key(&self, owner: &OwnerId) -> RecordKey {
        self.store.owner_key(owner, KEY_PURPOSE)
    }

    fn check_names(owner: &OwnerId, collection: &str) -> Result<(), DocsError> {
        for name in [owner.as_str(), collection] {
            if !is_collection_name(name) {
                return Err(DocsError::BadName(name.to_string()));
            }
        }
        Ok(())
    }

    async fn manifest(&self, owner: &OwnerId, collection: &str) -> Result<Option<Manifest>, DocsError> {
        let key = keys::docs_manifest(owner, collection);
        let Some(sealed) = self.store.backend().get(&key).await? else { return Ok(None) };
        let plain = self.key(owner).open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.clone()))?;
        let m = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt { key, reason: e.to_string() })?;
        Ok(Some(m))
    }

    /// The files of `m`'s index, unsealed (`meta.json` first).
    async fn load_files(
        &self,
        owner: &OwnerId,
        collection: &str,
        m: &Manifest,
    ) -> Result<Vec<(String, Vec<u8>)>, DocsError> {
        let k = self.key(owner);
        let store_keys: Vec<String> = m.files.iter().map(|f| keys::docs_file(owner, collection, f)).collect();
        let values = self.store.backend().get_many(&store_keys).await?;
        let mut out = vec![(META_FILE.to_string(), m.meta.clone().into_bytes())];
        for ((name, key), value) in m.files.iter().zip(&store_keys).zip(values) {
            let sealed = value.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let plain = k.open(key.as_bytes(), &sealed).map_err(|_| StoreError::Sealed(key.clone()))?;
            out.push((name.clone(), plain));
        }
        Ok(out)
    }

    async fn take_lease(&self, owner: &OwnerId, collection: &str) -> Result<Lease, DocsError> {
        let key = keys::docs_lease(owner, collection);
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            match self.store.backend().lease_acquire(&key, &self.holder, LEASE_TTL, None).await? {
                LeaseGrant::Granted(l) => return Ok(l),
                LeaseGrant::Held(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                LeaseGrant::Held(_) => return Err(DocsError::Busy(collection.to_string())),
            }
        }
    }

    /// Extracts, chunks and indexes `docs` into `collection` (created on first use). A source
    /// already in the collection is replaced; one with the same content is left as it is.
    /// Every document is read before anything is written: one unreadable document fails the
    /// ingest and changes nothing.
    pub async fn ingest(
        &self,
        owner: &OwnerId,
        collection: &str,
        docs: Vec<SourceDoc>,
    ) -> Result<IngestReport, DocsError> {
        Self::check_names(owner, collection)?;
        let prepared = tokio::task::spawn_blocking(move || prepare(docs))
            .await
            .map_err(|e| DocsError::Index { collection: collection.to_string(), message: e.to_string() })??;
        let lease = self.take_lease(owner, collection).await?;
        let result = self.ingest_held(owner, collection, prepared).await;
        let _ = self.store.backend().lease_release(&lease).await;
        result
    }

    async fn ingest_held(
        &self,
        owner: &OwnerId,
        collection: &str,
        prepared: Vec<Prepared>,
    ) -> Result<IngestReport, DocsError> {
        let index_err = |e: IndexError| DocsError::Index { collection: collection.to_string(), message: e.0 };
        let old = self.manifest(owner, collection).await?;
        let mut manifest = old.clone().unwrap_or_default();
        let mut report = Vec::new();
        let mut changed = Vec::new();
        for p in prepared {
            let unchanged = manifest.documents.get(&p.info.source).is_some_and(|d| d.sha256 == p.info.sha256);
            report.push(IngestedDoc {
                source: p.info.source.clone(),
                format: p.info.format,
                chunks: p.info.chunks,
                unchanged,
            });
            if !unchanged {
                manifest.documents.insert(p.info.source.clone(), p.info.clone());
                changed.push((p.info.source, p.chunks));
            }
        }
        let total_chunks = manifest.documents.values().map(|d| u64::from(d.chunks)).sum();
        let total_documents = manifest.documents.len();
        if !changed.is_empty() {
            let files = match &old {
                Some(m) => self.load_files(owner, collection, m).await?,
                None => Vec::new(),
            };
            let built = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u8>)>, IndexError> {
                let mut idx = if files.is_empty() { CollectionIndex::create()? } else { CollectionIndex::open(files)? };
                idx.replace(&changed)?;
                idx.files()
            })
            .await
            .map_err(|e| index_err(IndexError(e.to_string())))?
            .map_err(index_err)?;
            self.write(owner, collection, old.as_ref(), manifest, built).await?;
        }
        Ok(IngestReport { collection: collection.to_string(), documents: report, total_documents, total_chunks })
    }

    /// Writes the new segment files, then the manifest (the commit point), then deletes the
    /// files the new generation no longer uses.
    async fn write(
        &self,
        owner: &OwnerId,
        collection: &str,
        old: Option<&Manifest>,
        mut manifest: Manifest,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<(), DocsError> {
        let k = self.key(owner);
        let before: HashSet<&String> = old.map(|m| m.files.iter().collect()).unwrap_or_default();
        let mut puts = Vec::new();
        manifest.files.clear();
        for (name, bytes) in files {
            if name == META_FILE {
                manifest.meta = String::from_utf8(bytes)
                    .map_err(|e| DocsError::Index { collection: collection.into(), message: e.to_string() })?;
                continue;
            }
            if !before.contains(&name) {
                let key = keys::docs_file(owner, collection, &name);
                let sealed = k.seal(key.as_bytes(), &bytes);
                puts.push((key, sealed));
            }
            manifest.files.push(name);
        }
        if !puts.is_empty() {
            self.store.backend().put_many(&puts).await?;
        }
        manifest.generation = old.map_or(1, |m| m.generation + 1);
        let key = keys::docs_manifest(owner, collection);
        let sealed = k.seal(key.as_bytes(), &serde_json::to_vec(&manifest).expect("manifests serialise"));
        self.store.backend().put(&key, &sealed, None).await?;
        self.store.backend().index_add(&keys::docs_collections(owner), collection).await?;
        let now: HashSet<&String> = manifest.files.iter().collect();
        for gone in before.difference(&now) {
            self.store.backend().delete(&keys::docs_file(owner, collection, gone)).await?;
        }
        Ok(())
    }

    /// The owner of workflow `wf` (whose collections its `research` steps search).
    pub async fn workflow_owner(&self, wf: &tollgate_engine::ids::WorkflowId) -> Result<OwnerId, StoreError> {
        self.store.workflow_owner(wf).await
    }

    /// Removes `collection` and every file of its index; returns whether it existed.
    pub async fn delete(&self, owner: &OwnerId, collection: &str) -> Result<bool, DocsError> {
        Self::check_names(owner, collection)?;
        let lease = self.take_lease(owner, collection).await?;
        let result = async {
            let existed = self.manifest(owner, collection).await?.is_some();
            // The manifest first: from then on the collection does not exist for readers.
            self.store.backend().delete(&keys::docs_manifest(owner, collection)).await?;
            let prefix = keys::docs_file(owner, collection, "");
            for key in self.store.backend().scan_prefix(&prefix).await? {
                self.store.backend().delete(&key).await?;
            }
            self.store.backend().index_remove(&keys::docs_collections(owner), collection).await?;
            Ok::<bool, DocsError>(existed)
        }
        .await;
        let _ = self.store.backend().lease_release(&lease).await;
        self.cache.lock().expect("docs cache lock").remove(&(owner.clone(), collection.to_string()));
        result
    }

    /// The owner's collections and their documents.
    pub async fn list(&self, owner: &OwnerId) -> Result<Vec<CollectionInfo>, DocsError> {
        let mut out = Vec::new();
        for name in self.store.backend().index_members(&keys::docs_collections(owner)).await? {
            if let Some(m) = self.manifest(owner, &name).await? {
                out.push(CollectionInfo { name, documents: m.documents.into_values().collect() });
            }
        }
        Ok(out)
    }

    /// The `k` best chunks of `collection` for `query`, best first, numbered `hit-1`, `hit-2`…
    pub async fn search(
        &self,
        owner: &OwnerId,
        collection: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<Hit>, DocsError> {
        Self::check_names(owner, collection)?;
        if query.trim().is_empty() {
            return Err(DocsError::EmptyQuery);
        }
        let index = self.open(owner, collection).await?;
        let query = query.to_string();
        let hits = tokio::task::spawn_blocking(move || index.search(&query, k))
            .await
            .map_err(|e| DocsError::Index { collection: collection.to_string(), message: e.to_string() })?
            .map_err(|e| DocsError::Index { collection: collection.to_string(), message: e.0 })?;
        Ok(hits.into_iter().enumerate().map(|(i, hit)| Hit { id: format!("hit-{}", i + 1), hit }).collect())
    }

    /// The collection's current index, from the cache when its generation has not changed.
    async fn open(&self, owner: &OwnerId, collection: &str) -> Result<Arc<CollectionIndex>, DocsError> {
        let not_found = || DocsError::NotFound { owner: owner.to_string(), collection: collection.to_string() };
        let cache_key = (owner.clone(), collection.to_string());
        // A writer may delete the files of the generation just read: read the manifest again.
        let mut tries = 0;
        loop {
            tries += 1;
            let m = self.manifest(owner, collection).await?.ok_or_else(not_found)?;
            if let Some(c) = self.cache.lock().expect("docs cache lock").get(&cache_key)
                && c.generation == m.generation
            {
                return Ok(c.index.clone());
            }
            let files = match self.load_files(owner, collection, &m).await {
                Ok(f) => f,
                Err(DocsError::Store(StoreError::NotFound(_))) if tries < 3 => continue,
                Err(e) => return Err(e),
            };
            let index = tokio::task::spawn_blocking(move || CollectionIndex::open(files))
                .await
                .map_err(|e| DocsError::Index { collection: collection.to_string(), message: e.to_string() })?
                .map_err(|e| DocsError::Index { collection: collection.to_string(), message: e.0 })?;
            let index = Arc::new(index);
            self.cache
                .lock()
                .expect("docs cache lock")
                .insert(cache_key, Cached { generation: m.generation, index: index.clone() });
            return Ok(index);
        }
    }
}

/// A document read and chunked, ready to index.
struct Prepared {
    info: DocumentInfo,
    chunks: Vec<ChunkDoc>,
}

fn prepare(docs: Vec<SourceDoc>) -> Result<Vec<Prepared>, DocsError> {
    let mut out: Vec<Prepared> = Vec::with_capacity(docs.len());
    for d in docs {
        let x = extract::extract(d.format, &d.bytes)
            .map_err(|e| DocsError::Unreadable { document: d.source.clone(), message: e.0 })?;
        // A chunk never spans two pages, so each hit names the page it is on.
        let ranges = x.sections().into_iter().flat_map(|sec| {
            let base = sec.start;
            chunk::chunks(&x.text[sec]).into_iter().map(move |r| base + r.start..base + r.end)
        });
        let chunks: Vec<ChunkDoc> = ranges
            .enumerate()
            .map(|(i, r)| ChunkDoc {
                chunk: i as u64,
                text: x.text[r.clone()].to_string(),
                start: x.source_offset(r.start).unwrap_or(r.start) as u64,
                end: x.source_offset(r.end).unwrap_or(r.end) as u64,
                page: x.page(r.start),
            })
            .collect();
        let info = DocumentInfo {
            source: d.source,
            format: d.format,
            bytes: d.bytes.len() as u64,
            chunks: chunks.len() as u32,
            sha256: hex::encode(Sha256::digest(&d.bytes)),
        };
        // The same source twice in one ingest: the last one counts.
        out.retain(|p| p.info.source != info.source);
        out.push(Prepared { info, chunks });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

//! `DocStore` over the in-memory backend: ingest, search, replace, skip unchanged, delete, what
//! is stored (sealed, nothing readable), and bad input that changes nothing.

use std::sync::Arc;

use tollgate_engine::crypto::MasterKey;
use tollgate_engine::ids::OwnerId;
use tollgate_engine::store::memory::MemoryBackend;
use tollgate_engine::store::{Backend, Store};

use super::*;

const MARKER: &str = "QUOKKA-MARKER-5521";

fn docs() -> (DocStore, Arc<dyn Backend>) {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    (DocStore::new(Arc::new(Store::new(backend.clone(), MasterKey::generate()))), backend)
}

fn doc(source: &str, format: Format, text: &str) -> SourceDoc {
    SourceDoc { source: source.into(), format, bytes: text.as_bytes().to_vec() }
}

async fn raw_dump(b: &Arc<dyn Backend>) -> Vec<u8> {
    let mut all = Vec::new();
    for key in b.scan_prefix("").await.unwrap() {
        all.extend_from_slice(key.as_bytes());
        if let Ok(Some(v)) = b.get(&key).await {
            all.extend(v);
        }
    }
    all
}

#[tokio::test]
async fn ingest_search_replace_and_delete() {
    let (docs, backend) = docs();
    let legal = OwnerId::from("legal");
    let report = docs
        .ingest(
            &legal,
            "precedents",
            vec![
                doc(
                    "fees.md",
                    Format::Markdown,
                    &format!("# Fees\n\nThe **retainer** for {MARKER} is EUR 5,000, billed monthly.\n"),
                ),
                doc(
                    "conflicts.html",
                    Format::Html,
                    "<html><body><h1>Conflicts register</h1><p>Globex Corporation, adverse party.</p></body></html>",
                ),
                doc("notes.txt", Format::Text, "Meeting notes about the office move and parking."),
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.total_documents, 3);
    assert!(report.documents.iter().all(|d| d.chunks == 1 && !d.unchanged), "{report:?}");

    let hits = docs.search(&legal, "precedents", "retainer fee", 5).await.unwrap();
    assert_eq!(hits[0].hit.source, "fees.md");
    assert_eq!(hits[0].id, "hit-1");
    assert!(hits[0].hit.snippet.contains("**retainer**"), "{:?}", hits[0].hit.snippet);
    // Markdown offsets point into the source file.
    assert_eq!(hits[0].hit.start, "# ".len() as u64);
    let hits = docs.search(&legal, "precedents", "Globex adverse", 5).await.unwrap();
    assert_eq!(hits[0].hit.source, "conflicts.html");

    // Another owner sees nothing of it.
    let other = docs.search(&OwnerId::from("sales"), "precedents", "retainer", 5).await.unwrap_err();
    assert!(matches!(other, DocsError::NotFound { .. }), "{other}");

    // Re-ingesting: unchanged content is skipped, changed content replaces the old chunks.
    let report = docs
        .ingest(
            &legal,
            "precedents",
            vec![
                doc("notes.txt", Format::Text, "Meeting notes about the office move and parking."),
                doc("fees.md", Format::Markdown, "# Fees\n\nHourly rates only; no advance payment.\n"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(report.documents.iter().map(|d| d.unchanged).collect::<Vec<_>>(), [true, false]);
    assert_eq!(report.total_documents, 3);
    assert!(docs.search(&legal, "precedents", "retainer", 5).await.unwrap().is_empty());
    assert_eq!(docs.search(&legal, "precedents", "hourly rates", 5).await.unwrap()[0].hit.source, "fees.md");

    // A fresh DocStore (another process) reads the same index from the store.
    let fresh = DocStore::new(docs.store.clone());
    assert_eq!(fresh.search(&legal, "precedents", "parking", 5).await.unwrap()[0].hit.source, "notes.txt");
    let listed = fresh.list(&legal).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].documents.len(), 3);

    // Nothing readable at rest: neither the marker nor the document text.
    let dump = raw_dump(&backend).await;
    let contains = |needle: &str| dump.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!contains(MARKER) && !contains("Globex") && !contains("parking"), "plaintext at rest");
    assert!(contains("docs/legal/precedents/manifest"), "the dump sees the keys");

    assert!(docs.delete(&legal, "precedents").await.unwrap());
    assert!(matches!(docs.search(&legal, "precedents", "parking", 5).await, Err(DocsError::NotFound { .. })));
    assert!(matches!(fresh.search(&legal, "precedents", "parking", 5).await, Err(DocsError::NotFound { .. })));
    let left: Vec<String> = backend.scan_prefix("docs/legal/precedents/").await.unwrap();
    assert_eq!(left, ["docs/legal/precedents/lease"], "only the lease record (ids and numbers) is left");
    assert!(docs.list(&legal).await.unwrap().is_empty());
    assert!(!docs.delete(&legal, "precedents").await.unwrap());
}

#[tokio::test]
async fn bad_input_is_named_and_changes_nothing() {
    let (docs, backend) = docs();
    let legal = OwnerId::from("legal");
    docs.ingest(&legal, "c", vec![doc("a.txt", Format::Text, "alpha")]).await.unwrap();
    let before = raw_dump(&backend).await;
    let err = docs
        .ingest(
            &legal,
            "c",
            vec![
                doc("b.txt", Format::Text, "beta"),
                SourceDoc { source: "broken.pdf".into(), format: Format::Pdf, bytes: b"%PDF-1.7 garbage".to_vec() },
            ],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("broken.pdf: unreadable PDF"), "{err}");
    assert!(docs.search(&legal, "c", "beta", 5).await.unwrap().is_empty());
    // The failed ingest left the store as it was, lease aside.
    let after = raw_dump(&backend).await;
    assert_eq!(before.len(), after.len());

    assert!(matches!(docs.ingest(&legal, "../x", vec![]).await, Err(DocsError::BadName(_))));
    assert!(matches!(docs.search(&legal, "c", "  ", 5).await, Err(DocsError::EmptyQuery)));
}

//! The full-text index of one collection (tantivy, BM25) in an in-memory directory: opened from
//! the files the store holds, updated by an ingest (a source's chunks replace its earlier ones),
//! read back as the files to store, and searched.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::directory::RamDirectory;
use tantivy::index::SegmentComponent;
use tantivy::query::QueryParser;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};
use tantivy::{Directory, Index, IndexReader, IndexSettings, ReloadPolicy, TantivyDocument, Term};

/// The file holding the index's metadata (which segments are live); rewritten by every commit.
pub const META_FILE: &str = "meta.json";

const TOKENIZER: &str = "tollgate";
/// Characters of text around the best match in a hit's snippet.
const SNIPPET_CHARS: usize = 240;

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IndexError(pub String);

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        IndexError(e.to_string())
    }
}

/// One chunk to index.
#[derive(Clone, Debug)]
pub struct ChunkDoc {
    pub chunk: u64,
    pub text: String,
    /// Byte range in the source file (plain text, Markdown) or in the extracted text.
    pub start: u64,
    pub end: u64,
    pub page: Option<u32>,
}

/// One search hit.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IndexHit {
    pub source: String,
    pub chunk: u64,
    pub score: f32,
    pub snippet: String,
    pub text: String,
    pub start: u64,
    pub end: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

#[derive(Clone, Copy)]
struct Fields {
    source: Field,
    chunk: Field,
    text: Field,
    start: Field,
    end: Field,
    page: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let stored_u64 = || NumericOptions::default().set_stored();
    let fields = Fields {
        source: b.add_text_field("source", STRING | STORED),
        chunk: b.add_u64_field("chunk", stored_u64()),
        text: b.add_text_field("text", text_options),
        start: b.add_u64_field("start", stored_u64()),
        end: b.add_u64_field("end", stored_u64()),
        page: b.add_u64_field("page", stored_u64()),
    };
    (b.build(), fields)
}

/// Words: split on non-alphanumerics, lower-cased, accents folded (`Müller` finds `muller`),
/// English stems (`engagements` finds `engagement`).
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// A collection's index, in memory.
pub struct CollectionIndex {
    dir: RamDirectory,
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

impl CollectionIndex {
    /// An empty index.
    pub fn create() -> Result<Self, IndexError> {
        let dir = RamDirectory::create();
        let (schema, _) = schema();
        let index = Index::create(dir.clone(), schema, IndexSettings::default())?;
        Self::with(dir, index)
    }

    /// The index made of `files` (name, bytes), as [`CollectionIndex::files`] gave them.
    pub fn open(files: Vec<(String, Vec<u8>)>) -> Result<Self, IndexError> {
        let dir = RamDirectory::create();
        for (name, bytes) in files {
            dir.atomic_write(Path::new(&name), &bytes).map_err(|e| IndexError(format!("{name}: {e}")))?;
        }
        let index = Index::open(dir.clone())?;
        Self::with(dir, index)
    }

    fn with(dir: RamDirectory, index: Index) -> Result<Self, IndexError> {
        index.tokenizers().register(TOKENIZER, analyzer());
        let (_, fields) = schema();
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { dir, index, reader, fields })
    }

    /// Replaces the chunks of each `(source, chunks)` (a source with no chunks is removed),
    /// commits, and waits for merges so [`CollectionIndex::files`] is final.
    pub fn replace(&mut self, docs: &[(String, Vec<ChunkDoc>)]) -> Result<(), IndexError> {
        let f = self.fields;
        let mut writer = self.index.writer_with_num_threads::<TantivyDocument>(1, 32_000_000)?;
        for (source, chunks) in docs {
            writer.delete_term(Term::from_field_text(f.source, source));
            for c in chunks {
                let mut d = TantivyDocument::default();
                d.add_text(f.source, source);
                d.add_u64(f.chunk, c.chunk);
                d.add_text(f.text, &c.text);
                d.add_u64(f.start, c.start);
                d.add_u64(f.end, c.end);
                if let Some(p) = c.page {
                    d.add_u64(f.page, u64::from(p));
                }
                writer.add_document(d)?;
            }
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The files of the committed index: `meta.json` first, then every file of a live segment.
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        let read = |p: &Path| self.dir.atomic_read(p).map_err(|e| IndexError(format!("{}: {e}", p.display())));
        let mut out = vec![(META_FILE.to_string(), read(Path::new(META_FILE))?)];
        for seg in self.index.searchable_segment_metas()? {
            for component in [
                SegmentComponent::Postings,
                SegmentComponent::Positions,
                SegmentComponent::FastFields,
                SegmentComponent::FieldNorms,
                SegmentComponent::Terms,
                SegmentComponent::Store,
                SegmentComponent::Delete,
            ] {
                let path = seg.relative_path(component);
                if self.dir.exists(&path).unwrap_or(false) {
                    out.push((path.to_string_lossy().into_owned(), read(&path)?));
                }
            }
        }
        Ok(out)
    }

    /// Chunks in the index.
    #[cfg(test)]
    pub fn chunk_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The `k` best chunks for `query` (BM25), best first. The query language is tantivy's:
    /// words, `"phrases"`, `+required`, `-excluded`; what it cannot parse is read as words.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<IndexHit>, IndexError> {
        let f = self.fields;
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![f.text]);
        let (q, _lenient) = parser.parse_query_lenient(query);
        let top = searcher.search(&*q, &TopDocs::with_limit(k).order_by_score())?;
        if top.is_empty() {
            return Ok(Vec::new());
        }
        let mut snippets = SnippetGenerator::create(&searcher, &*q, f.text)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let text_of = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let u64_of = |field| doc.get_first(field).and_then(|v| v.as_u64());
            let snippet = snippets.snippet_from_doc(&doc);
            let mut marked = String::new();
            let mut at = 0;
            for r in snippet.highlighted() {
                marked.push_str(&snippet.fragment()[at..r.start]);
                marked.push_str("**");
                marked.push_str(&snippet.fragment()[r.clone()]);
                marked.push_str("**");
                at = r.end;
            }
            marked.push_str(&snippet.fragment()[at..]);
            hits.push(IndexHit {
                source: text_of(f.source),
                chunk: u64_of(f.chunk).unwrap_or_default(),
                score,
                snippet: marked,
                text: text_of(f.text),
                start: u64_of(f.start).unwrap_or_default(),
                end: u64_of(f.end).unwrap_or_default(),
                page: u64_of(f.page).map(|p| p as u32),
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u64, text: &str) -> ChunkDoc {
        ChunkDoc { chunk: n, text: text.into(), start: 0, end: text.len() as u64, page: None }
    }

    #[test]
    fn ranks_by_bm25_survives_a_round_trip_through_its_files_and_replaces_sources() {
        let mut idx = CollectionIndex::create().unwrap();
        idx.replace(&[
            (
                "a.md".into(),
                vec![chunk(0, "The engagement letter sets the retainer fee."), chunk(1, "Unrelated weather notes.")],
            ),
            ("b.txt".into(), vec![chunk(0, "Fees are invoiced monthly.")]),
        ])
        .unwrap();
        let hits = idx.search("engagement letters", 5).unwrap();
        assert_eq!(hits[0].source, "a.md");
        assert_eq!(hits[0].chunk, 0);
        assert!(hits[0].snippet.contains("**engagement**"), "{:?}", hits[0].snippet);
        assert_eq!(hits.len(), 1);

        let files = idx.files().unwrap();
        assert_eq!(files[0].0, META_FILE);
        let mut again = CollectionIndex::open(files).unwrap();
        assert_eq!(again.chunk_count(), 3);
        assert_eq!(again.search("Müller OR engagement", 5).unwrap()[0].source, "a.md");

        again.replace(&[("a.md".into(), vec![chunk(0, "Now about Müller GmbH.")])]).unwrap();
        assert_eq!(again.chunk_count(), 2);
        assert!(again.search("engagement", 5).unwrap().is_empty());
        assert_eq!(again.search("muller", 5).unwrap()[0].source, "a.md", "accents are folded");
        again.replace(&[("a.md".into(), vec![])]).unwrap();
        assert_eq!(again.chunk_count(), 1);
        // An unparsable query is read leniently.
        assert_eq!(again.search("invoiced AND (", 5).unwrap()[0].source, "b.txt");
    }
}

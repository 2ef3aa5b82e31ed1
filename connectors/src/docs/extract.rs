//! Text out of documents: plain text, Markdown (pulldown-cmark), HTML (html2text) and PDF
//! (pdf-extract). Each extractor gives the text to index and, where the format allows it, a map
//! from positions in that text back to byte offsets in the source file (plain text and
//! Markdown), or the page each part of the text comes from (PDF).

use std::path::Path;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

/// A document format `tollgate docs ingest` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl Format {
    /// The format a file name's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" | "log" | "csv" | "tsv" | "rst" => Format::Text,
            "md" | "markdown" | "mdown" | "mkd" => Format::Markdown,
            "html" | "htm" | "xhtml" => Format::Html,
            "pdf" => Format::Pdf,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
        }
    }
}

/// The file extensions `Format::from_path` knows, for error messages.
pub const KNOWN_EXTENSIONS: &str = ".txt .text .log .csv .tsv .rst .md .markdown .html .htm .xhtml .pdf";

/// A document's text and where its parts come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extracted {
    pub text: String,
    /// `(text offset, source offset)` pairs, ascending: text from `text offset` on comes from
    /// the source from `source offset` on. Empty when the format has no byte map (HTML, PDF).
    source_map: Vec<(usize, usize)>,
    /// Text offsets where each page starts (PDF), ascending; page `i + 1` starts at `pages[i]`.
    pages: Vec<usize>,
}

impl Extracted {
    /// The byte offset in the source file of text offset `at`, where the format keeps one.
    pub fn source_offset(&self, at: usize) -> Option<usize> {
        let i = self.source_map.partition_point(|&(t, _)| t <= at).checked_sub(1)?;
        let (t, s) = self.source_map[i];
        Some(s + (at - t))
    }

    /// The parts of the text a chunk must not cross: each page of a paged format, else the
    /// whole text.
    pub fn sections(&self) -> Vec<std::ops::Range<usize>> {
        if self.pages.is_empty() {
            return vec![0..self.text.len()];
        }
        let ends = self.pages.iter().skip(1).copied().chain([self.text.len()]);
        self.pages.iter().copied().zip(ends).map(|(s, e)| s..e).collect()
    }

    /// The page (1-based) text offset `at` is on, for paged formats.
    pub fn page(&self, at: usize) -> Option<u32> {
        let i = self.pages.partition_point(|&p| p <= at);
        (i > 0).then_some(i as u32)
    }
}

/// Why a document's text could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ExtractError(pub String);

/// The text of a document in `format`.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    match format {
        Format::Text => {
            let (text, skipped) = utf8(bytes)?;
            Ok(Extracted { text: text.to_owned(), source_map: vec![(0, skipped)], pages: Vec::new() })
        }
        Format::Markdown => {
            let (text, skipped) = utf8(bytes)?;
            let mut x = markdown(text);
            x.source_map.iter_mut().for_each(|(_, s)| *s += skipped);
            Ok(x)
        }
        Format::Html => html(bytes),
        Format::Pdf => pdf(bytes),
    }
}

/// The text of UTF-8 bytes without a byte-order mark, and how many bytes the mark took.
fn utf8(bytes: &[u8]) -> Result<(&str, usize), ExtractError> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let skipped = bytes.len() - body.len();
    let text = std::str::from_utf8(body)
        .map_err(|e| ExtractError(format!("not UTF-8 text (invalid byte at offset {})", skipped + e.valid_up_to())))?;
    Ok((text, skipped))
}

/// Markdown's readable text (markup dropped, code kept), each piece mapped to its source bytes.
fn markdown(src: &str) -> Extracted {
    let mut out = Extracted::default();
    let push = |out: &mut Extracted, piece: &str, at: Option<usize>| {
        if let Some(at) = at {
            out.source_map.push((out.text.len(), at));
        }
        out.text.push_str(piece);
    };
    for (event, range) in Parser::new_ext(src, Options::all()).into_offset_iter() {
        match event {
            // Escapes and entities make the text shorter than its source; the piece still
            // starts where its source starts.
            Event::Text(t) => push(&mut out, &t, Some(range.start)),
            Event::Code(t) => {
                // The range covers the backticks (and a padding space) around the code.
                let inner = &src[range.clone()];
                let lead = inner.len() - inner.trim_start_matches('`').len();
                let pad = usize::from(inner[lead..].starts_with(' ') && !t.starts_with(' '));
                push(&mut out, &t, Some(range.start + lead + pad));
            }
            Event::SoftBreak | Event::HardBreak => push(&mut out, "\n", None),
            Event::Start(Tag::Item) => push(&mut out, "\n", None),
            Event::End(
                TagEnd::Paragraph | TagEnd::Heading(_) | TagEnd::CodeBlock | TagEnd::BlockQuote(_) | TagEnd::Item,
            )
            | Event::End(TagEnd::TableRow | TagEnd::TableHead) => push(&mut out, "\n\n", None),
            Event::End(TagEnd::TableCell) => push(&mut out, " | ", None),
            _ => {}
        }
    }
    out
}

/// An HTML page's rendered text (scripts, styles and comments dropped).
fn html(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let text = html2text::config::plain_no_decorate()
        .link_footnotes(false)
        .string_from_read(bytes, 100_000)
        .map_err(|e| ExtractError(format!("unreadable HTML: {e}")))?;
    Ok(Extracted { text, ..Extracted::default() })
}

/// A PDF's text, page by page.
fn pdf(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    // The parser may panic on malformed files: a bad document is an error, not a crash.
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|_| ExtractError("unreadable PDF (the parser gave up on its structure)".into()))?
        .map_err(|e| ExtractError(format!("unreadable PDF: {e}")))?;
    let mut out = Extracted::default();
    for page in pages {
        if !out.text.is_empty() {
            out.text.push_str("\n\n");
        }
        out.pages.push(out.text.len());
        out.text.push_str(page.trim());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(Format::from_path(Path::new("a/b.MD")), Some(Format::Markdown));
        assert_eq!(Format::from_path(Path::new("x.htm")), Some(Format::Html));
        assert_eq!(Format::from_path(Path::new("x.pdf")), Some(Format::Pdf));
        assert_eq!(Format::from_path(Path::new("notes.txt")), Some(Format::Text));
        assert_eq!(Format::from_path(Path::new("x.docx")), None);
        assert_eq!(Format::from_path(Path::new("README")), None);
    }

    #[test]
    fn markdown_text_maps_back_to_source_bytes() {
        let src = "# Fees\n\nThe *retainer* is `EUR 5,000`.\n\n- one\n- two\n";
        let x = extract(Format::Markdown, src.as_bytes()).unwrap();
        assert!(x.text.contains("Fees"), "{:?}", x.text);
        assert!(x.text.contains("The retainer is EUR 5,000."), "{:?}", x.text);
        assert!(!x.text.contains('*') && !x.text.contains('#'), "{:?}", x.text);
        let at = x.text.find("retainer").unwrap();
        let s = x.source_offset(at).unwrap();
        assert_eq!(&src[s..s + "retainer".len()], "retainer");
        let at = x.text.find("EUR").unwrap();
        let s = x.source_offset(at).unwrap();
        assert_eq!(&src[s..s + 3], "EUR");
    }

    #[test]
    fn html_drops_markup_scripts_and_comments() {
        let page = b"<html><head><style>p{color:red}</style><script>var secret=1</script></head>\
            <body><h1>Conflicts register</h1><!-- internal --><p>Acme &amp; Sons Ltd</p></body></html>";
        let x = extract(Format::Html, page).unwrap();
        assert!(x.text.contains("Conflicts register"), "{:?}", x.text);
        assert!(x.text.contains("Acme & Sons Ltd"), "{:?}", x.text);
        for gone in ["color:red", "var secret", "internal", "<p>"] {
            assert!(!x.text.contains(gone), "{gone} in {:?}", x.text);
        }
        assert_eq!(x.source_offset(0), None);
    }

    #[test]
    fn plain_text_offsets_are_source_offsets_and_bad_bytes_are_named() {
        let x = extract(Format::Text, "\u{FEFF}héllo".as_bytes()).unwrap();
        assert_eq!(x.text, "héllo");
        assert_eq!(x.source_offset(3), Some(6), "after the 3-byte mark");
        let e = extract(Format::Text, b"ok\xFFno").unwrap_err();
        assert_eq!(e.0, "not UTF-8 text (invalid byte at offset 2)");
        let e = extract(Format::Pdf, b"%PDF-1.4 this is not a pdf").unwrap_err();
        assert!(e.0.starts_with("unreadable PDF"), "{e}");
    }
}

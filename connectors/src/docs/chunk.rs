//! Splitting a document's text into chunks for the index: pieces of at most [`MAX_CHUNK`]
//! bytes, cut at a paragraph break where one is near, else at a sentence end, else at a space,
//! each with its byte range in the text.

use std::ops::Range;

/// The largest chunk, in bytes of text.
pub const MAX_CHUNK: usize = 1200;
/// A cut is looked for in the last part of a window at least this long, so chunks are not tiny.
const MIN_CHUNK: usize = 400;

/// The chunks of `text`: non-overlapping byte ranges covering every non-blank part, in order,
/// trimmed of surrounding whitespace.
pub fn chunks(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        start += text[start..].len() - text[start..].trim_start().len();
        if start >= text.len() {
            break;
        }
        let end = if text.len() - start <= MAX_CHUNK { text.len() } else { cut(text, start) };
        let piece = text[start..end].trim_end();
        if !piece.is_empty() {
            out.push(start..start + piece.len());
        }
        start = end;
    }
    out
}

/// Where to end the chunk that starts at `start` (the text past it is longer than a chunk).
fn cut(text: &str, start: usize) -> usize {
    let mut limit = start + MAX_CHUNK;
    while !text.is_char_boundary(limit) {
        limit -= 1;
    }
    let window = &text[start..limit];
    let after = |i: usize, sep: &str| start + i + sep.len();
    if let Some(i) = window.rfind("\n\n").filter(|&i| i >= MIN_CHUNK) {
        return after(i, "\n\n");
    }
    for sep in [". ", ".\n", "! ", "? ", "; ", "\n"] {
        if let Some(i) = window.rfind(sep).filter(|&i| i >= MIN_CHUNK) {
            return after(i, sep);
        }
    }
    if let Some(i) = window.rfind(char::is_whitespace).filter(|&i| i >= MIN_CHUNK) {
        return start + i + 1;
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_trimmed_chunk_and_blank_text_none() {
        assert_eq!(chunks("  hello world \n"), vec![2..13]);
        assert!(chunks(" \n\n\t ").is_empty());
        assert!(chunks("").is_empty());
    }

    #[test]
    fn long_text_is_cut_at_paragraphs_then_sentences_and_covers_every_word() {
        let para = "Lorem ipsum dolor sit amet. ".repeat(30); // 840 bytes
        let text = format!("{para}\n\n{para}\n\n{}", "word ".repeat(700));
        let cs = chunks(&text);
        assert!(cs.len() >= 4, "{cs:?}");
        for c in &cs {
            assert!(c.len() <= MAX_CHUNK, "{c:?}");
            assert!(!text[c.clone()].starts_with(char::is_whitespace));
        }
        // The first cut is the paragraph break.
        assert_eq!(&text[cs[0].clone()], para.trim_end());
        // Nothing but whitespace falls between chunks.
        let mut joined = String::new();
        let mut last = 0;
        for c in &cs {
            assert!(text[last..c.start].trim().is_empty());
            joined.push_str(&text[c.clone()]);
            joined.push(' ');
            last = c.end;
        }
        assert_eq!(joined.split_whitespace().count(), text.split_whitespace().count());
    }

    #[test]
    fn multibyte_text_without_spaces_is_cut_on_char_boundaries() {
        let text = "é".repeat(2000);
        let cs = chunks(&text);
        assert!(cs.len() >= 3);
        assert_eq!(cs.iter().map(|c| text[c.clone()].chars().count()).sum::<usize>(), 2000);
    }
}

//! Text normalisation before detection: NFKC (so full-width or styled letters cannot dodge a
//! rule), removal of invisible and bidi control characters (so `ig\u{200B}nore` still reads
//! `ignore`), and an offset map so every finding is reported as a byte span of the ORIGINAL text.
//!
//! NFKC is applied per segment — a starter and the combining marks after it — which is what lets
//! each output byte point back to one original segment. Pure-ASCII input (the common case) is
//! returned borrowed with an identity map and costs one `is_ascii` pass.

use std::borrow::Cow;

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

use crate::gates::verdict::Span;

/// Kinds of hidden characters the threat classifier cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InvisibleKind {
    /// Zero-width space/joiner, word joiner, soft hyphen, BOM inside text, …
    ZeroWidth,
    /// Bidi embedding / override / isolate controls (Trojan-source style reordering).
    Bidi,
    /// Unicode tag characters (U+E0000 block): invisible ASCII, used to smuggle instructions.
    Tag,
    /// Supplementary variation selectors: invisible, can carry a byte each.
    VariationSelector,
}

/// One run of hidden characters in the original text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invisible {
    pub span: Span,
    pub kind: InvisibleKind,
}

/// A stretch of normalised text and the stretch of original text it came from.
#[derive(Clone, Copy, Debug)]
struct Segment {
    norm_start: usize,
    norm_len: usize,
    orig_start: usize,
    orig_len: usize,
    /// Byte-for-byte copy: offsets inside map one to one.
    identity: bool,
}

/// Normalised text plus what is needed to map its offsets back.
#[derive(Debug)]
pub(crate) struct Normalized<'a> {
    pub text: Cow<'a, str>,
    /// `None` when the text is unchanged (identity map).
    segments: Option<Vec<Segment>>,
    pub invisibles: Vec<Invisible>,
    /// ASCII decoded from tag characters, rescanned by the threat classifier.
    pub hidden_tags: String,
}

/// Normalises `original`.
pub(crate) fn normalize(original: &str) -> Normalized<'_> {
    if original.is_ascii() {
        return Normalized {
            text: Cow::Borrowed(original),
            segments: None,
            invisibles: Vec::new(),
            hidden_tags: String::new(),
        };
    }
    Builder::default().run(original)
}

impl Normalized<'_> {
    /// Maps a span of the normalised text to the original text, widening to whole segments so
    /// both ends are char boundaries of the original.
    pub fn to_original(&self, start: usize, end: usize) -> Span {
        let Some(segs) = &self.segments else {
            return Span::new(start, end);
        };
        if segs.is_empty() {
            return Span::new(0, 0);
        }
        let seg_of = |pos: usize| {
            let i = segs.partition_point(|s| s.norm_start <= pos);
            &segs[i.saturating_sub(1)]
        };
        let s = seg_of(start);
        let o_start = if s.identity { s.orig_start + (start - s.norm_start).min(s.orig_len) } else { s.orig_start };
        if end <= start {
            return Span::new(o_start, o_start);
        }
        let e = seg_of(end - 1);
        let o_end =
            if e.identity { e.orig_start + (end - e.norm_start).min(e.orig_len) } else { e.orig_start + e.orig_len };
        Span::new(o_start, o_end.max(o_start))
    }

    #[cfg(test)]
    pub fn is_identity(&self) -> bool {
        self.segments.is_none()
    }
}

#[derive(Default)]
struct Builder {
    out: String,
    segs: Vec<Segment>,
    invisibles: Vec<Invisible>,
    hidden_tags: String,
}

impl Builder {
    fn run(mut self, original: &str) -> Normalized<'_> {
        self.out.reserve(original.len());
        let bytes = original.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            // ASCII run: copied as is, except its last char, which a combining mark may follow.
            let mut j = i;
            while j < bytes.len() && bytes[j] < 0x80 {
                j += 1;
            }
            if j > i {
                let keep = if j < bytes.len() { j - 1 } else { j };
                if keep > i {
                    self.identity(original, i, keep);
                }
                i = keep;
            }
            if i >= bytes.len() {
                break;
            }
            i = self.segment(original, i);
        }
        Normalized {
            text: Cow::Owned(self.out),
            segments: Some(self.segs),
            invisibles: self.invisibles,
            hidden_tags: self.hidden_tags,
        }
    }

    /// Handles the segment starting at `start` (a char boundary); returns where the next begins.
    fn segment(&mut self, original: &str, start: usize) -> usize {
        let mut chars = original[start..].char_indices();
        let (_, first) = chars.next().expect("start < len");
        if let Some(kind) = invisible_kind(first, original, start) {
            let end = start + first.len_utf8();
            if kind == InvisibleKind::Tag {
                let cp = first as u32;
                if (0xE0020..=0xE007E).contains(&cp) {
                    self.hidden_tags.push((cp - 0xE0000) as u8 as char);
                }
            }
            match self.invisibles.last_mut() {
                Some(last) if last.kind == kind && last.span.end == start => last.span.end = end,
                _ => self.invisibles.push(Invisible { span: Span::new(start, end), kind }),
            }
            return end;
        }
        let mut end = start + first.len_utf8();
        for (off, c) in chars {
            let joins = canonical_combining_class(c) != 0 || ('\u{1160}'..='\u{11FF}').contains(&c);
            if !joins || invisible_kind(c, original, start + off).is_some() {
                break;
            }
            end = start + off + c.len_utf8();
        }
        let seg = &original[start..end];
        if seg.is_ascii() || is_nfkc_quick(seg.chars()) == IsNormalized::Yes {
            self.identity(original, start, end);
        } else {
            let norm_start = self.out.len();
            self.out.extend(seg.nfkc());
            let norm_len = self.out.len() - norm_start;
            let identity = &self.out[norm_start..] == seg;
            self.segs.push(Segment { norm_start, norm_len, orig_start: start, orig_len: seg.len(), identity });
        }
        end
    }

    fn identity(&mut self, original: &str, start: usize, end: usize) {
        let norm_start = self.out.len();
        self.out.push_str(&original[start..end]);
        if let Some(last) = self.segs.last_mut()
            && last.identity
            && last.norm_start + last.norm_len == norm_start
            && last.orig_start + last.orig_len == start
        {
            last.norm_len += end - start;
            last.orig_len += end - start;
            return;
        }
        self.segs.push(Segment {
            norm_start,
            norm_len: end - start,
            orig_start: start,
            orig_len: end - start,
            identity: true,
        });
    }
}

/// Whether `c` (at byte `at` of `text`) is a hidden character to drop and flag.
fn invisible_kind(c: char, text: &str, at: usize) -> Option<InvisibleKind> {
    use InvisibleKind::*;
    match c as u32 {
        0x200B | 0x2060 | 0x180E | 0x00AD | 0x2061..=0x2064 => Some(ZeroWidth),
        // A BOM at the very start is an encoding artefact, elsewhere it hides things.
        0xFEFF if at > 0 => Some(ZeroWidth),
        // ZWJ/ZWNJ are legitimate in emoji and Indic/Persian scripts: flag them only between
        // ASCII letters, where they can only serve to split a word a rule looks for.
        0x200C | 0x200D => {
            let before = text[..at].chars().next_back().is_some_and(|p| p.is_ascii_alphanumeric());
            let after = text[at + c.len_utf8()..].chars().next().is_some_and(|n| n.is_ascii_alphanumeric());
            (before && after).then_some(ZeroWidth)
        }
        0x202A..=0x202E | 0x2066..=0x2069 => Some(Bidi),
        0xE0000..=0xE007F => Some(Tag),
        0xE0100..=0xE01EF => Some(VariationSelector),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ascii_is_borrowed_identity() {
        let n = normalize("plain text");
        assert!(n.is_identity());
        assert_eq!(n.to_original(6, 10), Span::new(6, 10));
    }

    #[test]
    fn fullwidth_folds_and_maps_back() {
        let s = "say ｉｇｎｏｒｅ now";
        let n = normalize(s);
        assert_eq!(n.text, "say ignore now");
        let sp = n.to_original(4, 10);
        assert_eq!(&s[sp.start..sp.end], "ｉｇｎｏｒｅ");
    }

    #[test]
    fn zero_width_and_bidi_are_dropped_and_flagged() {
        let s = "ig\u{200B}nore \u{202E}abc\u{202C} ok";
        let n = normalize(s);
        assert_eq!(n.text, "ignore abc ok");
        let kinds: Vec<_> = n.invisibles.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [InvisibleKind::ZeroWidth, InvisibleKind::Bidi, InvisibleKind::Bidi]);
        let sp = n.to_original(0, 6);
        assert_eq!(&s[sp.start..sp.end], "ig\u{200B}nore");
    }

    #[test]
    fn tag_characters_are_decoded() {
        let hidden: String = "hi".chars().map(|c| char::from_u32(0xE0000 + c as u32).unwrap()).collect();
        let s = format!("visible{hidden}");
        let n = normalize(&s);
        assert_eq!(n.text, "visible");
        assert_eq!(n.hidden_tags, "hi");
        assert_eq!(n.invisibles.len(), 1);
    }

    #[test]
    fn combining_mark_after_ascii_composes() {
        let s = "cafe\u{301} x";
        let n = normalize(s);
        assert_eq!(n.text, "café x");
        let sp = n.to_original(0, n.text.find(' ').unwrap());
        assert_eq!(&s[sp.start..sp.end], "cafe\u{301}");
    }

    #[test]
    fn emoji_zwj_is_not_flagged() {
        let n = normalize("family 👨\u{200D}👩 ok");
        assert!(n.invisibles.is_empty());
    }

    fn noisy_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z @.0-9]{0,6}",
            Just("\u{200B}".to_string()),
            Just("ｆｕｌｌ".to_string()),
            Just("e\u{301}".to_string()),
            Just("\u{202E}".to_string()),
            Just("ﬁ".to_string()),
            Just("①".to_string()),
            Just("한".to_string()),
            Just("\u{1100}\u{1161}".to_string()),
            Just("\u{E0041}".to_string()),
            "\\PC{0,3}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn spans_map_to_char_boundaries_in_order(s in noisy_text(), a in 0usize..64, b in 0usize..64) {
            let n = normalize(&s);
            let t = &n.text;
            let (mut a, mut b) = (a.min(t.len()), b.min(t.len()));
            if a > b { std::mem::swap(&mut a, &mut b); }
            while !t.is_char_boundary(a) { a -= 1; }
            while !t.is_char_boundary(b) { b += 1; }
            let sp = n.to_original(a, b);
            prop_assert!(sp.start <= sp.end && sp.end <= s.len());
            prop_assert!(s.is_char_boundary(sp.start) && s.is_char_boundary(sp.end));
            // The original span, normalised, contains the normalised slice.
            let back = normalize(&s[sp.start..sp.end]);
            prop_assert!(back.text.contains(&t[a..b]), "{:?} vs {:?}", back.text, &t[a..b]);
        }
    }
}

//! Bounds on a spec's text, checked before the YAML parser sees it: its size, and how deeply
//! it nests. The YAML scanner does work per token that grows with the nesting depth, so
//! 100,000 nested `[` cost it tens of seconds; this check is one linear pass.
//!
//! Depth counts each collection that opens: a flow `[`/`{`, and a block mapping or sequence
//! that starts at a column deeper than the one enclosing it (a key, or a `- `/`? ` entry), as
//! the YAML scanner's own indentation stack does. Quoted scalars (spanning lines, with their
//! escapes), block scalars (`|`, `>`: the lines indented past their parent), comments and plain
//! scalars in block context (where `[` is just a character) are skipped, so brackets in the
//! text of an ordinary spec never count. Input the parser would reject may be over-counted,
//! never under-counted.

use crate::spec::SpecError;

/// Largest spec accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 1_000_000;
/// Deepest nesting accepted, in levels (collections inside collections).
pub const MAX_NESTING: usize = 64;

/// Check `text` against [`MAX_SPEC_BYTES`] and [`MAX_NESTING`].
pub fn check(text: &str) -> Result<(), SpecError> {
    check_with(text, MAX_SPEC_BYTES, MAX_NESTING)
}

fn check_with(text: &str, max_bytes: usize, max_depth: usize) -> Result<(), SpecError> {
    if text.len() > max_bytes {
        let limit = if max_bytes % 1_000_000 == 0 {
            format!("{} MB", max_bytes / 1_000_000)
        } else {
            format!("{max_bytes} bytes")
        };
        let mut size = format!("{:.1} MB", text.len() as f64 / 1e6);
        if size == format!("{:.1} MB", max_bytes as f64 / 1e6) {
            size = format!("{} bytes", text.len());
        }
        return Err(SpecError::one("spec", format!("spec is {size}, the limit is {limit}")));
    }
    let mut scan = Scan { max_depth, stack: Vec::new(), flow: 0, quote: None, block_scalar: None, line_no: 0 };
    for (n, line) in text.split('\n').enumerate() {
        scan.line_no = n;
        scan.line(line.as_bytes()).map_err(|Deep { column }| {
            let column = String::from_utf8_lossy(&line.as_bytes()[..column]).chars().count() + 1;
            SpecError::one("spec", format!("nesting deeper than {max_depth} levels at line {} column {column}", n + 1))
        })?;
    }
    Ok(())
}

/// The nesting limit was passed at this byte of the current line.
struct Deep {
    column: usize,
}

struct Scan {
    max_depth: usize,
    /// Columns of the open block collections, innermost last.
    stack: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar that continues on the next line (its quote character).
    quote: Option<u8>,
    /// Inside a block scalar: lines indented past this column (or blank) belong to it.
    block_scalar: Option<isize>,
    line_no: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

fn ws_or_end(line: &[u8], i: usize) -> bool {
    line.get(i).is_none_or(|&b| is_ws(b))
}

fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// The position after the closing quote of a scalar whose body starts at `i`, or `None` if it
/// goes on past the end of the line. `''` is a quote inside single quotes; `\` escapes inside
/// double quotes.
fn skip_quoted(line: &[u8], mut i: usize, quote: u8) -> Option<usize> {
    while i < line.len() {
        match line[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && line.get(i + 1) == Some(&b'\'') => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

impl Scan {
    fn depth_ok(&self, column: usize) -> Result<(), Deep> {
        if self.stack.len() + self.flow > self.max_depth { Err(Deep { column }) } else { Ok(()) }
    }

    /// A block collection (mapping key, `- ` or `? ` entry) at `col`: a new level if it is
    /// deeper than the innermost open one.
    fn open_block(&mut self, col: usize) -> Result<(), Deep> {
        if self.stack.last().is_none_or(|&top| col > top) {
            self.stack.push(col);
            self.depth_ok(col)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), Deep> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|&b| is_ws(b));
        let marker = (line.starts_with(b"---") || line.starts_with(b"...")) && ws_or_end(line, 3);
        if let Some(parent) = self.block_scalar {
            if blank || indent as isize > parent && !marker {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if let Some(quote) = self.quote {
            let Some(end) = skip_quoted(line, 0, quote) else { return Ok(()) };
            self.quote = None;
            return if self.flow > 0 { self.flow_scan(line, end) } else { self.after_node(line, end, None) };
        }
        if self.flow > 0 {
            return self.flow_scan(line, 0);
        }
        if blank || line[indent] == b'#' || line[0] == b'%' {
            return Ok(());
        }
        if marker {
            self.stack.clear();
            return if line[0] == b'-' { self.node(line, 3) } else { Ok(()) };
        }
        while self.stack.last().is_some_and(|&top| top > indent) {
            self.stack.pop();
        }
        self.node(line, indent)
    }

    /// A node starts at (or after whitespace from) `pos`, in block context.
    fn node(&mut self, line: &[u8], mut pos: usize) -> Result<(), Deep> {
        loop {
            pos = skip_ws(line, pos);
            let Some(&b) = line.get(pos) else { return Ok(()) };
            match b {
                b'#' => return Ok(()),
                b'-' | b'?' | b':' if ws_or_end(line, pos + 1) => {
                    // `:` here is an explicit value: it belongs to its `?` entry's mapping.
                    if b != b':' {
                        self.open_block(pos)?;
                    }
                    pos += 1;
                }
                b'[' | b'{' => return self.flow_scan(line, pos),
                b'"' | b'\'' => {
                    let Some(end) = skip_quoted(line, pos + 1, b) else {
                        self.quote = Some(b);
                        return Ok(());
                    };
                    return self.after_node(line, end, Some(pos));
                }
                b'|' | b'>' => {
                    self.block_scalar = Some(self.stack.last().map_or(-1, |&top| top as isize));
                    return Ok(());
                }
                // An anchor or a tag, then the node itself.
                b'&' | b'!' => {
                    while line.get(pos).is_some_and(|&b| !is_ws(b)) {
                        pos += 1;
                    }
                }
                _ => return self.plain(line, pos),
            }
        }
    }

    /// A plain scalar in block context: `[` and quotes are text here. Ends at ` #`, or at `: `
    /// when it is a mapping key (then the value follows).
    fn plain(&mut self, line: &[u8], start: usize) -> Result<(), Deep> {
        for i in start..line.len() {
            match line[i] {
                b'#' if i > start && is_ws(line[i - 1]) => return Ok(()),
                b':' if ws_or_end(line, i + 1) => {
                    self.open_block(start)?;
                    return self.node(line, i + 1);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// After a quoted scalar or a flow collection in block context: a `:` makes it a key
    /// (starting at `key`); anything else but a comment is scanned as a node (the parser will
    /// reject it, but it must not hide brackets from this count).
    fn after_node(&mut self, line: &[u8], pos: usize, key: Option<usize>) -> Result<(), Deep> {
        let p = skip_ws(line, pos);
        if line.get(p) == Some(&b':') && ws_or_end(line, p + 1) {
            if let Some(col) = key {
                self.open_block(col)?;
            }
            return self.node(line, p + 1);
        }
        self.node(line, p)
    }

    /// Inside flow collections from `i`: every bracket outside quoted scalars and comments
    /// counts (plain scalars cannot hold brackets here).
    fn flow_scan(&mut self, line: &[u8], mut i: usize) -> Result<(), Deep> {
        // Whether a quote at this point opens a quoted scalar (rather than sitting inside a
        // plain one): after an indicator, whitespace does not change it.
        let mut token_start = true;
        while i < line.len() {
            let b = line[i];
            match b {
                b'[' | b'{' => {
                    self.flow += 1;
                    self.depth_ok(i)?;
                    token_start = true;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    if self.flow == 0 {
                        return self.after_node(line, i + 1, None);
                    }
                    token_start = false;
                }
                b',' | b':' | b'?' => token_start = true,
                b'"' | b'\'' if token_start => match skip_quoted(line, i + 1, b) {
                    None => {
                        self.quote = Some(b);
                        return Ok(());
                    }
                    Some(end) => {
                        i = end;
                        token_start = false;
                        continue;
                    }
                },
                b'#' if i == 0 || is_ws(line[i - 1]) => return Ok(()),
                b if is_ws(b) => {}
                _ => token_start = false,
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::*;

    fn depth_error(text: &str) -> Option<String> {
        check_with(text, usize::MAX, 4).err().map(|e| e.problems[0].message.clone())
    }

    #[test]
    fn flow_and_block_nesting_count() {
        assert_eq!(depth_error("[[[[x]]]]"), None);
        assert_eq!(depth_error("[[[[[x]]]]]").as_deref(), Some("nesting deeper than 4 levels at line 1 column 5"));
        assert_eq!(depth_error("a:\n  b:\n    c:\n      d: 1\n"), None);
        assert_eq!(
            depth_error("a:\n  b:\n    c:\n      d:\n        e: 1\n").as_deref(),
            Some("nesting deeper than 4 levels at line 5 column 9")
        );
        assert_eq!(depth_error("- - - - x\n"), None);
        assert_eq!(depth_error("- - - - - x\n").as_deref(), Some("nesting deeper than 4 levels at line 1 column 9"));
        assert_eq!(
            depth_error("-\n -\n  -\n   -\n    -\n").as_deref(),
            Some("nesting deeper than 4 levels at line 5 column 5")
        );
        assert_eq!(depth_error("a: {b: [c, {d: x}]}\n"), None);
        assert_eq!(
            depth_error("a: {b: [c, {d: [x]}]}\n").as_deref(),
            Some("nesting deeper than 4 levels at line 1 column 16")
        );
        // Flow collections span lines; a closed one leaves the level.
        assert_eq!(depth_error("a: [\n  [\n   [1]],\n  [2]]\nb: [[[x]]]\n"), None);
        assert_eq!(
            depth_error("a: [\n  [\n   [[1]]]]\n").as_deref(),
            Some("nesting deeper than 4 levels at line 3 column 5")
        );
        // A sequence at its parent key's column is not a level of its own (as in YAML).
        assert_eq!(depth_error("steps:\n- id: a\n  request:\n    headers:\n      x: 1\n"), None);
        assert_eq!(
            depth_error("steps:\n- id: a\n  request:\n    headers:\n      x:\n        y: 1\n").as_deref(),
            Some("nesting deeper than 4 levels at line 6 column 9")
        );
        assert_eq!(depth_error("steps:\n- id: a\n  request:\n    headers: {}\n"), None);
        // Returning to a shallower key closes levels.
        assert_eq!(depth_error("a:\n  b:\n    c:\n      d: 1\nx:\n  y:\n    z: [1]\n"), None);
    }

    #[test]
    fn brackets_in_text_do_not_count() {
        let deep = "[".repeat(50);
        for text in [
            format!("a: \"{deep}\"\n"),
            format!("a: '{deep}'\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("a: \"esc \\\" {deep}\"\n"),
            format!("a: \"starts here\n  {deep}\n  ends\"\nb: 1\n"),
            format!("a: |\n  {deep}\n  {{{{{{\n\n  more {deep}\nb: 2\n"),
            format!("- script: >-\n    {deep}\n  next: 1\n"),
            format!("a: 1 # {deep}\n# {deep}\n"),
            format!("when: steps.x.output[0] == 1 and {deep}\n"),
            format!("url: http://x/{deep}\n"),
            format!("a: [\"{deep}\", '{deep}', x] # {deep}\n"),
            format!("a: {{k: \"v{deep}\"}}\n"),
            format!("\"key {deep}\": 1\n"),
            format!("--- |\n  {deep}\n"),
        ] {
            assert_eq!(depth_error(&text), None, "{text}");
        }
    }

    #[test]
    fn hidden_nesting_is_still_found() {
        let deep = "[".repeat(10);
        for text in [
            // A block scalar ends where its indentation does.
            format!("a:\n  b: |\n    text\n {deep}\n"),
            // A document marker ends a block scalar.
            format!("--- |\n  text\n---\n{deep}\n"),
            // A quote inside a flow plain scalar opens nothing.
            format!("[a 'b {deep}\n"),
            // Junk after a quoted scalar is scanned.
            format!("a: \"x\" {deep}\n"),
            // A quoted scalar's end continues the flow it sits in.
            format!("[\"a\nb\", {deep}]\n"),
        ] {
            assert!(depth_error(&text).is_some(), "{text}");
        }
    }

    /// A YAML value built to render in block or flow style, with text full of brackets.
    #[derive(Clone, Debug)]
    enum Node {
        Text(String),
        Seq(Vec<Node>),
        Map(Vec<Node>),
    }

    impl Node {
        fn depth(&self) -> usize {
            match self {
                Node::Text(_) => 0,
                Node::Seq(c) | Node::Map(c) => 1 + c.iter().map(Node::depth).max().unwrap_or(0),
            }
        }

        fn flow(&self, out: &mut String) {
            match self {
                Node::Text(t) => out.push_str(&quoted(t)),
                Node::Seq(c) | Node::Map(c) => {
                    let map = matches!(self, Node::Map(_));
                    out.push(if map { '{' } else { '[' });
                    for (i, n) in c.iter().enumerate() {
                        out.push_str(if i == 0 { "" } else { ", " });
                        if map {
                            out.push_str(&format!("k{i}: "));
                        }
                        n.flow(out);
                    }
                    out.push(if map { '}' } else { ']' });
                }
            }
        }

        /// The node as the value after `key:` or `- ` at column `col`.
        fn block_value(&self, col: usize, out: &mut String) {
            match self {
                Node::Text(t) if t.len() % 2 == 0 => {
                    out.push_str(" |\n");
                    for line in t.split('\n') {
                        out.push_str(&format!("{}x {line}\n", " ".repeat(col + 2)));
                    }
                }
                Node::Seq(c) | Node::Map(c) if !c.is_empty() && c.len() % 3 != 0 => {
                    out.push('\n');
                    self.block(col + 2, out);
                }
                _ => {
                    out.push(' ');
                    self.flow(out);
                    out.push('\n');
                }
            }
        }

        fn block(&self, col: usize, out: &mut String) {
            let pad = " ".repeat(col);
            match self {
                Node::Map(c) => {
                    for (i, n) in c.iter().enumerate() {
                        out.push_str(&format!("{pad}k{i}:"));
                        n.block_value(col, out);
                    }
                }
                Node::Seq(c) => {
                    for n in c {
                        out.push_str(&format!("{pad}-"));
                        n.block_value(col, out);
                    }
                }
                Node::Text(_) => self.block_value(col, out),
            }
        }
    }

    fn quoted(t: &str) -> String {
        if t.contains('\n') || t.len() % 3 == 0 {
            format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
        } else {
            format!("'{}'", t.replace('\'', "''"))
        }
    }

    fn node() -> impl Strategy<Value = Node> {
        let text = "[\\[\\]{}#'\" :a-z,|>-]{0,12}(\n[\\[{ #a-z]{0,6})?".prop_map(Node::Text);
        text.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Node::Seq),
                proptest::collection::vec(inner, 0..4).prop_map(Node::Map),
            ]
        })
    }

    proptest::proptest! {
        /// On specs the YAML parser accepts, the scan counts exactly the nesting built, whatever
        /// brackets and quotes the text holds.
        #[test]
        fn the_count_is_the_nesting_of_valid_yaml(root in node()) {
            let mut text = String::new();
            match &root {
                Node::Seq(c) | Node::Map(c) if !c.is_empty() => root.block(0, &mut text),
                _ => root.flow(&mut text),
            }
            serde_yaml_ng::from_str::<serde_json::Value>(&text).map_err(|e| TestCaseError::fail(format!("generated YAML is invalid: {e}\n{text}")))?;
            let depth = root.depth();
            prop_assert!(check_with(&text, usize::MAX, depth).is_ok(), "over-counted {depth}:\n{text}");
            if depth > 0 {
                prop_assert!(check_with(&text, usize::MAX, depth - 1).is_err(), "under-counted {depth}:\n{text}");
            }
        }
    }

    #[test]
    fn size_is_checked_first() {
        let err = check_with(&"x".repeat(3_100_000), 1_000_000, 64).unwrap_err();
        assert_eq!(err.problems[0].message, "spec is 3.1 MB, the limit is 1 MB");
        let err = check_with(&"x".repeat(1_000_001), 1_000_000, 64).unwrap_err();
        assert_eq!(err.problems[0].message, "spec is 1000001 bytes, the limit is 1 MB");
    }
}

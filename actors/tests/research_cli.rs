//! The `research` step end to end through the real binary: `tollgate docs ingest` reads a
//! Markdown, an HTML and a PDF document (the PDF made here with lopdf) into a collection, a
//! workflow's `research` steps find the right source first for queries aimed at each (a `code`
//! step checks the hits, so the run succeeds only if they are right), no document text is
//! readable in the data directory, a bad file is refused with its name, and a deleted collection
//! is gone (the next research step fails `collection_not_found`).

use std::path::Path;
use std::process::{Command, Output};

use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};
use serde_json::Value;

const MARKER: &str = "PANGOLIN-MARKER-4410";

fn tollgate(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("TOLLGATE_BACKEND")
        .env("TOLLGATE_RECONCILE_INTERVAL", "100ms")
        .output()
        .unwrap()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = tollgate(data, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tollgate {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// A PDF with one line of text per page (Helvetica, WinAnsi).
fn pdf(pages: &[&str]) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let resources = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font } });
    let mut kids = Vec::new();
    for text in pages {
        let content = Content {
            operations: vec![
                Operation::new("BT", vec![]),
                Operation::new("Tf", vec!["F1".into(), 11.into()]),
                Operation::new("Td", vec![60.into(), 760.into()]),
                Operation::new("Tj", vec![Object::string_literal(*text)]),
                Operation::new("ET", vec![]),
            ],
        };
        let contents = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        kids.push(
            doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => contents }).into(),
        );
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

const SPEC: &str = r#"
id: research-flow
owner: legal
parameters:
  client: { type: string, default: Globex }
steps:
  - { id: md, type: research, collection: precedents, query: "retainer hourly billing", top_k: 3 }
  - { id: html, type: research, collection: precedents, query: "${{ params.client }} adverse party conflict" }
  - { id: pdf, type: research, collection: precedents, query: "indemnification cap liability", top_k: 2 }
  - id: check
    type: code
    needs: [md, html, pdf]
    inputs: { md: "${{ steps.md.output }}", html: "${{ steps.html.output }}", pdf: "${{ steps.pdf.output }}" }
    script: |
      const want = { md: "fees.md", html: "conflicts.html", pdf: "engagement.pdf" };
      for (const k of Object.keys(want)) {
        const hits = input[k].hits;
        if (!hits.length || !hits[0].source.endsWith(want[k])) {
          throw new Error(k + ": expected " + want[k] + " first, got " + JSON.stringify(hits.map(h => h.source)));
        }
      }
      if (input.pdf.hits[0].page !== 2) throw new Error("pdf hit on page " + input.pdf.hits[0].page);
      if (input.md.hits[0].id !== "hit-1" || !(input.md.hits[0].score > 0)) throw new Error("hit shape " + JSON.stringify(input.md.hits[0]));
      return { ok: true, snippet: input.html.hits[0].snippet };
"#;

#[test]
fn research_finds_markdown_html_and_pdf_sources_and_keeps_them_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("letters")).unwrap();
    std::fs::write(
        docs.join("fees.md"),
        format!("# Fee arrangements\n\nWe bill a monthly **retainer** plus hourly billing for {MARKER} work.\n\n## Travel\n\nTravel is billed at cost.\n"),
    )
    .unwrap();
    std::fs::write(
        docs.join("conflicts.html"),
        "<html><head><title>Register</title><script>var x = 'retainer';</script></head><body>\
         <h1>Conflicts register</h1><table><tr><td>Globex Corporation</td><td>adverse party in 2023 litigation</td></tr></table>\
         <!-- reviewed yearly --></body></html>",
    )
    .unwrap();
    std::fs::write(
        docs.join("letters/engagement.pdf"),
        pdf(&[
            "Engagement letter: scope of services and staffing.",
            "Indemnification: liability cap of twice the fees paid.",
        ]),
    )
    .unwrap();
    std::fs::write(docs.join("letters/unrelated.txt"), "Parking permits and the office move schedule.").unwrap();
    std::fs::write(docs.join("letters/skipped.docx"), "not a known format").unwrap();

    // A directory is walked for known formats; an explicit unknown file is refused by name.
    let out =
        tollgate(&data, &["docs", "ingest", docs.join("letters/skipped.docx").to_str().unwrap(), "--owner", "legal"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped.docx: unknown document format"), "{err}");
    let broken = dir.path().join("broken.pdf");
    std::fs::write(&broken, b"%PDF-1.4 not really").unwrap();
    let out = tollgate(
        &data,
        &["docs", "ingest", broken.to_str().unwrap(), "--collection", "precedents", "--owner", "legal"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.pdf: unreadable PDF"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: Value = serde_json::from_str(&ok(
        &data,
        &["docs", "ingest", docs.to_str().unwrap(), "--collection", "precedents", "--owner", "legal", "--json"],
    ))
    .unwrap();
    assert_eq!(report["total_documents"], 4, "{report}");
    let formats: Vec<&str> =
        report["documents"].as_array().unwrap().iter().map(|d| d["format"].as_str().unwrap()).collect();
    for f in ["markdown", "html", "pdf", "text"] {
        assert!(formats.contains(&f), "{f} not ingested: {report}");
    }
    let listed = ok(&data, &["docs", "list", "--owner", "legal"]);
    assert!(listed.contains("precedents (4 documents)"), "{listed}");

    let spec = dir.path().join("research.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = tollgate(&data, &["run", spec.to_str().unwrap(), "--json"]);
    let summary: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(summary["status"], "succeeded", "{summary:#}");
    let types: Vec<&str> = summary["steps"].as_array().unwrap().iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["research", "research", "research", "code"]);

    // Nothing of the documents is readable in the data directory.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else { continue };
        for needle in [MARKER, "Globex", "Indemnification", "Parking permits"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                path.display()
            );
        }
    }

    // Deleting the collection removes it: the same workflow now fails, naming the collection.
    let deleted = ok(&data, &["docs", "delete", "precedents", "--owner", "legal"]);
    assert!(deleted.contains("collection `precedents` of `legal` deleted"), "{deleted}");
    let out = tollgate(&data, &["run", spec.to_str().unwrap(), "--json"]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "failed", "{summary:#}");
    let md = &summary["steps"][0];
    assert_eq!(md["error"]["code"], "collection_not_found", "{md:#}");
    assert!(
        md["error"]["message"].as_str().unwrap().contains("no collection `precedents` for owner `legal`"),
        "{md:#}"
    );
    assert!(!tollgate(&data, &["docs", "delete", "precedents", "--owner", "legal"]).status.success());
}

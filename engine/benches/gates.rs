//! Gate mesh throughput on mixed text (prose, JSON, logs, code), all detectors on, one thread.
//! Prints MB/s per core overall and per kind of text (best and median of 9 rounds). Run:
//! `cargo bench -p tollgate-engine --bench gates` (release profile); `GATES_RULES_DIR=DIR` runs
//! it with the rule files of DIR instead of the built-in rules.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tollgate_engine::gates::{GateMesh, GatePolicy, RedactionMap};

/// Deterministic pseudo-random numbers (xorshift), so every run scans the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from_digit((self.next() % 16) as u32, 16).unwrap()).collect()
    }
}

const WORDS: &[&str] = &[
    "the",
    "workflow",
    "step",
    "returned",
    "a",
    "summary",
    "of",
    "customer",
    "feedback",
    "and",
    "we",
    "should",
    "review",
    "it",
    "before",
    "sending",
    "report",
    "to",
    "team",
    "please",
    "ignore",
    "typo",
    "previous",
    "version",
    "was",
    "approved",
    "by",
    "manager",
    "on",
    "Monday",
    "budget",
    "invoice",
    "quarterly",
    "results",
    "show",
    "growth",
    "in",
    "Europe",
    "while",
    "costs",
    "stayed",
    "flat",
    "token",
    "usage",
    "model",
    "answer",
    "key",
    "points",
    "are",
    "listed",
    "below",
    "system",
    "design",
];

fn prose(r: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 64);
    while s.len() < bytes {
        let n = 8 + r.next() % 14;
        for i in 0..n {
            let w = r.pick(WORDS);
            if i == 0 {
                s.push_str(&w[..1].to_uppercase());
                s.push_str(&w[1..]);
            } else {
                s.push(' ');
                s.push_str(w);
            }
        }
        s.push_str(if r.next().is_multiple_of(9) { ".\n\n" } else { ". " });
        if r.next().is_multiple_of(40) {
            s.push_str("Contact maria.lopez@example-corp.com for details. ");
        }
    }
    s
}

fn json(r: &mut Rng, bytes: usize) -> String {
    let mut s = String::from("{\"items\": [");
    while s.len() < bytes {
        s.push_str(&format!(
            "{{\"id\": \"{}-{}-4{}-a{}-{}\", \"created_at\": \"2024-05-{:02}T12:{:02}:{:02}Z\", \"status\": \"{}\", \"amount\": {}.{:02}, \"tokens\": {}, \"sha\": \"{}\", \"note\": \"{} {} {}\"}}, ",
            r.hex(8), r.hex(4), r.hex(3), r.hex(3), r.hex(12),
            1 + r.next() % 28, r.next() % 60, r.next() % 60,
            r.pick(&["ok", "pending", "failed", "retrying"]),
            r.next() % 10000, r.next() % 100, r.next() % 4096, r.hex(40),
            r.pick(WORDS), r.pick(WORDS), r.pick(WORDS),
        ));
    }
    s.push_str("{}]}");
    s
}

fn logs(r: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 200);
    while s.len() < bytes {
        s.push_str(&format!(
            "2024-05-{:02}T{:02}:{:02}:{:02}.{:03}Z {} [worker-{}] request_id={} method={} path=/api/v1/{}/{} status={} latency_ms={} client=10.{}.{}.{} bytes={}\n",
            1 + r.next() % 28, r.next() % 24, r.next() % 60, r.next() % 60, r.next() % 1000,
            r.pick(&["INFO", "WARN", "DEBUG", "ERROR"]), r.next() % 8, r.hex(16),
            r.pick(&["GET", "POST", "PUT"]), r.pick(&["runs", "steps", "workflows"]), r.hex(26),
            r.pick(&["200", "201", "404", "500"]), r.next() % 900,
            r.next() % 256, r.next() % 256, r.next() % 256, r.next() % 100000,
        ));
    }
    s
}

const CODE: &str = r#"
fn refresh(client: &Client, cfg: &Config) -> Result<Token, Error> {
    // The token is cached until shortly before it expires.
    let token = client.fetch_token(&cfg.auth_url, cfg.timeout)?;
    let password_hash = hash_password(&cfg.user, &salt)?;
    if token.expires_in < Duration::from_secs(60) {
        return Err(Error::Expired { at: token.issued_at });
    }
    for (i, step) in run.steps.iter().enumerate() {
        let out = handler.call(step.input.clone(), &mut budget).await?;
        tracing::info!(step = i, cost = out.cost, "step finished");
    }
    Ok(token)
}

def load_settings(path):
    with open(path) as f:
        data = yaml.safe_load(f)
    api_key = os.environ.get("API_KEY")
    secret = settings.get("secret_name", "default")
    return Settings(api_key=api_key, secret=secret, retries=data.get("retries", 3))
"#;

fn code(r: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + CODE.len());
    while s.len() < bytes {
        s.push_str(CODE);
        s.push_str(&format!("const BUILD_ID: &str = \"{}\";\n", r.hex(40)));
    }
    s
}

/// Nanoseconds this thread has spent on a CPU (Linux `schedstat`), so that other processes on a
/// shared machine do not count against the mesh; wall-clock time where it is unavailable.
fn cpu_ns(wall: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| wall.elapsed().as_nanos() as u64)
}

/// Throughput in MB per CPU-second over rounds of ~`round` each: (best, median).
fn measure(mesh: &GateMesh, docs: &[String], policy: &GatePolicy, round: Duration) -> (f64, f64) {
    let total: usize = docs.iter().map(String::len).sum();
    let mut map = RedactionMap::with_key([1; 32]);
    // Warm-up (lazy statics, caches).
    for d in docs {
        black_box(mesh.scan_text(d, policy, &mut map));
    }
    let mut rates = Vec::new();
    let epoch = Instant::now();
    for _ in 0..9 {
        let start = Instant::now();
        let cpu0 = cpu_ns(epoch);
        let mut bytes = 0usize;
        while start.elapsed() < round {
            for d in docs {
                black_box(mesh.scan_text(black_box(d), policy, &mut map));
            }
            bytes += total;
        }
        let cpu = (cpu_ns(epoch) - cpu0).max(1) as f64;
        rates.push(bytes as f64 / cpu * 1e3);
    }
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() - 1], rates[rates.len() / 2])
}

fn print(name: &str, (best, median): (f64, f64)) {
    println!("{name:<12} {best:8.1} MB/s   (median {median:.1})");
}

fn main() {
    // `GATES_RULES_DIR` scans with the rule files of that directory instead of the built-in ones
    // (to compare rule sets on one binary, e.g. the rules of an earlier commit).
    let mesh = match std::env::var_os("GATES_RULES_DIR") {
        Some(dir) => GateMesh::load_dir(&dir).expect("rules in GATES_RULES_DIR"),
        None => GateMesh::builtin(),
    };
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, in
    // a debug build: then only check that every kind of text scans, and print no figures.
    if !std::env::args().any(|a| a == "--bench") {
        let mut r = Rng(7);
        let mut map = RedactionMap::with_key([1; 32]);
        for doc in [prose(&mut r, 4096), json(&mut r, 4096), logs(&mut r, 4096), code(&mut r, 4096)] {
            black_box(mesh.scan_text(&doc, &GatePolicy::default(), &mut map));
        }
        println!("gates bench: smoke run only (figures: cargo bench -p tollgate-engine --bench gates)");
        return;
    }
    let policy = GatePolicy::default();
    let mut r = Rng(0x5eed_1234_abcd_ef01);
    const DOC: usize = 16 * 1024;
    let kinds: Vec<(&str, Vec<String>)> = vec![
        ("prose", (0..32).map(|_| prose(&mut r, DOC)).collect()),
        ("json", (0..32).map(|_| json(&mut r, DOC)).collect()),
        ("logs", (0..32).map(|_| logs(&mut r, DOC)).collect()),
        ("code", (0..32).map(|_| code(&mut r, DOC)).collect()),
    ];
    let mixed: Vec<String> = (0..32).flat_map(|i| kinds.iter().map(move |(_, d)| d[i].clone())).collect();
    let mb = mixed.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    println!("gate mesh throughput per core (MB per CPU-second of the scanning thread), all detectors on,");
    println!("{} docs of ~16 KiB ({mb:.1} MB); best of 9 rounds (median in brackets)", mixed.len());
    print("mixed", measure(&mesh, &mixed, &policy, Duration::from_millis(500)));
    for (name, docs) in &kinds {
        print(name, measure(&mesh, docs, &policy, Duration::from_millis(200)));
    }
    let accented: Vec<String> = kinds[0].1.iter().take(8).map(|d| d.replace("growth", "croissance élevée")).collect();
    print("prose-utf8", measure(&mesh, &accented, &policy, Duration::from_millis(200)));
    let small: Vec<String> = mixed
        .iter()
        .flat_map(|d| d.as_bytes().chunks(512).map(|c| String::from_utf8_lossy(c).into_owned()))
        .take(4096)
        .collect();
    print("mixed-512B", measure(&mesh, &small, &policy, Duration::from_millis(200)));
    let docs: Vec<serde_json::Value> = kinds[1].1.iter().take(8).map(|d| serde_json::from_str(d).unwrap()).collect();
    let bytes: usize = kinds[1].1.iter().take(8).map(String::len).sum();
    let mut map = RedactionMap::with_key([1; 32]);
    let start = Instant::now();
    let cpu0 = cpu_ns(start);
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(1) {
        for d in &docs {
            black_box(mesh.scan_json(d, &policy, &mut map));
        }
        n += bytes;
    }
    let rate = n as f64 / (cpu_ns(start) - cpu0).max(1) as f64 * 1e3;
    println!("{:<12} {rate:8.1} MB/s   (JSON text bytes; strings and keys scanned one by one)", "scan_json");
}

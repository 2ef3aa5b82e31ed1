//! Tests of the `code` sandbox: semantics, limits, isolation, errors and per-call overhead.

use serde_json::{Value as Json, json};
use tollgate_engine::ids::{RunId, WorkflowId};
use tollgate_engine::spec::StepSpec;
use tollgate_engine::step::ErrorClass;

use super::*;

fn step(script: &str, cpu_ms: u64, memory_mib: u32) -> StepSpec {
    let mut step: StepSpec =
        serde_json::from_value(json!({ "id": "calc", "type": "code", "script": script })).expect("valid step");
    let StepKind::Code(code) = &mut step.kind else { unreachable!("a code step") };
    code.limits = Some(CodeLimits { cpu: Duration::from_millis(cpu_ms), memory_mib });
    step
}

async fn run_with(
    script: &str,
    input: Json,
    cpu_ms: u64,
    memory_mib: u32,
    timeout: Duration,
) -> Result<Json, StepError> {
    let (workflow, run, step) = (WorkflowId::new("wf"), RunId::new("run"), step(script, cpu_ms, memory_mib));
    let inputs = json!({ "inputs": input });
    let call = StepInvocation {
        workflow: &workflow,
        run: &run,
        step: &step,
        attempt: 1,
        inputs: &inputs,
        idempotency_key: "run/calc".into(),
        timeout,
        egress: &Default::default(),
    };
    CodeHandler::new().run(call).await.map(|s| s.output)
}

async fn run(script: &str, input: Json) -> Result<Json, StepError> {
    run_with(script, input, 2000, 32, Duration::from_secs(30)).await
}

#[tokio::test]
async fn computes_from_input() {
    let out = run("const t = input.items.reduce((a, x) => a + x.price * x.qty, 0);\nreturn { total: t, who: input.name.toUpperCase() };",
        json!({ "name": "ada", "items": [{ "price": 2.5, "qty": 2 }, { "price": 1, "qty": 3 }] }))
        .await
        .expect("script runs");
    assert_eq!(out, json!({ "total": 8, "who": "ADA" }));
    assert_eq!(run("", json!({})).await.expect("empty body"), Json::Null);
    assert_eq!(run("return Promise.resolve(41).then(x => x + 1)", json!({})).await.expect("promise"), json!(42));
}

#[tokio::test]
async fn runaway_loop_is_stopped_by_the_cpu_limit() {
    for script in [
        "while (true) {}",
        "while (true) { try { for (;;) {} } catch (e) {} }",
        "return /(a+)+$/.test('a'.repeat(40) + 'b')",
    ] {
        let started = Instant::now();
        // The wall-clock timeout is far away, so `cpu_limit` (not `timeout`) proves the CPU check fired.
        let err = run_with(script, json!({}), 200, 32, Duration::from_secs(30)).await.expect_err("stopped");
        println!("{script:?}: stopped after {:?} (limit 200ms)", started.elapsed());
        assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "cpu_limit"), "{err}");
        assert!(err.message.contains("stopped after 200ms of CPU"), "{err}");
    }
}

#[tokio::test]
async fn wall_clock_timeout_is_retryable() {
    let err =
        run_with("while (true) {}", json!({}), 60_000, 32, Duration::from_millis(200)).await.expect_err("stopped");
    assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Retryable, "timeout"), "{err}");
}

#[tokio::test]
async fn memory_limit_is_enforced() {
    for script in [
        "const a = []; while (true) a.push(new Array(100000).fill(1.5));",
        "let s = 'x'.repeat(1 << 20); const k = []; while (true) k.push(s + k.length);",
    ] {
        let err = run_with(script, json!({}), 10_000, 8, Duration::from_secs(30)).await.expect_err("out of memory");
        assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "memory_limit"), "{err}");
    }
}

#[tokio::test]
async fn no_ambient_authority() {
    let probe = "return [typeof require, typeof fetch, typeof std, typeof os, typeof process, typeof setTimeout, typeof XMLHttpRequest, typeof Deno]";
    assert_eq!(run(probe, json!({})).await.expect("probe"), json!(vec!["undefined"; 8]));
    let err = run("return import('std')", json!({})).await.expect_err("no module loader");
    assert_eq!(err.code, "script_error", "{err}");
    let err = run("import * as std from 'std';", json!({})).await.expect_err("no static import");
    assert_eq!(err.code, "script_error", "{err}");
    let err = run("return require('fs')", json!({})).await.expect_err("no require");
    assert!(err.message.contains("require"), "{err}");
}

#[tokio::test]
async fn exceptions_report_message_and_line() {
    let err = run(
        "const a = 1;\nconsole.log('about to fail', {a});\nthrow new Error('bad invoice ' + input.id);",
        json!({ "id": 7 }),
    )
    .await
    .expect_err("throws");
    assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "script_error"));
    assert!(err.message.starts_with("Error: bad invoice 7 (line 3)"), "{err}");
    assert!(err.message.contains("about to fail {\"a\":1}"), "console kept on failure: {err}");
    let err = run("const x = ;\n", json!({})).await.expect_err("syntax");
    assert!(err.message.starts_with("SyntaxError") && err.message.contains("line 1"), "{err}");
    let err = run("\n\nreturn input.missing.field", json!({})).await.expect_err("type error");
    assert!(err.message.starts_with("TypeError") && err.message.contains("line 3"), "{err}");
    let out = run("console.log(10n, undefined, () => 1); return 1", json!({})).await.expect("odd logs are fine");
    assert_eq!(out, json!(1));
    let err = run("throw {reason: 'nope'}", json!({})).await.expect_err("non-error throw");
    assert!(err.message.contains("nope"), "{err}");
    let err = run("function f() { return f() + 1 }\nreturn f()", json!({})).await.expect_err("deep recursion");
    assert_eq!(err.code, "script_error", "{err}");
}

#[tokio::test]
async fn non_json_output_is_refused() {
    for script in ["return 10n", "const o = {}; o.self = o; return o", "return new Promise(() => {})"] {
        let err = run(script, json!({})).await.expect_err("bad output");
        assert_eq!((&err.class, err.code.as_str()), (&ErrorClass::Permanent, "bad_output"), "{script}: {err}");
    }
    // JSON.stringify semantics: functions are dropped, like any JSON API would.
    assert_eq!(run("return { f() {}, n: 1 }", json!({})).await.expect("object"), json!({ "n": 1 }));
}

#[tokio::test]
async fn attempts_share_nothing() {
    run("Object.prototype.polluted = 1; globalThis.leak = 2; return 0", json!({})).await.expect("first");
    let out = run("return [({}).polluted === undefined, typeof leak]", json!({})).await.expect("second");
    assert_eq!(out, json!([true, "undefined"]));
}

/// One attempt run directly on the calling thread (as on a blocking thread of the pool).
fn attempt_here(script: &str, memory_mib: u32) -> Result<Json, StepError> {
    let job = Job {
        script: script.into(),
        input_json: "{}".into(),
        limits: CodeLimits { cpu: Duration::from_millis(200), memory_mib },
        timeout: Duration::from_secs(30),
        deadline: Instant::now() + Duration::from_secs(30),
        abandoned: Arc::new(AtomicBool::new(false)),
    };
    job.run()
}

/// The heap in use by the runtime this thread keeps, if it keeps one.
fn kept_heap() -> Option<usize> {
    let kept = SANDBOX.take();
    let used = kept.as_ref().map(|k| k.heap.used.get());
    SANDBOX.set(kept);
    used
}

fn kept_runtime() -> bool {
    kept_heap().is_some()
}

/// Attempts on one thread reuse its runtime, and still share nothing: no global, no changed
/// built-in, no queued promise job, no heap left by the last attempt; a runtime that was
/// interrupted or refused memory is not reused.
#[test]
fn a_reused_runtime_carries_nothing_over() {
    std::thread::spawn(|| {
        attempt_here("Object.prototype.polluted = 1; Array.prototype.push = null; globalThis.leak = { big: 'x'.repeat(1e5) }; return 0", 32).expect("first");
        assert!(kept_runtime(), "a clean runtime is kept for the next attempt");
        let out = attempt_here("return [({}).polluted === undefined, typeof leak, [].push === null]", 32).expect("second");
        assert_eq!(out, json!([true, "undefined", false]));
        // A cycle of objects is collected before reuse: the runtime's heap does not grow.
        let before = kept_heap();
        for _ in 0..20 {
            attempt_here("const a = { big: 'z'.repeat(1e5) }; const b = { a }; a.b = b; globalThis.cycle = a; return 1", 32).expect("cycle");
        }
        assert!(kept_runtime());
        assert!(kept_heap() <= before.map(|b| b + 16 * 1024), "the cycles were collected: {before:?} → {:?}", kept_heap());
        let err = attempt_here("while (true) {}", 32).expect_err("stopped");
        assert_eq!(err.code, "cpu_limit");
        assert!(!kept_runtime(), "an interrupted runtime is dropped");
        let err = attempt_here("const a = []; for (;;) a.push('y'.repeat(1024))", 2).expect_err("out of memory");
        assert_eq!(err.code, "memory_limit", "{err}");
        assert!(!kept_runtime(), "a runtime that refused memory is dropped");
        // The memory limit holds on a reused runtime as on a new one.
        attempt_here("return 1", 2).expect("small");
        assert!(kept_runtime());
        let err = attempt_here("const a = []; for (;;) a.push('y'.repeat(1024))", 2).expect_err("out of memory again");
        assert_eq!(err.code, "memory_limit", "{err}");
    })
    .join()
    .expect("the attempts' thread");
}

#[tokio::test]
async fn timing_and_per_call_overhead() {
    let started = Instant::now();
    run("const end = Date.now() + 10; while (Date.now() < end) {} return 1", json!({})).await.expect("busy 10ms");
    println!("a ~10 ms script took {:?}", started.elapsed());
    let n = 200;
    let started = Instant::now();
    for i in 0..n {
        assert_eq!(run("return input.i + 1", json!({ "i": i })).await.expect("trivial"), json!(i + 1));
    }
    println!("trivial script: {:?} per invocation (fresh context, spawn_blocking, JSON in/out)", started.elapsed() / n);
}

#[test]
fn logs_are_bounded() {
    let mut logs = Logs::default();
    for i in 0..100 {
        logs.push(format!("line {i}"));
    }
    logs.push("é".repeat(LOG_MAX_BYTES));
    assert!(logs.lines.len() <= LOG_MAX_LINES && logs.bytes <= LOG_MAX_BYTES);
    assert_eq!(line_in_stack("    at f (script.js:12:3)\n"), Some(12));
}

#[test]
fn meter_stops_at_deadline_or_when_abandoned() {
    let far = Instant::now() + Duration::from_secs(60);
    let flag = Arc::new(AtomicBool::new(false));
    let mut meter = Meter::start(Duration::from_secs(60), far, flag.clone());
    assert!(meter.check().is_none());
    flag.store(true, Ordering::Relaxed);
    assert!(matches!(meter.check(), Some(Stop::Timeout)));
    let mut late = Meter::start(Duration::from_secs(60), Instant::now(), Arc::new(AtomicBool::new(false)));
    assert!(matches!(late.check(), Some(Stop::Timeout)));
}

//! `code` steps: the step's JavaScript, run in a fresh QuickJS sandbox for every attempt.
//!
//! Semantics. The `script` is a function body (sloppy mode, like `new Function`); the global
//! `input` holds the step's resolved inputs (the `inputs` object of the invocation); the value
//! it `return`s, passed through `JSON.stringify`, is the step's output (`undefined` → `null`).
//! A returned Promise is settled by draining the job queue (there is no I/O, so only
//! microtasks can settle it). `console.log/info/warn/error/debug` exist; their text is kept in
//! a bounded buffer (last [`LOG_MAX_LINES`] lines, [`LOG_MAX_BYTES`] bytes) that is appended to
//! the message of a FAILED attempt and dropped on success, so the output is exactly the
//! return value. It is never sent to `tracing`: step data is confidential and stored sealed.
//!
//! Sandbox. A fresh `Context` (realm: its own global object and built-ins) per attempt, on a
//! QuickJS `Runtime` kept by the `spawn_blocking` thread for the next attempt it runs (see
//! [`Sandbox`]): nothing a script creates survives into the next attempt — the context is freed
//! and the runtime's garbage collected before reuse, and a runtime that still has queued jobs,
//! was interrupted, refused memory or kept more heap than it had is dropped instead. Creating
//! and freeing a runtime per attempt was a tenth of a `code` fan-out's CPU; the context's
//! intrinsics are most of what is left. The context has the ECMAScript built-ins only:
//! rquickjs is built without its `loader` feature and no module loader is set, and QuickJS's
//! `std`/`os` modules live in quickjs-libc, which rquickjs does not include — so no files, network, timers, `require`,
//! `fetch` or `import`. Limits: heap (`limits.memory_mib`), stack ([`MAX_STACK_BYTES`]),
//! CPU (`limits.cpu`) and the attempt's wall-clock `timeout`, both enforced by the
//! interrupt handler, which QuickJS calls regularly, also inside regexp matching.
//!
//! Error codes (all `Permanent` unless noted): `script_error` (exception or syntax error, with
//! message and line), `cpu_limit`, `memory_limit`, `bad_output` (not JSON-serialisable),
//! `bad_spec` (not a `code` step), `timeout` (`Retryable`: wall clock depends on load),
//! `sandbox_failed` (`Retryable`: the sandbox thread could not run).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rquickjs::allocator::{Allocator, RustAllocator};
use rquickjs::context::EvalOptions;
use rquickjs::function::Rest;
use rquickjs::{CatchResultExt, CaughtError, Context, Ctx, Function, Object, Promise, Runtime, Value};
use tollgate_engine::money::Money;
use tollgate_engine::spec::{CodeLimits, StepKind};
use tollgate_engine::step::{StepError, StepHandler, StepInvocation, StepSuccess};

/// QuickJS stack limit. Well below the 2 MiB tokio gives blocking threads by default, so deep
/// recursion ends in a JS `RangeError`, not a native stack overflow.
pub const MAX_STACK_BYTES: usize = 256 * 1024;
/// Console lines kept for a failed attempt's message.
pub const LOG_MAX_LINES: usize = 20;
/// Console bytes kept for a failed attempt's message.
pub const LOG_MAX_BYTES: usize = 4 * 1024;
/// Extra wait for the sandbox thread past the step timeout: the interrupt handler stops the
/// script at the timeout; this only covers a native call that does not check for interrupts.
const JOIN_GRACE: Duration = Duration::from_millis(250);
const FILE_NAME: &str = "script.js";

/// Runs `code` steps. Stateless: all per-attempt state lives on the sandbox thread.
#[derive(Clone, Debug, Default)]
pub struct CodeHandler;

impl CodeHandler {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl StepHandler for CodeHandler {
    async fn run(&self, call: StepInvocation<'_>) -> Result<StepSuccess, StepError> {
        let StepKind::Code(code) = &call.step.kind else {
            return Err(StepError::permanent(
                "bad_spec",
                format!("step `{}` is a `{}` step, not a `code` step", call.step.id, call.step.ty().name()),
            ));
        };
        let input = call.inputs.get("inputs").cloned().unwrap_or_else(|| serde_json::json!({}));
        // The deadline is fixed now, not when a blocking thread frees up, and the script is
        // stopped if this future is dropped (run cancelled): no work outlives its caller.
        let abandoned = Abandon(Arc::new(AtomicBool::new(false)));
        let job = Job {
            script: code.script.clone(),
            input_json: input.to_string(),
            limits: code.limits.clone().unwrap_or_default(),
            timeout: call.timeout,
            deadline: Instant::now() + call.timeout,
            abandoned: abandoned.0.clone(),
        };
        let handle = tokio::task::spawn_blocking(move || job.run());
        match tokio::time::timeout(call.timeout + JOIN_GRACE, handle).await {
            Ok(Ok(result)) => result.map(|output| StepSuccess::new(output, Money::ZERO)),
            Ok(Err(join)) => Err(StepError::retryable("sandbox_failed", format!("sandbox thread failed: {join}"))),
            Err(_) => Err(timeout_error(call.timeout)),
        }
    }
}

/// Sets the flag when dropped, i.e. when `run` returns or its future is dropped.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn timeout_error(timeout: Duration) -> StepError {
    StepError::retryable("timeout", format!("stopped at the step timeout of {}", human(timeout)))
}

/// Why the interrupt handler stopped the script.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Cpu,
    Timeout,
}

/// One attempt, moved onto the blocking thread.
struct Job {
    script: String,
    input_json: String,
    limits: CodeLimits,
    timeout: Duration,
    deadline: Instant,
    abandoned: Arc<AtomicBool>,
}

impl Job {
    fn run(self) -> Result<serde_json::Value, StepError> {
        if Instant::now() >= self.deadline || self.abandoned.load(Ordering::Relaxed) {
            return Err(timeout_error(self.timeout));
        }
        // Taken out for the attempt: a panic below drops it instead of leaving it half used.
        let sandbox = match SANDBOX.take() {
            Some(sandbox) => sandbox,
            None => Sandbox::new().map_err(|e| StepError::retryable("sandbox_failed", e.to_string()))?,
        };
        let heap = sandbox.heap.clone();
        heap.start_attempt((self.limits.memory_mib as usize).saturating_mul(1024 * 1024));
        let stop = Rc::new(Cell::new(None::<Stop>));
        let mut meter = Meter::start(self.limits.cpu, self.deadline, self.abandoned.clone());
        let flag = stop.clone();
        sandbox.rt.set_interrupt_handler(Some(Box::new(move || match meter.check() {
            Some(reason) => {
                flag.set(Some(reason));
                true
            }
            None => false,
        })));
        let logs = Rc::new(RefCell::new(Logs::default()));
        let result = match Context::full(&sandbox.rt) {
            Ok(ctx) => ctx.with(|ctx| self.eval(&ctx, &logs, &stop)),
            Err(e) => Err(Failure::from(e)),
        };
        let result = result.map_err(|failure| self.classify(&stop, &heap.refused, &logs.borrow(), failure));
        // The context is gone (dropped with `ctx.with`'s closure); the runtime is kept only if
        // it is back to what it was.
        if stop.get().is_none() && !heap.refused.get() {
            sandbox.put_back();
        }
        result
    }

    fn eval<'js>(
        &self,
        ctx: &Ctx<'js>,
        logs: &Rc<RefCell<Logs>>,
        stop: &Cell<Option<Stop>>,
    ) -> Result<serde_json::Value, Failure> {
        let globals = ctx.globals();
        let input: Value = ctx.json_parse(self.input_json.as_str()).catch(ctx)?;
        globals.set("input", input).catch(ctx)?;
        globals.set("console", console(ctx, logs).catch(ctx)?).catch(ctx)?;

        // The header shares the script's first line, so QuickJS's line numbers are the script's.
        let source = format!("(function () {{{}\n}})", self.script);
        let mut options = EvalOptions::default();
        options.strict = false;
        options.filename = Some(FILE_NAME.into());
        let func: Function = ctx.eval_with_options(source, options).catch(ctx)?;
        let mut value: Value = func.call(()).catch(ctx)?;

        // Microtasks queued by the script (and a returned Promise's reactions) run now; a job
        // that never ends is cut by the interrupt handler like any other code.
        while stop.get().is_none() && ctx.execute_pending_job() {}
        if let Some(promise) = value.as_promise().cloned() {
            value = settle(ctx, &promise)?;
        }
        match ctx.json_stringify(value).catch(ctx) {
            Ok(None) => Ok(serde_json::Value::Null),
            Ok(Some(text)) => {
                let text = text.to_string().catch(ctx)?;
                serde_json::from_str(&text).map_err(|e| Failure::BadOutput(e.to_string()))
            }
            Err(e) => Err(Failure::BadOutput(describe(&e).0)),
        }
    }

    /// A refused allocation explains any failure that follows it (a script that catches the
    /// out-of-memory error and succeeds anyway is left alone).
    fn classify(&self, stop: &Cell<Option<Stop>>, refused: &Cell<bool>, logs: &Logs, failure: Failure) -> StepError {
        let with_logs = |message: String| logs.append_to(message);
        let failure = if refused.get() { Failure::OutOfMemory } else { failure };
        match (stop.get(), failure) {
            (Some(Stop::Cpu), _) => {
                StepError::permanent("cpu_limit", with_logs(format!("stopped after {} of CPU", human(self.limits.cpu))))
            }
            (Some(Stop::Timeout), _) => timeout_error(self.timeout),
            (None, Failure::OutOfMemory) => StepError::permanent("memory_limit", with_logs(self.memory_message())),
            (None, Failure::BadOutput(why)) => {
                StepError::permanent("bad_output", with_logs(format!("the return value is not JSON: {why}")))
            }
            (None, Failure::Js(message)) => StepError::permanent("script_error", with_logs(message)),
        }
    }

    fn memory_message(&self) -> String {
        format!("out of memory: the heap limit is {} MiB", self.limits.memory_mib)
    }
}

/// A failed evaluation, before the interrupt flag decides what it really was.
enum Failure {
    OutOfMemory,
    BadOutput(String),
    /// "message (line N)".
    Js(String),
}

impl From<rquickjs::Error> for Failure {
    fn from(e: rquickjs::Error) -> Self {
        match e {
            rquickjs::Error::Allocation => Failure::OutOfMemory,
            other => Failure::Js(other.to_string()),
        }
    }
}

impl<'js> From<CaughtError<'js>> for Failure {
    fn from(e: CaughtError<'js>) -> Self {
        match e {
            CaughtError::Error(rquickjs::Error::Allocation) => Failure::OutOfMemory,
            other => {
                let (message, line) = describe(&other);
                Failure::Js(match line {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                })
            }
        }
    }
}

/// The message of a caught JS error, and the script line it points at when known.
fn describe(e: &CaughtError<'_>) -> (String, Option<u32>) {
    match e {
        CaughtError::Exception(ex) => {
            let name: Option<String> = ex.get("name").ok();
            let message = ex.message().unwrap_or_default();
            let message = match name {
                Some(name) if !name.is_empty() => format!("{name}: {message}"),
                _ => message,
            };
            let line = ex
                .get::<_, Option<u32>>("lineNumber")
                .ok()
                .flatten()
                .or_else(|| ex.stack().and_then(|s| line_in_stack(&s)));
            (message, line)
        }
        CaughtError::Value(v) => {
            let text = v.ctx().json_stringify(v.clone()).ok().flatten().and_then(|s| s.to_string().ok());
            (format!("uncaught {}", text.unwrap_or_else(|| format!("{:?}", v.type_of()))), None)
        }
        CaughtError::Error(e) => (e.to_string(), None),
    }
}

/// First `script.js:LINE:COL` frame of a QuickJS stack trace.
fn line_in_stack(stack: &str) -> Option<u32> {
    let at = stack.find(&format!("{FILE_NAME}:"))? + FILE_NAME.len() + 1;
    stack[at..].split(':').next()?.parse().ok()
}

fn settle<'js>(ctx: &Ctx<'js>, promise: &Promise<'js>) -> Result<Value<'js>, Failure> {
    match promise.result::<Value>() {
        None => Err(Failure::BadOutput("the returned Promise never settled (there is no I/O to wait for)".into())),
        Some(result) => result.catch(ctx).map_err(Failure::from),
    }
}

/// `console.*`, writing into the attempt's bounded log.
fn console<'js>(ctx: &Ctx<'js>, logs: &Rc<RefCell<Logs>>) -> rquickjs::Result<Object<'js>> {
    let console = Object::new(ctx.clone())?;
    for level in ["log", "info", "warn", "error", "debug"] {
        let logs = logs.clone();
        let f = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
            let parts: Vec<String> = args.0.into_iter().map(|v| display(&ctx, v)).collect();
            logs.borrow_mut().push(parts.join(" "));
        })?;
        console.set(level, f)?;
    }
    Ok(console)
}

fn display<'js>(ctx: &Ctx<'js>, v: Value<'js>) -> String {
    if let Some(s) = v.as_string() {
        return s.to_string().unwrap_or_default();
    }
    match ctx.json_stringify(v.clone()) {
        Ok(Some(s)) => s.to_string().unwrap_or_default(),
        Ok(None) => v.type_name().to_owned(),
        Err(_) => {
            // Clear the pending exception (e.g. from a BigInt) so a later call can't report it;
            // an interrupt swallowed here fires again at the next check.
            let _ = ctx.catch();
            format!("[{}]", v.type_name())
        }
    }
}

/// The last lines a script printed, bounded in count and bytes.
#[derive(Default)]
struct Logs {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Logs {
    fn push(&mut self, mut line: String) {
        if line.len() > LOG_MAX_BYTES {
            let mut cut = LOG_MAX_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > LOG_MAX_LINES || self.bytes > LOG_MAX_BYTES {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    fn append_to(&self, message: String) -> String {
        if self.lines.is_empty() {
            return message;
        }
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        format!("{message}\nconsole (last {} lines):\n{}", lines.len(), lines.join("\n"))
    }
}

thread_local! {
    /// The runtime this blocking thread keeps between attempts, if its last attempt left it
    /// clean.
    static SANDBOX: Cell<Option<Sandbox>> = const { Cell::new(None) };
}

/// A QuickJS runtime and its heap meter, reused by one thread for attempt after attempt. What
/// a runtime holds besides its contexts — the atom table, object shapes, the job queue, the
/// interrupt handler — is either freed with the attempt's context or replaced per attempt; a
/// runtime where that may not hold is dropped (see [`Sandbox::put_back`]).
struct Sandbox {
    rt: Runtime,
    heap: Rc<HeapMeter>,
    /// Heap the runtime held after its first attempt: QuickJS keeps some of what the first
    /// context made it grow (tables sized for the built-ins' atoms and shapes, ~230 KiB).
    idle_heap: Option<usize>,
}

/// Heap a kept runtime may hold beyond what it held after its first attempt before it is
/// dropped instead of reused: it bounds what a runtime can keep, not what a script can see
/// (nothing a context made is reachable from the next one).
const IDLE_HEAP_SLACK: usize = 256 * 1024;

impl Sandbox {
    fn new() -> rquickjs::Result<Self> {
        let heap = Rc::new(HeapMeter::default());
        let rt = Runtime::new_with_alloc(MeteredHeap(heap.clone()))?;
        rt.set_max_stack_size(MAX_STACK_BYTES);
        Ok(Self { rt, heap, idle_heap: None })
    }

    /// Keeps the runtime for this thread's next attempt if nothing of the last one is left in
    /// it: its interrupt handler removed, cycles collected, no job queued (a promise reaction
    /// would run in the next attempt's `execute_pending_job`), and its heap back near what it was.
    fn put_back(mut self) {
        self.rt.set_interrupt_handler(None);
        self.rt.run_gc();
        let used = self.heap.used.get();
        let idle = *self.idle_heap.get_or_insert(used);
        if self.rt.is_job_pending() || used > idle + IDLE_HEAP_SLACK {
            return;
        }
        SANDBOX.set(Some(self));
    }
}

/// What the sandbox's heap holds and may hold. QuickJS's own limit (`set_memory_limit`)
/// refuses an allocation silently, and when even its "out of memory" error cannot be allocated
/// it throws `null` — which looks like a script's `throw null`. Enforcing the limit here
/// instead records every refusal, so `memory_limit` is reported exactly. The limit is on the
/// runtime's whole heap, as when each attempt had a runtime of its own.
#[derive(Default)]
struct HeapMeter {
    /// None while the runtime is created, before its first attempt.
    limit: Cell<Option<usize>>,
    used: Cell<usize>,
    refused: Cell<bool>,
}

impl HeapMeter {
    fn start_attempt(&self, limit: usize) {
        self.limit.set(Some(limit));
        self.refused.set(false);
    }

    fn admit(&self, extra: usize) -> bool {
        let Some(limit) = self.limit.get() else { return true };
        let fits = self.used.get().checked_add(extra).is_some_and(|total| total <= limit);
        if !fits {
            self.refused.set(true);
        }
        fits
    }

    fn grew(&self, by: usize) {
        self.used.set(self.used.get() + by);
    }

    fn shrank(&self, by: usize) {
        self.used.set(self.used.get().saturating_sub(by));
    }
}

/// The allocator QuickJS calls, counting into the runtime's [`HeapMeter`].
struct MeteredHeap(Rc<HeapMeter>);

// SAFETY: every block comes from `RustAllocator`, which meets the trait's contract; this
// wrapper only refuses requests (a null return, which the contract allows) and keeps count
// with `usable_size` of blocks that allocator returned.
unsafe impl Allocator for MeteredHeap {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.0.admit(size) {
            return std::ptr::null_mut();
        }
        let block = RustAllocator.alloc(size);
        if !block.is_null() {
            self.0.grew(unsafe { RustAllocator::usable_size(block) });
        }
        block
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        // `RustAllocator::calloc` panics on overflow, and a panic must not cross into C.
        match count.checked_mul(size) {
            Some(total) if total > 0 && self.0.admit(total) => {
                let block = RustAllocator.calloc(count, size);
                if !block.is_null() {
                    self.0.grew(unsafe { RustAllocator::usable_size(block) });
                }
                block
            }
            _ => std::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        unsafe {
            self.0.shrank(RustAllocator::usable_size(ptr));
            RustAllocator.dealloc(ptr);
        }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        // QuickJS routes null and zero-size reallocs elsewhere; handle them anyway.
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        if new_size == 0 {
            unsafe { self.dealloc(ptr) };
            return std::ptr::null_mut();
        }
        let old = unsafe { RustAllocator::usable_size(ptr) };
        if new_size > old && !self.0.admit(new_size - old) {
            return std::ptr::null_mut();
        }
        let block = unsafe { RustAllocator.realloc(ptr, new_size) };
        if !block.is_null() {
            self.0.shrank(old);
            self.0.grew(unsafe { RustAllocator::usable_size(block) });
        }
        block
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        unsafe { RustAllocator::usable_size(ptr) }
    }
}

/// CPU and wall-clock accounting for the interrupt handler, which QuickJS calls every few
/// thousand operations: it must be cheap, so it reads the clock and only consults the thread's
/// CPU time (a system call) when the CPU budget could have been spent.
struct Meter {
    started: Instant,
    cpu_limit: Duration,
    deadline: Instant,
    abandoned: Arc<AtomicBool>,
    cpu_at_start: Option<Duration>,
    next_cpu_check: Duration,
}

impl Meter {
    fn start(cpu_limit: Duration, deadline: Instant, abandoned: Arc<AtomicBool>) -> Self {
        let cpu_at_start = thread_cpu_time();
        Self { started: Instant::now(), cpu_limit, deadline, abandoned, cpu_at_start, next_cpu_check: cpu_limit }
    }

    fn check(&mut self) -> Option<Stop> {
        let now = Instant::now();
        if now >= self.deadline || self.abandoned.load(Ordering::Relaxed) {
            return Some(Stop::Timeout);
        }
        let wall = now - self.started;
        if wall < self.next_cpu_check {
            return None;
        }
        // Without a CPU clock, wall time stands in for it (it is never less).
        let used = match (self.cpu_at_start, thread_cpu_time()) {
            (Some(base), Some(now)) => now.saturating_sub(base),
            _ => wall,
        };
        if used >= self.cpu_limit {
            return Some(Stop::Cpu);
        }
        // One thread's CPU time grows at most as fast as wall time: no need to look again
        // before the remaining budget could have been spent.
        self.next_cpu_check = wall + (self.cpu_limit - used).max(Duration::from_millis(1));
        None
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`; read at every attempt's start,
/// so a system call, not a /proc file to open and parse).
fn thread_cpu_time() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(u64::try_from(t.tv_sec).ok()?, u32::try_from(t.tv_nsec).ok()?))
}

/// `2s`, `250ms`: how limits are quoted in messages.
fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[cfg(test)]
mod tests;

//! Validation: turns a parsed [`WorkflowSpec`] into a [`ValidatedSpec`] with its [`Dag`], or
//! reports every problem with its place (unknown or duplicate ids, cycles, references to
//! steps that are not upstream, bad parameters, fields that do not fit the step type).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::egress::{EgressAllow, EgressRule};
use crate::expr;
use crate::gates::{GateMesh, GatePolicy};
use crate::ids::{StepId, is_valid_id};
use crate::spec::{
    OnBlock, ParameterSpec, ParameterType, RetryOn, RetrySpec, SpecError, SpecProblem, StepSpec, WorkflowSpec,
};
use crate::step::ERROR_CODES;

/// The dependency graph of a validated spec, by step index.
#[derive(Clone, Debug)]
pub struct Dag {
    index: HashMap<StepId, usize>,
    /// `needs[i]`: indices of the steps step `i` waits for.
    pub needs: Vec<Vec<usize>>,
    /// `dependents[i]`: indices of the steps that wait for step `i`.
    pub dependents: Vec<Vec<usize>>,
    /// A topological order (dependencies first), stable with respect to declaration order.
    pub topo: Vec<usize>,
}

impl Dag {
    pub fn index_of(&self, id: &StepId) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// A spec that passed validation. Only [`validate`] constructs one.
#[derive(Clone, Debug)]
pub struct ValidatedSpec {
    spec: WorkflowSpec,
    dag: Dag,
    /// The gate mesh with the workflow's own rules (the built-in one when it has none).
    mesh: GateMesh,
    /// The gate policy of each step: default ← workflow ← step overrides.
    policies: Vec<GatePolicy>,
    /// The workflow's `egress.allow`, parsed.
    egress: EgressAllow,
}

impl ValidatedSpec {
    pub fn spec(&self) -> &WorkflowSpec {
        &self.spec
    }
    pub fn dag(&self) -> &Dag {
        &self.dag
    }
    pub fn step(&self, i: usize) -> &StepSpec {
        &self.spec.steps[i]
    }
    pub fn step_by_id(&self, id: &StepId) -> Option<(usize, &StepSpec)> {
        self.dag.index_of(id).map(|i| (i, &self.spec.steps[i]))
    }
    pub fn gate_mesh(&self) -> &GateMesh {
        &self.mesh
    }
    pub fn gate_policy(&self, i: usize) -> &GatePolicy {
        &self.policies[i]
    }
    /// Destinations the workflow opens beyond the service's egress allowlist.
    pub fn egress(&self) -> &EgressAllow {
        &self.egress
    }
    /// What a `block` verdict on step `i`'s output does.
    pub fn on_block(&self, i: usize) -> OnBlock {
        let wf = self.spec.gates.as_ref().map(|g| g.on_block).unwrap_or_default();
        self.spec.steps[i].gates.as_ref().and_then(|g| g.on_block).unwrap_or(wf)
    }

    /// Check run parameters against the declared ones, filling defaults.
    pub fn bind_params(&self, given: &serde_json::Map<String, Value>) -> Result<Value, SpecError> {
        let mut problems = Vec::new();
        for name in given.keys() {
            if !self.spec.parameters.contains_key(name) {
                let known: Vec<_> = self.spec.parameters.keys().map(String::as_str).collect();
                problems.push(problem(
                    format!("parameter {name}"),
                    format!("unknown parameter (declared: {})", known.join(", ")),
                ));
            }
        }
        let mut out = serde_json::Map::new();
        for (name, decl) in &self.spec.parameters {
            match given.get(name).or(decl.default.as_ref()) {
                Some(v) => match coerce(decl.ty, v) {
                    Some(v) => {
                        out.insert(name.clone(), v);
                    }
                    None => problems.push(problem(
                        format!("parameter {name}"),
                        format!("expected {}, got {v}", type_name(decl.ty)),
                    )),
                },
                None if decl.required => {
                    problems.push(problem(format!("parameter {name}"), "required parameter is missing"))
                }
                None => {
                    out.insert(name.clone(), Value::Null);
                }
            }
        }
        if problems.is_empty() { Ok(Value::Object(out)) } else { Err(SpecError { problems }) }
    }
}

pub(crate) fn problem(at: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem { at: at.into(), message: message.into() }
}

fn type_name(t: ParameterType) -> &'static str {
    match t {
        ParameterType::String => "a string",
        ParameterType::Number => "a number",
        ParameterType::Integer => "an integer",
        ParameterType::Boolean => "true or false",
        ParameterType::Object => "an object",
        ParameterType::Array => "an array",
    }
}

/// Accept `v` as type `t`; strings from the command line (`--set n=3`) are parsed.
fn coerce(t: ParameterType, v: &Value) -> Option<Value> {
    match (t, v) {
        (ParameterType::String, Value::String(_)) => Some(v.clone()),
        (ParameterType::Number, Value::Number(_)) => Some(v.clone()),
        (ParameterType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
        (ParameterType::Boolean, Value::Bool(_)) => Some(v.clone()),
        (ParameterType::Object, Value::Object(_)) => Some(v.clone()),
        (ParameterType::Array, Value::Array(_)) => Some(v.clone()),
        // A whole number stays an integer, so `48000` reads back as 48000, not 48000.0.
        (ParameterType::Number, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Some(Value::from(i)),
            Err(_) => s.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number),
        },
        (ParameterType::Integer, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
        (ParameterType::Boolean, Value::String(s)) => match s.trim() {
            "true" | "yes" => Some(Value::Bool(true)),
            "false" | "no" => Some(Value::Bool(false)),
            _ => None,
        },
        (ParameterType::Object | ParameterType::Array, Value::String(s)) => {
            serde_json::from_str::<Value>(s).ok().and_then(|p| coerce(t, &p).filter(|_| !p.is_string()))
        }
        _ => None,
    }
}

fn is_step_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 64
}

/// Validate a parsed spec.
pub fn validate(spec: WorkflowSpec) -> Result<ValidatedSpec, SpecError> {
    let mut p = Vec::new();
    if !is_valid_id(spec.id.as_str()) {
        p.push(problem("id", format!("`{}` is not a valid id (letters, digits, `_`, `-`, `.`; at most 128)", spec.id)));
    }
    if !is_valid_id(spec.owner.as_str()) {
        p.push(problem("owner", format!("`{}` is not a valid owner id", spec.owner)));
    }
    for (name, decl) in &spec.parameters {
        check_parameter(name, decl, &mut p);
    }
    if let Some(r) = spec.defaults.as_ref().and_then(|d| d.retry.as_ref()) {
        check_retry("defaults.retry", r, &mut p);
    }
    if spec.steps.is_empty() {
        p.push(problem("steps", "a workflow needs at least one step"));
    }
    if let Some(b) = &spec.budget {
        crate::spec::escalation::check(
            &b.escalate,
            "budget.escalate",
            &[crate::run::HumanMode::BudgetExtension],
            &mut p,
        );
    }

    // Ids first: everything else refers to them.
    let mut index = HashMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        if !is_step_ident(step.id.as_str()) {
            p.push(problem(
                &at,
                format!(
                    "step id `{}` must start with a letter or `_` and hold only letters, digits and `_` (at most 64)",
                    step.id
                ),
            ));
        }
        if let Some(first) = index.insert(step.id.clone(), i) {
            p.push(problem(&at, format!("duplicate step id `{}` (first at steps[{first}])", step.id)));
        }
    }
    let mut needs = vec![Vec::new(); spec.steps.len()];
    let mut dependents = vec![Vec::new(); spec.steps.len()];
    for (i, step) in spec.steps.iter().enumerate() {
        let at = format!("steps[{i}] ({}).needs", step.id);
        for need in &step.needs {
            match index.get(need) {
                None => p.push(problem(&at, format!("unknown step `{need}`{}", suggest(need, &index)))),
                Some(&j) if j == i => p.push(problem(&at, "a step cannot need itself")),
                Some(&j) if needs[i].contains(&j) => p.push(problem(&at, format!("`{need}` is listed twice"))),
                Some(&j) => {
                    needs[i].push(j);
                    dependents[j].push(i);
                }
            }
        }
    }
    let topo = match topo_order(&needs) {
        Ok(t) => t,
        Err(cycle) => {
            let names: Vec<_> = cycle.iter().map(|&i| spec.steps[i].id.as_str()).collect();
            p.push(problem("steps", format!("dependency cycle: {}", names.join(" → "))));
            Vec::new()
        }
    };

    for (i, step) in spec.steps.iter().enumerate() {
        check_step(i, step, &spec, &index, &needs, &mut p);
    }
    if !topo.is_empty() {
        crate::spec::join::check_joins(&spec, &needs, &topo, &mut p);
    }
    let (mesh, policies) = gates_of(&spec, &mut p);
    let allow = spec.egress.as_ref().map(|e| e.allow.as_slice()).unwrap_or_default();
    for (i, entry) in allow.iter().enumerate() {
        if let Err(message) = entry.parse::<EgressRule>() {
            p.push(problem(format!("egress.allow[{i}]"), message));
        }
    }
    let egress = EgressAllow::parse(allow).unwrap_or_default();
    crate::spec::triggers::check_triggers(&spec, &mut p);
    if !p.is_empty() {
        return Err(SpecError { problems: p });
    }
    Ok(ValidatedSpec { dag: Dag { index, needs, dependents, topo }, spec, mesh, policies, egress })
}

/// The workflow's mesh (built-in rules plus its own, whose examples are checked here) and
/// each step's effective policy.
fn gates_of(spec: &WorkflowSpec, p: &mut Vec<SpecProblem>) -> (GateMesh, Vec<GatePolicy>) {
    let gates = spec.gates.clone().unwrap_or_default();
    let mesh = if gates.rules.is_empty() {
        GateMesh::builtin()
    } else {
        GateMesh::builtin().with_extra_rules(gates.rules.clone()).unwrap_or_else(|e| {
            p.push(problem("gates.rules", e.to_string()));
            GateMesh::builtin()
        })
    };
    let base = match &gates.policy {
        Some(o) => GatePolicy::default().with_override(o),
        None => GatePolicy::default(),
    };
    if let Err(e) = base.validate() {
        p.push(problem("gates.policy", e.to_string()));
    }
    let policies = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| match step.gates.as_ref().and_then(|g| g.policy.as_ref()) {
            Some(o) => {
                let policy = base.with_override(o);
                if let Err(e) = policy.validate() {
                    p.push(problem(format!("steps[{i}] ({}).gates.policy", step.id), e.to_string()));
                }
                policy
            }
            None => base.clone(),
        })
        .collect();
    (mesh, policies)
}

fn suggest(name: &StepId, index: &HashMap<StepId, usize>) -> String {
    let close = index.keys().find(|k| {
        let (a, b) = (k.as_str(), name.as_str());
        a.len().abs_diff(b.len()) <= 2 && (a.starts_with(&b[..b.len().min(3)]) || a.contains(b) || b.contains(a))
    });
    close.map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default()
}

fn check_parameter(name: &str, decl: &ParameterSpec, p: &mut Vec<SpecProblem>) {
    let at = format!("parameters.{name}");
    if !is_step_ident(name) {
        p.push(problem(&at, "parameter names must start with a letter or `_` and hold only letters, digits and `_`"));
    }
    if let Some(d) = &decl.default {
        if coerce(decl.ty, d).is_none() || d.is_string() && decl.ty != ParameterType::String {
            p.push(problem(&at, format!("default {d} is not {}", type_name(decl.ty))));
        }
        if decl.required {
            p.push(problem(&at, "a required parameter cannot have a default"));
        }
    }
}

/// Kahn's algorithm; on a cycle, returns one cycle (first node repeated at the end).
fn topo_order(needs: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = needs.len();
    let mut indegree: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, ns) in needs.iter().enumerate() {
        for &j in ns {
            dependents[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert(d);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk `needs` edges among the remaining nodes until one repeats: that is a cycle.
    let start = (0..n).find(|&i| indegree[i] > 0).expect("some node is left");
    let mut seen = vec![usize::MAX; n];
    let mut path = Vec::new();
    let mut cur = start;
    while seen[cur] == usize::MAX {
        seen[cur] = path.len();
        path.push(cur);
        cur = *needs[cur].iter().find(|&&j| indegree[j] > 0).expect("a node on a cycle has a remaining need");
    }
    let mut cycle: Vec<usize> = path[seen[cur]..].to_vec();
    cycle.reverse(); // needs point backwards; print in execution direction
    cycle.push(cycle[0]);
    Err(cycle)
}

/// Whether `target` is reachable from `from` through `needs` edges (i.e. upstream of it).
fn is_upstream(target: usize, from: usize, needs: &[Vec<usize>]) -> bool {
    let mut stack = needs[from].clone();
    let mut seen = vec![false; needs.len()];
    while let Some(i) = stack.pop() {
        if i == target {
            return true;
        }
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend_from_slice(&needs[i]);
        }
    }
    false
}

/// The kinds of request a step may make of people, which its `escalate:` serves: an
/// approval step its approval; a step that runs as a job guidance on a blocked output (or a
/// flagged prompt), and an `llm` step with tools that need authorisation, those; the others
/// (condition, delay, an event's wait, a sub-workflow's run) none.
fn request_modes(step: &StepSpec) -> Vec<crate::run::HumanMode> {
    use crate::run::HumanMode;
    match &step.kind {
        crate::spec::StepKind::Approval(_) => vec![HumanMode::Approval],
        _ if step.ty().is_local() => Vec::new(),
        crate::spec::StepKind::Event(e) if e.wait.is_some() => Vec::new(),
        crate::spec::StepKind::Platform(p) if p.action == crate::spec::steps::PlatformAction::WorkflowRun => Vec::new(),
        crate::spec::StepKind::Llm(llm) if llm.tools.iter().any(|t| !t.authorize.is_never()) => {
            vec![HumanMode::Guidance, HumanMode::ToolAuthorisation]
        }
        _ => vec![HumanMode::Guidance],
    }
}

fn check_step(
    i: usize,
    step: &StepSpec,
    spec: &WorkflowSpec,
    index: &HashMap<StepId, usize>,
    needs: &[Vec<usize>],
    p: &mut Vec<SpecProblem>,
) {
    let at = format!("steps[{i}] ({})", step.id);
    let ty = step.ty();
    if let Some(r) = &step.retry {
        check_retry(&format!("{at}.retry"), r, p);
    }
    if let Some(c) = &step.checks {
        if step.ty().is_local() {
            p.push(problem(format!("{at}.checks"), format!("a `{}` step has no output to check", ty.name())));
        }
        c.check(&at, p);
    }
    if step.timeout.is_some_and(|t| t.is_zero()) {
        p.push(problem(format!("{at}.timeout"), "must be more than zero"));
    }
    if step.queue_timeout.is_some_and(|t| t.is_zero()) {
        p.push(problem(format!("{at}.queue_timeout"), "must be more than zero"));
    }
    if !step.escalate.is_empty() {
        let modes = request_modes(step);
        if modes.is_empty() {
            p.push(problem(
                format!("{at}.escalate"),
                format!("a `{}` step asks no one, so it has nothing to escalate", ty.name()),
            ));
        }
        crate::spec::escalation::check(&step.escalate, &format!("{at}.escalate"), &modes, p);
    }
    let shape = step.kind.shape();
    shape.check(&at, p);
    if let crate::spec::StepKind::Platform(platform) = &step.kind {
        if platform.workflow_run().is_some_and(|w| w.workflow == spec.id) {
            p.push(problem(format!("{at}.with.workflow"), format!("workflow `{}` cannot run itself", spec.id)));
        }
        if platform.action == crate::spec::steps::PlatformAction::WorkflowRun && step.retry.is_some() {
            p.push(problem(
                format!("{at}.retry"),
                "a `workflow.run` step is not retried (its sub-workflow retries its own steps)",
            ));
        }
        if platform.action == crate::spec::steps::PlatformAction::WorkflowRun && step.for_each.is_some() {
            p.push(problem(
                format!("{at}.for_each"),
                "a `workflow.run` step runs one sub-workflow: fan out inside the sub-workflow instead",
            ));
        }
    }
    for (place, name) in shape.upstream_refs(&at) {
        match index.get(&name) {
            None => p.push(problem(&place, format!("unknown step `{name}`{}", suggest(&name, index)))),
            Some(&j) if !is_upstream(j, i, needs) => p.push(problem(
                &place,
                format!("`{name}` is not upstream of `{}`: add it (or a step after it) to `needs`", step.id),
            )),
            Some(_) => {}
        }
    }

    // Expressions: syntax, parameters declared, steps upstream.
    let mut exprs: Vec<(String, String)> = Vec::new();
    if let Some(w) = &step.when {
        exprs.push((format!("{at}.when"), w.clone()));
    }
    exprs.extend(shape.expressions(&at));
    let mut templated: Vec<(String, Value)> =
        vec![(format!("{at}.inputs"), serde_json::to_value(&step.inputs).unwrap_or(Value::Null))];
    templated.extend(shape.templates(&at));
    // `item` and `item_index` exist only in a `for_each` step's own templates (not in its list).
    for (place, value) in &templated {
        if step.for_each.is_none() && expr::template_exprs(value).is_ok_and(|es| es.iter().any(|e| uses_item(e))) {
            p.push(problem(place, "`item` and `item_index` are defined only in a step with `for_each`"));
        }
    }
    if let Some(list) = &step.for_each {
        let place = format!("{at}.for_each");
        if ty.is_local() || matches!(&step.kind, crate::spec::StepKind::Event(e) if e.wait.is_some()) {
            p.push(problem(&place, format!("a `{}` step cannot fan out: `for_each` runs a step that does work (code, api_call, llm, research, connector, platform…) once per item", ty.name())));
        }
        match list {
            Value::Array(_) => {}
            Value::String(t) if t.contains("${{") => {}
            _ => p.push(problem(&place, "must be a list, or a `${{ … }}` template that gives one (e.g. \"${{ steps.fetch.output.documents }}\")")),
        }
        if expr::template_exprs(list).is_ok_and(|es| es.iter().any(|e| uses_item(e))) {
            p.push(problem(&place, "the list cannot refer to `item` or `item_index` (they are its elements)"));
        }
        templated.push((place, list.clone()));
    }
    for (place, value) in templated {
        match expr::template_exprs(&value) {
            Ok(es) => exprs.extend(es.into_iter().map(|e| (place.clone(), e))),
            Err(e) => p.push(problem(place, e.to_string())),
        }
    }
    for (place, src) in exprs {
        if let Err(e) = expr::compile(&src) {
            p.push(problem(&place, e.to_string()));
            continue;
        }
        for name in expr::referenced_params(&src) {
            if !spec.parameters.contains_key(&name) {
                p.push(problem(&place, format!("`params.{name}` is not a declared parameter")));
            }
        }
        for name in expr::referenced_steps(&src) {
            match index.get(&StepId::new(name.clone())) {
                None => p.push(problem(&place, format!("`steps.{name}` is not a step of this workflow"))),
                Some(&j) if !is_upstream(j, i, needs) => p.push(problem(
                    &place,
                    format!("`steps.{name}` is not upstream of `{}`: add it (or a step after it) to `needs`", step.id),
                )),
                Some(_) => {}
            }
        }
    }
}

/// Whether a CEL expression refers to the variable `item` or `item_index` (not a field of
/// that name: `steps.x.output.item` is not one).
fn uses_item(src: &str) -> bool {
    let b = src.as_bytes();
    ["item_index", "item"].iter().any(|name| {
        src.match_indices(name).any(|(at, _)| {
            let end = at + name.len();
            let before_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_' || b[at - 1] == b'.');
            let after_ok = end == b.len() || !(b[end].is_ascii_alphanumeric() || b[end] == b'_');
            before_ok && after_ok
        })
    })
}

/// A retry policy: its bounds, and `on` naming only error codes an attempt can fail with.
fn check_retry(at: &str, r: &RetrySpec, p: &mut Vec<SpecProblem>) {
    if !(1..=100).contains(&r.max_attempts) {
        p.push(problem(format!("{at}.max_attempts"), "must be between 1 and 100"));
    }
    if !(r.backoff.multiplier.is_finite() && r.backoff.multiplier >= 1.0) {
        p.push(problem(format!("{at}.backoff.multiplier"), "must be ≥ 1"));
    }
    if let RetryOn::Codes(codes) = &r.on {
        if codes.is_empty() {
            p.push(problem(
                format!("{at}.on"),
                "an empty list retries nothing: list error codes, or write `transient` or `any`",
            ));
        }
        for code in codes {
            if code == "any" {
                p.push(problem(format!("{at}.on"), "`any` covers every code: write `on: any` instead of a list"));
            } else if code != "transient" && !ERROR_CODES.iter().any(|c| c.code == code) {
                let known: Vec<&str> = ERROR_CODES.iter().map(|c| c.code).collect();
                p.push(problem(
                    format!("{at}.on"),
                    format!("unknown error code `{code}` (known: transient, {})", known.join(", ")),
                ));
            }
        }
    }
}

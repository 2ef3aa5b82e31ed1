//! Spec parsing and validation: every problem reported with its place.

use expect_test::{Expect, expect};
use proptest::prelude::*;

use crate::spec::{WorkflowSpec, parse_yaml};

fn check(yaml: &str, expect: Expect) {
    let out = match parse_yaml(yaml) {
        Ok(spec) => format!("ok: {} steps, topo {:?}\n", spec.spec().steps.len(), spec.dag().topo),
        Err(e) => e.to_string(),
    };
    expect.assert_eq(&out);
}

#[test]
fn a_valid_spec_gets_a_topological_order() {
    check(
        "id: w\nowner: o\nsteps:\n  - { id: c, type: code, script: x, needs: [b] }\n  - { id: a, type: code, script: x }\n  - { id: b, type: code, script: x, needs: [a] }\n",
        expect![[r#"
            ok: 3 steps, topo [1, 2, 0]
        "#]],
    );
}

#[test]
fn malformed_yaml_and_unknown_fields_name_the_line() {
    check(
        "id: w\nowner: o\nsteps:\n  - id: a\n    type: code\n    scrpt: x\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 6, column 5: steps[0]: unknown field `scrpt`, did you mean `script`? (a `code` step has `script`, `limits` and the fields of every step: `id`, `type`, `description`, `needs`, `when`, `join`, `inputs`, `for_each`, `retry`, `timeout`, `queue_timeout`, `cost`, `gates`, `checks`, `escalate`)
        "#]],
    );
    check(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: teleport }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 4, column 20: steps[0].type: unknown variant `teleport`, expected one of `condition`, `llm`, `approval`, `api_call`, `connector`, `code`, `delay`, `event`, `platform`, `research`
        "#]],
    );
}

#[test]
fn a_dependency_cycle_is_printed() {
    check(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: code, script: x, needs: [c] }\n  - { id: b, type: code, script: x, needs: [a] }\n  - { id: c, type: code, script: x, needs: [b] }\n  - { id: d, type: code, script: x }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - steps: dependency cycle: b → c → a → b
        "#]],
    );
}

#[test]
fn ids_references_and_fields_are_checked_together() {
    check(
        r#"
id: "bad id"
owner: o
parameters:
  limit: { type: integer, default: "ten" }
steps:
  - { id: fetch, type: api_call, request: { url: "http://x", method: FETCH } }
  - { id: fetch, type: code, script: x }
  - { id: summary, type: code, script: x, needs: [fetchh], inputs: { a: "${{ steps.other.output }}", b: "${{ params.nope }}" } }
  - { id: other, type: code, script: x, when: "steps.summary.output ==" }
  - { id: ask, type: connector, connection: mail, action: email.sned }
"#,
        expect![[r#"
            invalid workflow spec (9 problems):
              - id: `bad id` is not a valid id (letters, digits, `_`, `-`, `.`; at most 128)
              - parameters.limit: default "ten" is not an integer
              - steps[1]: duplicate step id `fetch` (first at steps[0])
              - steps[2] (summary).needs: unknown step `fetchh` (did you mean `fetch`?)
              - steps[0] (fetch).request.method: `FETCH` is not an HTTP method
              - steps[2] (summary).inputs: `steps.other` is not upstream of `summary`: add it (or a step after it) to `needs`
              - steps[2] (summary).inputs: `params.nope` is not a declared parameter
              - steps[3] (other).when: expression `steps.summary.output ==` does not parse: ERROR: <input>:1:24: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}
            | steps.summary.output ==
            | .......................^
              - steps[4] (ask).action: unknown action `email.sned` (actions: email.send, email.fetch, http.request)
        "#]],
    );
}

/// A step holds only the fields of its type: a field of another type or of none, a missing
/// one, a repeated one, each refused with its place — at the field when `type` comes first.
#[test]
fn a_step_has_only_the_fields_of_its_type() {
    let with = |step: &str| format!("id: w\nowner: o\nsteps:\n  - {{ id: a, type: code, script: x }}\n  - {step}\n");
    check(
        "id: w\nowner: o\nsteps:\n  - id: wait\n    type: delay\n    duration: 1m\n    script: return 1\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 7, column 5: steps[0]: `script` is not a field of a `delay` step (a `delay` step has `duration` and the fields of every step: `id`, `type`, `description`, `needs`, `when`, `join`, `inputs`, `for_each`, `retry`, `timeout`, `queue_timeout`, `cost`, `gates`, `checks`, `escalate`)
        "#]],
    );
    // Fields before `type` are checked once it is known; the place is the step's.
    check(
        &with("{ id: wait, duration: 1m, script: x, type: delay }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 5: steps[1]: `script` is not a field of a `delay` step (a `delay` step has `duration` and the fields of every step: `id`, `type`, `description`, `needs`, `when`, `join`, `inputs`, `for_each`, `retry`, `timeout`, `queue_timeout`, `cost`, `gates`, `checks`, `escalate`)
        "#]],
    );
    check(
        &with("{ id: wait, type: delay, needs: [a] }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 5: steps[1]: missing field `duration`
        "#]],
    );
    check(
        &with("{ id: go, type: code, script: x, with: { a: 1 } }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 38: steps[1]: `with` is not a field of a `code` step (a `code` step has `script`, `limits` and the fields of every step: `id`, `type`, `description`, `needs`, `when`, `join`, `inputs`, `for_each`, `retry`, `timeout`, `queue_timeout`, `cost`, `gates`, `checks`, `escalate`)
        "#]],
    );
    check(
        &with("{ id: ask, type: connector, with: { model: gpt }, prompt: hi }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 55: steps[1]: `prompt` is not a field of a `connector` step (a `connector` step has `connection`, `action`, `with` and the fields of every step: `id`, `type`, `description`, `needs`, `when`, `join`, `inputs`, `for_each`, `retry`, `timeout`, `queue_timeout`, `cost`, `gates`, `checks`, `escalate`)
        "#]],
    );
    check(
        &with("{ type: code, script: x }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 5: steps[1]: missing field `id`
        "#]],
    );
    check(
        &with("{ id: b, script: x }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 5: steps[1]: missing field `type`
        "#]],
    );
    check(
        &with("{ id: b, type: code, script: x, type: delay }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 37: steps[1]: duplicate field `type`
        "#]],
    );
    check(
        &with("{ id: b, type: code, timeout: soon, script: x }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 35: steps[1].timeout: invalid value: string "soon", expected a duration
        "#]],
    );
    check(
        &with("{ id: b, type: code, script: x, limits: { cpu: lots } }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 52: steps[1].limits.cpu: invalid value: string "lots", expected a duration
        "#]],
    );
    check(
        &with("{ id: b, type: teleport, script: x }"),
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 5, column 20: steps[1].type: unknown variant `teleport`, expected one of `condition`, `llm`, `approval`, `api_call`, `connector`, `code`, `delay`, `event`, `platform`, `research`
        "#]],
    );
}

/// Every template parses; a spec written as the store keeps it (JSON) reads back the same, and
/// so does one written before steps had a struct per type.
#[test]
fn templates_parse_and_specs_round_trip_through_the_stored_form() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let mut specs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("templates/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let spec = parse_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            specs.push(spec.spec().clone());
        }
    }
    assert!(!specs.is_empty(), "no templates in {}", dir.display());
    let every_type: WorkflowSpec = serde_yaml_ng::from_str(EVERY_TYPE).unwrap();
    specs.push(every_type.clone());
    for spec in specs {
        let stored = serde_json::to_value(&spec).unwrap();
        let back: WorkflowSpec = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back, spec);
        for step in stored["steps"].as_array().unwrap() {
            assert!(step["type"].is_string(), "a stored step keeps `type` beside its fields: {step}");
        }
    }
    // As the previous model wrote it: every field flat, `type` second, common fields between.
    let old = r#"{"id":"every","version":1,"owner":"o","steps":[
        {"id":"check","type":"condition","expr":"params.n > 1"},
        {"id":"calc","type":"code","needs":["check"],"timeout":"5s","script":"return 1","limits":{"cpu":"1s","memory_mib":16}},
        {"id":"fetch","type":"api_call","needs":["calc"],"retry":{"max_attempts":3,"backoff":{"initial":"100ms","max":"1s","multiplier":2.0}},"request":{"method":"POST","url":"http://x/${{ params.n }}","body":{"n":1}}},
        {"id":"ask","type":"approval","needs":["fetch"],"question":"Go on with ${{ params.n }}?","assignee":"ops"},
        {"id":"wait","type":"delay","needs":["ask"],"cost":0.5,"duration":"1m"},
        {"id":"later","type":"connector","needs":["wait"],"connection":"mail","action":"email.send","with":{"to":"ops@example.com","subject":"s","body":"b"}}],
        "parameters":{"n":{"type":"integer","default":2}}}"#;
    let old: WorkflowSpec = serde_json::from_str(old).unwrap();
    assert_eq!(old, every_type);
}

/// `tollgate schema` accepts what the parser accepts — every template, a step of each type in
/// either key order — and, per type, refuses a field of another type or a missing one.
#[test]
fn the_schema_checks_each_step_against_the_shape_of_its_type() {
    let schema = crate::spec::json_schema();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource("tollgate://spec.json", schema).unwrap();
    let mut schemas = boon::Schemas::new();
    let index = compiler.compile("tollgate://spec.json", &mut schemas).expect("the schema compiles");
    let valid = |yaml: &str| {
        let doc: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
        schemas.validate(&doc, index).map_err(|e| format!("{e:#}"))
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    for entry in std::fs::read_dir(&dir).expect("templates/") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        valid(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    valid(EVERY_TYPE).unwrap();
    let with = |step: &str| format!("id: w\nowner: o\nsteps:\n  - {step}\n");
    for ok in [
        "{ id: wait, duration: 1m, needs: [], type: delay }",
        "{ id: a, type: code, script: x, limits: { cpu: 1s }, timeout: 3s, gates: { on_block: fail } }",
        "{ id: ask, type: approval, question: Go?, description: ~ }",
        "{ id: later, type: event }",
        "{ id: find, type: research, query: contracts, collection: precedents, top_k: 3 }",
        "{ id: find, type: research, query: contracts }",
        "{ id: find, type: research, query: fees, if_missing: empty, summarize: { prompt: \"Fees for {{ query }}\", max_tokens: 300, on_injection: strip } }",
    ] {
        valid(&with(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        serde_yaml_ng::from_str::<WorkflowSpec>(&with(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for refused in [
        "{ id: wait, type: delay, duration: 1m, script: x }",
        "{ id: wait, type: delay }",
        "{ id: a, type: code, scrpt: x }",
        "{ id: a, type: code, script: x, with: {} }",
        "{ id: a, script: x }",
        "{ id: a, type: teleport }",
        "{ id: find, type: research, query: q, request: {} }",
        "{ id: find, type: research, query: q, summarize: { max_tokens: 10 } }",
        "{ id: find, type: research, query: q, summarize: { prompt: p, tools: [] } }",
        "{ id: find, type: research, query: q, if_missing: ignore }",
    ] {
        assert!(valid(&with(refused)).is_err(), "the schema accepts {refused}");
        assert!(serde_yaml_ng::from_str::<WorkflowSpec>(&with(refused)).is_err(), "the parser accepts {refused}");
    }
}

/// One step of each type, with its fields.
const EVERY_TYPE: &str = r#"
id: every
owner: o
parameters:
  n: { type: integer, default: 2 }
steps:
  - { id: check, type: condition, expr: "params.n > 1" }
  - { id: calc, type: code, needs: [check], timeout: 5s, script: "return 1", limits: { cpu: 1s, memory_mib: 16 } }
  - id: fetch
    type: api_call
    needs: [calc]
    retry: { max_attempts: 3, backoff: { initial: 100ms, max: 1s } }
    request: { method: POST, url: "http://x/${{ params.n }}", body: { n: 1 } }
  - { id: ask, type: approval, needs: [fetch], question: "Go on with ${{ params.n }}?", assignee: ops }
  - { id: wait, type: delay, needs: [ask], cost: 0.5, duration: 1m }
  - { id: later, type: connector, needs: [wait], connection: mail, action: email.send, with: { to: ops@example.com, subject: s, body: b } }
"#;

#[test]
fn parameters_are_bound_with_defaults_and_types() {
    let spec = parse_yaml(
        "id: w\nowner: o\nparameters:\n  n: { type: integer, default: 3 }\n  name: { type: string, required: true }\n  on: { type: boolean, default: false }\nsteps:\n  - { id: a, type: code, script: x }\n",
    )
    .unwrap();
    let given = serde_json::json!({"name": "Acme", "on": "yes"});
    assert_eq!(
        spec.bind_params(given.as_object().unwrap()).unwrap(),
        serde_json::json!({"n": 3, "name": "Acme", "on": true})
    );
    let err = spec.bind_params(serde_json::json!({"n": "x", "extra": 1}).as_object().unwrap()).unwrap_err().to_string();
    assert!(err.contains("parameter extra: unknown parameter (declared: n, name, on)"), "{err}");
    assert!(err.contains("parameter n: expected an integer, got \"x\""), "{err}");
    assert!(err.contains("parameter name: required parameter is missing"), "{err}");
}

/// Random DAGs (edges only from later to earlier steps, so acyclic by construction): validation
/// accepts them and the order puts every step after all it needs. Adding a back edge makes a
/// cycle, which is reported.
fn dag_yaml(n: usize, edges: &[(usize, usize)], back: Option<(usize, usize)>) -> String {
    let mut y = String::from("id: p\nowner: o\nsteps:\n");
    for i in 0..n {
        let mut needs: Vec<String> = edges.iter().filter(|(a, _)| *a == i).map(|(_, b)| format!("s{b}")).collect();
        if let Some((a, b)) = back.filter(|(a, _)| *a == i) {
            needs.push(format!("s{b}"));
            let _ = a;
        }
        needs.sort();
        needs.dedup();
        y.push_str(&format!("  - {{ id: s{i}, type: code, script: x, needs: [{}] }}\n", needs.join(", ")));
    }
    y
}

proptest! {
    #[test]
    fn topological_order_respects_every_dependency(n in 2usize..30, raw in proptest::collection::vec((0usize..30, 0usize..30), 0..60)) {
        let edges: Vec<(usize, usize)> = raw.into_iter().map(|(a, b)| (a % n, b % n)).filter(|(a, b)| a > b).collect();
        let spec = parse_yaml(&dag_yaml(n, &edges, None)).unwrap();
        let pos: Vec<usize> = { let mut p = vec![0; n]; for (k, &i) in spec.dag().topo.iter().enumerate() { p[i] = k; } p };
        prop_assert_eq!(spec.dag().topo.len(), n);
        for (a, b) in edges {
            prop_assert!(pos[b] < pos[a], "s{} must come before s{}", b, a);
        }
    }

    #[test]
    fn a_back_edge_on_a_path_is_reported_as_a_cycle(n in 2usize..20) {
        // A chain s0 ← s1 ← … ← s(n-1), plus s0 needing s(n-1).
        let edges: Vec<(usize, usize)> = (1..n).map(|i| (i, i - 1)).collect();
        let err = parse_yaml(&dag_yaml(n, &edges, Some((0, n - 1)))).unwrap_err().to_string();
        prop_assert!(err.contains("dependency cycle: "), "{}", err);
        prop_assert_eq!(err.matches('→').count(), n, "{}", err);
    }
}

#[test]
fn amounts_are_exact_decimals_and_bad_ones_are_refused_with_their_place() {
    let spec = parse_yaml(
        "id: w\nowner: o\nbudget: { max_cost: \"0.3\" }\nsteps:\n  - { id: a, type: code, script: x, cost: 0.1 }\n",
    )
    .unwrap();
    assert_eq!(spec.spec().budget.as_ref().unwrap().max_cost.to_exact_string(), "0.3");
    assert_eq!(spec.step(0).cost.unwrap().to_exact_string(), "0.1", "a YAML float token reads as its decimal text");
    check(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: code, script: x, cost: -0.5 }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 4, column 43: steps[0].cost: an amount must not be negative, got -0.5
        "#]],
    );
    check(
        "id: w\nowner: o\nbudget: { max_cost: .nan }\nsteps:\n  - { id: a, type: code, script: x }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 3, column 21: budget.max_cost: NaN is not an amount (amounts are finite decimals)
        "#]],
    );
    check(
        "id: w\nowner: o\nbudget: { max_cost: \"1,5\" }\nsteps:\n  - { id: a, type: code, script: x }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 3, column 21: budget.max_cost: `1,5` is not a decimal amount (write e.g. 0.25)
        "#]],
    );
}

#[test]
fn a_join_that_can_never_run_is_explained() {
    check(
        r#"
id: w
owner: o
steps:
  - { id: lone, type: code, script: x, join: all_done }
  - { id: off, type: code, script: x, when: "false" }
  - { id: never, type: condition, expr: "1 > 2" }
  - { id: maybe, type: condition, expr: "true", needs: [lone] }
  - { id: any, type: code, script: x, needs: [off, never], join: any_succeeded }
  - { id: all, type: code, script: x, needs: [maybe, off], join: all_succeeded }
  - { id: after_any, type: code, script: x, needs: [any], join: any_succeeded }
  - { id: fine, type: code, script: x, needs: [off, never, maybe], join: none_failed }
"#,
        expect![[r#"
            invalid workflow spec (4 problems):
              - steps[0] (lone).join: `join: all_done` combines `needs`, and this step has none
              - steps[4] (any).join: `join: any_succeeded` can never run: it needs one need to succeed, but `off` has a `when` that is always false, `never` is a condition that is always false
              - steps[5] (all).join: `join: all_succeeded` can never run: it needs every need to succeed, but `off` has a `when` that is always false
              - steps[6] (after_any).join: `join: any_succeeded` can never run: it needs one need to succeed, but `any` can never run (its `join: any_succeeded` cannot be met)
        "#]],
    );
    check(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: code, script: x }\n  - { id: yes, type: condition, expr: \"steps.a.output > 1\", needs: [a] }\n  - { id: no, type: condition, expr: \"steps.a.output <= 1\", needs: [a] }\n  - { id: memo, type: code, script: x, needs: [yes, no], join: any_succeeded }\n",
        expect![[r#"
            ok: 4 steps, topo [0, 1, 2, 3]
        "#]],
    );
}

#[test]
fn what_a_step_retries_is_checked() {
    let spec = parse_yaml("id: w\nowner: o\nsteps:\n  - { id: a, type: code, script: x, retry: { max_attempts: 3, on: any } }\n  - { id: b, type: code, script: x, retry: { max_attempts: 3, on: [transient, script_error], max_retry_after: 5m } }\n").unwrap();
    assert_eq!(spec.step(0).retry.as_ref().unwrap().on, crate::spec::RetryOn::Class(crate::spec::RetryClass::Any));
    assert_eq!(spec.step(1).retry.as_ref().unwrap().max_retry_after, Some(std::time::Duration::from_secs(300)));
    check(
        "id: w\nowner: o\ndefaults:\n  retry: { max_attempts: 0, on: [] }\nsteps:\n  - { id: a, type: code, script: x, retry: { max_attempts: 2, on: [script_eror, any] } }\n",
        expect![[r#"
            invalid workflow spec (4 problems):
              - defaults.retry.max_attempts: must be between 1 and 100
              - defaults.retry.on: an empty list retries nothing: list error codes, or write `transient` or `any`
              - steps[0] (a).retry.on: unknown error code `script_eror` (known: transient, timeout, http_status, http_unreachable, bad_url, bad_request, bad_redirect, response_too_large, script_error, cpu_limit, memory_limit, bad_output, sandbox_failed, bad_spec, gate_blocked, no_handler, egress_denied, queue_timeout, interrupted, event_timeout, bad_event, event_bus_unavailable, cancelled, check_failed, prompt_injection, template_error, model_auth, model_bad_request, model_reply, output_invalid, max_turns, reservation_exceeded, turn_journal, no_provider, secret_missing, collection_not_found, index_unavailable, bad_query, connection_not_found, connection_refused, connection_failed, email_rejected, connector_input, attachment_not_found, workflow_not_found, bad_params, recursion_limit, child_failed, child_cancelled, memory_not_found, bad_with, memory_unavailable, no_recipient, bad_documents)
              - steps[0] (a).retry.on: `any` covers every code: write `on: any` instead of a list
        "#]],
    );
    check(
        "id: w\nowner: o\nsteps:\n  - { id: b, type: code, script: x, retry: { max_attempts: 2, on: script_error } }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 4, column 67: steps[0].retry.on: `script_error` is not `transient` or `any` (a single error code goes in a list: [script_error])
        "#]],
    );
}

#[test]
fn egress_entries_are_validated_each_with_its_place() {
    check(
        "id: w\nowner: o\negress: { allow: [\"127.0.0.1:8080\", \"api.example.com\", \"10.0.0.1/8\", \"host:0\"] }\nsteps:\n  - { id: a, type: code, script: x }\n",
        expect![[r#"
            invalid workflow spec (2 problems):
              - egress.allow[2]: `10.0.0.1/8` has address bits set past its /8 prefix; write 10.0.0.0/8
              - egress.allow[3]: `host:0`: `0` is not a port (1–65535)
        "#]],
    );
    let spec = parse_yaml("id: w\nowner: o\negress: { allow: [\"[::1]:8080\", localhost] }\nsteps:\n  - { id: a, type: code, script: x }\n").unwrap();
    let rules: Vec<String> = spec.egress().rules().iter().map(|r| r.to_string()).collect();
    assert_eq!(rules, ["localhost", "[::1]:8080"]);
}

#[test]
fn a_hostile_spec_is_refused_before_the_parser_sees_it() {
    let nested = "[".repeat(100_000);
    let err = parse_yaml(&nested).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid workflow spec (1 problem):\n  - spec: nesting deeper than 64 levels at line 1 column 65\n"
    );
    let big = format!("id: w\nowner: o\ndescription: \"{}\"\nsteps: []\n", "x".repeat(3_100_000));
    assert_eq!(parse_yaml(&big).unwrap_err().problems[0].message, "spec is 3.1 MB, the limit is 1 MB");
}

#[test]
fn a_large_legal_spec_with_brackets_in_its_text_parses() {
    // Many steps whose scripts, descriptions and comments hold deep runs of brackets.
    let deep = "[".repeat(200) + &"{".repeat(200);
    let mut yaml = String::from(
        "id: big\nowner: o\n# a comment with brackets [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nsteps:\n",
    );
    let mut i = 0;
    while yaml.len() < 800_000 {
        yaml.push_str(&format!(
            "  - id: s{i}\n    type: code\n    description: plain text, see [1] and {deep}\n    inputs: {{ note: '{deep}', quoted: \"it's {deep}\" }} # {deep}\n    script: |\n      // {deep}\n      return \"{deep}\".length;\n"
        ));
        i += 1;
    }
    let spec = parse_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.spec().steps.len(), i);
}

#[test]
fn approval_escalation_and_context_are_checked_with_their_places() {
    let err = parse_yaml(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: code, script: x }\n  - { id: b, type: code, script: x }\n  - id: ask\n    type: approval\n    needs: [a]\n    question: ok?\n    context: [b, nope]\n    escalate:\n      - { after: 2h, default: approve }\n      - { after: 1h, to: coo }\n      - { after: 3h }\n      - { after: 4h, to: x, default: reject }\n",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "steps[2] (ask).context: `b` is not upstream of `ask`",
        "steps[2] (ask).context: unknown step `nope`",
        "steps[2] (ask).escalate[0]: a `default` ends the wait, so it must be the last escalation",
        "steps[2] (ask).escalate[1].after: must be more than zero and later than the escalation before it",
        "steps[2] (ask).escalate[2]: an escalation needs `to`",
        "steps[2] (ask).escalate[3]: an escalation either pages (`to`) or applies a `default`, not both",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let ok = parse_yaml(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: code, script: x }\n  - id: ask\n    type: approval\n    needs: [a]\n    question: ok?\n    forbid_self_approval: true\n    context: [a]\n    escalate: [{ after: 4h, to: coo }, { after: 8h, default: { value: { approved: false } } }]\n",
    );
    assert!(ok.is_ok(), "{}", ok.unwrap_err());
}

#[test]
fn an_event_step_is_checked_with_its_places() {
    check(
        r#"
id: ev
owner: o
steps:
  - { id: none, type: event }
  - { id: both, type: event, emit: { name: a }, wait: { name: a, timeout: 1s } }
  - { id: badname, type: event, wait: { name: "has space", timeout: 0s, lookback: 2h } }
  - { id: nodefault, type: event, wait: { name: ok, timeout: 1s, default: 1, correlate: "event.payload.x == params.missing" } }
  - { id: send, type: event, emit: { name: "order.${{ params.kind }}", payload: { a: 1 } } }
"#,
        expect![[r#"
            invalid workflow spec (8 problems):
              - steps[0] (none): an `event` step needs `emit` or `wait`
              - steps[1] (both): an `event` step has either `emit` or `wait`, not both
              - steps[2] (badname).wait.name: `has space` is not an event name (1–200 letters, digits or `._:-/`)
              - steps[2] (badname).wait.timeout: must be more than zero
              - steps[2] (badname).wait.lookback: must be at most 1h
              - steps[3] (nodefault).wait.default: is the output of a timed-out wait: it needs `on_timeout: succeed`
              - steps[3] (nodefault).wait.correlate: `params.missing` is not a declared parameter
              - steps[4] (send).emit.name: `params.kind` is not a declared parameter
        "#]],
    );
    check(
        r#"
id: ev
owner: o
parameters: { order: { type: string } }
steps:
  - { id: send, type: event, emit: { name: "order.placed", payload: { order: "${{ params.order }}" } } }
  - { id: wait, type: event, needs: [send], wait: { name: paid, timeout: 1m, correlate: "event.payload.order == params.order", on_timeout: succeed, default: { paid: false } } }
"#,
        expect![[r#"
            ok: 2 steps, topo [0, 1]
        "#]],
    );
}

#[test]
fn a_research_step_searches_or_ingests_not_both() {
    let err = |yaml: &str| parse_yaml(yaml).expect_err("invalid").to_string();
    let base =
        |step: &str| format!("id: w\nowner: o\nparameters:\n  docs: {{ type: array, default: [] }}\nsteps:\n{step}\n");
    parse_yaml(&base("  - { id: a, type: research, collection: intake, ingest: \"${{ params.docs }}\" }")).unwrap();
    parse_yaml(&base("  - { id: a, type: research, collection: intake, ingest: [{ name: a.md, text: \"# A\" }] }"))
        .unwrap();
    let e = err(&base("  - { id: a, type: research, query: fees, ingest: \"${{ params.docs }}\" }"));
    assert!(e.contains("either searches (`query`) or adds documents (`ingest`), not both"), "{e}");
    let e = err(&base("  - { id: a, type: research }"));
    assert!(e.contains("steps[0] (a).query: must not be empty (or give `ingest`"), "{e}");
    let e = err(&base("  - { id: a, type: research, ingest: \"docs\" }"));
    assert!(e.contains("steps[0] (a).ingest: must be a list"), "{e}");
    let e = err(&base("  - { id: a, type: research, ingest: \"${{ params.nope }}\" }"));
    assert!(e.contains("`params.nope` is not a declared parameter"), "{e}");
}

/// `platform` steps: an unknown action, settings that do not fit the action, a workflow that
/// runs itself and a retried `workflow.run` are refused with their place.
#[test]
fn platform_steps_are_checked() {
    check(
        "id: w\nowner: o\nsteps:\n  - { id: a, type: platform, action: workflow.start, with: { workflow: x } }\n",
        expect![[r#"
            invalid workflow spec (1 problem):
              - line 4, column 38: steps[0].action: unknown variant `workflow.start`, expected one of `workflow.run`, `memory.write`, `memory.read`, `memory.list`, `notify`
        "#]],
    );
    check(
        r#"
id: w
owner: o
steps:
  - { id: self, type: platform, action: workflow.run, with: { workflow: w }, retry: { max_attempts: 2 } }
  - { id: note, type: platform, action: memory.write, with: { txt: hello } }
  - { id: tell, type: platform, action: notify, with: { to: ops, subject: "${{ params.nope }}", message: m } }
  - { id: list, type: platform, action: memory.list, with: { since: 7d, limit: 9999 } }
  - { id: many, type: platform, action: workflow.run, for_each: "${{ params.items }}", with: { workflow: other } }
"#,
        expect![[r#"
            invalid workflow spec (7 problems):
              - steps[0] (self).with.workflow: workflow `w` cannot run itself
              - steps[0] (self).retry: a `workflow.run` step is not retried (its sub-workflow retries its own steps)
              - steps[1] (note).with: unknown field `txt`, expected one of `key`, `text`, `tags` for `memory.write`
              - steps[2] (tell).with: `params.nope` is not a declared parameter
              - steps[3] (list).with.limit: must be 1..=500
              - steps[4] (many).for_each: a `workflow.run` step runs one sub-workflow: fan out inside the sub-workflow instead
              - steps[4] (many).for_each: `params.items` is not a declared parameter
        "#]],
    );
}

//! Spec parsing and validation: every problem reported with its place.

use expect_test::{expect, Expect};
use proptest::prelude::*;

use crate::spec::parse_yaml;

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
              - line 6, column 5: steps[0]: unknown field `scrpt`, expected one of `id`, `type`, `description`, `needs`, `when`, `inputs`, `retry`, `timeout`, `cost`, `expr`, `script`, `limits`, `duration`, `request`, `question`, `assignee`, `gates`, `with`
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
  - { id: ask, type: llm, with: { model: gpt } }
  - { id: wait, type: delay }
  - { id: cond, type: condition, expr: "true", script: "return 1" }
"#,
        expect![[r#"
            invalid workflow spec (11 problems):
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
              - steps[4] (ask): step type `llm` is not available yet in this version of Tollgate
              - steps[5] (wait): a `delay` step needs `duration`
              - steps[6] (cond).script: `script` does not apply to a `condition` step
        "#]],
    );
}

#[test]
fn parameters_are_bound_with_defaults_and_types() {
    let spec = parse_yaml(
        "id: w\nowner: o\nparameters:\n  n: { type: integer, default: 3 }\n  name: { type: string, required: true }\n  on: { type: boolean, default: false }\nsteps:\n  - { id: a, type: code, script: x }\n",
    )
    .unwrap();
    let given = serde_json::json!({"name": "Acme", "on": "yes"});
    assert_eq!(spec.bind_params(given.as_object().unwrap()).unwrap(), serde_json::json!({"n": 3, "name": "Acme", "on": true}));
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
    assert_eq!(err.to_string(), "invalid workflow spec (1 problem):\n  - spec: nesting deeper than 64 levels at line 1 column 65\n");
    let big = format!("id: w\nowner: o\ndescription: \"{}\"\nsteps: []\n", "x".repeat(3_100_000));
    assert_eq!(parse_yaml(&big).unwrap_err().problems[0].message, "spec is 3.1 MB, the limit is 1 MB");
}

#[test]
fn a_large_legal_spec_with_brackets_in_its_text_parses() {
    // Many steps whose scripts, descriptions and comments hold deep runs of brackets.
    let deep = "[".repeat(200) + &"{".repeat(200);
    let mut yaml = String::from("id: big\nowner: o\n# a comment with brackets [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nsteps:\n");
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

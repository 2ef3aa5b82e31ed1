//! Trigger specs: parsing, validation messages, parameter templates, cron slot arithmetic.

use serde_json::json;

use crate::spec::parse_yaml;
use crate::spec::triggers::{MissedSlots, TriggerKind, render_params, sanitize_file_name};

fn spec_with(triggers: &str) -> String {
    format!(
        "id: intake\nowner: alice\nparameters:\n  client: {{ type: string }}\n  day: {{ type: string }}\nsteps:\n  - {{ id: a, type: condition, expr: 'true' }}\ntriggers:\n{triggers}"
    )
}

fn problems(yaml: &str) -> Vec<String> {
    match parse_yaml(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn triggers_of_each_type_parse() {
    let yaml = spec_with(
        "  - id: nightly\n    cron: { schedule: '0 2 * * *', timezone: Europe/Stockholm, missed: all, catch_up: 6h }\n  - id: hook\n    webhook: { signature: github, schema: { type: object, required: [client] } }\n    params: { client: '${{ payload.client }}' }\n  - id: files\n    upload: { max_size: 1000, folder: /tmp/in }\n",
    );
    let spec = parse_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<_> = spec.spec().triggers.iter().map(|t| t.kind().name()).collect();
    assert_eq!(kinds, ["cron", "webhook", "upload"]);
    let TriggerKind::Cron(c) = spec.spec().triggers[0].kind() else { panic!("cron") };
    assert_eq!(c.missed, MissedSlots::All);
}

#[test]
fn bad_triggers_are_named_with_their_place() {
    let yaml = spec_with(
        "  - id: 'bad id'\n    cron: { schedule: '0 2 * *' }\n  - id: two\n    cron: { schedule: '61 * * * *', timezone: Mars/Olympus }\n    webhook: {}\n  - id: none\n  - id: two\n    webhook: { header: 'X Bad' }\n    params: { nope: x, client: '${{ params.client }}' }\n",
    );
    let p = problems(&yaml);
    let has = |s: &str| assert!(p.iter().any(|x| x.contains(s)), "no problem containing {s:?} in {p:#?}");
    has("triggers[0] (bad id): trigger id `bad id` must be");
    has("triggers[0] (bad id).cron: schedule `0 2 * *`");
    has("triggers[1] (two): a trigger has one type, this one sets `cron:` and `webhook:`");
    has("triggers[2] (none): a trigger needs its type: one of `cron:`, `webhook:`, `upload:`");
    has("triggers[3] (two): duplicate trigger id `two` (first at triggers[1])");
    has("triggers[3] (two).webhook.header: `X Bad` is not an HTTP header name");
    has("triggers[3] (two).params.nope: unknown parameter");
    has("triggers[3] (two).params.client: `params.client`: a trigger's templates see `payload` and `fire`");
}

#[test]
fn a_bad_time_zone_and_an_unknown_field_are_refused() {
    let p = problems(&spec_with("  - id: t\n    cron: { schedule: '* * * * *', timezone: Mars/Olympus }\n"));
    assert!(p.iter().any(|x| x.contains("timezone `Mars/Olympus` is not an IANA time zone")), "{p:#?}");
    let p = problems(&spec_with("  - id: t\n    cron: { schedule: '* * * * *', every: 5 }\n"));
    assert!(p.iter().any(|x| x.contains("unknown field `every`")), "{p:#?}");
}

#[test]
fn params_render_from_payload_and_fire() {
    let yaml = spec_with(
        "  - id: hook\n    webhook: {}\n    params: { client: '${{ payload.client.name }}', day: 'fire ${{ fire.key }}' }\n",
    );
    let spec = parse_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let params =
        render_params(&spec.spec().triggers[0], &json!({"client": {"name": "Acme"}}), &json!({"key": "k1"})).unwrap();
    assert_eq!(serde_json::Value::Object(params), json!({"client": "Acme", "day": "fire k1"}));
}

const H: u64 = 3_600_000;

#[test]
fn cron_slots_with_seconds_optional_and_missed_policies() {
    let every_10s = crate::spec::triggers::CronTrigger {
        schedule: "*/10 * * * * *".into(),
        timezone: None,
        missed: MissedSlots::All,
        catch_up: std::time::Duration::from_secs(60),
    };
    let s = every_10s.parse().unwrap();
    let t0 = 1_700_000_000_000; // a whole 10 s
    assert_eq!(s.next_after(t0), Some(t0 + 10_000));
    assert_eq!(s.slots_between(t0, t0 + 30_000, 100), vec![t0 + 10_000, t0 + 20_000, t0 + 30_000]);
    // Down from t0 to t0 + 5 min, catch-up window 1 min: only the slots in the last minute.
    let now = t0 + 300_000;
    assert_eq!(s.missed(Some(t0), now, MissedSlots::All, std::time::Duration::from_secs(60)).len(), 6);
    assert_eq!(s.missed(Some(t0), now, MissedSlots::Last, std::time::Duration::from_secs(60)), vec![now]);
    assert!(s.missed(Some(t0), now, MissedSlots::None, std::time::Duration::from_secs(60)).is_empty());
    // Never ran before: nothing was missed.
    assert!(s.missed(None, now, MissedSlots::All, std::time::Duration::from_secs(60)).is_empty());
}

#[test]
fn cron_follows_daylight_saving_in_its_time_zone() {
    // 02:30 every day in Stockholm. On 2026-03-29 clocks go 02:00 → 03:00 (no 02:30 that day),
    // on 2026-10-25 they go 03:00 → 02:00 (02:30 happens twice).
    let t = crate::spec::triggers::CronTrigger {
        schedule: "30 2 * * *".into(),
        timezone: Some("Europe/Stockholm".into()),
        missed: MissedSlots::Last,
        catch_up: std::time::Duration::from_secs(60),
    };
    let s = t.parse().unwrap();
    let mar28 = 1_774_656_000_000; // 2026-03-28T00:00:00Z
    let first = s.next_after(mar28).unwrap();
    assert_eq!(first, mar28 + H + H / 2, "02:30 CET is 01:30 UTC");
    // The skipped 02:30 fires once, right after the gap: 03:00 CEST = 01:00 UTC on the 29th.
    let gap_day = s.next_after(first).unwrap();
    assert_eq!(gap_day, mar28 + 25 * H);
    // Then 02:30 CEST (00:30 UTC) again.
    assert_eq!(s.next_after(gap_day).unwrap(), mar28 + 48 * H + H / 2);
    // The repeated 02:30 in October fires once: 00:30 UTC (CEST), not again at 01:30 UTC.
    let oct25 = 1_792_886_400_000; // 2026-10-25T00:00:00Z
    let autumn = s.next_after(oct25).unwrap();
    assert_eq!(autumn, oct25 + H / 2);
    assert_eq!(s.next_after(autumn).unwrap(), oct25 + 24 * H + H + H / 2, "next: 02:30 CET on the 26th");
    // Five fields or six (seconds first): both read.
    let with_seconds = crate::spec::triggers::CronTrigger { schedule: "0 30 2 * * *".into(), ..t };
    assert_eq!(with_seconds.parse().unwrap().next_after(mar28), Some(first));
}

#[test]
fn file_names_are_sanitised_and_traversal_refused() {
    assert_eq!(sanitize_file_name("report.pdf").as_deref(), Some("report.pdf"));
    assert_eq!(sanitize_file_name("  notes v2.txt ").as_deref(), Some("notes v2.txt"));
    for bad in ["../etc/passwd", "..", "a/b.txt", "..\\win.ini", "C:evil", "a\0b", "", "x..y/../z", "new\nline"] {
        assert_eq!(sanitize_file_name(bad), None, "{bad:?}");
    }
}

#[test]
fn an_imap_ca_file_needs_tls_and_a_name() {
    let imap = |extra: &str| {
        spec_with(&format!(
            "  - id: mail\n    imap: {{ host: mail.example.com, user: ops, password_env: MAIL_PW{extra} }}\n"
        ))
    };
    let spec = parse_yaml(&imap(", ca_file: /etc/tollgate/mail-ca.pem")).unwrap_or_else(|e| panic!("{e}"));
    let TriggerKind::Imap(i) = spec.spec().triggers[0].kind() else { panic!("imap") };
    assert_eq!((i.tls, i.port(), i.ca_file.as_deref()), (true, 993, Some("/etc/tollgate/mail-ca.pem")));
    let p = problems(&imap(", tls: false, ca_file: /etc/tollgate/mail-ca.pem"));
    assert!(p.iter().any(|x| x.contains("triggers[0] (mail).imap.ca_file: only applies with `tls: true`")), "{p:#?}");
    let p = problems(&imap(", ca_file: ' '"));
    assert!(
        p.iter().any(|x| x.contains("triggers[0] (mail).imap.ca_file: must name a PEM file of CA certificates")),
        "{p:#?}"
    );
}

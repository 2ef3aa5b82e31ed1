//! `smtp` connections against a real SMTP server (aiosmtpd, `tollgate_tests::smtp_sink`) with
//! STARTTLS or implicit TLS and a certificate issued by the test's own CA, and AUTH checked by
//! the server. The sink offers AUTH on plaintext sessions too and logs every attempt with
//! whether it arrived encrypted, so these tests see what Tollgate sent, not what the server
//! allowed:
//!
//! - the right password over STARTTLS: an `email.send` step delivers, the credentials arrived
//!   only over TLS, and `connections test` says so;
//! - a wrong password: `connection_refused`, one attempt (a step retrying transient failures
//!   does not try again), one AUTH attempt at the server, no password in the error;
//! - an untrusted CA, another host name, a server without STARTTLS, a plaintext port for
//!   implicit TLS: `connection_untrusted`, named, one attempt, and nothing — no AUTH, no mail —
//!   reached the server in the clear;
//! - implicit TLS (SMTPS) delivers;
//! - `security=none` with a user: allowed to a relay on this machine (a password in the clear
//!   stays on loopback), refused before connecting for any other host, also for a record saved
//!   without that check.

use serde_json::json;
use tollgate_connectors::connections::{ConnectionError, Connections};
use tollgate_engine::connections::{Connection, ConnectionKind, ConnectionSettings, SmtpSecurity, SmtpSettings};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::ids::OwnerId;
use tollgate_tests::harness::{TestSystem, embedded};
use tollgate_tests::pki::TestCa;
use tollgate_tests::smtp_sink::{AuthAttempt, SinkSecurity, SmtpSink};

const OWNER: &str = "ops";
const USER: &str = "ops@example.test";
const PASSWORD: &str = "Correct-Horse-7";
const WRONG: &str = "OKAPI-WRONG-PASSWORD-3317";

/// A CA, its certificate in `ca.pem`, another CA's in `other-ca.pem`, and a server certificate
/// for `localhost` from the first.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Tollgate test CA");
        ca.write(&dir.path().join("ca.pem"));
        TestCa::new("Some other CA").write(&dir.path().join("other-ca.pem"));
        Self { dir, ca }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

async fn add(sys: &TestSystem, name: &str, settings: &[(&str, String)], credential: Option<&str>) {
    let pairs: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let c = Connection::from_settings(name, ConnectionKind::Smtp, &pairs).unwrap_or_else(|e| panic!("{name}: {e}"));
    sys.t().engine.store.put_connection(&OwnerId::from(OWNER), &c, credential).await.unwrap();
}

/// An smtp connection to `host:port` secured as `security` (trusting `ca_file`), as `USER`.
async fn add_tls(sys: &TestSystem, name: &str, host: &str, port: u16, security: &str, ca_file: &str, password: &str) {
    let settings = [
        ("host", host.to_string()),
        ("port", port.to_string()),
        ("security", security.into()),
        ("ca_file", ca_file.into()),
        ("user", USER.into()),
        ("from", "Ops <ops@example.test>".into()),
    ];
    add(sys, name, &settings, Some(password)).await;
}

fn connections(sys: &TestSystem) -> Connections {
    Connections::new(sys.t().engine.store.clone(), EgressAllow::default())
}

/// A workflow mailing through `connection` once, retrying transient failures.
fn send(connection: &str) -> String {
    format!(
        r#"
id: mail-{connection}
owner: ops
gates: {{ policy: {{ actions: {{ email: allow }} }} }}
steps:
  - id: mail
    type: connector
    connection: {connection}
    action: email.send
    retry: {{ max_attempts: 3, on: transient, backoff: {{ initial: 10ms, max: 10ms }} }}
    with: {{ to: [client@example.test], subject: "Over {connection}", body: "Sent through {connection}." }}
"#
    )
}

/// Run `send(connection)` to its end; the `mail` step's state.
async fn run_send(sys: &TestSystem, connection: &str) -> tollgate_engine::run::StepState {
    let run = sys.start(&send(connection), json!({})).await;
    let v = sys.settle(&run).await;
    TestSystem::step(&v, "mail").clone()
}

fn header<'m>(message: &'m str, name: &str) -> Option<&'m str> {
    message.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_the_right_password_delivers_and_a_wrong_one_is_refused_once() {
    let pki = Pki::new();
    let sink = SmtpSink::start_with(SinkSecurity::Starttls(&pki.ca.issue(&["localhost"])), Some((USER, PASSWORD)));
    let sys = embedded().await;
    add_tls(&sys, "office_mail", "localhost", sink.port, "starttls", &pki.file("ca.pem"), PASSWORD).await;

    let step = run_send(&sys, "office_mail").await;
    assert_eq!(step.status.label(), "succeeded", "{:?}", step.error);
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(header(&mails[0], "Subject"), Some("Over office_mail"));
    assert_eq!(header(&mails[0], "X-Sink-TLS"), Some("yes"), "delivered over TLS");
    assert_eq!(header(&mails[0], "X-Sink-Auth"), Some(USER), "delivered authenticated");
    let first = sink.auths();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].ok && first[0].tls && first[0].user == USER, "the credentials arrived once, over TLS: {first:?}");

    let c = connections(&sys);
    let said = c.test(&OwnerId::from(OWNER), "office_mail").await.unwrap();
    assert_eq!(said, format!("smtp localhost:{} (starttls) answered EHLO, authenticated as {USER}", sink.port));

    // A wrong password: refused by the server, named, never retried, never shown.
    add_tls(&sys, "wrong_password", "localhost", sink.port, "starttls", &pki.file("ca.pem"), WRONG).await;
    let before = sink.auths().len();
    let step = run_send(&sys, "wrong_password").await;
    assert_eq!(step.status.label(), "failed");
    let error = step.error.clone().unwrap();
    assert_eq!(error.code, "connection_refused", "{error}");
    assert!(
        error.message.starts_with(&format!(
            "smtp localhost:{} refused the login of `{USER}` for connection `wrong_password`",
            sink.port
        )),
        "{error}"
    );
    assert!(
        error.message.ends_with(": permanent error (535): 5.7.8 Authentication credentials invalid"),
        "the server's answer, once: {error}"
    );
    assert!(!error.message.contains(WRONG), "the error holds the password: {error}");
    assert_eq!(step.attempts.len(), 1, "a refused login is not retried: {:?}", step.attempts);
    let attempts = sink.auths();
    assert_eq!(attempts.len() - before, 1, "one AUTH attempt at the server: {attempts:?}");
    assert_eq!(
        attempts.last(),
        Some(&AuthAttempt { mechanism: "PLAIN".into(), user: USER.into(), ok: false, tls: true })
    );
    let err = c.test(&OwnerId::from(OWNER), "wrong_password").await.unwrap_err();
    assert!(matches!(err, ConnectionError::Refused(_)), "{err}");
    assert_eq!(sink.messages().len(), 1, "nothing more was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_or_no_tls_is_named_and_nothing_goes_in_the_clear() {
    let pki = Pki::new();
    let cert = pki.ca.issue(&["localhost"]);
    let starttls = SmtpSink::start_with(SinkSecurity::Starttls(&cert), Some((USER, PASSWORD)));
    let plain = SmtpSink::start_with(SinkSecurity::None, Some((USER, PASSWORD)));
    let sys = embedded().await;
    let (other, ca) = (pki.file("other-ca.pem"), pki.file("ca.pem"));
    add_tls(&sys, "untrusted", "localhost", starttls.port, "starttls", &other, PASSWORD).await;
    add_tls(&sys, "wrong_name", "127.0.0.1", starttls.port, "starttls", &ca, PASSWORD).await;
    add_tls(&sys, "no_starttls", "localhost", plain.port, "starttls", &ca, PASSWORD).await;
    add_tls(&sys, "not_tls", "localhost", plain.port, "tls", &ca, PASSWORD).await;
    let expected = [
        (
            "untrusted",
            format!(
                "smtp localhost:{}: STARTTLS: the TLS handshake failed: the server's certificate is not issued by a CA of ca_file `{other}`",
                starttls.port
            ),
        ),
        (
            "wrong_name",
            format!(
                "smtp 127.0.0.1:{}: STARTTLS: the TLS handshake failed: the server's certificate is not issued for the host name `127.0.0.1`",
                starttls.port
            ),
        ),
        ("no_starttls", format!("smtp localhost:{}: the server does not offer STARTTLS", plain.port)),
        (
            "not_tls",
            format!(
                "smtp localhost:{}: connecting: the TLS handshake failed: the server does not speak TLS on this port",
                plain.port
            ),
        ),
    ];
    let c = connections(&sys);
    for (name, why) in &expected {
        let err = c.test(&OwnerId::from(OWNER), name).await.unwrap_err();
        assert!(matches!(err, ConnectionError::Untrusted(_)), "{name}: {err}");
        assert!(err.to_string().starts_with(why.as_str()), "{name}: {err}");
        let step = run_send(&sys, name).await;
        let error = step.error.clone().unwrap();
        assert_eq!(error.code, "connection_untrusted", "{name}: {error}");
        assert!(error.message.starts_with(why.as_str()), "{name}: {error}");
        assert_eq!(step.attempts.len(), 1, "{name}: a refused certificate is not retried");
    }
    // Both servers would have taken AUTH and mail in the clear; none came.
    for sink in [&starttls, &plain] {
        assert!(sink.log().is_empty(), "something reached the server: {:?}", sink.log());
        assert!(sink.messages().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_delivers() {
    let pki = Pki::new();
    let sink = SmtpSink::start_with(SinkSecurity::Tls(&pki.ca.issue(&["localhost"])), Some((USER, PASSWORD)));
    let sys = embedded().await;
    add_tls(&sys, "smtps", "localhost", sink.port, "tls", &pki.file("ca.pem"), PASSWORD).await;
    let said = connections(&sys).test(&OwnerId::from(OWNER), "smtps").await.unwrap();
    assert_eq!(said, format!("smtp localhost:{} (tls) answered EHLO, authenticated as {USER}", sink.port));
    let step = run_send(&sys, "smtps").await;
    assert_eq!(step.status.label(), "succeeded", "{:?}", step.error);
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!((header(&mails[0], "X-Sink-TLS"), header(&mails[0], "X-Sink-Auth")), (Some("yes"), Some(USER)));
    assert!(sink.auths().iter().all(|a| a.ok && a.tls), "{:?}", sink.auths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_goes_in_the_clear_only_to_a_relay_on_this_machine() {
    let sink = SmtpSink::start_with(SinkSecurity::None, Some((USER, PASSWORD)));
    let sys = embedded().await;
    let local = [
        ("host", "127.0.0.1".to_string()),
        ("port", sink.port.to_string()),
        ("security", "none".into()),
        ("user", USER.into()),
        ("from", "ops@example.test".into()),
    ];
    add(&sys, "relay", &local, Some(PASSWORD)).await;
    let step = run_send(&sys, "relay").await;
    assert_eq!(step.status.label(), "succeeded", "{:?}", step.error);
    assert_eq!(sink.auths(), vec![AuthAttempt { mechanism: "PLAIN".into(), user: USER.into(), ok: true, tls: false }]);

    // Another host: refused when the connection is added…
    let remote: Vec<(String, String)> =
        [("host", "smtp.example.test"), ("security", "none"), ("user", USER), ("from", "ops@example.test")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let err = Connection::from_settings("remote", ConnectionKind::Smtp, &remote).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "security: `none` would send the password of `{USER}` in the clear to `smtp.example.test`"
        )),
        "{err}"
    );
    // …and when it is used, for a record saved without that check: before any connection.
    let settings = SmtpSettings {
        host: "smtp.example.test".into(),
        port: Some(sink.port),
        security: SmtpSecurity::None,
        ca_file: None,
        user: Some(USER.into()),
        from: "ops@example.test".into(),
    };
    let old = Connection { name: "remote".into(), settings: ConnectionSettings::Smtp(settings) };
    sys.t().engine.store.put_connection(&OwnerId::from(OWNER), &old, Some(PASSWORD)).await.unwrap();
    let step = run_send(&sys, "remote").await;
    let error = step.error.clone().unwrap();
    assert_eq!(error.code, "connector_input", "{error}");
    assert!(
        error.message.contains("would send the password of `ops@example.test` in the clear to `smtp.example.test`"),
        "{error}"
    );
    assert_eq!(sink.auths().len(), 1, "no second login anywhere");
}

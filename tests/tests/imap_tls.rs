//! IMAP over TLS against a real dovecot serving implicit TLS (993-style) with a certificate the
//! test issued from its own CA: a mail delivered over TLS starts one run (the trigger trusting
//! the CA through `ca_file`, the login logged by dovecot as TLS); a certificate from another CA,
//! a certificate for another host name, and a port that does not speak TLS are each a clear
//! error in that trigger's health, with no login and nothing read — never a plaintext
//! fallback. An `imap` connection gets the same TLS settings (`ca_file`).

use std::time::Duration;

use tollgate_connectors::connections::Connections;
use tollgate_engine::connections::{Connection, ConnectionKind};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::ids::OwnerId;
use tollgate_tests::dovecot::{Dovecot, PASSWORD, PASSWORD_ENV, USER, mail, set_password_env};
use tollgate_tests::harness::{TestSystem, embedded, wait_for};
use tollgate_tests::pki::TestCa;
use tollgate_tests::triggers::{Hooked, count};

/// A dovecot serving a certificate for `localhost` issued by a fresh CA, that CA's certificate
/// in `ca.pem`, and another CA's in `other-ca.pem`.
struct Setup {
    d: Dovecot,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        let ca = TestCa::new("Tollgate test CA");
        let d = Dovecot::start_tls(&ca.issue(&["localhost"]));
        let dir = tempfile::tempdir().unwrap();
        ca.write(&dir.path().join("ca.pem"));
        TestCa::new("Some other CA").write(&dir.path().join("other-ca.pem"));
        Self { d, dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn tls_port(&self) -> u16 {
        self.d.tls_port.expect("TLS listener")
    }

    /// Wait until dovecot's log (written by its log process, a little later) shows `logins`
    /// logins in all and `tls` over TLS.
    async fn wait_logins(&self, logins: usize, tls: usize) {
        wait_for(
            &format!("{logins} logins, {tls} over TLS, in the dovecot log"),
            Duration::from_secs(30),
            || async move { self.logins() == (logins, tls) },
        )
        .await;
    }

    /// Logins dovecot logged, and how many of them were over TLS.
    fn logins(&self) -> (usize, usize) {
        let log = self.d.log();
        let logins: Vec<&str> = log.lines().filter(|l| l.contains("imap-login: Info: Login: user=<")).collect();
        (logins.len(), logins.iter().filter(|l| l.contains(", TLS")).count())
    }
}

/// A workflow whose IMAP triggers are `(id, host, port, ca_file)`, all with `tls: true`.
fn flow(triggers: &[(&str, &str, u16, &str)]) -> String {
    let mut yaml = format!(
        r#"
id: inbound-tls
owner: ops
parameters:
  subject: {{ type: string }}
steps:
  - {{ id: read, type: code, script: "return {{ subject: input.s }}", inputs: {{ s: "${{{{ params.subject }}}}" }} }}
triggers:
"#
    );
    for (id, host, port, ca_file) in triggers {
        yaml.push_str(&format!(
            "  - id: {id}\n    imap: {{ host: {host}, port: {port}, tls: true, ca_file: \"{ca_file}\", user: \"{USER}\", password_env: {PASSWORD_ENV}, liveness: 2s, poll: 1s }}\n    params: {{ subject: \"${{{{ payload.subject }}}}\" }}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_delivered_over_tls_starts_one_run() {
    set_password_env();
    let s = tokio::task::block_in_place(Setup::start);
    let h = Hooked::start(embedded().await, &flow(&[("mail", "localhost", s.tls_port(), &s.file("ca.pem"))])).await;
    s.d.append("INBOX", &mail("tls-1@example.test", "Over TLS")).await;
    let hh = &h;
    wait_for("the mail's fire", Duration::from_secs(60), || async move { !hh.history().await.is_empty() }).await;
    let runs = h.sys.t().engine.store.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    let v = h.sys.settle(&runs[0]).await;
    assert_eq!(TestSystem::step(&v, "read").output.as_ref().unwrap()["subject"], "Over TLS");
    assert_eq!(count(&h.history().await, "started"), 1);
    let ss = &s;
    wait_for(
        "the trigger's login logged as TLS by dovecot",
        Duration::from_secs(30),
        || async move { ss.logins().1 >= 1 },
    )
    .await;
    let dd = &s.d;
    wait_for("flagged once recorded", Duration::from_secs(30), || async move {
        dd.search("INBOX", "KEYWORD $TollgateFired").await.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_is_a_clear_error_in_the_health_and_never_a_plaintext_session() {
    set_password_env();
    let s = tokio::task::block_in_place(Setup::start);
    // Waiting before the triggers start: a trigger that logged in would fire it.
    s.d.append("INBOX", &mail("waiting@example.test", "Waiting")).await;
    let (tls, plain, ca, other) = (s.tls_port(), s.d.port, s.file("ca.pem"), s.file("other-ca.pem"));
    let yaml = flow(&[
        ("untrusted", "localhost", tls, &other),
        ("wrong_name", "127.0.0.1", tls, &ca),
        ("not_tls", "localhost", plain, &ca),
    ]);
    let h = Hooked::start_unconnected(embedded().await, &yaml).await;
    let expected = [
        ("untrusted", format!("the server's certificate is not issued by a CA of ca_file `{other}`")),
        ("wrong_name", "the server's certificate is not issued for the host name `127.0.0.1`".to_string()),
        ("not_tls", "the server does not speak TLS on this port".to_string()),
    ];
    for (trigger, why) in &expected {
        let hh = &h;
        wait_for(&format!("{trigger}: the TLS error in its health"), Duration::from_secs(60), || async move {
            hh.health(trigger).last_error.is_some_and(|(_, e)| e.contains(why.as_str()))
        })
        .await;
        let health = h.health(trigger);
        let error = health.last_error.unwrap().1;
        assert!(error.starts_with("IMAP TLS: handshake with "), "{trigger}: {error}");
        assert!(!health.connected, "{trigger}");
    }
    // Nothing was read, by TLS or otherwise: the only login is the test's own append.
    s.wait_logins(1, 0).await;
    assert!(h.history().await.is_empty());
    assert!(h.sys.t().engine.store.list_runs().await.unwrap().is_empty());
    assert_eq!(s.d.search("INBOX", "UNKEYWORD $TollgateFired").await.len(), 1, "the mail is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imap_connection_trusts_its_ca_file_and_refuses_a_certificate_it_does_not_trust() {
    let s = tokio::task::block_in_place(Setup::start);
    s.d.append("INBOX", &mail("conn-1@example.test", "Via the connection")).await;
    let sys = embedded().await;
    let store = sys.t().engine.store.clone();
    let owner = OwnerId::new("ops");
    let port = s.tls_port().to_string();
    for (name, ca_file) in [("trusted", s.file("ca.pem")), ("untrusted", s.file("other-ca.pem"))] {
        let settings: Vec<(String, String)> =
            [("host", "localhost"), ("port", port.as_str()), ("user", USER), ("ca_file", ca_file.as_str())]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let c = Connection::from_settings(name, ConnectionKind::Imap, &settings).unwrap();
        store.put_connection(&owner, &c, Some(PASSWORD)).await.unwrap();
    }
    let connections = Connections::new(store, EgressAllow::default());
    let said = connections.test(&owner, "trusted").await.unwrap();
    assert!(said.contains("(tls) logged in as ops@example.test; INBOX holds 1 messages"), "{said}");
    let mails = connections.fetch_emails(&owner, "trusted", "INBOX", "ALL", 10).await.unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].parsed.as_ref().unwrap().subject.as_deref(), Some("Via the connection"));
    let err = connections.test(&owner, "untrusted").await.unwrap_err().to_string();
    assert!(
        err.contains("IMAP TLS: handshake with localhost:") && err.contains("not issued by a CA of ca_file"),
        "{err}"
    );
    // The append in the clear, the two trusted sessions over TLS.
    s.wait_logins(3, 2).await;
}

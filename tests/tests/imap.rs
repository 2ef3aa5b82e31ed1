//! The email-inbound source against a real dovecot (one instance per test): delivery once,
//! flagged only after it is recorded, dedup on Message-ID, broken MIME to quarantine with the
//! consumer going on, mail that arrived while the consumer was down, a server restart in the
//! middle of IDLE, and one consumer per mailbox across processes (a lease).
//!
//! Until the trigger fire path is plugged in, the sink here records each delivery after
//! claiming its dedup keys in a real SQLite store (`claim_mail`), as the fire path does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tollgate_connectors::imap::{
    Delivered, ImapConsumer, ImapSettings, InboundMail, MailSink, MailboxLease, claim_mail,
};
use tollgate_connectors::store::SqliteBackend;
use tollgate_engine::store::Backend;
use tollgate_tests::dovecot::{BROKEN, Dovecot, mail};
use tollgate_tests::harness::wait_for;

/// What the sink saw: (uid, message id, outcome).
type Seen = Arc<Mutex<Vec<(u32, Option<String>, Delivered)>>>;

struct RecordingSink {
    backend: Arc<dyn Backend>,
    seen: Seen,
}

#[async_trait]
impl MailSink for RecordingSink {
    async fn deliver(&self, mail: &InboundMail) -> Result<Delivered, String> {
        let outcome = match &mail.parsed {
            Err(_) => Delivered::Failed,
            Ok(_)
                if claim_mail(self.backend.as_ref(), mail, Duration::from_secs(3600))
                    .await
                    .map_err(|e| e.to_string())? =>
            {
                Delivered::Fired
            }
            Ok(_) => Delivered::Duplicate,
        };
        let id = mail.parsed.as_ref().ok().and_then(|p| p.message_id.clone());
        self.seen.lock().unwrap().push((mail.uid, id, outcome));
        Ok(outcome)
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    health: tokio::sync::watch::Receiver<tollgate_connectors::imap::ImapHealth>,
}

fn start(s: ImapSettings, backend: Arc<dyn Backend>, seen: Seen, holder: &str) -> Running {
    let lease = MailboxLease::new(backend.clone(), &s, holder, Duration::from_secs(3));
    let consumer = ImapConsumer::new(s, Arc::new(RecordingSink { backend, seen }), lease);
    let health = consumer.health();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move { consumer.run(token).await });
    Running { stop, task, health }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("the consumer stops").expect("no panic");
    }
}

async fn backend() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("store.db")).await.unwrap();
    (dir, Arc::new(b))
}

async fn seen_len(seen: &Seen, n: usize, what: &str) {
    let seen = seen.clone();
    wait_for(what, Duration::from_secs(60), move || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_fires_once_and_is_flagged_and_a_second_copy_of_it_is_a_duplicate() {
    let d = tokio::task::block_in_place(Dovecot::start);
    let (_dir, b) = backend().await;
    let seen: Seen = Default::default();
    let c = start(d.settings(), b.clone(), seen.clone(), "p1");
    d.append("INBOX", &mail("lead-1@example.test", "Referral")).await;
    seen_len(&seen, 1, "the first mail delivered").await;
    // The same message appended again (same Message-ID, new UID).
    d.append("INBOX", &mail("lead-1@example.test", "Referral")).await;
    seen_len(&seen, 2, "the copy delivered").await;
    let outcomes: Vec<Delivered> = seen.lock().unwrap().iter().map(|s| s.2).collect();
    assert_eq!(outcomes, [Delivered::Fired, Delivered::Duplicate]);
    let dd = &d;
    wait_for("both flagged once recorded", Duration::from_secs(30), || async move {
        dd.search("INBOX", "KEYWORD $TollgateFired").await.len() == 2
    })
    .await;
    c.stop().await;
    assert_eq!(seen.lock().unwrap().len(), 2, "nothing delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_message_is_quarantined_and_the_consumer_keeps_working() {
    let d = tokio::task::block_in_place(Dovecot::start);
    let (_dir, b) = backend().await;
    let seen: Seen = Default::default();
    let c = start(d.settings(), b, seen.clone(), "p1");
    d.append("INBOX", BROKEN).await;
    seen_len(&seen, 1, "the broken mail handed over").await;
    assert_eq!(seen.lock().unwrap()[0].2, Delivered::Failed);
    let dd = &d;
    wait_for("the broken mail in quarantine", Duration::from_secs(30), || async move {
        dd.search("Quarantine", "ALL").await.len() == 1
    })
    .await;
    assert!(d.search("INBOX", "ALL").await.is_empty(), "it left the inbox");
    d.append("INBOX", &mail("lead-2@example.test", "After the broken one")).await;
    seen_len(&seen, 2, "the next mail delivered").await;
    assert_eq!(seen.lock().unwrap()[1].2, Delivered::Fired);
    c.stop().await;
    assert_eq!(seen.lock().unwrap().len(), 2, "the broken mail was not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_that_arrived_while_the_consumer_was_down_is_delivered_once_when_it_comes_back() {
    let d = tokio::task::block_in_place(Dovecot::start);
    let (_dir, b) = backend().await;
    let seen: Seen = Default::default();
    let c = start(d.settings(), b.clone(), seen.clone(), "p1");
    d.append("INBOX", &mail("before@example.test", "Before")).await;
    seen_len(&seen, 1, "the first mail").await;
    c.stop().await;
    d.append("INBOX", &mail("while-down@example.test", "While down")).await;
    let c = start(d.settings(), b, seen.clone(), "p1");
    seen_len(&seen, 2, "the mail from the downtime").await;
    tokio::time::sleep(Duration::from_millis(0)).await;
    let s = seen.lock().unwrap().clone();
    assert_eq!(s[1].1.as_deref(), Some("while-down@example.test"));
    assert_eq!(s.iter().filter(|x| x.2 == Delivered::Fired).count(), 2);
    drop(s);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reconnects_after_the_server_restarts_mid_idle_and_gets_the_mail_from_the_outage() {
    let d = tokio::task::block_in_place(Dovecot::start);
    let (_dir, b) = backend().await;
    let seen: Seen = Default::default();
    let c = start(d.settings(), b, seen.clone(), "p1");
    d.append("INBOX", &mail("first@example.test", "First")).await;
    seen_len(&seen, 1, "the first mail").await;
    tokio::task::block_in_place(|| d.stop());
    let mut health = c.health.clone();
    tokio::time::timeout(Duration::from_secs(30), health.wait_for(|h| !h.connected))
        .await
        .expect("the drop is noticed")
        .unwrap();
    // Delivered by the local delivery agent while the IMAP server is down.
    d.deliver_to_maildir(&mail("outage@example.test", "During the outage"));
    tokio::task::block_in_place(|| d.start_again());
    seen_len(&seen, 2, "the mail from the outage").await;
    assert!(c.health.borrow().connections >= 2, "it reconnected");
    let s = seen.lock().unwrap().clone();
    assert_eq!(s[1].1.as_deref(), Some("outage@example.test"));
    assert_eq!(s.len(), 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_per_mailbox_and_another_takes_over_when_it_stops() {
    let d = tokio::task::block_in_place(Dovecot::start);
    let (_dir, b) = backend().await;
    let (seen_a, seen_b): (Seen, Seen) = Default::default();
    let a = start(d.settings(), b.clone(), seen_a.clone(), "process-a");
    let mut ha = a.health.clone();
    tokio::time::timeout(Duration::from_secs(30), ha.wait_for(|h| h.connected)).await.expect("a connects").unwrap();
    let bb = start(d.settings(), b.clone(), seen_b.clone(), "process-b");
    for i in 0..3 {
        d.append("INBOX", &mail(&format!("m{i}@example.test"), "Fleet")).await;
    }
    seen_len(&seen_a, 3, "a consumes").await;
    assert!(!bb.health.borrow().connected, "b does not consume while a holds the lease");
    assert!(seen_b.lock().unwrap().is_empty());
    a.stop().await; // releases the lease
    d.append("INBOX", &mail("after@example.test", "After a")).await;
    seen_len(&seen_b, 1, "b takes over").await;
    assert_eq!(seen_b.lock().unwrap()[0].1.as_deref(), Some("after@example.test"));
    bb.stop().await;
}

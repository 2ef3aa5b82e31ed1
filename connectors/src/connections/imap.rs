//! Reading an owner's `imap` connection: log in (the IMAP trigger's session code), EXAMINE the
//! mailbox (read-only: nothing is flagged or moved, and `BODY.PEEK` leaves `\Seen` alone),
//! SEARCH, and fetch the newest matching messages whole, parsed with the trigger's parser.

use std::time::Duration;

use futures::TryStreamExt as _;
use tollgate_engine::connections::{ConnectionKind, ConnectionSettings, ImapSettings};
use tollgate_engine::ids::OwnerId;

use super::{ConnectionError, Connections, Resolved};
use crate::imap::{self as mail, ImapError, ImapSession, MailError, ParsedMail, timed};

/// Longest wait for any one server answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One fetched message: its UID in the mailbox, and the message parsed (or why it could not be).
#[derive(Clone, Debug)]
pub struct FetchedMail {
    pub uid: u32,
    pub size: usize,
    pub parsed: Result<ParsedMail, MailError>,
}

fn imap_settings(r: &Resolved) -> &ImapSettings {
    match &r.connection.settings {
        ConnectionSettings::Imap(s) => s,
        _ => unreachable!("resolved as an imap connection"),
    }
}

fn classify(r: &Resolved, e: ImapError) -> ConnectionError {
    let s = imap_settings(r);
    match e {
        ImapError::Login(why) => ConnectionError::Refused(format!(
            "imap {}:{} refused the login of `{}` for connection `{}`: {why}",
            s.host,
            s.port(),
            s.user,
            r.connection.name
        )),
        ImapError::Config(why) => ConnectionError::Input(format!("connection `{}`: {why}", r.connection.name)),
        e @ ImapError::Untrusted(_) => ConnectionError::Untrusted(format!("imap {}:{}: {e}", s.host, s.port())),
        other => ConnectionError::Failed(format!("imap {}:{}: {other}", s.host, s.port())),
    }
}

async fn login(r: &Resolved) -> Result<ImapSession, ImapError> {
    let s = imap_settings(r);
    let password = r.credential.as_ref().map(|c| c.as_str()).unwrap_or_default();
    let tls = s.tls.then_some(mail::Tls { ca_file: s.ca_file.as_deref().map(std::path::Path::new) });
    mail::open(&s.host, s.port(), tls, &s.user, password, COMMAND_TIMEOUT).await
}

impl Connections {
    /// The newest `limit` messages of `mailbox` matching the IMAP `search`, oldest first,
    /// through `owner`'s imap connection `name`. Nothing in the mailbox changes.
    pub async fn fetch_emails(
        &self,
        owner: &OwnerId,
        name: &str,
        mailbox: &str,
        search: &str,
        limit: usize,
    ) -> Result<Vec<FetchedMail>, ConnectionError> {
        let resolved = self.resolve(owner, name, ConnectionKind::Imap).await?;
        let mut session = login(&resolved).await.map_err(|e| classify(&resolved, e))?;
        let result = fetch(&mut session, mailbox, search, limit).await;
        let _ = timed("logout", COMMAND_TIMEOUT, session.logout()).await;
        result.map_err(|e| match e {
            ImapError::Protocol(why) => {
                ConnectionError::Input(format!("imap: mailbox `{mailbox}`, search `{search}`: {why}"))
            }
            other => classify(&resolved, other),
        })
    }
}

async fn fetch(
    session: &mut ImapSession,
    mailbox: &str,
    search: &str,
    limit: usize,
) -> Result<Vec<FetchedMail>, ImapError> {
    timed("examine", COMMAND_TIMEOUT, session.examine(mailbox)).await?;
    let mut uids: Vec<u32> = timed("search", COMMAND_TIMEOUT, session.uid_search(search)).await?.into_iter().collect();
    uids.sort_unstable();
    let newest = &uids[uids.len().saturating_sub(limit)..];
    if newest.is_empty() {
        return Ok(Vec::new());
    }
    let set = newest.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let fetches: Vec<_> = timed("fetch", COMMAND_TIMEOUT, async {
        Ok::<_, ImapError>(session.uid_fetch(&set, "(UID BODY.PEEK[])").await?.try_collect::<Vec<_>>().await?)
    })
    .await?;
    let mut out: Vec<FetchedMail> = fetches
        .iter()
        .filter_map(|f| {
            let raw = f.body()?;
            Some(FetchedMail { uid: f.uid?, size: raw.len(), parsed: mail::parse_mail(raw) })
        })
        .collect();
    out.sort_by_key(|m| m.uid);
    Ok(out)
}

/// `connections test` for imap: log in, EXAMINE INBOX, log out.
pub(super) async fn test(c: &Connections, owner: &OwnerId, name: &str) -> Result<String, ConnectionError> {
    let resolved = c.resolve(owner, name, ConnectionKind::Imap).await?;
    let s = imap_settings(&resolved);
    let mut session = login(&resolved).await.map_err(|e| classify(&resolved, e))?;
    let inbox = timed("examine", COMMAND_TIMEOUT, session.examine("INBOX")).await.map_err(|e| classify(&resolved, e));
    let _ = timed("logout", COMMAND_TIMEOUT, session.logout()).await;
    let inbox = inbox?;
    Ok(format!(
        "imap {}:{} ({}) logged in as {}; INBOX holds {} messages",
        s.host,
        s.port(),
        if s.tls { "tls" } else { "plain" },
        s.user,
        inbox.exists
    ))
}

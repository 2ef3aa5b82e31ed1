//! Inbound mail parsed with `mail-parser`: the fields a workflow uses (sender, recipients,
//! subject, date, Message-ID, text and HTML bodies) and the attachments. mail-parser is
//! lenient by design; a message is refused as unparseable — recorded as a failed fire and
//! quarantined — when it has no header at all, or declares a multipart body without a boundary
//! or whose boundary never appears in the body.

use mail_parser::{MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};

/// A parsed message, as a run receives it (attachments travel separately, by reference).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedMail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339, when the message has a readable `Date`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip)]
    pub attachments: Vec<MailAttachment>,
}

/// One attachment's name, type and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("the message is empty")]
    Empty,
    #[error("the message has no header (not an RFC 5322 message)")]
    NoHeaders,
    #[error("the message is multipart/{0} but declares no boundary")]
    NoBoundary(String),
    #[error("the message is multipart/{0} but its boundary `{1}` never appears in the body")]
    BoundaryMissing(String, String),
}

/// Parse a raw RFC 5322 message.
pub fn parse_mail(raw: &[u8]) -> Result<ParsedMail, MailError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(MailError::Empty);
    }
    let message = MessageParser::default().parse(raw).ok_or(MailError::NoHeaders)?;
    if message.headers().is_empty() {
        return Err(MailError::NoHeaders);
    }
    if let Some(ct) = message.content_type().filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart")) {
        let subtype = ct.subtype().unwrap_or("mixed").to_string();
        let boundary = ct.attribute("boundary").ok_or_else(|| MailError::NoBoundary(subtype.clone()))?;
        let marker = format!("--{boundary}");
        if !raw.windows(marker.len()).any(|w| w == marker.as_bytes()) {
            return Err(MailError::BoundaryMissing(subtype, boundary.to_string()));
        }
    }
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| a.iter().filter_map(|addr| addr.address().map(str::to_string)).collect()).unwrap_or_default()
    };
    let attachments = message
        .attachments()
        .map(|part| MailAttachment {
            filename: part.attachment_name().map(str::to_string),
            content_type: part
                .content_type()
                .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into()),
            bytes: part.contents().to_vec(),
        })
        .collect();
    Ok(ParsedMail {
        message_id: message.message_id().map(str::to_string),
        from: addresses(message.from()).into_iter().next(),
        to: addresses(message.to()),
        subject: message.subject().map(str::to_string),
        date: message.date().map(|d| d.to_rfc3339()),
        text: message.body_text(0).map(|t| t.into_owned()),
        html: message.body_html(0).map(|t| t.into_owned()),
        attachments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_ATTACHMENT: &str = "From: Lead <lead@example.test>\r\nTo: ops@example.test\r\nSubject: Referral\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <r1@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nPlease call Acme.\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"brief.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";

    #[test]
    fn a_message_gives_its_fields_and_attachments() {
        let m = parse_mail(WITH_ATTACHMENT.as_bytes()).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("r1@example.test"));
        assert_eq!(m.from.as_deref(), Some("lead@example.test"));
        assert_eq!(m.to, vec!["ops@example.test"]);
        assert_eq!(m.subject.as_deref(), Some("Referral"));
        assert_eq!(m.text.as_deref().map(str::trim), Some("Please call Acme."));
        assert_eq!(m.date.as_deref(), Some("2026-11-30T10:00:00Z"));
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].filename.as_deref(), Some("brief.pdf"));
        assert_eq!(m.attachments[0].content_type, "application/pdf");
        assert_eq!(m.attachments[0].bytes, b"%PDF-1.4\n");
    }

    #[test]
    fn broken_messages_are_refused_with_the_reason() {
        assert_eq!(parse_mail(b" \r\n"), Err(MailError::Empty));
        let no_boundary = "From: a@example.test\r\nContent-Type: multipart/mixed\r\n\r\nbody\r\n";
        assert_eq!(parse_mail(no_boundary.as_bytes()), Err(MailError::NoBoundary("mixed".into())));
        let missing = "From: a@example.test\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n";
        assert_eq!(parse_mail(missing.as_bytes()), Err(MailError::BoundaryMissing("mixed".into(), "zz".into())));
    }
}

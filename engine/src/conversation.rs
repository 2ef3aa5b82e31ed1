//! The turn journal of a model conversation (an `llm` step, a `research` step's summary): the
//! context it is about (a summary's hits), then every model answer, tool result and feedback
//! message of the conversation, in order, appended (sealed, `run/{id}/turns/{step}`) by the attempt that
//! produced it BEFORE the conversation goes on. A later attempt of the step — after a crash,
//! or after a human authorised a tool call — rebuilds the conversation from it and continues
//! where it stopped: a recorded answer is never asked for again, a recorded tool result never
//! re-run. Pure data and the one rule deciding what comes next ([`Conversation::next`]).

use serde::{Deserialize, Serialize};

use crate::llm::{ChatMessage, ChatReply, Role, ToolCall};
use crate::money::Money;

/// One entry of a step's turn journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum TurnEntry {
    /// What the conversation is about, fixed before the first call: a `research` step's search
    /// results, so every attempt of the conversation summarises (and checks citations against)
    /// the same hits, whatever was ingested since. Not a message: the handler builds the prompt
    /// from it.
    Context { attempt: u32, value: serde_json::Value },
    /// The model answered (text, tool calls or both); `cost` is what the call cost.
    Answer { attempt: u32, reply: ChatReply, cost: Money },
    /// A tool call's result, as the model receives it.
    ToolResult { attempt: u32, call_id: String, tool: String, status: ToolCallStatus, content: String },
    /// Tollgate asked the model to answer again: the schema's errors or the failed checks.
    Feedback {
        attempt: u32,
        kind: FeedbackKind,
        text: String,
        /// What was wrong (schema errors, check results), for the step's output.
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        details: serde_json::Value,
    },
}

impl TurnEntry {
    pub fn attempt(&self) -> u32 {
        match self {
            TurnEntry::Context { attempt, .. }
            | TurnEntry::Answer { attempt, .. }
            | TurnEntry::ToolResult { attempt, .. }
            | TurnEntry::Feedback { attempt, .. } => *attempt,
        }
    }
}

/// How a tool call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallStatus {
    /// It ran and returned a result.
    Ok,
    /// It ran and failed (the error is the result).
    Failed,
    /// Its arguments did not satisfy the tool's schema: not run.
    InvalidArguments,
    /// A human denied it (the reason is the result).
    Denied,
    /// Not run: an unknown tool, or more calls in one turn than are carried out.
    NotRun,
}

impl ToolCallStatus {
    pub fn label(self) -> &'static str {
        match self {
            ToolCallStatus::Ok => "ok",
            ToolCallStatus::Failed => "failed",
            ToolCallStatus::InvalidArguments => "invalid_arguments",
            ToolCallStatus::Denied => "denied",
            ToolCallStatus::NotRun => "not_run",
        }
    }
}

/// Why Tollgate sent the model a message of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    /// The answer did not satisfy the step's `schema`.
    Repair,
    /// The answer failed the step's `checks` (`on_block: retry`).
    Checks,
}

/// A tool call waiting for a human's authorisation: the attempt stopped before running it,
/// and the run asks. `arguments` and `reason` are what the model said, passed through the
/// gate mesh (redacted) before they reach the journal or a person; the call itself is re-read
/// from the turn journal when it is allowed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolAsk {
    pub call_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    /// The text the model said alongside the call (its stated reason; may be empty).
    #[serde(default)]
    pub reason: String,
    /// The model turn (1-based) that asked for it.
    pub turn: u32,
    /// Why it is asked about, for a tool authorised by category: the categories found in its
    /// arguments (empty for `authorize: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<String>,
}

/// The rendered prompt of an `llm` step looked like a prompt injection and the step says
/// `on_injection: guidance`: the attempt stopped before any call, and a human decides (release
/// the prompt as is, supply the step's output instead, or abort). `flagged` holds the text of
/// the spans the classifier flagged, passed through the gate mesh before it is journaled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptHold {
    /// Which rendered message (0-based) and whose.
    pub message: usize,
    pub role: crate::llm::Role,
    pub score: f64,
    pub signals: Vec<String>,
    pub flagged: Vec<String>,
}

/// Why an attempt stopped to ask a human.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "suspension", rename_all = "snake_case")]
pub enum Suspension {
    ToolAuthorisation(ToolAsk),
    PromptGuidance(PromptHold),
}

/// A human's answer to a tool-authorisation request, as the run keeps it for its later attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "grant", rename_all = "snake_case")]
pub enum ToolGrant {
    Allow { by: String },
    Deny { by: String, reason: String },
}

/// What the conversation needs next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next<'a> {
    /// Ask the model (the conversation ends with the prompt, a tool result or feedback).
    CallModel,
    /// Carry out a tool call of the last answer: the `index`-th of its calls, with the text the
    /// model said alongside (its stated reason).
    RunTool { call: &'a ToolCall, index: usize, reason: &'a str },
    /// The last answer called no tool: it is the candidate output.
    Final { text: &'a str },
}

/// A step's conversation as its turn journal holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    pub entries: Vec<TurnEntry>,
}

impl Conversation {
    pub fn new(entries: Vec<TurnEntry>) -> Self {
        Self { entries }
    }

    /// The messages to send: the rendered prompt, then every recorded entry.
    pub fn messages(&self, prompt: &[ChatMessage]) -> Vec<ChatMessage> {
        let mut out = prompt.to_vec();
        for e in &self.entries {
            out.push(match e {
                TurnEntry::Context { .. } => continue,
                TurnEntry::Answer { reply, .. } => ChatMessage {
                    role: Role::Assistant,
                    content: reply.text.clone(),
                    tool_calls: reply.tool_calls.clone(),
                    tool_call_id: None,
                },
                TurnEntry::ToolResult { call_id, content, .. } => ChatMessage {
                    role: Role::Tool,
                    content: content.clone(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call_id.clone()),
                },
                TurnEntry::Feedback { text, .. } => ChatMessage::new(Role::User, text.clone()),
            });
        }
        out
    }

    /// The context recorded before the first call, if any.
    pub fn context(&self) -> Option<&serde_json::Value> {
        self.entries.iter().find_map(|e| match e {
            TurnEntry::Context { value, .. } => Some(value),
            _ => None,
        })
    }

    /// Model answers recorded so far (the turns taken).
    pub fn answers(&self) -> u32 {
        self.entries.iter().filter(|e| matches!(e, TurnEntry::Answer { .. })).count() as u32
    }

    /// Answers that are turns of the tool loop (not answers to feedback).
    pub fn loop_turns(&self) -> u32 {
        let feedback = self.entries.iter().filter(|e| matches!(e, TurnEntry::Feedback { .. })).count() as u32;
        self.answers() - feedback.min(self.answers())
    }

    /// The details of the feedback of `kind`, if it was sent.
    pub fn feedback(&self, kind: FeedbackKind) -> Option<&serde_json::Value> {
        self.entries.iter().find_map(|e| match e {
            TurnEntry::Feedback { kind: k, details, .. } if *k == kind => Some(details),
            _ => None,
        })
    }

    /// Whether feedback of `kind` was already sent.
    pub fn has_feedback(&self, kind: FeedbackKind) -> bool {
        self.feedback(kind).is_some()
    }

    /// Whether the conversation ends with feedback (the next answer replies to it).
    pub fn ends_with_feedback(&self) -> bool {
        matches!(self.entries.last(), Some(TurnEntry::Feedback { .. }))
    }

    /// Tokens used by every answer recorded (all attempts).
    pub fn usage(&self) -> crate::llm::Usage {
        let mut u = crate::llm::Usage::default();
        for e in &self.entries {
            if let TurnEntry::Answer { reply, .. } = e {
                u += reply.usage;
            }
        }
        u
    }

    /// What the conversation needs next: the first call of the last answer without a recorded
    /// result, or the model once every call has one, or the last answer as the candidate output.
    pub fn next(&self) -> Next<'_> {
        let Some(last_answer) = self.entries.iter().rposition(|e| matches!(e, TurnEntry::Answer { .. })) else {
            return Next::CallModel;
        };
        let TurnEntry::Answer { reply, .. } = &self.entries[last_answer] else { unreachable!() };
        let after = &self.entries[last_answer + 1..];
        if after.iter().any(|e| matches!(e, TurnEntry::Feedback { .. })) {
            return Next::CallModel;
        }
        if reply.tool_calls.is_empty() {
            return Next::Final { text: &reply.text };
        }
        let answered =
            |id: &str| after.iter().any(|e| matches!(e, TurnEntry::ToolResult { call_id, .. } if call_id == id));
        match reply.tool_calls.iter().enumerate().find(|(_, c)| !answered(&c.id)) {
            Some((index, call)) => Next::RunTool { call, index, reason: &reply.text },
            None => Next::CallModel,
        }
    }

    /// What the answers recorded by `attempt` cost.
    pub fn cost_of_attempt(&self, attempt: u32) -> Money {
        let mut total = Money::ZERO;
        for e in &self.entries {
            if let TurnEntry::Answer { attempt: a, cost, .. } = e
                && *a == attempt
            {
                total += *cost;
            }
        }
        total
    }

    /// Every tool call and how it ended, in order: for the step's output and the timeline.
    pub fn tool_calls(&self) -> Vec<serde_json::Value> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                TurnEntry::ToolResult { attempt, call_id, tool, status, .. } => Some(
                    serde_json::json!({ "id": call_id, "tool": tool, "status": status.label(), "attempt": attempt }),
                ),
                _ => None,
            })
            .collect()
    }
}

/// Cut `text` to at most `max` bytes (at a character boundary), saying so.
pub fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    const NOTE: &str = " […cut]";
    let mut end = max.saturating_sub(NOTE.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{NOTE}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;
    use serde_json::json;

    fn answer(attempt: u32, text: &str, calls: &[(&str, &str)]) -> TurnEntry {
        TurnEntry::Answer {
            attempt,
            reply: ChatReply {
                text: text.into(),
                tool_calls: calls
                    .iter()
                    .map(|(id, name)| ToolCall { id: (*id).into(), name: (*name).into(), arguments: json!({}) })
                    .collect(),
                usage: Usage { input_tokens: 10, output_tokens: 5 },
                model: "m".into(),
                finish: String::new(),
            },
            cost: Money::parse("0.01").unwrap(),
        }
    }

    fn result(attempt: u32, id: &str) -> TurnEntry {
        TurnEntry::ToolResult {
            attempt,
            call_id: id.into(),
            tool: "t".into(),
            status: ToolCallStatus::Ok,
            content: "r".into(),
        }
    }

    #[test]
    fn the_next_thing_follows_from_the_recorded_turns() {
        let mut c = Conversation::default();
        assert_eq!(c.next(), Next::CallModel);
        c.entries.push(answer(1, "I will look both up", &[("a", "t"), ("b", "t")]));
        assert!(matches!(c.next(), Next::RunTool { call, index: 0, reason: "I will look both up" } if call.id == "a"));
        c.entries.push(result(1, "a"));
        assert!(matches!(c.next(), Next::RunTool { call, index: 1, .. } if call.id == "b"));
        c.entries.push(result(2, "b"));
        assert_eq!(c.next(), Next::CallModel);
        c.entries.push(answer(2, "done", &[]));
        assert_eq!(c.next(), Next::Final { text: "done" });
        c.entries.push(TurnEntry::Feedback {
            attempt: 2,
            kind: FeedbackKind::Repair,
            text: "fix".into(),
            details: serde_json::Value::Null,
        });
        assert_eq!(c.next(), Next::CallModel);
        assert!(c.has_feedback(FeedbackKind::Repair) && !c.has_feedback(FeedbackKind::Checks));
        assert_eq!(c.answers(), 2);
        assert_eq!(c.loop_turns(), 1);
        assert_eq!(c.cost_of_attempt(2).to_exact_string(), "0.01");
    }

    #[test]
    fn the_conversation_is_rebuilt_in_protocol_order() {
        let c = Conversation::new(vec![answer(1, "", &[("a", "t")]), result(1, "a")]);
        let m = c.messages(&[ChatMessage::new(Role::User, "hi")]);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].role, Role::Assistant);
        assert_eq!(m[1].tool_calls[0].id, "a");
        assert_eq!(m[2].role, Role::Tool);
        assert_eq!(m[2].tool_call_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_recorded_context_is_kept_but_not_sent_as_a_message() {
        let hits = json!({"hits": [{"id": "hit-1"}]});
        let mut c = Conversation::new(vec![TurnEntry::Context { attempt: 1, value: hits.clone() }]);
        assert_eq!(c.context(), Some(&hits));
        assert_eq!(c.next(), Next::CallModel);
        c.entries.push(answer(1, "A summary [hit-1].", &[]));
        assert_eq!(c.next(), Next::Final { text: "A summary [hit-1]." });
        let m = c.messages(&[ChatMessage::new(Role::User, "summarise")]);
        assert_eq!(m.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::User, Role::Assistant]);
    }

    #[test]
    fn long_results_are_cut_at_a_character_boundary() {
        let s = bounded("ååååååååååå".into(), 12);
        assert!(s.len() <= 12 && s.ends_with("[…cut]"), "{s}");
        assert_eq!(bounded("short".into(), 12), "short");
    }
}

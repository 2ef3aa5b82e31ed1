//! `memory.write|read|list`: the owner's notes (`tollgate_engine::store::notes`, sealed per
//! owner). Write `{key?, text, tags}` → `{key, at}`; read `{key}` → the note
//! (`memory_not_found` if none); list `{since, tag?, limit?}` → `{notes: [...]}`, newest first.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tollgate_engine::ids::OwnerId;
use tollgate_engine::spec::steps::{MAX_NOTE_BYTES, MemoryListWith, MemoryReadWith, MemoryWriteWith};
use tollgate_engine::step::{StepError, StepInvocation};
use tollgate_engine::store::{Note, NoteFilter, Store};

use super::unavailable;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) async fn write(
    store: &Store,
    owner: &OwnerId,
    call: &StepInvocation<'_>,
    w: MemoryWriteWith,
) -> Result<Value, StepError> {
    if w.text.trim().is_empty() {
        return Err(StepError::permanent("bad_with", "with.text: a note needs some text"));
    }
    if w.text.len() > MAX_NOTE_BYTES {
        return Err(StepError::permanent(
            "bad_with",
            format!("with.text: {} bytes, at most {MAX_NOTE_BYTES}", w.text.len()),
        ));
    }
    // Without a key, the step's idempotency key makes a retried write replace, not duplicate.
    let key = w.key.filter(|k| !k.is_empty()).unwrap_or_else(|| call.idempotency_key.clone());
    let note = Note {
        key,
        text: w.text,
        tags: w.tags,
        at: now_ms(),
        workflow: Some(call.workflow.to_string()),
        run: Some(call.run.to_string()),
    };
    let note = store.put_note(owner, note).await.map_err(unavailable)?;
    Ok(json!({ "key": note.key, "at": note.at }))
}

pub(super) async fn read(store: &Store, owner: &OwnerId, r: MemoryReadWith) -> Result<Value, StepError> {
    match store.note(owner, &r.key).await.map_err(unavailable)? {
        Some(note) => Ok(json!(note)),
        None => Err(StepError::permanent("memory_not_found", format!("no note under key `{}`", r.key))),
    }
}

pub(super) async fn list(store: &Store, owner: &OwnerId, l: MemoryListWith) -> Result<Value, StepError> {
    let since = now_ms().saturating_sub(l.since().as_millis() as u64);
    let filter = NoteFilter { since, tag: l.tag.as_deref(), limit: l.limit() as usize };
    let notes = store.notes(owner, &filter).await.map_err(unavailable)?;
    Ok(json!({ "count": notes.len(), "notes": notes }))
}

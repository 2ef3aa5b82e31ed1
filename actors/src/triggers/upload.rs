//! The upload source: a multipart endpoint (`POST /hooks/{workflow}/{trigger}`, field `file`)
//! and, if configured, a watched folder. Either way a file fires once per content (its SHA-256
//! is the dedup key); the file is kept sealed in the store for the history's retention and the
//! run gets its name, size, hash, a reference to it, and its text when it is UTF-8.
//!
//! Names are sanitised: one that tries to leave its folder (`../x`, a path, a drive) is refused.
//! A watched folder's file moves to `processed/` (started or duplicate) or `failed/` only after
//! its fire is recorded; while the store is unavailable it stays where it is and is retried.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_engine::spec::triggers::{UploadTrigger, sanitize_file_name};

use crate::triggers::fire::{FireError, FireResult};
use crate::triggers::source::{TriggerContext, TriggerError, TriggerSource};
use crate::triggers::webhook::{close_endpoint, open_endpoint};

pub struct UploadSource(pub UploadTrigger);

/// Text up to this size is passed to the run inline (larger files only by reference).
const INLINE_TEXT: usize = 1 << 20;

#[async_trait]
impl TriggerSource for UploadSource {
    async fn run(&self, ctx: &TriggerContext) -> Result<(), TriggerError> {
        open_endpoint(ctx, Vec::new(), None);
        let result = match &self.0.folder {
            Some(folder) => watch(ctx, &self.0, folder).await,
            None => {
                ctx.shutdown.cancelled().await;
                Ok(())
            }
        };
        close_endpoint(ctx);
        result
    }
}

/// A file that arrived, ready to fire.
pub struct Upload {
    /// The sanitised name.
    pub name: String,
    pub content_type: Option<String>,
    pub content: Vec<u8>,
    /// Other form fields, as strings.
    pub fields: serde_json::Map<String, Value>,
}

/// Keep the file sealed in the store and fire with its hash as the dedup key.
pub async fn fire_upload(ctx: &TriggerContext, upload: Upload, source: &str) -> Result<FireResult, FireError> {
    let sha = hex::encode(Sha256::digest(&upload.content));
    let reference = ctx.store().put_blob(ctx.workflow(), &upload.content, ctx.board.history_ttl()).await?;
    let mut file = json!({
        "name": upload.name,
        "size": upload.content.len(),
        "sha256": sha,
        "blob": reference,
    });
    if let Some(ct) = &upload.content_type {
        file["content_type"] = json!(ct);
    }
    if upload.content.len() <= INLINE_TEXT
        && let Ok(text) = std::str::from_utf8(&upload.content)
    {
        file["text"] = json!(text);
    }
    let payload = json!({ "file": file, "fields": upload.fields });
    ctx.fire(format!("sha256:{sha}"), payload, format!("{source} {}", upload.name)).await
}

async fn watch(ctx: &TriggerContext, settings: &UploadTrigger, folder: &Path) -> Result<(), TriggerError> {
    let processed = folder.join("processed");
    let failed = folder.join("failed");
    for dir in [&processed, &failed] {
        tokio::fs::create_dir_all(dir).await.map_err(|e| TriggerError(format!("creating {}: {e}", dir.display())))?;
    }
    loop {
        if let Err(e) = scan(ctx, settings, folder, &processed, &failed).await {
            ctx.error(&e.0);
            return Err(e);
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(settings.poll) => {}
        }
    }
}

/// One pass over the folder: each plain file (not hidden: write to `.name`, then rename) fires.
async fn scan(
    ctx: &TriggerContext,
    settings: &UploadTrigger,
    folder: &Path,
    processed: &Path,
    failed: &Path,
) -> Result<(), TriggerError> {
    let mut entries =
        tokio::fs::read_dir(folder).await.map_err(|e| TriggerError(format!("reading {}: {e}", folder.display())))?;
    let mut files = Vec::new();
    while let Some(entry) =
        entries.next_entry().await.map_err(|e| TriggerError(format!("reading {}: {e}", folder.display())))?
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().await.is_ok_and(|t| t.is_file());
        if is_file && !name.starts_with('.') {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    for (name, path) in files {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        let source = format!("folder {}", folder.display());
        let len = tokio::fs::metadata(&path).await.map(|m| m.len() as usize).unwrap_or(0);
        let result = if len > settings.max_size {
            ctx.fire_failed(
                format!("file:{name}:{len}"),
                &source,
                format!("{name} is {len} bytes, over the trigger's max_size of {}", settings.max_size),
            )
            .await
        } else {
            let content = match tokio::fs::read(&path).await {
                Ok(c) => c,
                Err(e) => {
                    ctx.error(&format!("reading {}: {e}", path.display()));
                    continue;
                }
            };
            fire_upload(
                ctx,
                Upload { name: name.clone(), content_type: None, content, fields: Default::default() },
                &source,
            )
            .await
        };
        match result {
            Ok(r) => {
                let to = if matches!(r, FireResult::Failed { .. }) { failed } else { processed };
                move_file(&path, to, &name, r.fire().as_str()).await?;
            }
            // Not recorded: leave the file, try again on the next pass.
            Err(e) => return Err(TriggerError(e.to_string())),
        }
    }
    Ok(())
}

/// Move `path` into `dir`, keeping its name unless one is there already (then `name.<fire>`).
async fn move_file(path: &Path, dir: &Path, name: &str, fire: &str) -> Result<(), TriggerError> {
    let mut target: PathBuf = dir.join(name);
    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        target = dir.join(format!("{name}.{fire}"));
    }
    tokio::fs::rename(path, &target)
        .await
        .map_err(|e| TriggerError(format!("moving {} to {}: {e}", path.display(), target.display())))
}

/// Read a multipart upload: the `file` field (size-limited, name sanitised) and text fields.
pub async fn read_multipart(mut form: axum::extract::Multipart, max_size: usize) -> Result<Upload, UploadError> {
    let mut file = None;
    let mut fields = serde_json::Map::new();
    while let Some(mut field) =
        form.next_field().await.map_err(|e| UploadError::Bad(format!("the form does not parse: {e}")))?
    {
        match (field.name().unwrap_or_default().to_string(), field.file_name().map(str::to_string)) {
            (name, Some(raw_name)) if name == "file" => {
                let Some(clean) = sanitize_file_name(&raw_name) else {
                    return Err(UploadError::Bad(format!(
                        "the file name {raw_name:?} is refused: a name may not hold a path or `..`"
                    )));
                };
                let content_type = field.content_type().map(str::to_string);
                let mut content = Vec::new();
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| UploadError::Bad(format!("the upload broke off: {e}")))?
                {
                    if content.len() + chunk.len() > max_size {
                        return Err(UploadError::TooLarge(max_size));
                    }
                    content.extend_from_slice(&chunk);
                }
                file = Some((clean, content_type, content));
            }
            (name, None) => {
                let text = field.text().await.map_err(|e| UploadError::Bad(format!("field {name}: {e}")))?;
                if text.len() > INLINE_TEXT {
                    return Err(UploadError::TooLarge(INLINE_TEXT));
                }
                fields.insert(name, Value::String(text));
            }
            (name, Some(_)) => {
                return Err(UploadError::Bad(format!("unexpected file field `{name}` (the file goes in `file`)")));
            }
        }
    }
    let (name, content_type, content) = file.ok_or_else(|| UploadError::Bad("no `file` field in the form".into()))?;
    Ok(Upload { name, content_type, content, fields })
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Bad(String),
    #[error("the upload is larger than the trigger's limit of {0} bytes")]
    TooLarge(usize),
}

//! `/api/v1/lists/{id}/imports` and `/api/v1/imports/{id}`: uploads into a
//! list, and their progress.
//!
//! Owns: taking an upload (the Content-Type allowed, the size limit
//! `web.max_import_bytes` enforced as it streams to a file under `web.import_dir`:
//! never held in memory, so this route lifts the router's JSON body limit),
//! recording the import and starting its job (`import::spawn`, a thread of its
//! own), showing an import, and [`resume`] at server start.
//! Must not: parse the file or write subscribers (`import` does).
//!
//! An upload is written to `upload-<random>.part`, made durable, then renamed to
//! `import-<id>.upload` once its `imports` row exists: the name is how [`resume`]
//! finds it again, and a `.part` file never has a row that points to it.
//!
//! Compromise: [`resume`] takes every `queued`/`running` import of the store as
//! left by a stopped server. With several `outbound web` processes on one MySQL
//! store, each needs the same `web.import_dir` (a shared volume), or one
//! restarting would fail (or re-run) another's live import: the `imports` row does
//! not say which process runs it.

use std::path::{Path, PathBuf};

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::AppState;
use super::auth::Auth;
use super::error::{ApiError, ApiPath, ApiResult};
use super::lists::own_list;
use crate::import::{self, Job};
use crate::lists::List;

/// The Content-Types an upload may be sent as (the file's own magic bytes decide
/// how it is read; these only keep out what is plainly not a file of ours).
const UPLOAD_TYPES: &[&str] = &[
    "text/csv",
    "text/plain",
    "application/csv",
    "application/zip",
    "application/x-zip-compressed",
    "application/gzip",
    "application/x-gzip",
    "application/vnd.rar",
    "application/x-rar-compressed",
    "application/x-rar",
    "application/octet-stream",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/lists/{id}/imports",
            // The router's limit is for JSON bodies; this one streams to disk and
            // enforces web.max_import_bytes itself. (axum 0.8 applies the limit to
            // buffering extractors, not to a raw `Body`, but lifting it here keeps
            // that true whatever this handler extracts.)
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/imports/{id}", get(show))
}

/// Where the upload of import `id` waits.
fn upload_path(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("import-{id}.upload"))
}

/// Whether `headers` name an allowed Content-Type (none given is allowed: the
/// bytes are sniffed anyway).
fn content_type_allowed(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence {
        Some(e) if UPLOAD_TYPES.contains(&e.as_str()) => Ok(()),
        _ => Err(ApiError::unsupported(format!(
            "Content-Type: expected a CSV file or a zip, gzip or RAR archive ({})",
            UPLOAD_TYPES.join(", ")
        ))),
    }
}

async fn upload(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath(list_id): ApiPath<i64>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // The connection goes back to the pool before the (possibly long) upload.
    let list = {
        let mut db = state.pool.get().await?;
        own_list(&mut db, account.id, list_id).await?
    };
    let id = accept(&state, list, &headers, body).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

/// Receives the upload `body` into `list` and starts its import; returns the
/// import's id. Also the console's upload (`console::lists`), after its own
/// session and CSRF checks.
pub(crate) async fn accept(
    state: &AppState,
    list: List,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<i64> {
    content_type_allowed(headers)?;
    let limit = state.cfg.web.max_import_bytes;
    // A declared length over the limit is refused before reading a byte.
    if let Some(n) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && n > limit
    {
        return Err(ApiError::too_large(limit));
    }
    let dir = state.cfg.web.import_dir.clone();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::unavailable(&format!("web.import_dir {}: {e}", dir.display())))?;
    // Removed on every way out but success, a client gone mid-upload included
    // (axum drops this future then).
    let part = PartFile(Some(dir.join(format!("upload-{}.part", random_hex()?))));
    let written = receive(body, part.path(), limit).await?;
    if written == 0 {
        return Err(ApiError::field(
            "body",
            "empty: send the CSV file or archive",
        ));
    }
    let id = {
        let mut db = state.pool.get().await?;
        import::create(&mut db, &list).await?
    };
    let path = upload_path(&dir, id);
    if let Err(e) = tokio::fs::rename(part.path(), &path).await {
        drop(part);
        let mut db = state.pool.get().await?;
        import::mark_failed(&mut db, id, "the upload could not be kept").await?;
        return Err(ApiError::unavailable(&e));
    }
    part.keep();
    info!(
        import = id,
        list = list.id,
        bytes = written,
        "import uploaded"
    );
    start(state, id, list, path).await?;
    Ok(id)
}

/// An upload being received: deleted when dropped unless kept.
struct PartFile(Option<PathBuf>);

impl PartFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or_else(|| Path::new(""))
    }

    /// It has been renamed to its import's name: nothing to delete.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Blocking, but a single unlink; the async runtime is not held up for
            // longer than any other syscall.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Streams `body` into `path`, at most `limit` bytes; the bytes written.
async fn receive(mut body: Body, path: &Path, limit: u64) -> ApiResult<u64> {
    let io = |e: std::io::Error| ApiError::unavailable(&format!("writing the upload: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut written = 0u64;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        written = written.saturating_add(data.len() as u64);
        if written > limit {
            return Err(ApiError::too_large(limit));
        }
        file.write_all(&data).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    // Durable before a row points at it: a restart resumes from this file.
    file.sync_all().await.map_err(io)?;
    Ok(written)
}

fn random_hex() -> ApiResult<String> {
    let mut buf = [0u8; 12];
    getrandom::fill(&mut buf).map_err(|e| ApiError::unavailable(&e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts the job of import `id` on its own thread.
async fn start(state: &AppState, id: i64, list: List, path: PathBuf) -> ApiResult<()> {
    let job = Job {
        import_id: id,
        list,
        path,
        delete_file: true,
    };
    if let Err(e) = import::spawn(state.cfg.store.clone(), job) {
        let mut db = state.pool.get().await?;
        import::mark_failed(&mut db, id, "could not start the import").await?;
        return Err(ApiError::unavailable(&e));
    }
    Ok(())
}

async fn show(
    State(state): State<AppState>,
    Auth(account): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let mut db = state.pool.get().await?;
    let row = import::get(&mut db, account.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("import {id}")))?;
    let mut out = json!({
        "id": row.id,
        "list_id": row.list_id,
        "state": row.state,
        "rows_read": row.rows_read,
        "added": row.added,
        "updated": row.updated,
        "rejected": row.rejected,
        "errors": row.errors,
    });
    if row.state == "failed"
        && let Some(o) = out.as_object_mut()
    {
        o.insert(
            "failure".into(),
            json!(row.failure.unwrap_or_else(|| "unknown".into())),
        );
    }
    Ok(Json(out))
}

/// Picks up imports a stopped server left queued or running: re-run when the
/// upload is still there (the upsert is idempotent; the counts start over),
/// failed when it is gone. Errors are logged: a server starts regardless.
pub async fn resume(state: &AppState) {
    let pending = {
        let Ok(mut db) = state.pool.get().await else {
            warn!("cannot look for unfinished imports");
            return;
        };
        match import::unfinished(&mut db).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot look for unfinished imports");
                return;
            }
        }
    };
    for row in pending {
        let path = upload_path(&state.cfg.web.import_dir, row.id);
        let list = match state.pool.get().await {
            Ok(mut db) => crate::lists::get(&mut db, row.account_id, row.list_id).await,
            Err(e) => Err(e),
        };
        let outcome = match list {
            Ok(Some(list)) if path.exists() => {
                info!(import = row.id, "resuming an unfinished import");
                start(state, row.id, list, path)
                    .await
                    .map_err(|e| e.message)
            }
            Ok(Some(_)) => {
                Err("the upload is gone (the server stopped before it was imported)".into())
            }
            Ok(None) => {
                let _ = std::fs::remove_file(&path);
                Err("the list is gone".into())
            }
            Err(e) => {
                warn!(import = row.id, error = %e, "cannot resume the import");
                continue;
            }
        };
        if let Err(why) = outcome {
            warn!(import = row.id, failure = %why, "unfinished import failed");
            if let Ok(mut db) = state.pool.get().await
                && let Err(e) = import::mark_failed(&mut db, row.id, &why).await
            {
                warn!(import = row.id, error = %e, "cannot mark the import failed");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn with_type(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(CONTENT_TYPE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn upload_content_types() {
        for ok in [
            None,
            Some("text/csv"),
            Some("Text/CSV; charset=utf-8"),
            Some("application/x-rar-compressed"),
            Some(" application/octet-stream "),
        ] {
            assert!(content_type_allowed(&with_type(ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            "application/json",
            "multipart/form-data; boundary=x",
            "",
            "text",
        ] {
            let e = content_type_allowed(&with_type(Some(bad))).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
            assert!(e.message.starts_with("Content-Type:"));
        }
    }

    #[test]
    fn an_upload_waits_under_its_import_id() {
        assert_eq!(
            upload_path(Path::new("/d"), 7),
            PathBuf::from("/d/import-7.upload")
        );
    }
}

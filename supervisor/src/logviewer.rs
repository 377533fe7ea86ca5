//! The logviewer (Storm's): a supervisor serves its workers' log files over HTTP.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/api/v1/logs` | JSON: `[{"file", "size"}]`, the worker logs here |
//! | GET | `/api/v1/logs/{file}?start=N&length=M` | the bytes from `start` (default: the last `tail` bytes, 64 KiB), at most 1 MiB; the headers `x-log-start` and `x-log-size` give where they start and the file's size |

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

/// The most bytes one request returns.
const MAX_LENGTH: u64 = 1 << 20;
/// What a request without `start` returns: the file's tail.
const TAIL: u64 = 64 << 10;

/// One worker log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    /// Its name, `<topology>-<port>.log`.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
}

#[derive(Deserialize)]
struct Range {
    start: Option<u64>,
    length: Option<u64>,
    /// Without `start`: how many bytes from the end (default 64 KiB).
    tail: Option<u64>,
}

/// The logviewer's routes over the worker logs in `dir`.
pub fn router(dir: PathBuf) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/logs", get(list))
        .route("/api/v1/logs/{file}", get(read))
        .with_state(Arc::new(dir))
}

fn failure(status: StatusCode, error: String) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

async fn list(State(dir): State<Arc<PathBuf>>) -> Response {
    let entries = match std::fs::read_dir(&*dir) {
        Ok(entries) => entries,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot list {}: {e}", dir.display())),
    };
    let mut files: Vec<LogFile> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok().filter(|f| f.ends_with(".log"))?;
            Some(LogFile { file, size: e.metadata().ok()?.len() })
        })
        .collect();
    files.sort_by(|a, b| a.file.cmp(&b.file));
    Json(files).into_response()
}

async fn read(State(dir): State<Arc<PathBuf>>, Path(file): Path<String>, Query(range): Query<Range>) -> Response {
    // Only a worker log of this directory: no path, no other file.
    let plain = !file.is_empty() && file.ends_with(".log") && !file.starts_with('.');
    if !plain || file.contains(['/', '\\']) || file.contains("..") {
        return failure(
            StatusCode::BAD_REQUEST,
            format!("`{file}` is not a worker log name (`<topology>-<port>.log`)"),
        );
    }
    let path = dir.join(&file);
    let outcome = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, u64, Vec<u8>)> {
        let mut log = std::fs::File::open(&path)?;
        let size = log.metadata()?.len();
        let start = range.start.unwrap_or(size.saturating_sub(range.tail.unwrap_or(TAIL))).min(size);
        let length = range.length.unwrap_or(MAX_LENGTH).min(MAX_LENGTH).min(size - start);
        log.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::with_capacity(length as usize);
        log.take(length).read_to_end(&mut bytes)?;
        Ok((start, size, bytes))
    })
    .await;
    match outcome {
        Ok(Ok((start, size, bytes))) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (HeaderName::from_static("x-log-start"), start.to_string()),
                (HeaderName::from_static("x-log-size"), size.to_string()),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            failure(StatusCode::NOT_FOUND, format!("no worker log `{file}` on this supervisor"))
        }
        Ok(Err(e)) => failure(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read `{file}`: {e}")),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read `{file}`: {e}")),
    }
}

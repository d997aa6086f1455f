//! Errors of the mailbox API. The JSON shape (`{"error": "..."}` naming the field
//! or object at fault) and the extractors whose rejections use it are shared with
//! `outbound web` (`http_serve`); what is the mailbox API's own is how a store
//! failure reads.

pub use http_serve::{ApiError, ApiPath, ApiQuery, ApiResult};

use crate::store::read::ReadError;

impl From<ReadError> for ApiError {
    /// 503: the store failed; the client may retry. The cause goes to the log.
    fn from(e: ReadError) -> Self {
        Self::unavailable(&e)
    }
}

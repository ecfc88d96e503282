//! Paginated listings: the page parameters (`limit`, `cursor`) and filling a page from
//! the engine in bounded steps. Shared by the vehicle list and the MDS views.

use fleet_rules::{PageCursor, VehicleFilter, VehicleView};

use super::params::Params;
use super::ApiError;
use crate::engine::EngineHandle;

/// Default and largest page size.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;
/// Engine requests one listing may make to fill a page (each looks at up to
/// `PAGE_SCAN_BUDGET` vehicles, and other work runs in between).
const MAX_CALLS_PER_PAGE: usize = 20;

/// Up to `limit` matching vehicles from `cursor`, asking the engine a few times when few
/// vehicles match; the cursor to go on from, if any.
pub(super) async fn collect_page(
    engine: &EngineHandle,
    filter: &VehicleFilter,
    mut cursor: PageCursor,
    limit: usize,
) -> Result<(Vec<VehicleView>, Option<PageCursor>), ApiError> {
    let mut vehicles = Vec::new();
    for _ in 0..MAX_CALLS_PER_PAGE {
        let page = engine
            .vehicles_page(filter.clone(), cursor, limit - vehicles.len())
            .await?;
        vehicles.extend(page.vehicles);
        match page.next {
            Some(next) if vehicles.len() < limit => cursor = next,
            next => return Ok((vehicles, next)),
        }
    }
    Ok((vehicles, Some(cursor)))
}

/// The `limit` and `cursor` of a listing request.
pub(super) fn page_params(p: &Params) -> Result<(PageCursor, usize), ApiError> {
    let limit = p.integer("limit", 1..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT) as usize;
    let cursor = match p.get("cursor") {
        None => PageCursor::default(),
        Some(token) => PageCursor::from_token(token).ok_or_else(|| {
            ApiError::bad_request(
                "bad_cursor",
                format!("cursor={token:?} is not one this API returned: start without a cursor"),
            )
        })?,
    };
    Ok((cursor, limit))
}

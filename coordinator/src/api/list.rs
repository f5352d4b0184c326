//! Pagination for every list: `?limit=&offset=` (default 50, at most 1000) and the body
//! `{"data": [...], "total": N, "limit": L, "offset": O}`.

use serde::Serialize;
use serde_json::Value;

use super::{ApiError, ApiRequest};

/// Default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;

/// A page body of typed items: `{"data": [...], "total": N, "limit": L, "offset": O}`.
#[derive(Debug, Serialize)]
pub struct TypedPage<'a, T> {
    pub data: &'a [T],
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A requested page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub offset: usize,
}

impl Page {
    /// Reads `limit` and `offset`; out-of-range values are a 422 naming the field.
    pub fn from_request(request: &ApiRequest) -> Result<Page, ApiError> {
        let limit = request
            .number_field::<i64>("limit")?
            .unwrap_or(DEFAULT_LIMIT as i64);
        let offset = request.number_field::<i64>("offset")?.unwrap_or(0);
        if !(1..=MAX_LIMIT as i64).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        if offset < 0 {
            return Err(ApiError::invalid_field("offset", "must not be negative"));
        }
        Ok(Page {
            limit: limit as usize,
            offset: offset as usize,
        })
    }

    /// The body for a page cut from a full list.
    pub fn slice<T: Serialize>(&self, items: &[T]) -> Value {
        let page: Vec<&T> = items.iter().skip(self.offset).take(self.limit).collect();
        self.body(&page, items.len())
    }

    /// The same body as [`Page::body`], serialised straight from the items, with no JSON value
    /// built in between (for long pages of typed records, such as tasks).
    pub fn typed<'a, T: Serialize>(&self, data: &'a [T], total: usize) -> TypedPage<'a, T> {
        TypedPage {
            data,
            total,
            limit: self.limit,
            offset: self.offset,
        }
    }

    /// The body for a page already cut, given the total.
    pub fn body<T: Serialize>(&self, data: &[T], total: usize) -> Value {
        serde_json::to_value(self.typed(data, total)).unwrap_or(Value::Null)
    }
}

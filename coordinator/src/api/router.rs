//! The route table: method, path pattern, who may call, handler. Patterns use `{name}` for a
//! path parameter; the table is the single list that dispatch and the OpenAPI document use.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::Method;

use super::{ApiRequest, ApiResult};
use crate::App;

/// Who may call a route. Finer checks (ownership of an instance) are in `crate::auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials needed.
    Public,
    /// Any valid credential.
    Authenticated,
    /// Admins only.
    Admin,
    /// The metrics token as a Bearer credential when one is configured, else none; it is not
    /// a user's credential, and the dispatcher checks it with the others.
    MetricsToken,
}

/// A handler: a plain function returning a boxed future.
pub type Handler = fn(Arc<App>, ApiRequest) -> BoxFuture<'static, ApiResult>;

/// One route.
#[derive(Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: Handler,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// The route's tag (resource) in the OpenAPI document.
    pub tag: &'static str,
    /// Whether a call writes an audit record: every method but GET and HEAD, unless the route
    /// is marked as changing nothing (a diagnostic such as the agent ping).
    pub audited: bool,
}

impl Route {
    /// Marks a POST that reads or measures and changes nothing, so it is not audited.
    pub fn changes_nothing(&mut self) {
        self.audited = false;
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.method, self.path)
    }
}

/// The outcome of looking a request up.
pub enum Found<'a> {
    Route(&'a Route, Vec<String>),
    /// The path exists with other methods; the text is the `Allow` header.
    WrongMethod(String),
    Nothing,
}

/// Every route of the API.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut pattern_parts = pattern.trim_end_matches('/').split('/');
    let mut path_parts = path.trim_end_matches('/').split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(params),
            (Some(expected), Some(actual)) => {
                if expected.starts_with('{') && expected.ends_with('}') {
                    if actual.is_empty() {
                        return None;
                    }
                    let decoded = percent_decode(actual)?;
                    params.push(decoded);
                } else if expected != actual {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Adds a route.
    pub fn add(
        &mut self,
        method: Method,
        path: &'static str,
        access: Access,
        tag: &'static str,
        summary: &'static str,
        handler: Handler,
    ) -> &mut Route {
        let audited = !matches!(method, Method::GET | Method::HEAD);
        self.routes.push(Route {
            method,
            path,
            access,
            handler,
            summary,
            tag,
            audited,
        });
        self.routes.last_mut().expect("a route was just added")
    }

    /// Every route, in the order added.
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// Looks a request up. A `HEAD` is answered by the `GET` route.
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            if let Some(params) = matches(route.path, path) {
                if route.method == *method
                    || (*method == Method::HEAD && route.method == Method::GET)
                {
                    return Found::Route(route, params);
                }
                if !allowed.contains(&route.method.as_str()) {
                    allowed.push(route.method.as_str());
                }
            }
        }
        if allowed.is_empty() {
            Found::Nothing
        } else {
            Found::WrongMethod(allowed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_parameters() {
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("/api/v1/user", "/api/v1/user", Some(&[])),
            ("/api/v1/user", "/api/v1/user/", Some(&[])),
            ("/api/v1/user/{id}", "/api/v1/user/42", Some(&["42"])),
            ("/api/v1/user/{id}", "/api/v1/user/", None),
            ("/api/v1/user/{id}", "/api/v1/user/a%20b", Some(&["a b"])),
            ("/api/v1/user/{id}", "/api/v1/user/%zz", None),
            ("/a/{x}/b/{y}", "/a/1/b/2", Some(&["1", "2"])),
            ("/a/{x}/b/{y}", "/a/1/c/2", None),
            ("/a", "/a/b", None),
        ];
        for (pattern, path, expected) in cases {
            let found = matches(pattern, path);
            let expected = expected.map(|params| params.iter().map(|p| p.to_string()).collect());
            assert_eq!(found, expected, "{pattern} against {path}");
        }
    }
}

//! A request as handlers see it: path parameters, query, headers, the body parsed as JSON, the
//! peer and the authenticated principal. The credentials it carried are taken out by the
//! dispatcher before any handler runs ([`ApiRequest::take_credentials`]).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;
use crate::auth::{PresentedCredentials, Principal};

/// The headers that carry a credential.
const CREDENTIAL_HEADERS: [&str; 2] = ["x-api-key", "authorization"];
/// The parameters that carry a ticket in the original panel's form, in the query or at the top
/// level of a JSON body.
const CREDENTIAL_FIELDS: [&str; 2] = ["userid", "ticket"];

/// An API request after routing.
#[derive(Debug)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    /// Path parameters in the order the route pattern names them.
    pub params: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub remote: Option<SocketAddr>,
    /// Set by the dispatcher for routes that need a caller.
    pub principal: Option<Principal>,
    /// The body parsed as JSON once, when it is JSON.
    json: Option<Result<Value, String>>,
}

impl ApiRequest {
    pub fn new(
        method: Method,
        path: String,
        query: &str,
        headers: HeaderMap,
        body: Bytes,
        remote: Option<SocketAddr>,
    ) -> ApiRequest {
        let query = serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default();
        let json = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(serde_json::from_slice::<Value>(&body).map_err(|error| error.to_string()))
        };
        ApiRequest {
            method,
            path,
            params: Vec::new(),
            query,
            headers,
            remote,
            principal: None,
            json,
        }
    }

    /// Takes the credentials out of the request: the `x-api-key` and `Authorization` headers,
    /// and the `userid` and `ticket` parameters from the query and the top level of a JSON
    /// body. What is left is all a handler can read, so no handler reads a credential and no
    /// handler refuses these fields as unknown.
    pub fn take_credentials(&mut self) -> PresentedCredentials {
        let mut header = |name: &str| {
            let value = self
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            self.headers.remove(name);
            value
        };
        let api_key = header(CREDENTIAL_HEADERS[0]);
        let authorization = header(CREDENTIAL_HEADERS[1]);
        // A malformed body simply carries none.
        let [userid, ticket] = CREDENTIAL_FIELDS.map(|name| self.field(name).ok().flatten());
        self.query
            .retain(|(name, _)| !CREDENTIAL_FIELDS.contains(&name.as_str()));
        if let Some(Ok(Value::Object(object))) = &mut self.json {
            for name in CREDENTIAL_FIELDS {
                object.remove(name);
            }
        }
        PresentedCredentials {
            api_key,
            authorization,
            ticket,
            userid,
        }
    }

    /// The path parameter at `index` (0-based, in pattern order).
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map(String::as_str).unwrap_or("")
    }

    /// The authenticated caller; routes with [`super::Access::Public`] have none.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("credentials are required"))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as JSON, or `None` when there is no body; malformed JSON is a 400.
    pub fn json_body(&self) -> Result<Option<&Value>, ApiError> {
        match &self.json {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(reason)) => Err(ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {reason}"),
            )),
        }
    }

    /// A scalar parameter from the query string, else from the top level of a JSON body
    /// (the original panel sends GET parameters as a JSON body).
    pub fn field(&self, name: &str) -> Result<Option<String>, ApiError> {
        if let Some((_, value)) = self.query.iter().find(|(key, _)| key == name) {
            return Ok(Some(value.clone()));
        }
        Ok(match self.json_body()?.and_then(|body| body.get(name)) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(Value::Bool(flag)) => Some(flag.to_string()),
            _ => None,
        })
    }

    /// A numeric parameter, with a 400 naming it when it is not a number.
    pub fn number_field<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.field(name)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("parameter {name} must be a number, got {text:?}"))
            }),
        }
    }

    /// The input of a mutating call as a typed value: the JSON body, or the query string when
    /// there is no body. Wrong types are a 400, as the API contract says.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let value = match self.json_body()? {
            Some(value) => value.clone(),
            None => {
                let mut object = serde_json::Map::new();
                for (key, value) in &self.query {
                    object.insert(key.clone(), Value::String(value.clone()));
                }
                Value::Object(object)
            }
        };
        serde_json::from_value(value).map_err(|error| {
            ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "bad_input",
                format!("the input does not have the expected shape: {error}"),
            )
        })
    }
}

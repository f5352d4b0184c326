//! A request as handlers see it: path parameters, query, headers, the body parsed as JSON, the
//! peer and the authenticated principal. The credentials it carried are taken out by the
//! dispatcher before any handler runs ([`ApiRequest::take_credentials`]).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::de::{DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::ApiError;
use crate::auth::{PresentedCredentials, Principal};

/// The headers that carry a credential.
const CREDENTIAL_HEADERS: [&str; 2] = ["x-api-key", "authorization"];
/// The parameters that carry a ticket in the original panel's form, in the query or at the top
/// level of a JSON body.
const CREDENTIAL_FIELDS: [&str; 2] = ["userid", "ticket"];

/// Parses a JSON body, refusing an object that names a key twice: serde_json's `Value` keeps
/// the last, while a proxy or firewall in front may have judged the first.
pub fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<UniqueKeys>(body)
        .map(|parsed| parsed.0)
        .map_err(|error| error.to_string())
}

/// A JSON value read with every object's keys checked for repeats.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UniqueKeys, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(UniqueKeys(value)) = items.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            let UniqueKeys(value) = entries.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears more than once"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

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
            Some(parse_json(&body))
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

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not a trusted proxy itself. A client can put
    /// anything in that header, so it is believed only from the proxies.
    pub fn client_address(&self, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
        let peer = self.remote?.ip();
        if !trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let mut forwarded = self
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        forwarded.reverse();
        for hop in forwarded {
            match hop.parse::<IpAddr>() {
                Ok(address) if trusted_proxies.contains(&address) => continue,
                Ok(address) => return Some(address),
                // An unreadable hop ends what can be believed; the proxy is the client then.
                Err(_) => break,
            }
        }
        Some(peer)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let request = |peer: &str, forwarded: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(forwarded) = forwarded {
                headers.insert("x-forwarded-for", forwarded.parse().unwrap());
            }
            ApiRequest::new(
                Method::POST,
                "/".into(),
                "",
                headers,
                Bytes::new(),
                Some(SocketAddr::new(peer.parse().unwrap(), 1)),
            )
        };
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("10.0.0.1", Some("198.51.100.7"), "198.51.100.7"),
            (
                "10.0.0.1",
                Some("203.0.113.9, 198.51.100.7"),
                "198.51.100.7",
            ),
            ("10.0.0.1", Some("198.51.100.7, 10.0.0.1"), "198.51.100.7"),
            ("10.0.0.1", Some("garbage"), "10.0.0.1"),
            ("10.0.0.1", None, "10.0.0.1"),
            ("192.0.2.5", Some("198.51.100.7"), "192.0.2.5"),
        ];
        for (peer, forwarded, expected) in cases {
            let found = request(peer, *forwarded).client_address(&[proxy]);
            assert_eq!(
                found,
                Some(expected.parse().unwrap()),
                "{peer} {forwarded:?}"
            );
        }
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        let cases: &[(&str, bool)] = &[
            (r#"{"a": 1, "b": 2}"#, true),
            (r#"{"a": 1, "a": 2}"#, false),
            (r#"{"outer": [{"x": 1, "x": 1}]}"#, false),
            (r#"{"outer": {"x": {"y": null, "y": true}}}"#, false),
            (r#"[1, "two", 3.5, null, {"a": {"a": 1}}]"#, true),
            (r#"{"a": 1} trailing"#, false),
        ];
        for (text, accepted) in cases {
            assert_eq!(parse_json(text.as_bytes()).is_ok(), *accepted, "{text}");
        }
        let parsed = parse_json(br#"{"n": 18446744073709551615, "f": -1.5}"#).unwrap();
        assert_eq!(parsed["n"], serde_json::json!(u64::MAX));
        assert_eq!(parsed["f"], serde_json::json!(-1.5));
    }
}

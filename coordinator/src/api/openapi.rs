//! The OpenAPI document, generated from the route table so it cannot miss a route.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApiBuilder, PathItem, Paths, Required};

use super::{Access, RouteTable};

fn method(method: &http::Method) -> Option<HttpMethod> {
    Some(match *method {
        http::Method::GET => HttpMethod::Get,
        http::Method::POST => HttpMethod::Post,
        http::Method::PUT => HttpMethod::Put,
        http::Method::DELETE => HttpMethod::Delete,
        http::Method::PATCH => HttpMethod::Patch,
        _ => return None,
    })
}

fn parameters(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|part| {
            part.strip_prefix('{')
                .and_then(|part| part.strip_suffix('}'))
        })
        .map(str::to_string)
        .collect()
}

/// The document as JSON. Methods OpenAPI cannot name (`REPORT`, which the Proxmox-wrapper
/// dialect uses) are listed under the path item's `x-other-methods` extension.
pub fn document(routes: &RouteTable) -> Value {
    let mut paths = Paths::new();
    let mut other_methods: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for route in routes.all() {
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .tag(route.tag)
            .operation_id(Some(format!(
                "{}_{}",
                route.method.as_str().to_ascii_lowercase(),
                route
                    .path
                    .trim_start_matches('/')
                    .replace(['/', '{', '}', '.'], "_")
            )));
        for name in parameters(route.path) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            );
        }
        operation =
            operation.response("200", ResponseBuilder::new().description("success").build());
        if route.access != Access::Public {
            operation = operation
                .response(
                    "401",
                    ResponseBuilder::new()
                        .description("no valid credential")
                        .build(),
                )
                .response(
                    "403",
                    ResponseBuilder::new().description("not allowed").build(),
                );
        }
        operation = operation.response(
            "default",
            ResponseBuilder::new()
                .description("an error: {\"error\": {code, message, details}}")
                .build(),
        );
        match method(&route.method) {
            Some(http_method) => {
                paths.add_path_operation(route.path, vec![http_method], operation.build())
            }
            None => other_methods
                .entry(route.path.to_string())
                .or_default()
                .push(json!({
                    "method": route.method.as_str(),
                    "summary": route.summary,
                })),
        }
        if !paths.paths.contains_key(route.path) {
            paths
                .paths
                .insert(route.path.to_string(), PathItem::default());
        }
    }
    let components = ComponentsBuilder::new()
        .security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        )
        .security_scheme(
            "ticket",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    let document = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Hostplane")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("The Hostplane coordinator's public REST API."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build();
    let mut value = serde_json::to_value(&document).unwrap_or(Value::Null);
    for (path, methods) in other_methods {
        if let Some(item) = value.pointer_mut(&format!(
            "/paths/{}",
            path.replace('~', "~0").replace('/', "~1")
        )) {
            item["x-other-methods"] = Value::Array(methods);
        }
    }
    value
}

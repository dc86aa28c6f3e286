//! The API's description: OpenAPI 3.1 at `/openapi.json`, generated at build time by utoipa from
//! the `#[utoipa::path]` annotation on every handler and the shapes they name (the typed answers,
//! such as [`crate::wire::Job`], and the request bodies of [`super::schemas`]), and an
//! interactive reference at `/docs`
//! (Swagger UI, its files embedded in the binary: nothing from a CDN). This file is the document
//! alone: its parts, its security schemes, and the error rows shared by every route of a kind.

use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Adds the three ways in: an API key in `X-Api-Key` (or `Authorization: Bearer`), and the admin
/// token in `X-Admin-Token` for `/v1/admin/*`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "An API key (`clearbg keys create`)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("The same API key")).build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Token",
                "CLEARBG_ADMIN_TOKEN (admin routes are off, 403, when it is unset)",
            ))),
        );
    }
}

/// The whole description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clearbg",
        description = "Self-hosted video background removal, speaking the RemoveBGVideo REST API. Every error is `{\"error\":{\"code\",\"message\",\"request_id\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::uploads::create,
        super::jobs::create,
        super::jobs::list,
        super::jobs::get,
        super::jobs::start,
        super::jobs::cancel,
        super::jobs::events,
        super::usage::summary,
        super::usage::events,
        super::admin::list,
        super::admin::create,
        super::admin::disable,
        super::admin::enable,
        super::admin::credits,
        super::admin::ledger,
        super::admin::config,
        super::legacy::upload,
        super::legacy::process,
        super::legacy::download,
        super::meta::pricing,
        super::meta::health,
        super::files::serve,
        super::web::metrics,
        super::web::openapi_json,
        super::web::docs,
        super::web::docs_index,
        super::web::docs_file,
        super::web::index,
        super::web::asset,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "uploads", description = "Videos in"),
        (name = "jobs", description = "Background removal jobs"),
        (name = "usage", description = "What a key's jobs did and cost"),
        (name = "admin", description = "Keys and credits, with X-Admin-Token"),
        (name = "legacy", description = "The key-less /api routes kept for old integrations"),
        (name = "files", description = "Signed downloads"),
        (name = "operations", description = "Health, metrics, this description, the web app"),
    )
)]
pub struct ApiDoc;

/// The description as served.
pub fn spec() -> Value {
    let mut spec = serde_json::to_value(ApiDoc::openapi()).expect("the description serialises");
    fix_link_keys(&mut spec);
    add_shared_errors(&mut spec);
    spec
}

/// The error answers that every route of a kind gives, written here once instead of on each
/// route: what a keyed route, an admin route, a JSON body and a query string can be refused
/// with. A route that says more about one of these statuses keeps its own row.
fn add_shared_errors(spec: &mut Value) {
    const KEY: [(&str, &str); 2] =
        [("401", "`missing_api_key` or `invalid_api_key`"), ("429", "`rate_limited`: wait `Retry-After` seconds")];
    const ADMIN: [(&str, &str); 3] = [
        ("401", "`missing_admin_token`"),
        ("403", "`forbidden` (wrong token) or `admin_disabled` (CLEARBG_ADMIN_TOKEN unset)"),
        ("429", "`rate_limited`: wait `Retry-After` seconds"),
    ];
    const JSON_BODY: [(&str, &str); 2] = [
        ("413", "`payload_too_large`: a JSON body over 1 MiB"),
        ("422", "`invalid_request`: `details` names every bad field"),
    ];
    const QUERY: [(&str, &str); 2] = [
        ("400", "`invalid_request`: a query string that cannot be read"),
        ("422", "`invalid_request`: `details` names every bad field"),
    ];
    let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for op in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
        let schemes: Vec<String> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|requirement| requirement.keys().cloned())
            .collect();
        let mut rows: Vec<(&str, &str)> = Vec::new();
        if schemes.iter().any(|s| s == "api_key") {
            rows.extend(KEY);
        }
        if schemes.iter().any(|s| s == "admin_token") {
            rows.extend(ADMIN);
        }
        if op["requestBody"]["content"].get("application/json").is_some() {
            rows.extend(JSON_BODY);
        }
        // Any query string may be unreadable; only the API's own name their bad values (a signed
        // link's are checked, not explained).
        let has_query = op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if has_query {
            rows.push(QUERY[0]);
            if !schemes.is_empty() {
                rows.push(QUERY[1]);
            }
        }
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { continue };
        for (status, description) in rows {
            responses.entry(status).or_insert_with(|| {
                serde_json::json!({
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                })
            });
        }
    }
}

/// utoipa 5.5 serialises a Link object's fields in snake case (`operation_id`), which OpenAPI
/// does not know, so tools see links with no target: rename them to the specification's names.
fn fix_link_keys(spec: &mut Value) {
    let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) else { return };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (from, to) in
            [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")]
        {
            if let Some(v) = link.remove(from) {
                link.insert(to.to_string(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The rows written once reach every route of their kind, and a route's own row wins.
    #[test]
    fn shared_error_rows_reach_their_routes() {
        let spec = super::spec();
        let statuses = |path: &str, method: &str| -> Vec<String> {
            spec["paths"][path][method]["responses"].as_object().unwrap().keys().cloned().collect()
        };
        for status in ["401", "413", "422", "429"] {
            assert!(statuses("/v1/jobs", "post").contains(&status.to_string()), "POST /v1/jobs lacks {status}");
        }
        for status in ["400", "401", "422", "429"] {
            assert!(statuses("/v1/jobs", "get").contains(&status.to_string()), "GET /v1/jobs lacks {status}");
        }
        assert!(statuses("/v1/admin/keys", "get").contains(&"403".to_string()));
        assert!(statuses("/files/{key}", "get").contains(&"400".to_string()), "an unreadable query string");
        assert!(!statuses("/files/{key}", "get").contains(&"422".to_string()), "a signed link has no 422");
        let own = &spec["paths"]["/api/upload"]["post"]["responses"]["429"]["description"];
        assert!(own.as_str().unwrap().contains("from this address"), "{own}");
    }

    /// Every route in [`super::super::router`] is in the description with the same methods, and
    /// the description has no route the router lacks: a new route cannot ship undocumented.
    /// The routes are read from the router's source, the one list there is (the worker's ops
    /// router repeats two of them, hence a set).
    #[test]
    fn every_route_is_described_and_nothing_else() {
        let spec = serde_json::to_value(super::spec()).unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1."), "{}", spec["openapi"]);
        let source = include_str!("mod.rs");
        let mut served = std::collections::BTreeSet::new();
        for part in source.split(".route(\"").skip(1) {
            let (path, rest) = part.split_once('"').unwrap();
            let call = &rest[..rest.find('\n').unwrap()];
            let path = path.replace("{*", "{");
            for method in ["get", "post", "put", "patch", "delete"] {
                if call.contains(&format!(" {method}(")) || call.contains(&format!(".{method}(")) {
                    served.insert((path.clone(), method));
                }
            }
        }
        assert!(served.len() > 25, "the router's routes were not found: {served:?}");
        for (path, method) in &served {
            let op = &spec["paths"][path][method];
            assert!(op.is_object(), "{} {path} is served but not described", method.to_uppercase());
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has no responses");
        }
        let described: usize = spec["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(described, served.len(), "the description has operations the router does not serve");
    }

    /// Links name their target with the specification's `operationId`, and the target exists.
    #[test]
    fn links_point_at_real_operations() {
        let spec = super::spec();
        let ids: Vec<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let links = spec["paths"]["/v1/jobs"]["post"]["responses"]["200"]["links"].as_object().unwrap();
        assert!(links.len() >= 4, "{links:?}");
        for (name, link) in links {
            let target = link["operationId"].as_str().unwrap_or_else(|| panic!("{name}: {link}"));
            assert!(ids.contains(&target), "{name} points at {target}, which is not an operation");
            assert!(link.get("operation_id").is_none(), "{link}");
        }
    }

    /// Every error answer points at the one error shape, and keyed routes name their schemes.
    #[test]
    fn errors_share_one_schema_and_security_is_declared() {
        let spec = serde_json::to_value(super::spec()).unwrap();
        let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
        assert!(["api_key", "bearer", "admin_token"].iter().all(|s| schemes.contains_key(*s)), "{schemes:?}");
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let code: u16 = status.parse().unwrap();
                    if (400..600).contains(&code) && code != 503 {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {status}");
                    }
                }
                if path.starts_with("/v1/") {
                    assert!(op["security"].is_array(), "{method} {path} declares no security");
                }
            }
        }
    }
}

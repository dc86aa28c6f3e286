//! The service's own pages: the web app at `/` (its files under `/app/`), the API description at
//! `/openapi.json` with its interactive reference at `/docs`, and `/metrics`.
//!
//! The web app is plain HTML, CSS and JavaScript modules, written by hand and embedded in the
//! binary with `include_str!`: no bundler, no build step, and nothing loaded from elsewhere (its
//! Content-Security-Policy only allows this origin's scripts and styles). It talks to the public
//! API like any client, with the key the user pastes (kept in the browser's localStorage).

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use crate::error::{ApiError, Code};
use crate::App;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("../../web/index.html") };

const ASSETS: [Asset; 3] = [
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../../web/app.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../../web/app.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_str!("../../web/icon.svg") },
];

/// Scripts and styles from this origin only; pictures and videos may come from the signed links
/// of `CLEARBG_PUBLIC_URL`, which need not be the address the page was opened at.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; \
                   media-src 'self' blob: http: https:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// A strong validator per file: the browser revalidates (`no-cache`) and gets a 304 while the
/// binary is the same, and the new file the moment it changes, without fingerprinted names.
fn etag(asset: &Asset) -> String {
    format!("\"{}\"", &hex::encode(sha2::Sha256::digest(asset.body.as_bytes()))[..32])
}

fn serve_asset(asset: &Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset);
    let cache = [(header::CACHE_CONTROL, "no-cache"), (header::ETAG, tag.as_str())];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let mut response = (cache, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response();
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.name == "index.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    response
}

/// `GET /`: the web app.
#[utoipa::path(get, path = "/", tag = "operations", operation_id = "web_app", summary = "The web app",
    responses((status = 200, description = "The web app's page", content_type = "text/html"),
              (status = 304, description = "Not modified (If-None-Match)")))]
pub async fn index(headers: HeaderMap) -> Response {
    serve_asset(&INDEX, &headers)
}

/// `GET /app/{file}`: the web app's script, styles and icon.
#[utoipa::path(get, path = "/app/{file}", tag = "operations", operation_id = "web_app_asset", summary = "The web app's files",
    params(("file" = String, Path, description = "`app.js`, `app.css` or `icon.svg`")),
    responses((status = 200, description = "The file", content_type = "*/*"),
              (status = 304, description = "Not modified (If-None-Match)"),
              (status = 404, description = "No such file", body = crate::error::ErrorBody)))]
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == file)
        .ok_or_else(|| ApiError::new(Code::NotFound, "No such file in the web app"))?;
    Ok(serve_asset(asset, &headers))
}

/// `GET /openapi.json`: the OpenAPI 3.1 description, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi", summary = "This description",
    responses((status = 200, description = "This description (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    static SPEC: OnceLock<String> = OnceLock::new();
    let body = SPEC.get_or_init(|| super::openapi::spec().to_string());
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // The validator badge would send the description to validator.swagger.io: off.
            Arc::new(
                utoipa_swagger_ui::Config::new(["/openapi.json"])
                    .validator_url("none")
                    .try_it_out_enabled(true)
                    .persist_authorization(true),
            )
        })
        .clone()
}

/// `GET /docs`: the interactive reference (Swagger UI), reading `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "operations", operation_id = "docs", summary = "The interactive API reference",
    responses((status = 200, description = "Swagger UI, served from files embedded in the binary", content_type = "text/html")))]
pub async fn docs() -> Response {
    swagger("")
}

/// `GET /docs/`: the interactive reference (Swagger UI).
#[utoipa::path(get, path = "/docs/", tag = "operations", operation_id = "docs_page", summary = "The interactive API reference",
    responses((status = 200, description = "The same page as /docs", content_type = "text/html")))]
pub async fn docs_index() -> Response {
    swagger("")
}

/// `GET /docs/{*file}`: Swagger UI's files, embedded at build time.
#[utoipa::path(get, path = "/docs/{file}", tag = "operations", operation_id = "docs_file", summary = "The reference's files",
    params(("file" = String, Path, description = "A Swagger UI file (`swagger-ui.css`, `swagger-ui-bundle.js`, …)")),
    responses((status = 200, description = "The file", content_type = "*/*"),
              (status = 404, description = "No such file", body = crate::error::ErrorBody)))]
pub async fn docs_file(Path(file): Path<String>) -> Response {
    swagger(&file)
}

/// One Swagger UI file. The page names its files relatively (`./swagger-ui.css`): a `<base>`
/// makes them resolve under `/docs/` whether the page was opened as `/docs` or `/docs/`.
fn swagger(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, swagger_config()) {
        Ok(Some(found)) => {
            let mut bytes = found.bytes.into_owned();
            if found.content_type.starts_with("text/html") {
                bytes = String::from_utf8_lossy(&bytes)
                    .replacen("<head>", "<head>\n  <base href=\"/docs/\">", 1)
                    .into_bytes();
            }
            ([(header::CONTENT_TYPE, found.content_type), (header::CACHE_CONTROL, "no-cache".to_string())], bytes)
                .into_response()
        }
        Ok(None) => ApiError::new(Code::NotFound, "No such file in the API reference").into_response(),
        Err(e) => ApiError::internal("serving the API reference", e).into_response(),
    }
}

/// `GET /metrics`: Prometheus text format (see [`crate::metrics`]).
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", summary = "Prometheus metrics",
    responses((status = 200, description = "Every series, Prometheus text format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(app): State<App>) -> Response {
    crate::metrics::scrape(State(app)).await
}

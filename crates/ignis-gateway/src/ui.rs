//! The web dashboard at `/ui`: three static files embedded in the binary (no build step, no
//! external assets), a single page that calls the REST API with the API key the user logs in
//! with. Serving them needs no key; every call the page makes does.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");

/// Headers of every dashboard file: no framing by other sites, nothing loaded from elsewhere.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui` and `GET /ui/`: the page.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/{file}`: the page's script and style sheet.
pub async fn file(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(page("text/javascript; charset=utf-8", APP_JS)),
        "style.css" => Ok(page("text/css; charset=utf-8", STYLE_CSS)),
        "index.html" => Ok(page("text/html; charset=utf-8", INDEX_HTML)),
        other => Err(ApiError::not_found(format!("no dashboard file {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [super::INDEX_HTML, super::APP_JS, super::STYLE_CSS] {
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn")
            );
        }
        assert!(super::INDEX_HTML.contains("/ui/app.js"));
    }
}

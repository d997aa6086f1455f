//! `GET /inbox/{address}`: a small page that lists the mailbox, shows a message
//! and updates live, with its script and style served from here.
//!
//! Owns: the page's security headers. The page is one constant (no user data
//! templated into HTML); the script is external (`script-src
//! 'self'`, no inline script at all); everything user-controlled reaches the DOM
//! through `textContent`, and message HTML (already sanitised by ammonia) only
//! inside `<iframe sandbox srcdoc>` (no `allow-scripts`, no `allow-same-origin`),
//! which inherits this page's CSP: `img-src 'self' data:` keeps remote images out
//! unless the reader asked (`?images=1`).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::access::Access;
use super::api::mailbox;
use super::error::{ApiPath, ApiQuery, ApiResult};

const SCRIPT: &str = include_str!("inbox.js");
const STYLE: &str = include_str!("inbox.css");

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    images: Option<String>,
}

fn csp(images: bool) -> String {
    let img = if images {
        "'self' data: https: http:"
    } else {
        "'self' data:"
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src {img}; frame-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The page is the same for every mailbox: no user data is ever templated into
/// HTML; the script reads the address from the URL and shows it as text.
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inbox</title>
<link rel="stylesheet" href="/inbox/app.css">
<script src="/inbox/app.js" defer></script>
</head>
<body>
<header><h1 id="address"></h1><span id="status">connecting…</span>
<a id="images" href="?images=1">show remote images</a></header>
<main>
<ul id="list"></ul>
<section id="view" hidden>
<h2 id="subject"></h2>
<p id="meta"></p>
<ul id="attachments"></ul>
<iframe id="html" sandbox="" title="message" referrerpolicy="no-referrer"></iframe>
<pre id="text"></pre>
<button id="delete" type="button">Delete</button>
</section>
</main>
</body></html>
"#;

pub async fn inbox(
    _access: Access,
    State(state): State<AppState>,
    ApiPath(address): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    // Checked here too: a page for a mailbox that cannot exist is a 404.
    mailbox(&state, &address)?;
    let images = q.images.as_deref() == Some("1");
    let mut r = PAGE.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp(images)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

pub async fn script(_access: Access) -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub async fn style(_access: Access) -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

//! CSRF: every console POST carries its session's token, in the form's hidden
//! `csrf` field or (script uploads) the `X-CSRF-Token` header.
//!
//! Owns: the constant-time comparison ([`matches()`]) and [`Posted`], the extractor
//! every POST handler takes: it requires a session, reads the urlencoded form and
//! refuses a missing or wrong token with 403 before the handler runs, so a handler
//! cannot forget the check. Also the field size limits of forms ([`Posted::text`]).
//! Must not: know any page.
//!
//! `SameSite=Strict` already keeps the cookie off cross-site requests; the token
//! is the second wall (older browsers, same-site subdomains).

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::session::{Console, NoSession};
use crate::web::AppState;

/// The form field that carries the token.
pub const FIELD: &str = "csrf";
/// The header script requests carry it in.
pub const HEADER: &str = "x-csrf-token";
/// Fields a console form may have (campaign lists' checkboxes included).
const MAX_FIELDS: usize = 256;

/// Whether `given` is `expected`, in time independent of where they differ.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.is_empty() || a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a POST was refused before its handler.
pub enum Refused {
    NoSession(NoSession),
    Csrf,
    Form(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::NoSession(n) => n.into_response(),
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "CSRF token missing or wrong: reload the page and try again",
            )
                .into_response(),
            Self::Form(why) => (StatusCode::BAD_REQUEST, why).into_response(),
        }
    }
}

/// A POSTed form whose CSRF token matched its session.
pub struct Posted {
    pub console: Console,
    fields: Vec<(String, String)>,
}

/// A field over its size limit, or missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError(pub String);

impl Posted {
    /// Checks a form already read (for tests and for [`FromRequest`]).
    pub fn check(console: Console, fields: Vec<(String, String)>) -> Result<Self, Refused> {
        if fields.len() > MAX_FIELDS {
            return Err(Refused::Form(format!(
                "form: more than {MAX_FIELDS} fields"
            )));
        }
        let given = fields
            .iter()
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !matches(&console.csrf, given) {
            return Err(Refused::Csrf);
        }
        Ok(Self { console, fields })
    }

    /// Field `name` (trimmed), at most `max_chars` characters; None when absent or
    /// empty.
    pub fn text(&self, name: &str, max_chars: usize) -> Result<Option<String>, FieldError> {
        let Some(v) = self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v) else {
            return Ok(None);
        };
        let v = v.trim();
        if v.chars().count() > max_chars {
            return Err(FieldError(format!(
                "{name}: at most {max_chars} characters"
            )));
        }
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }

    /// A required field.
    pub fn required(&self, name: &str, max_chars: usize) -> Result<String, FieldError> {
        self.text(name, max_chars)?
            .ok_or_else(|| FieldError(format!("{name}: missing")))
    }

    /// Every value of a repeated field (checkboxes) that reads as an id.
    pub fn ids(&self, name: &str) -> Vec<i64> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .filter_map(|(_, v)| v.trim().parse().ok())
            .collect()
    }
}

impl FromRequest<AppState> for Posted {
    type Rejection = Refused;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let console = Console::from_request_parts(&mut parts, state)
            .await
            .map_err(Refused::NoSession)?;
        let req = Request::from_parts(parts, body);
        let Form(fields) = Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map_err(|e| Refused::Form(format!("form: {}", e.body_text())))?;
        Self::check(console, fields)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::accounts::Account;

    fn console() -> Console {
        Console {
            account: Account {
                id: 1,
                name: "ann".into(),
                is_admin: false,
            },
            csrf: "t0ken".into(),
            session_id: String::new(),
        }
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("", ""), "no session token never matches");
    }

    #[test]
    fn a_form_without_the_right_token_is_refused() {
        assert!(matches!(
            Posted::check(console(), form(&[("name", "x")])),
            Err(Refused::Csrf)
        ));
        assert!(matches!(
            Posted::check(console(), form(&[("csrf", "wrong")])),
            Err(Refused::Csrf)
        ));
        let ok = Posted::check(
            console(),
            form(&[("csrf", "t0ken"), ("name", " x "), ("l", "3"), ("l", "4")]),
        )
        .ok()
        .unwrap();
        assert_eq!(ok.text("name", 5).unwrap().as_deref(), Some("x"));
        assert_eq!(ok.ids("l"), vec![3, 4]);
        assert!(ok.text("name", 0).is_err());
        assert!(ok.required("missing", 5).is_err());
    }
}

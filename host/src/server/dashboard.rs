//! The dashboard: a small static front end (`host/dashboard/`, compiled
//! into the binary, nothing fetched from elsewhere) served under `/ui/`,
//! and the authentication the API shares with it.
//!
//! A browser cannot put a bearer token on a page it navigates to, so the
//! login form (`/ui/login` and its stylesheet, the only things served
//! without the token, and they hold no data) trades the token for a session
//! cookie: `HttpOnly`,
//! `SameSite=Strict`, `Secure` over TLS, its value a digest of the token
//! rather than the token. The cookie then opens `/ui/` and the API alike.
//! A request authenticated by the cookie that changes something must also
//! carry `X-Skillbox-Dashboard: 1`: a page on another site cannot add that
//! header without a CORS preflight, which this server never grants.
//!
//! Every page goes out with a strict Content-Security-Policy (scripts and
//! styles from `/ui/` only, no inline code, nothing framed). The front end
//! builds its DOM with `textContent` only, since summaries, logs, labels
//! and progress messages are written by untrusted skills.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ApiError;
use super::approvals::Via;

const INDEX: &str = include_str!("../../dashboard/index.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const APP_CSS: &str = include_str!("../../dashboard/app.css");
const LOGIN: &str = include_str!("../../dashboard/login.html");
const LOGIN_CSS: &str = include_str!("../../dashboard/login.css");

/// The session cookie's name.
const COOKIE: &str = "skillbox_session";

/// The header a cookie-authenticated request must carry to change anything.
pub const CSRF_HEADER: &str = "x-skillbox-dashboard";

/// The policy every dashboard response carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// How the listener authenticates: its token (none on the Unix socket,
/// whose mode is the check), and whether it speaks TLS (then the cookie is
/// `Secure`).
#[derive(Clone, Debug)]
pub struct Access {
    /// The bearer token every request must carry (or its cookie).
    pub token: Option<String>,
    /// Whether the listener is TLS.
    pub tls: bool,
}

impl Access {
    /// The Unix socket's: no token.
    pub fn open() -> Access {
        Access {
            token: None,
            tls: false,
        }
    }

    /// A TCP listener's with `token`.
    pub fn token(token: impl Into<String>, tls: bool) -> Access {
        Access {
            token: Some(token.into()),
            tls,
        }
    }

    /// The cookie's value for `token`: a digest, so the browser never holds
    /// the token itself.
    fn session(token: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"skillbox dashboard session\n");
        h.update(token.as_bytes());
        hex::encode(h.finalize())
    }
}

/// How a request proved itself.
enum Proof {
    Bearer,
    Cookie,
}

fn proof(headers: &HeaderMap, token: &str) -> Option<Proof> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
        return Some(Proof::Bearer);
    }
    let want = Access::session(token);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|v| constant_time_eq(v.as_bytes(), want.as_bytes()));
    cookie.then_some(Proof::Cookie)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware of a listener with a token: the bearer token or the
/// session cookie, or 401 (the login page for `/ui/`).
pub(super) async fn authenticate(
    State(access): State<Arc<Access>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = access.token.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path == "/ui/login" || path == "/ui/login.css" {
        return next.run(req).await;
    }
    let via = match proof(req.headers(), token) {
        Some(Proof::Bearer) => Via("the API token"),
        Some(Proof::Cookie) => {
            if let Err(refused) = same_site(&req) {
                return refused.into_response();
            }
            Via("a dashboard session")
        }
        None if path == "/ui" || path.starts_with("/ui/") || path == "/" => {
            return page(StatusCode::UNAUTHORIZED, "text/html", login(false));
        }
        None => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            )
            .into_response();
        }
    };
    let mut req = req;
    req.extensions_mut().insert(via);
    next.run(req).await
}

/// A cookie-authenticated request that changes something must come from
/// the dashboard's own pages.
fn same_site(req: &Request) -> Result<(), ApiError> {
    let forbidden = |why: &str| {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site",
            format!(
                "{why}; a request authenticated by the dashboard's cookie must come from its own pages"
            ),
        ))
    };
    let site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return forbidden(&format!("Sec-Fetch-Site is {}", site.unwrap_or("")));
    }
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    let marked = req
        .headers()
        .get(CSRF_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    if !reads && !marked && *req.uri().path() != *"/ui/logout" {
        return forbidden(&format!("{} without {CSRF_HEADER}: 1", req.method()));
    }
    Ok(())
}

/// A dashboard response with its security headers.
fn page(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    let h = r.headers_mut();
    let ct = format!("{content_type}; charset=utf-8");
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).unwrap());
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn login(failed: bool) -> String {
    let error = if failed {
        "<p class=\"error\" role=\"alert\">That token is not the daemon's. Try again.</p>"
    } else {
        ""
    };
    LOGIN.replace("<!--error-->", error)
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response {
    let mut r = page(StatusCode::SEE_OTHER, "text/plain", "");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn sign_in(
    State(access): State<Arc<Access>>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(token) = access.token.as_deref() else {
        // The Unix socket needs no sign-in.
        return redirect("/ui/", None);
    };
    match form {
        Ok(Form(f)) if constant_time_eq(f.token.trim().as_bytes(), token.as_bytes()) => {
            let secure = if access.tls { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
                Access::session(token)
            );
            redirect("/ui/", Some(cookie))
        }
        _ => page(StatusCode::UNAUTHORIZED, "text/html", login(true)),
    }
}

async fn sign_out(State(access): State<Arc<Access>>) -> Response {
    let secure = if access.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}");
    redirect("/ui/login", Some(cookie))
}

/// The dashboard's routes: its pages and the sign-in.
pub(super) fn routes(access: Arc<Access>) -> Router {
    Router::new()
        .route("/", get(|| async { redirect("/ui/", None) }))
        .route("/ui", get(|| async { redirect("/ui/", None) }))
        .route(
            "/ui/",
            get(|| async { page(StatusCode::OK, "text/html", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page(StatusCode::OK, "text/javascript", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page(StatusCode::OK, "text/css", APP_CSS) }),
        )
        .route(
            "/ui/login",
            get(|| async { page(StatusCode::OK, "text/html", login(false)) }).post(sign_in),
        )
        .route(
            "/ui/login.css",
            get(|| async { page(StatusCode::OK, "text/css", LOGIN_CSS) }),
        )
        .route("/ui/logout", post(sign_out))
        .with_state(access)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_is_a_digest_of_the_token_and_proves_it() {
        let token = "0123456789abcdef0123";
        let v = Access::session(token);
        assert!(!v.contains(token));
        let ok = headers(&[("cookie", &format!("a=b; {COOKIE}={v}; c=d"))]);
        assert!(matches!(proof(&ok, token), Some(Proof::Cookie)));
        let other = headers(&[("cookie", &format!("{COOKIE}={}", Access::session("x")))]);
        assert!(proof(&other, token).is_none());
        let raw = headers(&[("cookie", &format!("{COOKIE}={token}"))]);
        assert!(
            proof(&raw, token).is_none(),
            "the token itself is no cookie"
        );
        let bearer = headers(&[("authorization", &format!("Bearer {token}"))]);
        assert!(matches!(proof(&bearer, token), Some(Proof::Bearer)));
        assert!(proof(&HeaderMap::new(), token).is_none());
    }

    #[test]
    fn a_cookie_request_that_changes_something_needs_the_header_and_the_same_site() {
        let req = |method: Method, pairs: &[(&'static str, &str)]| {
            let mut r = Request::builder()
                .method(method)
                .uri("/v1/tasks/X/cancel")
                .body(axum::body::Body::empty())
                .unwrap();
            *r.headers_mut() = headers(pairs);
            r
        };
        assert!(same_site(&req(Method::GET, &[])).is_ok());
        assert!(same_site(&req(Method::POST, &[])).is_err());
        assert!(same_site(&req(Method::POST, &[(CSRF_HEADER, "1")])).is_ok());
        assert!(
            same_site(&req(
                Method::POST,
                &[(CSRF_HEADER, "1"), ("sec-fetch-site", "cross-site")]
            ))
            .is_err()
        );
        assert!(same_site(&req(Method::GET, &[("sec-fetch-site", "same-site")])).is_err());
    }

    #[test]
    fn the_login_page_takes_only_the_fixed_error() {
        assert!(LOGIN.contains("<!--error-->"));
        assert!(login(true).contains("role=\"alert\""));
        assert!(!login(false).contains("role=\"alert\""));
    }
}

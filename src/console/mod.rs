//! `casewatch serve`: the supervision console (SPEC §8) — server-rendered pages over
//! ClickHouse behind a login, Chinese by default with an English switch, a small script for
//! live refresh (pages work without it), assets embedded in the binary.
//!
//! * [`auth`]: passwords, sessions, CSRF tokens, login limits, scopes (pure).
//! * [`pages`]: the handlers and their queries (every parameter bound, every query scoped).
//! * [`actions`]: the supervision loop's forms and actions, produced to the events topic.
//! * `templates/console/*.html`: askama templates, checked at compile time, escaped output.

mod actions;
pub(crate) mod auth;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::config::{Config, ConsoleRole, ConsoleUser};
use auth::{LoginLimiter, Scope, Session, Signer};

const SESSION_COOKIE: &str = "cw_session";
const LOGIN_COOKIE: &str = "cw_login";
const LANG_COOKIE: &str = "cw_lang";

/// The console's shared state.
pub(crate) struct Console {
    cfg: Config,
    /// The centres' calendars, for their timezones (bulletins read the holiday data afresh).
    calendars: crate::core::engine::Calendars,
    client: ::clickhouse::Client,
    /// Produces the supervision actions to the events topic.
    actions: actions::ActionProducer,
    signer: Signer,
    limiter: LoginLimiter,
    /// A hash of a random password: checked when a login names no user, so the answer takes
    /// as long as for a real one.
    dummy_hash: String,
}

/// The language of a page: Chinese unless the user chose English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct T {
    pub(crate) en: bool,
}

impl T {
    /// The text in the page's language.
    pub(crate) fn s<'a>(&self, zh: &'a str, en: &'a str) -> &'a str {
        if self.en {
            en
        } else {
            zh
        }
    }

    fn of(headers: &HeaderMap) -> Self {
        Self {
            en: cookie(headers, LANG_COOKIE).as_deref() == Some("en"),
        }
    }

    fn bulletin_lang(self) -> crate::bulletin::render::Lang {
        if self.en {
            crate::bulletin::render::Lang::En
        } else {
            crate::bulletin::render::Lang::Zh
        }
    }
}

/// A signed-in user on a request.
pub(crate) struct Viewer {
    pub(crate) user: ConsoleUser,
    pub(crate) scope: Scope,
    pub(crate) csrf: String,
    pub(crate) t: T,
}

impl Viewer {
    pub(crate) fn is_window_user(&self) -> bool {
        self.user.role == ConsoleRole::Window
    }
}

/// Why a request is not served.
pub(crate) enum Refusal {
    /// Not signed in (or the session expired): to the login page.
    Login,
    /// A state-changing request without the session's CSRF token.
    Forged(T),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Login => Redirect::to("/login").into_response(),
            Refusal::Forged(t) => forbidden(t),
        }
    }
}

/// The value of a request cookie.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl Console {
    fn set_cookie(&self, name: &str, value: &str, max_age: i64) -> HeaderValue {
        let secure = if self.cfg.console.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The signed-in user of a request, or the redirect to the login page.
    pub(crate) fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, Refusal> {
        let now = chrono::Utc::now().timestamp();
        let session: Option<Session> =
            cookie(headers, SESSION_COOKIE).and_then(|c| self.signer.session(&c, now));
        let found = session.and_then(|s| {
            let user = self.cfg.console.users.iter().find(|u| u.name == s.user)?;
            Some((user.clone(), s))
        });
        match found {
            Some((user, session)) => Ok(Viewer {
                scope: Scope::of(&user),
                csrf: self.signer.csrf(&session),
                user,
                t: T::of(headers),
            }),
            None => Err(Refusal::Login),
        }
    }

    /// The user of a state-changing request: signed in, and carrying the session's CSRF token.
    pub(crate) fn acting_viewer(
        &self,
        headers: &HeaderMap,
        token: &str,
    ) -> Result<Viewer, Refusal> {
        let viewer = self.viewer(headers)?;
        if !Signer::token_matches(&viewer.csrf, token) {
            return Err(Refusal::Forged(viewer.t));
        }
        Ok(viewer)
    }
}

fn forbidden(t: T) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(pages::message_page(
            t,
            t.s(
                "请求无效（缺少或错误的令牌），请返回重试。",
                "Invalid request (missing or wrong token): go back and try again.",
            ),
        )),
    )
        .into_response()
}

/// Security headers on every answer (SPEC §8): no inline script, no framing.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let nonce = auth::random_token();
    let page = pages::login_page(T::of(&headers), &c.signer.login_csrf(&nonce), None);
    let mut response = Html(page).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, c.set_cookie(LOGIN_COOKIE, &nonce, 900));
    response
}

async fn login(
    State(c): State<Arc<Console>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let t = T::of(&headers);
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if nonce.is_empty() || !Signer::token_matches(&c.signer.login_csrf(&nonce), &form.csrf) {
        return forbidden(t);
    }
    let retry = |status: StatusCode, message: &str| {
        let page = pages::login_page(t, &c.signer.login_csrf(&nonce), Some(message));
        (status, Html(page)).into_response()
    };
    let keys = [format!("user:{}", form.name), format!("addr:{}", addr.ip())];
    let now = std::time::Instant::now();
    if c.limiter.blocked(&keys, now) {
        return retry(
            StatusCode::TOO_MANY_REQUESTS,
            t.s(
                "登录失败次数过多，请稍后再试。",
                "Too many failed logins: try again later.",
            ),
        );
    }
    let user = c.cfg.console.users.iter().find(|u| u.name == form.name);
    // A missing user costs a hash check too, so timing does not tell names apart.
    let ok = match user {
        Some(u) => auth::verify_password(&form.password, u.password_hash.expose()),
        None => {
            auth::verify_password(&form.password, &c.dummy_hash);
            false
        }
    };
    if !ok {
        c.limiter.failed(&keys, now);
        tracing::warn!(user = %form.name, address = %addr.ip(), "console: failed login");
        return retry(
            StatusCode::UNAUTHORIZED,
            t.s("用户名或密码错误。", "Wrong user name or password."),
        );
    }
    let hours = c.cfg.console.session_hours.max(1);
    let expires = chrono::Utc::now().timestamp() + (hours * 3600) as i64;
    let mut response = Redirect::to("/").into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        c.set_cookie(
            SESSION_COOKIE,
            &c.signer.session_cookie(&form.name, expires),
            (hours * 3600) as i64,
        ),
    );
    h.append(header::SET_COOKIE, c.set_cookie(LOGIN_COOKIE, "", 0));
    tracing::info!(user = %form.name, "console: login");
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = c.acting_viewer(&headers, &form.csrf) {
        return refused.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, c.set_cookie(SESSION_COOKIE, "", 0));
    response
}

#[derive(Deserialize)]
struct LangQuery {
    lang: String,
}

/// `/lang?lang=en|zh`: remembers the language in a cookie and goes back to the board.
async fn language(
    State(c): State<Arc<Console>>,
    axum::extract::Query(q): axum::extract::Query<LangQuery>,
) -> Response {
    let lang = if q.lang == "en" { "en" } else { "zh" };
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        c.set_cookie(LANG_COOKIE, lang, 365 * 86400),
    );
    response
}

async fn asset_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../assets/console.css"),
    )
        .into_response()
}

async fn asset_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../assets/console.js"),
    )
        .into_response()
}

/// The console's routes over `console`.
pub(crate) fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/case/{id}/action", post(actions::act))
        .route("/lang", get(language))
        .route("/static/console.css", get(asset_css))
        .route("/static/console.js", get(asset_js))
        .merge(pages::routes())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// The console's state for `cfg`; the session key comes from the environment.
pub(crate) fn console(cfg: &Config) -> anyhow::Result<Arc<Console>> {
    let env = &cfg.console.session_key_env;
    let key = std::env::var(env).map_err(|_| {
        anyhow::anyhow!("the console needs a session key of at least 32 bytes in the environment variable {env}")
    })?;
    anyhow::ensure!(
        !cfg.console.users.is_empty(),
        "no [[console.users]] configured: nobody could log in (make a hash with `casewatch console hash-password`)"
    );
    Ok(Arc::new(Console {
        cfg: cfg.clone(),
        calendars: cfg.calendars()?,
        client: crate::sinks::clickhouse::client(&cfg.clickhouse),
        actions: actions::ActionProducer::new(&cfg.kafka)?,
        signer: Signer::new(key.as_bytes())?,
        dummy_hash: auth::hash_password(&auth::random_token())?,
        limiter: LoginLimiter::new(
            cfg.console.login_attempts,
            Duration::from_secs(cfg.console.login_window_secs),
        ),
    }))
}

/// Serves the console until SIGINT/SIGTERM.
pub(crate) async fn serve(cfg: &Config) -> anyhow::Result<()> {
    let app = router(console(cfg)?);
    let listener = tokio::net::TcpListener::bind(&cfg.console.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.console.listen))?;
    tracing::info!(address = %listener.local_addr()?, "console: serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

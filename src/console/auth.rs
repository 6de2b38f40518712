//! Console access (SPEC §8): argon2id passwords, signed expiring session cookies, CSRF tokens,
//! login rate limits and the scope a user may see. Pure apart from the clock passed in.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ConsoleRole, ConsoleUser};

/// The argon2id hash of a password (PHC string), with a random salt.
pub(crate) fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| anyhow::anyhow!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash`.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Bytes from the operating system's random source.
fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::TryRngCore;
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source");
    bytes
}

/// Random bytes as URL-safe base64.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<18>())
}

/// Signs and checks session cookies and CSRF tokens with one key.
pub(crate) struct Signer {
    key: Vec<u8>,
}

/// A signed-in user's session, as its cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) expires: i64,
    /// The cookie's payload: what the CSRF token is derived from.
    payload: String,
}

impl Signer {
    /// A signer with `key` (at least 32 bytes).
    pub(crate) fn new(key: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            key.len() >= 32,
            "the console session key must be at least 32 bytes"
        );
        Ok(Self { key: key.to_vec() })
    }

    fn mac(&self, purpose: &str, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The cookie value of a new session of `user` expiring at `expires` (unix seconds).
    pub(crate) fn session_cookie(&self, user: &str, expires: i64) -> String {
        let payload = format!(
            "{}|{expires}|{}",
            URL_SAFE_NO_PAD.encode(user),
            random_token()
        );
        format!("{payload}.{}", self.mac("session", &payload))
    }

    /// The session of a cookie value, if its signature holds and it has not expired at `now`.
    pub(crate) fn session(&self, cookie: &str, now: i64) -> Option<Session> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        if !constant_time_eq(self.mac("session", payload).as_bytes(), mac.as_bytes()) {
            return None;
        }
        let mut parts = payload.split('|');
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        (expires > now).then(|| Session {
            user,
            expires,
            payload: payload.to_string(),
        })
    }

    /// The CSRF token of a session: every state-changing form carries it.
    pub(crate) fn csrf(&self, session: &Session) -> String {
        self.mac("csrf", &session.payload)
    }

    /// The CSRF token of the login form, bound to the pre-login cookie's nonce.
    pub(crate) fn login_csrf(&self, nonce: &str) -> String {
        self.mac("login", nonce)
    }

    /// Whether `token` is `expected` (constant time).
    pub(crate) fn token_matches(expected: &str, token: &str) -> bool {
        constant_time_eq(expected.as_bytes(), token.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed logins per key (a user name, an address) within a sliding window.
pub(crate) struct LoginLimiter {
    attempts: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub(crate) fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any of `keys` has used up its failures at `now`.
    pub(crate) fn blocked(&self, keys: &[String], now: Instant) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().any(|k| {
            let Some(q) = failures.get_mut(k) else {
                return false;
            };
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                q.pop_front();
            }
            q.len() >= self.attempts as usize
        })
    }

    /// Records a failed login for each of `keys`.
    pub(crate) fn failed(&self, keys: &[String], now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            // Bounded memory under a flood of names: forget the oldest picture.
            failures.clear();
        }
        for k in keys {
            failures.entry(k.clone()).or_default().push_back(now);
        }
    }
}

/// What a user may see: every query filters by it (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    /// Centres (empty: all).
    pub(crate) centers: Vec<String>,
    /// Windows (empty: all of the centres).
    pub(crate) windows: Vec<String>,
}

impl Scope {
    /// A user's scope.
    pub(crate) fn of(user: &ConsoleUser) -> Self {
        Self {
            centers: user.centers.clone(),
            windows: if user.role == ConsoleRole::Window {
                user.windows.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The SQL condition on `center_id` and `window_id` columns; bind with [`Scope::bind`].
    pub(crate) const SQL: &'static str =
        "(? = 1 OR has(?, center_id)) AND (? = 1 OR has(?, window_id))";

    /// Binds the four parameters of [`Scope::SQL`].
    pub(crate) fn bind(&self, q: ::clickhouse::query::Query) -> ::clickhouse::query::Query {
        // ClickHouse 18.16 types `[]` as Array(Nothing), which `has` refuses: an empty list
        // (all, by the flag before it) is bound as `['']`.
        let list = |l: &Vec<String>| {
            if l.is_empty() {
                vec![String::new()]
            } else {
                l.clone()
            }
        };
        q.bind(u8::from(self.centers.is_empty()))
            .bind(list(&self.centers))
            .bind(u8::from(self.windows.is_empty()))
            .bind(list(&self.windows))
    }

    /// Whether a row of (centre, window) is in scope.
    pub(crate) fn allows(&self, center: &str, window: &str) -> bool {
        (self.centers.is_empty() || self.centers.iter().any(|c| c == center))
            && (self.windows.is_empty() || self.windows.iter().any(|w| w == window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn a_session_cookie_holds_until_it_expires_and_cannot_be_forged() {
        let s = signer();
        let cookie = s.session_cookie("w01", 1_000);
        let session = s.session(&cookie, 999).unwrap();
        assert_eq!(session.user, "w01");
        assert_eq!(s.session(&cookie, 1_000), None, "expired");
        // Another user's name under the same signature, or another key, is refused.
        let (payload, mac) = cookie.rsplit_once('.').unwrap();
        let forged = payload.replacen(
            &URL_SAFE_NO_PAD.encode("w01"),
            &URL_SAFE_NO_PAD.encode("admin"),
            1,
        );
        assert_eq!(s.session(&format!("{forged}.{mac}"), 0), None);
        assert_eq!(Signer::new(&[8u8; 32]).unwrap().session(&cookie, 0), None);
        assert!(Signer::new(b"short").is_err());
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let s = signer();
        let a = s.session(&s.session_cookie("u", 10), 0).unwrap();
        let b = s.session(&s.session_cookie("u", 10), 0).unwrap();
        assert_ne!(s.csrf(&a), s.csrf(&b));
        assert!(Signer::token_matches(&s.csrf(&a), &s.csrf(&a)));
        assert!(!Signer::token_matches(&s.csrf(&a), ""));
    }

    #[test]
    fn failed_logins_block_a_name_or_an_address_for_the_window() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let keys = ["user:a".to_string(), "addr:1".to_string()];
        for _ in 0..3 {
            assert!(!limiter.blocked(&keys, t0));
            limiter.failed(&keys, t0);
        }
        assert!(limiter.blocked(&keys, t0));
        // The same address under another name is blocked too; a minute later nobody is.
        assert!(limiter.blocked(&["user:b".into(), "addr:1".into()], t0));
        assert!(!limiter.blocked(&keys, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_window_user_sees_only_its_windows() {
        let user = ConsoleUser {
            name: "w".into(),
            password_hash: crate::config::Secret::new("x"),
            role: ConsoleRole::Window,
            centers: vec![],
            windows: vec!["W01".into()],
        };
        let scope = Scope::of(&user);
        assert!(scope.allows("C001", "W01"));
        assert!(!scope.allows("C001", "W02"));
        let viewer = ConsoleUser {
            role: ConsoleRole::Viewer,
            centers: vec!["C001".into()],
            ..user
        };
        let scope = Scope::of(&viewer);
        assert!(scope.allows("C001", "W02"));
        assert!(!scope.allows("C002", "W01"));
    }
}

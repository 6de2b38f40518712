//! Configuration: the embedded `config/default.toml`, then an optional file, then environment
//! variables `CASEWATCH__SECTION__KEY`. Loading takes the environment as an argument, so it is
//! a pure, testable function; secrets are wrapped so they never print.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize, Serializer};

use crate::core::calendar::{CentreDays, HolidayTable, WorkCalendar, DAY};
use crate::core::engine::Calendars;
use crate::core::rules::{AnomalyKind, Level, Rules};

/// The embedded defaults.
pub(crate) const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A string that never appears in logs or printed config.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    /// A secret with this value.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) engine: EngineConfig,
    pub(crate) calendar: CalendarConfig,
    pub(crate) kafka: KafkaConfig,
    pub(crate) clickhouse: ClickhouseConfig,
    pub(crate) pipeline: PipelineConfig,
    pub(crate) http: HttpConfig,
    #[serde(default)]
    pub(crate) centers: Vec<CenterConfig>,
    #[serde(default)]
    pub(crate) windows: Vec<WindowConfig>,
    pub(crate) alerts: AlertsConfig,
    pub(crate) bulletin: BulletinConfig,
    pub(crate) console: ConsoleConfig,
}

/// `[console]`: the supervision console of `casewatch serve` (SPEC §8).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsoleConfig {
    pub(crate) listen: String,
    /// The environment variable holding the key that signs session cookies (≥ 32 bytes).
    pub(crate) session_key_env: String,
    /// A session expires this many hours after the login.
    pub(crate) session_hours: u64,
    /// Mark cookies `Secure` (set it when the console is served behind TLS).
    pub(crate) secure_cookies: bool,
    /// Failed logins allowed per user name and per address within `login_window_secs`.
    pub(crate) login_attempts: u32,
    pub(crate) login_window_secs: u64,
    #[serde(default)]
    pub(crate) users: Vec<ConsoleUser>,
}

/// `[[console.users]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsoleUser {
    pub(crate) name: String,
    /// argon2id PHC string (`casewatch console hash-password`).
    pub(crate) password_hash: Secret,
    pub(crate) role: ConsoleRole,
    /// Centres this user may see (empty: all). A `window` user sees only `windows`.
    #[serde(default)]
    pub(crate) centers: Vec<String>,
    #[serde(default)]
    pub(crate) windows: Vec<String>,
}

/// A console user's role (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ConsoleRole {
    Supervisor,
    Window,
    Viewer,
}

/// `[bulletin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulletinConfig {
    pub(crate) weights: BulletinWeights,
}

/// `[bulletin.weights]`: the window ranking's weights of the five rates.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulletinWeights {
    pub(crate) on_site: f64,
    pub(crate) on_time: f64,
    pub(crate) early: f64,
    pub(crate) evaluation: f64,
    pub(crate) satisfaction: f64,
}

/// `[alerts]`: webhooks and the routes that pick them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsConfig {
    /// Alerts of a partition more than this many messages behind are held until it catches up.
    pub(crate) hold_lag: i64,
    /// How often the outbox (`alerts` in ClickHouse) is scanned for undelivered alerts.
    pub(crate) rescan_secs: u64,
    /// A receiver's `Retry-After` is honoured up to this long.
    pub(crate) retry_after_cap_secs: u64,
    /// After `max_attempts`, an alert stays due and is tried again this often …
    pub(crate) long_backoff_secs: u64,
    /// … until this long after its first attempt; then it is recorded as given up.
    pub(crate) give_up_hours: u64,
    #[serde(default)]
    pub(crate) webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub(crate) routes: Vec<RouteConfig>,
}

/// The message format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WebhookFormat {
    Generic,
    Dingtalk,
    Wecom,
}

/// `[[alerts.webhooks]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookConfig {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) format: WebhookFormat,
    /// Name of the environment variable holding the signing secret (empty: unsigned).
    #[serde(default)]
    pub(crate) secret_env: String,
    /// The secret itself, read from `secret_env` when the config is loaded; never printed.
    #[serde(default, skip_deserializing)]
    pub(crate) secret: Secret,
    #[serde(default = "default_webhook_timeout_ms")]
    pub(crate) timeout_ms: u64,
    #[serde(default = "default_webhook_attempts")]
    pub(crate) max_attempts: u32,
    /// Deliveries waiting for this webhook at most; beyond, they wait in the outbox.
    #[serde(default = "default_webhook_queue")]
    pub(crate) queue: usize,
    /// Requests in flight to this webhook at most.
    #[serde(default = "default_webhook_concurrency")]
    pub(crate) concurrency: usize,
    /// Messages a minute at most (0: unlimited). Default: 20 for `dingtalk` and `wecom` (the
    /// robots' own limit), unlimited for `generic`.
    #[serde(default)]
    pub(crate) rate_per_minute: Option<u32>,
    /// Alerts in one digest at most (digests are sent when more alerts are due than the rate
    /// lets through in the next minute).
    #[serde(default = "default_digest_max")]
    pub(crate) digest_max: usize,
}

impl WebhookConfig {
    /// The rate limit in messages a minute (None: unlimited).
    pub(crate) fn rate_limit(&self) -> Option<u32> {
        let limit = self.rate_per_minute.unwrap_or(match self.format {
            WebhookFormat::Generic => 0,
            WebhookFormat::Dingtalk | WebhookFormat::Wecom => 20,
        });
        (limit > 0).then_some(limit)
    }
}

fn default_digest_max() -> usize {
    20
}

fn default_webhook_timeout_ms() -> u64 {
    5000
}
fn default_webhook_attempts() -> u32 {
    8
}
fn default_webhook_queue() -> usize {
    1000
}
fn default_webhook_concurrency() -> usize {
    4
}

/// `[[alerts.routes]]`: alerts matching every non-empty list go to `webhooks`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    #[serde(default)]
    pub(crate) levels: Vec<String>,
    #[serde(default)]
    pub(crate) kinds: Vec<String>,
    #[serde(default)]
    pub(crate) centers: Vec<String>,
    #[serde(default)]
    pub(crate) windows: Vec<String>,
    pub(crate) webhooks: Vec<String>,
}

/// `[engine]`: clock and rule thresholds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineConfig {
    pub(crate) clock: ClockMode,
    pub(crate) grace_period_secs: i64,
    pub(crate) early_margin_days: i64,
    pub(crate) closed_case_retention_days: i64,
    pub(crate) levels: HashMap<String, String>,
}

/// Where engine time comes from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClockMode {
    Wall,
    Event,
}

/// `[calendar]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalendarConfig {
    pub(crate) holidays_dir: String,
    pub(crate) default_timezone: String,
    /// `MM-DD`: from this day on, a next year without holiday data is reported.
    pub(crate) warn_from: String,
}

impl CalendarConfig {
    /// `warn_from` as (month, day).
    pub(crate) fn warn_from(&self) -> Result<(u32, u32), ConfigError> {
        let invalid = || {
            ConfigError::Invalid(format!(
                "calendar.warn_from must be MM-DD, not {:?}",
                self.warn_from
            ))
        };
        let (m, d) = self.warn_from.split_once('-').ok_or_else(invalid)?;
        let (m, d) = (
            m.parse::<u32>().map_err(|_| invalid())?,
            d.parse::<u32>().map_err(|_| invalid())?,
        );
        // 2000 is a leap year: 02-29 is accepted.
        NaiveDate::from_ymd_opt(2000, m, d).ok_or_else(invalid)?;
        Ok((m, d))
    }
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaConfig {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    pub(crate) dead_letter_topic: String,
    pub(crate) group_id: String,
    /// Static group membership (`group.instance.id`): a restarted consumer with the same id
    /// gets its partitions back without waiting for its old session to time out. Empty: off.
    #[serde(default)]
    pub(crate) instance_id: String,
    #[serde(default)]
    pub(crate) client: HashMap<String, String>,
}

/// `[clickhouse]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClickhouseConfig {
    pub(crate) url: String,
    pub(crate) database: String,
    /// A cluster of the servers' `remote_servers` (empty: one server): the schema is made of
    /// distributed tables over replicated local ones (`casewatch migrate`), and inserts wait
    /// for every shard.
    #[serde(default)]
    pub(crate) cluster: String,
    pub(crate) user: String,
    pub(crate) password: Secret,
    pub(crate) timeout_secs: u64,
    pub(crate) compression: Compression,
    /// Log casewatch's queries in the server's `system.query_log` (`log_queries`), with their
    /// CPU: how `scripts/bench-e2e` attributes ClickHouse's work to tables.
    #[serde(default)]
    pub(crate) log_queries: bool,
    /// A table's rows of one flush are written by two concurrent inserts from this many rows
    /// on (0: never split).
    pub(crate) parallel_insert_rows: usize,
    /// At most this many inserts of one flush run at once (0: no limit).
    pub(crate) concurrent_inserts: usize,
}

/// How inserted rows travel to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Compression {
    None,
    Lz4,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineConfig {
    pub(crate) batch_events: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) batch_millis: u64,
    pub(crate) tick_millis: u64,
    pub(crate) drain_timeout_secs: u64,
    /// A partition more than this many messages behind its log end is catching up: its engine
    /// time follows its events, not the wall clock (SPEC §2, "Catching up").
    pub(crate) catch_up_lag: i64,
    /// While every partition with events to write is catching up, a batch may grow to this
    /// many times `batch_events`, `batch_bytes` and `batch_millis` (1: never larger).
    pub(crate) catch_up_batch_scale: usize,
    /// A partition's engine state is snapshotted to ClickHouse (after a flush, before the
    /// checkpoint that refers to it) at most every this many events handed in ...
    pub(crate) snapshot_every_events: u64,
    /// ... or this many seconds, whichever comes first (SPEC §7). 0 turns snapshots off.
    pub(crate) snapshot_every_secs: u64,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpConfig {
    pub(crate) listen: String,
}

/// `[[centers]]`: a service centre's timezone and own days.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CenterConfig {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) timezone: Option<String>,
    #[serde(default)]
    pub(crate) closed_days: Vec<NaiveDate>,
    #[serde(default)]
    pub(crate) working_days: Vec<NaiveDate>,
}

/// `[[windows]]`: a service window's display name and department.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowConfig {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) center: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) department: String,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot read holiday data {path}: {message}")]
    Holidays { path: PathBuf, message: String },
}

/// Holiday files shipped in the binary (holiday-cn, MIT; see config/holidays/LICENSE).
pub const EMBEDDED_HOLIDAYS: [&[u8]; 20] = [
    include_bytes!("../config/holidays/2007.json"),
    include_bytes!("../config/holidays/2008.json"),
    include_bytes!("../config/holidays/2009.json"),
    include_bytes!("../config/holidays/2010.json"),
    include_bytes!("../config/holidays/2011.json"),
    include_bytes!("../config/holidays/2012.json"),
    include_bytes!("../config/holidays/2013.json"),
    include_bytes!("../config/holidays/2014.json"),
    include_bytes!("../config/holidays/2015.json"),
    include_bytes!("../config/holidays/2016.json"),
    include_bytes!("../config/holidays/2017.json"),
    include_bytes!("../config/holidays/2018.json"),
    include_bytes!("../config/holidays/2019.json"),
    include_bytes!("../config/holidays/2020.json"),
    include_bytes!("../config/holidays/2021.json"),
    include_bytes!("../config/holidays/2022.json"),
    include_bytes!("../config/holidays/2023.json"),
    include_bytes!("../config/holidays/2024.json"),
    include_bytes!("../config/holidays/2025.json"),
    include_bytes!("../config/holidays/2026.json"),
];

impl Config {
    /// Loads defaults, then `file` (if any), then `env` entries named `CASEWATCH__…`.
    pub(crate) fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let overrides: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("CASEWATCH__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CASEWATCH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let mut cfg: Config = builder.build()?.try_deserialize()?;
        for w in &mut cfg.alerts.webhooks {
            if !w.secret_env.is_empty() {
                let value = env.get(&w.secret_env).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "alerts.webhooks {:?}: environment variable {} (secret_env) is not set",
                        w.name, w.secret_env
                    ))
                })?;
                w.secret = Secret::new(value.clone());
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads with the process environment.
    pub(crate) fn load_from_process(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file, &std::env::vars().collect())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.rules()?;
        parse_tz(&self.calendar.default_timezone)?;
        self.calendar.warn_from()?;
        for c in &self.centers {
            if let Some(tz) = &c.timezone {
                parse_tz(tz)?;
            }
        }
        if self.engine.grace_period_secs < 0 || self.engine.early_margin_days < 0 {
            return Err(ConfigError::Invalid(
                "engine thresholds must not be negative".into(),
            ));
        }
        self.validate_alerts()?;
        self.validate_console()?;
        if self.pipeline.batch_events == 0 {
            return Err(ConfigError::Invalid(
                "pipeline.batch_events must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_console(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for u in &self.console.users {
            let bad = |m: &str| {
                Err(ConfigError::Invalid(format!(
                    "console.users {:?}: {m}",
                    u.name
                )))
            };
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return bad("names must be unique and not empty");
            }
            if !u.password_hash.expose().starts_with("$argon2id$") {
                return bad(
                    "password_hash must be an argon2id hash (casewatch console hash-password)",
                );
            }
            if u.role == ConsoleRole::Window && u.windows.is_empty() {
                return bad("a window user needs its windows");
            }
        }
        Ok(())
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        for w in &self.alerts.webhooks {
            if !names.insert(w.name.as_str()) {
                return bad(format!("alerts.webhooks: name {:?} is used twice", w.name));
            }
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return bad(format!("alerts.webhooks {:?}: url must be http(s)", w.name));
            }
            if w.max_attempts == 0 || w.queue == 0 || w.concurrency == 0 || w.digest_max == 0 {
                return bad(format!(
                    "alerts.webhooks {:?}: max_attempts, queue, concurrency and digest_max must be at least 1",
                    w.name
                ));
            }
        }
        for (i, r) in self.alerts.routes.iter().enumerate() {
            if r.webhooks.is_empty() {
                return bad(format!("alerts.routes[{i}]: names no webhook"));
            }
            if let Some(w) = r.webhooks.iter().find(|w| !names.contains(w.as_str())) {
                return bad(format!("alerts.routes[{i}]: unknown webhook {w:?}"));
            }
            if let Some(l) = r.levels.iter().find(|l| Level::parse(l).is_none()) {
                return bad(format!(
                    "alerts.routes[{i}]: level must be warning, yellow or red, not {l:?}"
                ));
            }
            if let Some(k) = r.kinds.iter().find(|k| AnomalyKind::parse(k).is_none()) {
                return bad(format!("alerts.routes[{i}]: unknown anomaly kind {k:?}"));
            }
        }
        Ok(())
    }

    /// The rules of `[engine]`.
    pub(crate) fn rules(&self) -> Result<Rules, ConfigError> {
        let mut rules = Rules {
            grace_period_secs: self.engine.grace_period_secs,
            early_margin_secs: self.engine.early_margin_days * DAY,
            ..Rules::default()
        };
        for (kind, level) in &self.engine.levels {
            let k = AnomalyKind::parse(kind).ok_or_else(|| {
                ConfigError::Invalid(format!("engine.levels: unknown anomaly kind {kind:?}"))
            })?;
            let l = Level::parse(level).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "engine.levels.{kind}: level must be warning, yellow or red, not {level:?}"
                ))
            })?;
            rules.levels[k as usize] = l;
        }
        Ok(rules)
    }

    /// The holiday table: the configured directory, or the embedded data.
    pub(crate) fn holidays(&self) -> Result<HolidayTable, ConfigError> {
        if self.calendar.holidays_dir.is_empty() {
            let mut table = HolidayTable::new();
            for bytes in EMBEDDED_HOLIDAYS {
                table.merge_json(bytes).map_err(|e| ConfigError::Holidays {
                    path: "embedded".into(),
                    message: e.to_string(),
                })?;
            }
            return Ok(table);
        }
        load_holiday_dir(Path::new(&self.calendar.holidays_dir))
    }

    /// An engine with the configured rules and calendars.
    pub(crate) fn new_engine(&self) -> Result<crate::core::engine::Engine, ConfigError> {
        Ok(crate::core::engine::Engine::new(
            self.rules()?,
            self.calendars()?,
        ))
    }

    /// The calendars of the configured centres plus the default.
    pub(crate) fn calendars(&self) -> Result<Calendars, ConfigError> {
        let holidays = self.holidays()?;
        let default_tz = parse_tz(&self.calendar.default_timezone)?;
        let mut calendars = Calendars::new(Arc::new(WorkCalendar::new(
            default_tz,
            &holidays,
            &CentreDays::default(),
        )));
        for c in &self.centers {
            let tz = c.timezone.as_deref().map_or(Ok(default_tz), parse_tz)?;
            let days = CentreDays {
                closed: c.closed_days.clone(),
                working: c.working_days.clone(),
            };
            calendars.by_center.insert(
                c.id.clone(),
                Arc::new(WorkCalendar::new(tz, &holidays, &days)),
            );
        }
        Ok(calendars)
    }

    /// The effective configuration as TOML, secrets masked.
    pub(crate) fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }

    /// Display name of a window (its id when not configured).
    pub(crate) fn window_name(&self, id: &str) -> String {
        self.windows
            .iter()
            .find(|w| w.id == id && !w.name.is_empty())
            .map_or_else(|| id.to_string(), |w| w.name.clone())
    }
}

fn parse_tz(name: &str) -> Result<Tz, ConfigError> {
    name.parse::<Tz>()
        .map_err(|_| ConfigError::Invalid(format!("unknown timezone {name:?}")))
}

/// Reads every `*.json` of a directory, in file-name order (later files win for a repeated date).
pub(crate) fn load_holiday_dir(dir: &Path) -> Result<HolidayTable, ConfigError> {
    let err = |message: String| ConfigError::Holidays {
        path: dir.to_path_buf(),
        message,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut table = HolidayTable::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| err(format!("{}: {e}", f.display())))?;
        table
            .merge_json(&bytes)
            .map_err(|e| err(format!("{}: {e}", f.display())))?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_match_the_spec() {
        let cfg = Config::load(None, &env(&[])).unwrap();
        assert_eq!(cfg.rules().unwrap(), Rules::default());
        assert_eq!(cfg.clickhouse.database, "casewatch");
        assert_eq!(cfg.engine.clock, ClockMode::Wall);
    }

    #[test]
    fn environment_overrides_file_and_secrets_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.toml");
        std::fs::write(&path, "[clickhouse]\ndatabase = \"from_file\"\nuser = \"u\"\n[engine.levels]\noverdue = \"red\"\n").unwrap();
        let cfg = Config::load(
            Some(&path),
            &env(&[
                ("CASEWATCH__CLICKHOUSE__DATABASE", "from_env"),
                ("CASEWATCH__CLICKHOUSE__PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.clickhouse.database, "from_env");
        assert_eq!(cfg.clickhouse.user, "u");
        assert_eq!(cfg.clickhouse.password.expose(), "hunter2");
        assert_eq!(cfg.rules().unwrap().level(AnomalyKind::Overdue), Level::Red);
        let printed = cfg.to_masked_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("***"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn invalid_values_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[engine.levels]\noverdue = \"purple\"\n").unwrap();
        let e = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("engine.levels.overdue"), "{e}");
        std::fs::write(
            &path,
            "[[centers]]\nid = \"C\"\ntimezone = \"Mars/Olympus\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
        std::fs::write(&path, "[kafka]\nbrokerz = \"x\"\n").unwrap();
        assert!(Config::load(Some(&path), &env(&[])).is_err());
        assert!(Config::load(Some(&dir.path().join("missing.toml")), &env(&[])).is_err());
    }

    #[test]
    fn centre_closures_reach_the_calendar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[centers]]\nid = \"C9\"\nclosed_days = [2018-10-16]\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&path), &env(&[])).unwrap();
        let cals = cfg.calendars().unwrap();
        let d = NaiveDate::from_ymd_opt(2018, 10, 16).unwrap();
        assert!(!cals.get("C9").is_working_date(d));
        assert!(cals.get("other").is_working_date(d));
        assert!(!cals
            .get("other")
            .is_working_date(NaiveDate::from_ymd_opt(2018, 10, 1).unwrap()));
    }
}

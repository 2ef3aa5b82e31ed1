//! Configuration: defaults → `config/default.toml` (or `--config FILE`) → `TOLLGATE_*` env →
//! command-line flags, then [`Config::validate`]. Only the binary loads it; parts receive
//! their piece explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate_engine::egress::EgressAllow;
use tollgate_engine::llm::{ModelCatalog, PriceTable, ProviderConfig};

/// Where runs, specs and the queue live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// SQLite files under `data_dir`; no server needed (the default).
    Embedded,
    /// Redis: shared by `serve` and any number of `worker` processes.
    Redis,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Storage and queue backend.
    pub backend: BackendKind,
    /// Directory for the embedded backend's files and the generated master key.
    pub data_dir: PathBuf,
    /// Redis URL for the `redis` backend.
    pub redis_url: String,
    /// Prefix of every Redis key and the name of the step queue; isolates deployments.
    pub namespace: String,
    /// Service master key, 128 hex characters. If empty, the embedded backend uses (and on
    /// first use creates, mode 0600) `data_dir/master.key`; the Redis backend requires it.
    pub master_key: String,
    /// Steps a process runs at once. Most steps wait (on HTTP, a model, a mailbox), and a code
    /// step's CPU and memory are bounded by its own limits; 64 keeps a wide fan-out fed and
    /// lets the writes of its steps share commits and fetches.
    pub worker_concurrency: usize,
    /// The longest list one `for_each` step may fan out over (1..=100000); a longer list
    /// fails the step, naming both numbers. Each fan-out journals the limit it ran under.
    pub for_each_max_items: u32,
    /// Attempts of one run in flight at once (apalis-redis breaks with ≥ 8,000 due jobs on a queue).
    pub max_in_flight_per_run: usize,
    /// How often a live run checks the store for outcomes and decisions it was not told about,
    /// and renews its lease. At most a third of `lease_ttl`.
    #[serde(with = "humantime_serde_compat")]
    pub reconcile_interval: Duration,
    /// How long a run's lease (one driving process per run) and a process's heartbeat last
    /// without renewal: after this long, a silent process is taken for dead and another
    /// process may take its runs over (on the same host, a process that is gone is noticed at
    /// once). Longer means slower takeover after a crash on another host; shorter means a
    /// paused or overloaded process loses its runs sooner (it then stops driving them: its
    /// writes are fenced).
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    /// Queue poll interval (apalis idles 30 s between polls without one).
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// A run driven by this process hands a ready step straight to a free step worker of
    /// this process as well as to the queue ("eager dispatch"): the step starts without a
    /// queue round trip, and the queue's copy, claimed already, is a no-op wherever it lands.
    pub eager_dispatch: bool,
    /// How long the internal event bus keeps events (and their dedup keys): what a `wait`'s
    /// lookback and a rehydrated waiting run can find. At least 1 h (the longest lookback).
    #[serde(with = "humantime_serde_compat")]
    pub event_retention: Duration,
    /// How long a mail attachment stored as a blob — by an IMAP trigger's fire or an
    /// `email.fetch` step — is kept for runs to read by reference (`email.send`'s `blob`).
    #[serde(with = "humantime_serde_compat")]
    pub attachment_ttl: Duration,
    /// Admin HTTP listen address for `serve`.
    pub http_addr: SocketAddr,
    /// Bearer token required by the admin HTTP API. Empty disables the API's auth, which
    /// `serve` allows only on a loopback `http_addr`.
    pub admin_token: String,
    /// Largest request body the admin HTTP API reads (bytes); a larger one gets 413.
    pub http_max_body_bytes: usize,
    /// Where `tollgate worker` answers `GET /healthz` (unset: no listener; port 0 picks one).
    /// `serve` answers it on `http_addr`. It needs no token and tells only whether the
    /// process's queue worker runs, so keep it on an address only the orchestrator reaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_addr: Option<SocketAddr>,
    /// Outbound HTTP (`api_call`) policy.
    pub egress: EgressConfig,
    /// How people are told a request waits for them (email).
    pub paging: PagingConfig,
    /// Triggers: which workflows `serve` starts triggers for, and the fire history's retention.
    pub triggers: crate::triggers::TriggersConfig,
    /// Model providers and prices for `llm` steps.
    pub llm: LlmConfig,
    /// The workflows known by id (`tollgate run NAME`, `templates`, `workflow.run`): the
    /// shipped templates and configured spec directories and files.
    pub catalogue: crate::catalogue::CatalogueConfig,
}

/// `[llm]`: named model providers (`[llm.providers.NAME]`) and the model price table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// The provider of `llm` steps that name none (unset: the only provider, if there is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_provider: Option<String>,
    /// The price table file (`"provider/model"` or `"model"` → per-million-token prices);
    /// a missing file at the default path means no prices.
    pub prices_file: PathBuf,
    /// Price entries that override the file's.
    pub prices: PriceTable,
    pub providers: BTreeMap<String, ProviderConfig>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            default_provider: None,
            prices_file: PathBuf::from(DEFAULT_PRICES_FILE),
            prices: PriceTable::default(),
            providers: BTreeMap::new(),
        }
    }
}

const DEFAULT_PRICES_FILE: &str = "config/prices.toml";

impl LlmConfig {
    /// Providers, default provider and prices (the file's, then the inline entries).
    pub fn catalog(&self) -> Result<ModelCatalog, ConfigError> {
        let mut prices = match std::fs::read_to_string(&self.prices_file) {
            Ok(text) => toml::from_str::<PriceTable>(&text)
                .map_err(|e| ConfigError::Parse { path: self.prices_file.clone(), message: e.to_string() })?,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && self.prices_file == Path::new(DEFAULT_PRICES_FILE) =>
            {
                PriceTable::default()
            }
            Err(source) => return Err(ConfigError::Read { path: self.prices_file.clone(), source }),
        };
        prices.0.extend(self.prices.0.clone());
        if let Some(d) = &self.default_provider
            && !self.providers.contains_key(d)
        {
            return Err(ConfigError::Invalid(format!("llm.default_provider `{d}` is not among llm.providers")));
        }
        for (name, p) in &self.providers {
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "llm.providers.{name}.base_url must be an http(s) URL, not {:?}",
                    p.base_url
                )));
            }
            if p.api_key_secret.as_deref().is_some_and(|s| !tollgate_engine::store::valid_secret_name(s)) {
                return Err(ConfigError::Invalid(format!(
                    "llm.providers.{name}.api_key_secret is not a valid secret name"
                )));
            }
        }
        Ok(ModelCatalog { default_provider: self.default_provider.clone(), providers: self.providers.clone(), prices })
    }
}

/// `[paging]`: email pages for requests assigned or escalated to a user, and an optional
/// signed webhook for every new or escalated request (consoles are told live over
/// `GET /api/stream` whatever this says).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagingConfig {
    /// SMTP server, as a URL: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://user:password@host:465` (TLS). Empty: no email. A password goes
    /// only over TLS unless the host is this machine ([`PagingConfig::check`]).
    pub smtp_url: String,
    /// The sender of page mails.
    pub from: String,
    /// The console's base URL; a page links to `{console_url}/requests/{request}`.
    pub console_url: String,
    /// A URL every new or escalated request is POSTed to as JSON (ids, mode, assignees, the
    /// card's link — never the request's context), signed with HMAC-SHA256. Empty: no webhook.
    pub webhook_url: String,
    /// The environment variable holding the webhook's signing secret (required with a URL).
    pub webhook_secret_env: String,
    /// Deliveries of one page before it is given up (retried with backoff from 500 ms).
    pub webhook_attempts: u32,
}

impl Default for PagingConfig {
    fn default() -> Self {
        Self {
            smtp_url: String::new(),
            from: "Tollgate <tollgate@localhost>".into(),
            console_url: "http://127.0.0.1:8480".into(),
            webhook_url: String::new(),
            webhook_secret_env: "TOLLGATE_PAGING_WEBHOOK_SECRET".into(),
            webhook_attempts: 6,
        }
    }
}

impl PagingConfig {
    /// Refuses, before anything is paged, an SMTP URL lettre cannot use, one that would send
    /// its password in the clear to another machine (`smtp://` without `tls=required`: an
    /// opportunistic STARTTLS can be stripped), and a sender that is not a mailbox.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.smtp_url.is_empty() {
            return Ok(());
        }
        let invalid = |why: String| ConfigError::Invalid(format!("paging.smtp_url: {why}"));
        // The URL itself is never echoed: it may hold a password.
        let url = reqwest::Url::parse(&self.smtp_url).map_err(|e| invalid(format!("not a URL ({e})")))?;
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| invalid("names no host".into()))?;
        let encrypted = match url.scheme() {
            "smtps" => true,
            "smtp" => url.query_pairs().any(|(k, v)| k == "tls" && v == "required"),
            other => return Err(invalid(format!("scheme `{other}` is not smtp or smtps"))),
        };
        if !url.username().is_empty() && !encrypted && !tollgate_engine::connections::smtp::is_loopback(host) {
            return Err(invalid(format!(
                "would send the password of `{}` in the clear to `{host}`: use smtps://… or smtp://…?tls=required \
                 (a login without TLS only for a relay on this machine: localhost, 127.0.0.1, ::1)",
                url.username()
            )));
        }
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&self.smtp_url)
            .map_err(|e| invalid(e.to_string()))?;
        self.from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| ConfigError::Invalid(format!("paging.from `{}` is not a mailbox: {e}", self.from)))?;
        Ok(())
    }
}

/// `[egress]`: which destinations `api_call` steps may reach beyond public addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Entries that open otherwise refused destinations (loopback, private, link-local…) to
    /// every workflow: `host`, `host:port`, `*.domain`, an address with or without a port
    /// (`127.0.0.1:8080`, `[::1]`), or a network (`10.0.0.0/8`). Workflows add their own
    /// with `egress.allow`.
    pub allow: Vec<String>,
}

impl EgressConfig {
    /// The parsed allowlist (checked by [`Config::validate`]).
    pub fn allowlist(&self) -> Result<EgressAllow, ConfigError> {
        EgressAllow::parse(&self.allow)
            .map_err(|(i, message)| ConfigError::Invalid(format!("egress.allow[{i}]: {message}")))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backend: BackendKind::Embedded,
            data_dir: PathBuf::from("data"),
            redis_url: "redis://127.0.0.1:6379".into(),
            namespace: "tollgate".into(),
            master_key: String::new(),
            worker_concurrency: 64,
            max_in_flight_per_run: 2000,
            for_each_max_items: crate::system::DEFAULT_FOR_EACH_MAX_ITEMS,
            reconcile_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(15),
            poll_interval: Duration::from_millis(50),
            eager_dispatch: true,
            event_retention: Duration::from_secs(24 * 3600),
            attachment_ttl: tollgate_engine::store::DEFAULT_ATTACHMENT_TTL,
            http_addr: "127.0.0.1:8480".parse().expect("valid address"),
            admin_token: String::new(),
            http_max_body_bytes: 2 * 1024 * 1024,
            health_addr: None,
            egress: EgressConfig::default(),
            paging: PagingConfig::default(),
            triggers: Default::default(),
            llm: LlmConfig::default(),
            catalogue: Default::default(),
        }
    }
}

/// humantime strings in TOML (`"500ms"`).
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Load: defaults, then the file (if it exists, or if named explicitly), then env.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let default_file = Path::new("config/default.toml");
        let path = file.or(default_file.exists().then_some(default_file));
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse { path: p.into(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        config.apply_env(std::env::vars())?;
        Ok(config)
    }

    /// Apply `TOLLGATE_<FIELD>` variables.
    pub fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
        let mut env_provider: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
        for (name, value) in vars {
            let Some(field) = name.strip_prefix("TOLLGATE_") else { continue };
            let bad = |message: String| ConfigError::Env { name: name.clone(), message };
            let dur = |v: &str| humantime::parse_duration(v).map_err(|e| bad(e.to_string()));
            match field {
                "BACKEND" => self.backend = <BackendKind as clap::ValueEnum>::from_str(&value, true).map_err(bad)?,
                "DATA_DIR" => self.data_dir = value.into(),
                "REDIS_URL" => self.redis_url = value,
                "NAMESPACE" => self.namespace = value,
                "MASTER_KEY" => self.master_key = value,
                "WORKER_CONCURRENCY" => self.worker_concurrency = value.parse().map_err(|e| bad(format!("{e}")))?,
                "FOR_EACH_MAX_ITEMS" => self.for_each_max_items = value.parse().map_err(|e| bad(format!("{e}")))?,
                "MAX_IN_FLIGHT_PER_RUN" => {
                    self.max_in_flight_per_run = value.parse().map_err(|e| bad(format!("{e}")))?
                }
                "RECONCILE_INTERVAL" => self.reconcile_interval = dur(&value)?,
                "LEASE_TTL" => self.lease_ttl = dur(&value)?,
                "POLL_INTERVAL" => self.poll_interval = dur(&value)?,
                "EAGER_DISPATCH" => self.eager_dispatch = value.parse().map_err(|e| bad(format!("{e}")))?,
                "EVENT_RETENTION" => self.event_retention = dur(&value)?,
                "ATTACHMENT_TTL" => self.attachment_ttl = dur(&value)?,
                "HTTP_ADDR" => self.http_addr = value.parse().map_err(|e| bad(format!("{e}")))?,
                "ADMIN_TOKEN" => self.admin_token = value,
                "HTTP_MAX_BODY_BYTES" => self.http_max_body_bytes = value.parse().map_err(|e| bad(format!("{e}")))?,
                // Comma-separated entries.
                "EGRESS_ALLOW" => {
                    self.egress.allow =
                        value.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect()
                }
                "SMTP_URL" => self.paging.smtp_url = value,
                "PAGING_FROM" => self.paging.from = value,
                "CONSOLE_URL" => self.paging.console_url = value,
                "PAGING_WEBHOOK_URL" => self.paging.webhook_url = value,
                // Colon-separated paths, like PATH.
                "CATALOGUE_DIRS" => {
                    self.catalogue.dirs = std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()).collect()
                }
                "CATALOGUE_FILES" => {
                    self.catalogue.files = std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()).collect()
                }
                "TRIGGER_HISTORY_TTL" => self.triggers.history_ttl = dur(&value)?,
                // A provider named `default` from the environment (containers, the demo).
                "LLM_BASE_URL" => drop(env_provider.insert("base_url", (name.clone(), value))),
                "LLM_KIND" => drop(env_provider.insert("kind", (name.clone(), value))),
                "LLM_MODEL" => drop(env_provider.insert("model", (name.clone(), value))),
                "LLM_API_KEY_SECRET" => drop(env_provider.insert("api_key_secret", (name.clone(), value))),
                "LLM_DEFAULT_PROVIDER" => self.llm.default_provider = Some(value).filter(|v| !v.is_empty()),
                "LLM_PRICES_FILE" => self.llm.prices_file = value.into(),
                "HEALTH_ADDR" if value.is_empty() => self.health_addr = None,
                "HEALTH_ADDR" => self.health_addr = Some(value.parse().map_err(|e| bad(format!("{e}")))?),
                _ => {} // other TOLLGATE_* variables belong to tests and tools
            }
        }
        if let Some((_, base_url)) = env_provider.get("base_url").filter(|(_, v)| !v.is_empty()) {
            let mut p = serde_json::json!({ "kind": "openai", "base_url": base_url });
            for field in ["kind", "model", "api_key_secret"] {
                if let Some((_, v)) = env_provider.get(field).filter(|(_, v)| !v.is_empty()) {
                    p[field] = serde_json::json!(v);
                }
            }
            let provider: ProviderConfig = serde_json::from_value(p).map_err(|e| ConfigError::Env {
                name: "TOLLGATE_LLM_KIND".into(),
                message: format!("{e} (openai or anthropic)"),
            })?;
            self.llm.providers.insert("default".into(), provider);
            self.llm.default_provider.get_or_insert_with(|| "default".into());
        } else if let Some((name, _)) = env_provider.values().next() {
            return Err(ConfigError::Env { name: name.clone(), message: "needs TOLLGATE_LLM_BASE_URL too".into() });
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_concurrency == 0 {
            return Err(ConfigError::Invalid("worker_concurrency must be at least 1".into()));
        }
        if !(1..8000).contains(&self.max_in_flight_per_run) {
            return Err(ConfigError::Invalid("max_in_flight_per_run must be between 1 and 7999".into()));
        }
        if self.backend == BackendKind::Redis && self.master_key.is_empty() {
            return Err(ConfigError::Invalid(
                "the redis backend needs a master key (TOLLGATE_MASTER_KEY or master_key), shared by every process"
                    .into(),
            ));
        }
        if !(1..=100_000).contains(&self.for_each_max_items) {
            return Err(ConfigError::Invalid(format!(
                "for_each_max_items must be between 1 and 100000, not {}",
                self.for_each_max_items
            )));
        }
        if self.reconcile_interval.is_zero() {
            return Err(ConfigError::Invalid("reconcile_interval must be longer than 0".into()));
        }
        // The reconcile tick renews the lease: three ticks per TTL leave room for a late one.
        if self.reconcile_interval.saturating_mul(3) > self.lease_ttl {
            return Err(ConfigError::Invalid(format!(
                "reconcile_interval ({}) must be at most a third of lease_ttl ({}): a run's lease is renewed on its reconcile tick, \
                 so a longer interval lets the lease expire while its holder is alive; shorten reconcile_interval or lengthen lease_ttl",
                humantime::format_duration(self.reconcile_interval),
                humantime::format_duration(self.lease_ttl),
            )));
        }
        if self.event_retention < Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(
                "event_retention must be at least 1h (a `wait` may look back that far)".into(),
            ));
        }
        if self.attachment_ttl.is_zero() {
            return Err(ConfigError::Invalid("attachment_ttl must be longer than 0".into()));
        }
        if self.http_max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("http_max_body_bytes must be at least 1024".into()));
        }
        self.egress.allowlist()?;
        self.paging.check()?;
        if self.triggers.history_ttl.is_zero() {
            return Err(ConfigError::Invalid("triggers.history_ttl must be longer than 0".into()));
        }
        self.llm.catalog()?;
        if !tollgate_engine::ids::is_valid_id(&self.namespace) {
            return Err(ConfigError::Invalid(format!("namespace `{}` must be an id ([A-Za-z0-9_.-])", self.namespace)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_errors_name_the_variable() {
        let mut c = Config::default();
        c.apply_env(
            [("TOLLGATE_BACKEND".to_string(), "redis".to_string()), ("TOLLGATE_POLL_INTERVAL".into(), "5ms".into())]
                .into_iter(),
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Redis);
        assert_eq!(c.poll_interval, Duration::from_millis(5));
        let err =
            c.apply_env([("TOLLGATE_WORKER_CONCURRENCY".to_string(), "many".to_string())].into_iter()).unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_WORKER_CONCURRENCY"), "{err}");
        assert!(c.validate().unwrap_err().to_string().contains("master key"));
    }

    #[test]
    fn the_health_listener_is_off_unless_an_address_is_given() {
        let mut c = Config::default();
        assert_eq!(c.health_addr, None);
        c.apply_env([("TOLLGATE_HEALTH_ADDR".to_string(), "127.0.0.1:0".to_string())].into_iter()).unwrap();
        assert_eq!(c.health_addr, Some("127.0.0.1:0".parse().unwrap()));
        c.apply_env([("TOLLGATE_HEALTH_ADDR".to_string(), String::new())].into_iter()).unwrap();
        assert_eq!(c.health_addr, None);
        let err = c.apply_env([("TOLLGATE_HEALTH_ADDR".to_string(), "localhost".to_string())].into_iter()).unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_HEALTH_ADDR"), "{err}");
    }

    #[test]
    fn a_reconcile_interval_too_long_for_the_lease_is_refused_naming_both() {
        let mut c = Config::default();
        c.validate().expect("the defaults are valid");
        c.apply_env([("TOLLGATE_LEASE_TTL".to_string(), "1s".to_string())].into_iter()).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("reconcile_interval (500ms)") && err.contains("lease_ttl (1s)"), "{err}");
        c.reconcile_interval = Duration::from_millis(333);
        c.validate().expect("a third of the TTL");
        c.reconcile_interval = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("reconcile_interval"));
    }

    #[test]
    fn egress_entries_come_from_the_file_or_the_environment_and_are_checked() {
        let mut c: Config = toml::from_str("[egress]\nallow = [\"127.0.0.1:8080\", \"api.internal\"]\n").unwrap();
        assert_eq!(c.egress.allow, ["127.0.0.1:8080", "api.internal"]);
        assert_eq!(c.egress.allowlist().unwrap().rules().len(), 2);
        c.apply_env([("TOLLGATE_EGRESS_ALLOW".to_string(), " localhost , 10.0.0.0/8,".to_string())].into_iter())
            .unwrap();
        assert_eq!(c.egress.allow, ["localhost", "10.0.0.0/8"]);
        c.validate().unwrap();
        c.egress.allow.push("10.0.0.1/8".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("egress.allow[2]") && err.contains("write 10.0.0.0/8"), "{err}");
    }

    #[test]
    fn a_model_provider_comes_from_the_file_or_the_environment_and_is_checked() {
        let mut c: Config = toml::from_str(
            "[llm]\ndefault_provider = \"openai\"\n[llm.providers.openai]\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\nmodel = \"gpt-4o-mini\"\napi_key_secret = \"openai\"\n",
        )
        .unwrap();
        let catalog = c.llm.catalog().unwrap();
        assert_eq!(catalog.providers["openai"].max_tokens, 1024);
        c.llm.default_provider = Some("nope".into());
        assert!(c.validate().unwrap_err().to_string().contains("llm.default_provider `nope`"));

        let mut c = Config::default();
        c.apply_env(
            [
                ("TOLLGATE_LLM_BASE_URL".to_string(), "http://127.0.0.1:8482/v1".to_string()),
                ("TOLLGATE_LLM_MODEL".into(), "m".into()),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(c.llm.default_provider.as_deref(), Some("default"));
        assert_eq!(c.llm.providers["default"].model.as_deref(), Some("m"));
        let err =
            Config::default().apply_env([("TOLLGATE_LLM_MODEL".to_string(), "m".to_string())].into_iter()).unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_LLM_BASE_URL"), "{err}");
    }

    #[test]
    fn the_shipped_default_toml_parses_to_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml")).unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn a_paging_url_that_would_send_a_password_in_the_clear_is_refused() {
        let with = |url: &str| {
            let mut c = Config::default();
            c.paging.smtp_url = url.into();
            c.validate().map_err(|e| e.to_string())
        };
        let err = with("smtp://pager:s3cret@mail.example.com:587").unwrap_err();
        assert!(
            err.starts_with(
                "config: paging.smtp_url: would send the password of `pager` in the clear to `mail.example.com`"
            ),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "the error must not echo the password: {err}");
        let err = with("smtp://pager:s3cret@mail.example.com:587?tls=opportunistic").unwrap_err();
        assert!(err.contains("in the clear"), "opportunistic STARTTLS can be stripped: {err}");
        for fine in [
            "smtp://pager:s3cret@mail.example.com:587?tls=required",
            "smtps://pager:s3cret@mail.example.com:465",
            "smtp://pager:s3cret@127.0.0.1:2525",
            "smtp://pager:s3cret@localhost:2525",
            "smtp://mail.example.com:25",
            "",
        ] {
            assert_eq!(with(fine), Ok(()), "{fine}");
        }
        assert_eq!(
            with("http://mail.example.com").unwrap_err(),
            "config: paging.smtp_url: scheme `http` is not smtp or smtps"
        );
        assert!(with("mail.example.com:25").unwrap_err().starts_with("config: paging.smtp_url: "));
        let mut c = Config::default();
        c.paging.smtp_url = "smtp://127.0.0.1:25".into();
        c.paging.from = "not a mailbox".into();
        assert!(
            c.validate().unwrap_err().to_string().starts_with("config: paging.from `not a mailbox` is not a mailbox")
        );
    }
}

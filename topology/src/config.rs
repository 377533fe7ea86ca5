//! Topology configuration, with Storm's key names where users know them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A configuration value as written by a user: in code, on the command line or in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// No value: resets an optional setting to its default.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
}

impl ConfigValue {
    fn type_name(&self) -> &'static str {
        match self {
            ConfigValue::Null => "null",
            ConfigValue::Bool(_) => "a boolean",
            ConfigValue::Int(_) => "an integer",
            ConfigValue::Str(_) => "a string",
        }
    }
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::Null => f.write_str("null"),
            ConfigValue::Bool(v) => write!(f, "{v}"),
            ConfigValue::Int(v) => write!(f, "{v}"),
            ConfigValue::Str(v) => write!(f, "{v:?}"),
        }
    }
}

impl From<bool> for ConfigValue {
    fn from(v: bool) -> Self {
        ConfigValue::Bool(v)
    }
}

impl From<i64> for ConfigValue {
    fn from(v: i64) -> Self {
        ConfigValue::Int(v)
    }
}

impl From<i32> for ConfigValue {
    fn from(v: i32) -> Self {
        ConfigValue::Int(v.into())
    }
}

impl From<u32> for ConfigValue {
    fn from(v: u32) -> Self {
        ConfigValue::Int(v.into())
    }
}

/// Values above `i64::MAX` become `i64::MAX`, which every bounded key then refuses by name.
impl From<u64> for ConfigValue {
    fn from(v: u64) -> Self {
        ConfigValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// Values above `i64::MAX` become `i64::MAX`, which every bounded key then refuses by name.
impl From<usize> for ConfigValue {
    fn from(v: usize) -> Self {
        ConfigValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<String> for ConfigValue {
    fn from(v: String) -> Self {
        ConfigValue::Str(v)
    }
}

impl From<&str> for ConfigValue {
    fn from(v: &str) -> Self {
        ConfigValue::Str(v.to_owned())
    }
}

impl<T: Into<ConfigValue>> From<Option<T>> for ConfigValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(ConfigValue::Null, Into::into)
    }
}

/// A configuration key or value that is not accepted. Each names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No such key.
    #[error("unknown config key `{key}`{}; known keys: {known}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        /// The key given.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
        /// Every known key.
        known: String,
    },
    /// The value has the wrong type or is out of range.
    #[error("config key `{key}` expects {expected}, got {found}")]
    InvalidValue {
        /// The key.
        key: String,
        /// What it takes.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// The key exists but cannot be set per component.
    #[error(
        "config key `{key}` applies to the whole topology and cannot be set per component (per-component keys: {allowed})"
    )]
    NotPerComponent {
        /// The key.
        key: String,
        /// The keys that can be set per component.
        allowed: String,
    },
    /// A `key=value` argument without `=`.
    #[error("config override `{0}` is not of the form key=value")]
    Malformed(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A positive integer.
    Count,
    /// A positive integer or null.
    OptionalCount,
    /// A boolean.
    Flag,
}

impl Kind {
    fn expected(self) -> &'static str {
        match self {
            Kind::Count => "a positive integer",
            Kind::OptionalCount => "a positive integer or null",
            Kind::Flag => "a boolean",
        }
    }
}

/// Every key: (name, kind, settable per component, accessor).
const KEYS: &[(&str, Kind, bool)] = &[
    (Config::WORKERS, Kind::Count, false),
    (Config::ACKER_EXECUTORS, Kind::OptionalCount, false),
    (Config::MAX_SPOUT_PENDING, Kind::OptionalCount, true),
    (Config::MESSAGE_TIMEOUT_SECS, Kind::Count, false),
    (Config::ENABLE_MESSAGE_TIMEOUTS, Kind::Flag, false),
    (Config::TICK_TUPLE_FREQ_SECS, Kind::OptionalCount, true),
    (Config::RECEIVE_BUFFER_SIZE, Kind::Count, true),
    (Config::PRODUCER_BATCH_SIZE, Kind::Count, true),
    (Config::DEBUG, Kind::Flag, true),
    (Config::TRANSPORT_FRAME_TIMEOUT_SECS, Kind::Count, false),
    (Config::EXECUTOR_STALL_SECS, Kind::Count, true),
    (Config::CHAINING, Kind::Flag, true),
];

/// The configuration of a topology, or of one component with its overrides applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `topology.workers`: worker processes on a cluster (default 1).
    pub workers: u32,
    /// `topology.acker.executors`: acker tasks; `None` means one per worker (default).
    pub acker_executors: Option<u32>,
    /// `topology.max.spout.pending`: tuple trees in flight per spout task; `None` is unbounded.
    pub max_spout_pending: Option<u32>,
    /// `topology.message.timeout.secs`: a tree not complete in this time fails (default 30).
    pub message_timeout_secs: u32,
    /// `topology.enable.message.timeouts`: whether trees time out at all (default true).
    pub enable_message_timeouts: bool,
    /// `topology.tick.tuple.freq.secs`: send each bolt task a tick tuple this often.
    pub tick_tuple_freq_secs: Option<u32>,
    /// `topology.executor.receive.buffer.size`: tuples an executor's input queue holds before
    /// senders wait (default 16384).
    pub receive_buffer_size: u32,
    /// `topology.producer.batch.size`: tuples sent to a task in one batch (default 256).
    pub producer_batch_size: u32,
    /// `topology.debug`: log every emitted tuple (default false).
    pub debug: bool,
    /// `topology.transport.frame.timeout.secs`: a worker drops a connection from another
    /// worker when a frame that has begun to arrive is not complete after this many seconds
    /// (default 30). A connection between frames may stay idle.
    pub transport_frame_timeout_secs: u32,
    /// `topology.executor.stall.secs`: an executor inside one `execute` or `next_tuple` call
    /// this long shows as stalled in metrics and `describe` (default 30).
    pub executor_stall_secs: u32,
    /// `topology.chaining`: run a bolt inside the executor of the component that feeds it when
    /// that is safe (see `squall_topology::chain`), so its tuples pass without a queue (default
    /// true; the environment variable `SQUALL_CHAINING=off` changes the default, to compare).
    /// Set false on one component to keep it out of any chain.
    pub chaining: bool,
}

/// `topology.chaining`'s default: on, unless `SQUALL_CHAINING` says `off`, `false` or `0` (read
/// once per process).
fn chaining_default() -> bool {
    static DEFAULT: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| !matches!(std::env::var("SQUALL_CHAINING").as_deref(), Ok("off" | "false" | "0")));
    *DEFAULT
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            acker_executors: None,
            max_spout_pending: None,
            message_timeout_secs: 30,
            enable_message_timeouts: true,
            tick_tuple_freq_secs: None,
            receive_buffer_size: 16384,
            producer_batch_size: 256,
            debug: false,
            transport_frame_timeout_secs: 30,
            executor_stall_secs: 30,
            chaining: chaining_default(),
        }
    }
}

impl Config {
    /// `topology.workers`
    pub const WORKERS: &'static str = "topology.workers";
    /// `topology.acker.executors`
    pub const ACKER_EXECUTORS: &'static str = "topology.acker.executors";
    /// `topology.max.spout.pending`
    pub const MAX_SPOUT_PENDING: &'static str = "topology.max.spout.pending";
    /// `topology.message.timeout.secs`
    pub const MESSAGE_TIMEOUT_SECS: &'static str = "topology.message.timeout.secs";
    /// `topology.enable.message.timeouts`
    pub const ENABLE_MESSAGE_TIMEOUTS: &'static str = "topology.enable.message.timeouts";
    /// `topology.tick.tuple.freq.secs`
    pub const TICK_TUPLE_FREQ_SECS: &'static str = "topology.tick.tuple.freq.secs";
    /// `topology.executor.receive.buffer.size`
    pub const RECEIVE_BUFFER_SIZE: &'static str = "topology.executor.receive.buffer.size";
    /// `topology.producer.batch.size`
    pub const PRODUCER_BATCH_SIZE: &'static str = "topology.producer.batch.size";
    /// `topology.debug`
    pub const DEBUG: &'static str = "topology.debug";
    /// `topology.transport.frame.timeout.secs`
    pub const TRANSPORT_FRAME_TIMEOUT_SECS: &'static str = "topology.transport.frame.timeout.secs";
    /// `topology.executor.stall.secs`
    pub const EXECUTOR_STALL_SECS: &'static str = "topology.executor.stall.secs";
    /// `topology.chaining`
    pub const CHAINING: &'static str = "topology.chaining";

    /// The defaults.
    pub fn new() -> Self {
        Config::default()
    }

    /// Sets a key, checking the key and the value's type.
    pub fn set(&mut self, key: &str, value: impl Into<ConfigValue>) -> Result<&mut Self, ConfigError> {
        let value = value.into();
        let kind = kind_of(key)?;
        let invalid = || ConfigError::InvalidValue {
            key: key.to_owned(),
            expected: kind.expected(),
            found: format!("{} ({value})", value.type_name()),
        };
        let count = |v: &ConfigValue| match v {
            ConfigValue::Int(n) if *n > 0 && *n <= u32::MAX as i64 => Ok(*n as u32),
            _ => Err(invalid()),
        };
        let optional = |v: &ConfigValue| match v {
            ConfigValue::Null => Ok(None),
            v => count(v).map(Some),
        };
        let flag = |v: &ConfigValue| match v {
            ConfigValue::Bool(b) => Ok(*b),
            _ => Err(invalid()),
        };
        match key {
            Config::WORKERS => self.workers = count(&value)?,
            Config::ACKER_EXECUTORS => {
                // Zero ackers is meaningful: tuples are acked as soon as they are emitted.
                self.acker_executors = match &value {
                    ConfigValue::Int(0) => Some(0),
                    v => optional(v)?,
                }
            }
            Config::MAX_SPOUT_PENDING => self.max_spout_pending = optional(&value)?,
            Config::MESSAGE_TIMEOUT_SECS => self.message_timeout_secs = count(&value)?,
            Config::ENABLE_MESSAGE_TIMEOUTS => self.enable_message_timeouts = flag(&value)?,
            Config::TICK_TUPLE_FREQ_SECS => self.tick_tuple_freq_secs = optional(&value)?,
            Config::RECEIVE_BUFFER_SIZE => self.receive_buffer_size = count(&value)?,
            Config::PRODUCER_BATCH_SIZE => self.producer_batch_size = count(&value)?,
            Config::DEBUG => self.debug = flag(&value)?,
            Config::TRANSPORT_FRAME_TIMEOUT_SECS => self.transport_frame_timeout_secs = count(&value)?,
            Config::EXECUTOR_STALL_SECS => self.executor_stall_secs = count(&value)?,
            Config::CHAINING => self.chaining = flag(&value)?,
            _ => unreachable!("kind_of accepted an unhandled key"),
        }
        Ok(self)
    }

    /// Sets a key from its text form, as given on a command line: `30`, `true`, `null`.
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<&mut Self, ConfigError> {
        let kind = kind_of(key)?;
        let text = text.trim();
        let value = match (kind, text) {
            (_, "null") => ConfigValue::Null,
            (Kind::Flag, "true") => ConfigValue::Bool(true),
            (Kind::Flag, "false") => ConfigValue::Bool(false),
            (Kind::Count | Kind::OptionalCount, t) => match t.parse::<i64>() {
                Ok(n) => ConfigValue::Int(n),
                Err(_) => ConfigValue::Str(t.to_owned()),
            },
            (_, t) => ConfigValue::Str(t.to_owned()),
        };
        self.set(key, value)
    }

    /// Applies a `key=value` override, as `-c key=value` on the command line.
    pub fn apply_override(&mut self, assignment: &str) -> Result<&mut Self, ConfigError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| ConfigError::Malformed(assignment.to_owned()))?;
        self.set_text(key.trim(), value)
    }

    /// Sets every key of a JSON object.
    pub fn merge_json(&mut self, json: &serde_json::Value) -> Result<&mut Self, ConfigError> {
        let Some(map) = json.as_object() else {
            return Err(ConfigError::Malformed(json.to_string()));
        };
        for (key, value) in map {
            let value: ConfigValue = serde_json::from_value(value.clone()).map_err(|_| ConfigError::InvalidValue {
                key: key.clone(),
                expected: kind_of(key).map(Kind::expected).unwrap_or("a value"),
                found: value.to_string(),
            })?;
            self.set(key, value)?;
        }
        Ok(self)
    }

    /// Every key with its value.
    pub fn to_map(&self) -> BTreeMap<&'static str, ConfigValue> {
        let mut map = BTreeMap::new();
        map.insert(Config::WORKERS, self.workers.into());
        map.insert(Config::ACKER_EXECUTORS, self.acker_executors.into());
        map.insert(Config::MAX_SPOUT_PENDING, self.max_spout_pending.into());
        map.insert(Config::MESSAGE_TIMEOUT_SECS, self.message_timeout_secs.into());
        map.insert(Config::ENABLE_MESSAGE_TIMEOUTS, self.enable_message_timeouts.into());
        map.insert(Config::TICK_TUPLE_FREQ_SECS, self.tick_tuple_freq_secs.into());
        map.insert(Config::RECEIVE_BUFFER_SIZE, self.receive_buffer_size.into());
        map.insert(Config::PRODUCER_BATCH_SIZE, self.producer_batch_size.into());
        map.insert(Config::DEBUG, self.debug.into());
        map.insert(Config::TRANSPORT_FRAME_TIMEOUT_SECS, self.transport_frame_timeout_secs.into());
        map.insert(Config::EXECUTOR_STALL_SECS, self.executor_stall_secs.into());
        map.insert(Config::CHAINING, self.chaining.into());
        map
    }

    /// This config with a component's overrides applied.
    pub fn with_overrides(&self, overrides: &ComponentConfig) -> Config {
        let mut config = self.clone();
        for (key, value) in &overrides.entries {
            // Overrides were checked when they were set.
            let _ = config.set(key, value.clone());
        }
        config
    }
}

impl Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(deserializer)?;
        let mut config = Config::default();
        config.merge_json(&json).map_err(serde::de::Error::custom)?;
        Ok(config)
    }
}

/// Per-component overrides of the keys that may differ between components.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ComponentConfig {
    entries: BTreeMap<String, ConfigValue>,
}

impl ComponentConfig {
    /// Sets a key, checking that it exists, may be set per component, and has a valid value.
    pub fn set(&mut self, key: &str, value: impl Into<ConfigValue>) -> Result<(), ConfigError> {
        let value = value.into();
        let per_component = KEYS.iter().find(|(k, _, _)| *k == key).map(|(_, _, p)| *p);
        match per_component {
            None => {
                kind_of(key)?;
            }
            Some(false) => {
                return Err(ConfigError::NotPerComponent {
                    key: key.to_owned(),
                    allowed: KEYS.iter().filter(|k| k.2).map(|k| k.0).collect::<Vec<_>>().join(", "),
                });
            }
            Some(true) => {}
        }
        // Validate the value by applying it to a scratch config.
        Config::default().set(key, value.clone())?;
        self.entries.insert(key.to_owned(), value);
        Ok(())
    }

    /// Whether no key is overridden.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The override of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&ConfigValue> {
        self.entries.get(key)
    }
}

fn kind_of(key: &str) -> Result<Kind, ConfigError> {
    if let Some((_, kind, _)) = KEYS.iter().find(|(k, _, _)| *k == key) {
        return Ok(*kind);
    }
    let suggestion = KEYS
        .iter()
        .map(|(k, _, _)| (edit_distance(k, key), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k.to_owned());
    Err(ConfigError::UnknownKey {
        key: key.to_owned(),
        suggestion,
        known: KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", "),
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = if ca == *cb { prev } else { prev + 1 };
            prev = row[j + 1];
            row[j + 1] = cost.min(row[j] + 1).min(prev + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked() {
        let mut c = Config::new();
        c.set(Config::WORKERS, 4).unwrap().set(Config::MAX_SPOUT_PENDING, 100).unwrap();
        assert_eq!((c.workers, c.max_spout_pending), (4, Some(100)));
        let err = c.set("topology.wokers", 4).unwrap_err();
        assert!(err.to_string().contains("`topology.wokers`"), "{err}");
        assert!(err.to_string().contains("did you mean `topology.workers`"), "{err}");
        let err = c.set(Config::WORKERS, "four").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `topology.workers` expects a positive integer, got a string (\"four\")"
        );
        assert!(c.set(Config::DEBUG, 1).is_err());
        assert!(c.set(Config::WORKERS, 0).is_err());
        c.set(Config::ACKER_EXECUTORS, 0).unwrap();
        assert_eq!(c.acker_executors, Some(0));
        assert_eq!(c.transport_frame_timeout_secs, 30);
        c.set(Config::TRANSPORT_FRAME_TIMEOUT_SECS, 5).unwrap();
        assert_eq!(c.transport_frame_timeout_secs, 5);
        assert!(c.set(Config::TRANSPORT_FRAME_TIMEOUT_SECS, 0).is_err());
        let mut cc = ComponentConfig::default();
        assert!(matches!(cc.set(Config::TRANSPORT_FRAME_TIMEOUT_SECS, 5), Err(ConfigError::NotPerComponent { .. })));
    }

    #[test]
    fn text_and_json_forms() {
        let mut c = Config::new();
        c.apply_override("topology.message.timeout.secs=5").unwrap();
        c.apply_override("topology.debug=true").unwrap();
        c.apply_override("topology.max.spout.pending=null").unwrap();
        assert_eq!((c.message_timeout_secs, c.debug, c.max_spout_pending), (5, true, None));
        assert!(matches!(c.apply_override("topology.debug"), Err(ConfigError::Malformed(_))));
        let json = serde_json::to_value(&c).unwrap();
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let bad: Result<Config, _> = serde_json::from_str(r#"{"topology.workers": "x"}"#);
        assert!(bad.unwrap_err().to_string().contains("topology.workers"));
    }

    #[test]
    fn component_overrides() {
        let mut cc = ComponentConfig::default();
        cc.set(Config::TICK_TUPLE_FREQ_SECS, 1).unwrap();
        assert!(matches!(cc.set(Config::WORKERS, 2), Err(ConfigError::NotPerComponent { .. })));
        assert!(matches!(cc.set("nope", 2), Err(ConfigError::UnknownKey { .. })));
        let c = Config::default().with_overrides(&cc);
        assert_eq!(c.tick_tuple_freq_secs, Some(1));
    }
}

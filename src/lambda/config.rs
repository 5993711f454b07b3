//! The function's configuration, from its environment.

use super::*;

/// Every environment variable [`Config`] reads (templates and docs are checked against it).
pub const CONFIG_VARIABLES: &[&str] = &[
    "STREAMSEAL_TARGET",
    // Read where the store is opened ([`crate::store::open`]), by the CLI too.
    "STREAMSEAL_TARGET_REGION",
    "STREAMSEAL_SCHEMAS",
    "STREAMSEAL_ENCODE_THREADS",
    "STREAMSEAL_ZSTD_LEVEL",
    "STREAMSEAL_SEAL_TABLES",
    "STREAMSEAL_RETENTION_DAYS",
    "STREAMSEAL_RETENTION_MODE",
    "STREAMSEAL_SHARD_MAP_MINUTES",
    "STREAMSEAL_KEEP_CHANGES_DAYS",
];

/// Settings read from the environment once per container.
#[derive(Debug, Clone)]
pub struct Config {
    /// `STREAMSEAL_TARGET`.
    pub target: String,
    /// `STREAMSEAL_SCHEMAS`.
    pub schemas: Option<String>,
    /// Ingest tuning.
    pub options: IngestOptions,
    /// `STREAMSEAL_SEAL_TABLES`.
    pub seal_tables: Vec<String>,
    /// `STREAMSEAL_RETENTION_DAYS` and `STREAMSEAL_RETENTION_MODE`.
    pub retention: Option<(RetentionMode, u32)>,
    /// `STREAMSEAL_SHARD_MAP_MINUTES` (0 turns the shard map off).
    pub shard_map_every: Option<std::time::Duration>,
    /// `STREAMSEAL_KEEP_CHANGES_DAYS`: a scheduled checkpoint task then expires changes older
    /// than this that the checkpoint covers (unset: changes are kept for ever).
    pub keep_changes_days: Option<u32>,
}

impl Config {
    /// Reads the variables through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, LambdaError> {
        let target = get("STREAMSEAL_TARGET")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                LambdaError::Config(
                    "STREAMSEAL_TARGET is not set; set it to s3://bucket/prefix".into(),
                )
            })?;
        let threads = match get("STREAMSEAL_ENCODE_THREADS") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    LambdaError::Config(format!(
                        "STREAMSEAL_ENCODE_THREADS={v:?} is not a number from 1 to 64"
                    ))
                })?,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
        };
        let zstd_level = match get("STREAMSEAL_ZSTD_LEVEL") {
            Some(v) => v
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=19).contains(n))
                .ok_or_else(|| {
                    LambdaError::Config(format!(
                        "STREAMSEAL_ZSTD_LEVEL={v:?} is not a level from 1 to 19"
                    ))
                })?,
            None => 1,
        };
        let seal_tables: Vec<String> = get("STREAMSEAL_SEAL_TABLES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        for t in &seal_tables {
            crate::model::change::validate_table_name(t).map_err(|e| {
                LambdaError::Config(format!("STREAMSEAL_SEAL_TABLES: table {t:?}: {e}"))
            })?;
        }
        let retention = match get("STREAMSEAL_RETENTION_DAYS").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(v) => {
                let days = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=36_500).contains(d))
                    .ok_or_else(|| {
                        LambdaError::Config(format!(
                            "STREAMSEAL_RETENTION_DAYS={v:?} is not a number of days from 1 to 36500"
                        ))
                    })?;
                let mode = match get("STREAMSEAL_RETENTION_MODE").as_deref().map(str::trim) {
                    None | Some("") | Some("compliance") | Some("COMPLIANCE") => {
                        RetentionMode::Compliance
                    }
                    Some("governance") | Some("GOVERNANCE") => RetentionMode::Governance,
                    Some(other) => {
                        return Err(LambdaError::Config(format!(
                            "STREAMSEAL_RETENTION_MODE={other:?} is not compliance or governance"
                        )));
                    }
                };
                Some((mode, days))
            }
        };
        let shard_map_every = match get("STREAMSEAL_SHARD_MAP_MINUTES")
            .filter(|v| !v.trim().is_empty())
        {
            None => Some(std::time::Duration::from_secs(300)),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(m) if m <= 1440 => Some(std::time::Duration::from_secs(m * 60)),
                _ => {
                    return Err(LambdaError::Config(format!(
                        "STREAMSEAL_SHARD_MAP_MINUTES={v:?} is not a number of minutes from 0 (off) to 1440"
                    )));
                }
            },
        };
        let keep_changes_days = match get("STREAMSEAL_KEEP_CHANGES_DAYS")
            .filter(|v| !v.trim().is_empty())
        {
            None => None,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(d) if (1..=36_500).contains(&d) => Some(d),
                _ => {
                    return Err(LambdaError::Config(format!(
                        "STREAMSEAL_KEEP_CHANGES_DAYS={v:?} is not a number of days from 1 to 36500"
                    )));
                }
            },
        };
        Ok(Config {
            keep_changes_days,
            shard_map_every,
            seal_tables,
            retention,
            target,
            schemas: get("STREAMSEAL_SCHEMAS").filter(|s| !s.trim().is_empty()),
            options: IngestOptions {
                encode: EncodeOptions {
                    zstd_level,
                    encode_threads: threads,
                },
                ..IngestOptions::on_threads(threads)
            },
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, LambdaError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

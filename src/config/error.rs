//! What is wrong with a configuration: the file cannot be read or parsed, or a value is invalid
//! (naming its key).

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {key}: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    /// The value of `key` is wrong: `problem` says how.
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

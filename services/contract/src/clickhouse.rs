//! ClickHouse connection settings shared by the sink, migrations and reports.
use serde::{Deserialize, Serialize};

/// Where ClickHouse is and how to log in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP URL of the server. Environment: `TALLY_CLICKHOUSE_URL`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Database holding tally's tables.
    #[serde(default = "default_database")]
    pub database: String,
    /// User to log in as.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password of that user; empty for none. Never logged.
    #[serde(default)]
    pub password: String,
}

/// The address scripts/services.sh serves ClickHouse on.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8123";

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_database() -> String {
    "tally".to_string()
}

fn default_user() -> String {
    "default".to_string()
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            database: default_database(),
            user: default_user(),
            password: String::new(),
        }
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let password = if self.password.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &password)
            .finish()
    }
}

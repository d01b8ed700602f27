//! The one error type of the contract crate.

/// Everything that can go wrong in the shared contract. Each variant says what failed and why,
/// naming the record, file or field concerned.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// An embedded `.avsc` file does not parse; a build-time defect, never a runtime input.
    #[error("schema file {file} is invalid: {reason}")]
    SchemaFile { file: String, reason: String },

    /// A record could not be encoded with its schema (a value the schema does not allow).
    #[error("cannot encode {record}: {reason}")]
    Encode {
        record: &'static str,
        reason: String,
    },

    /// The bytes are not Avro single-object encoding (too short or no `C3 01` marker).
    #[error("not an Avro single-object encoded {record}: {reason}")]
    NotSingleObject {
        record: &'static str,
        reason: String,
    },

    /// The writer schema's fingerprint is not a known version of the expected record type:
    /// most likely a newer tally wrote it. Readers stop there rather than skip it.
    #[error(
        "unknown writer schema for {record}: fingerprint {fingerprint} is none of the versions \
         this tally reads ({record} 1 to {known}); a newer tally wrote it? Upgrade this service: \
         it reads nothing past the record until then"
    )]
    UnknownFingerprint {
        record: &'static str,
        fingerprint: String,
        /// The newest version this reader knows.
        known: u32,
    },

    /// The body does not decode with the writer schema, or does not fit the Rust type.
    #[error("cannot decode {record} (writer version {version}): {reason}")]
    Decode {
        record: &'static str,
        version: u32,
        reason: String,
    },

    /// A Confluent-framed record names a schema id, and no schema registry is configured to
    /// say what it is. Readers stop there, as before a record of an unknown version.
    #[error(
        "a record in the Confluent wire format names schema id {id}, and no schema registry is \
         configured to look it up: set kafka.schema_registry_url"
    )]
    NoSchemaRegistry { id: u32 },

    /// The schema registry did not answer, or answered with an error. `transient`: it may
    /// answer another time (a network failure, a 5xx), so the reader waits and asks again.
    #[error("schema registry: {operation} failed: {reason}")]
    Registry {
        operation: String,
        reason: String,
        transient: bool,
    },

    /// A configuration file or environment variable is invalid; names the key and the reason.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Kafka refused or failed an operation.
    #[error("kafka {operation} failed: {reason}")]
    Kafka {
        operation: &'static str,
        reason: String,
    },
}

/// Result with the contract's error.
pub type Result<T, E = ContractError> = std::result::Result<T, E>;

impl ContractError {
    /// Whether the bytes are a record of a schema version this reader does not know (rather
    /// than damaged): a reader stops there instead of dead-lettering it and reading on, so
    /// nothing is lost while a reader is older than its writer.
    pub fn is_unknown_version(&self) -> bool {
        matches!(
            self,
            ContractError::UnknownFingerprint { .. }
                | ContractError::NoSchemaRegistry { .. }
                | ContractError::Registry {
                    transient: false,
                    ..
                }
        )
    }

    /// Whether asking again may succeed: the schema registry did not answer. A reader waits
    /// and reads the record again (it is never dead-lettered for it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ContractError::Registry {
                transient: true,
                ..
            }
        )
    }
}

//! What every ingest target needs: a sender and the record limits, made once.
use std::sync::{Arc, OnceLock};

use tally_ingest::auth::{hash_key, Authenticator, Principal};
use tally_ingest::limits::RecordLimits;
use tally_ingest::llm_call::Context;
use tally_ingest::ApiKeyConfig;

pub fn principal() -> &'static Arc<Principal> {
    static PRINCIPAL: OnceLock<Arc<Principal>> = OnceLock::new();
    PRINCIPAL.get_or_init(|| {
        let auth = Authenticator::new(&[ApiKeyConfig {
            name: "fuzz".into(),
            sha256: hash_key("fuzz-key"),
            tenant: "acme".into(),
            team: Some("payments".into()),
            any_team: true,
            rate_limit_per_sec: u32::MAX,
            github_webhook_secret: None,
        }]);
        auth.bearer(Some("Bearer fuzz-key"))
            .expect("the key just configured")
    })
}

pub fn limits() -> &'static RecordLimits {
    static LIMITS: OnceLock<RecordLimits> = OnceLock::new();
    LIMITS.get_or_init(RecordLimits::default)
}

pub fn context() -> Context<'static> {
    // A fixed arrival time: the targets are deterministic.
    let received_at = 1_796_000_000_000_000;
    Context {
        principal: principal().as_ref(),
        limits: limits(),
        received_at,
        latest_occurred_at: received_at + 300_000_000,
    }
}

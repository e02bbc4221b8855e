//! The built-in plugins, each off unless its flag turns it on.

pub mod access_log;
pub mod auth;
pub mod cors;
pub mod health;
pub mod metrics;

pub use access_log::AccessLog;
pub use auth::TokenAuth;
pub use cors::Cors;
pub use health::Health;
pub use metrics::RequestMetrics;

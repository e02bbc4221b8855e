//! The built-in plugins, each off unless its flag turns it on.

pub mod auth;
pub mod cors;
pub mod health;

pub use auth::TokenAuth;
pub use cors::Cors;
pub use health::Health;

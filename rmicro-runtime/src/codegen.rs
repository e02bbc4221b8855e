//! What generated code links against. Not a public API for hand-written code.
//!
//! Generated files reach every dependency through this module (by default as
//! `::rmicro_runtime::__codegen`), so a crate with generated code depends on `rmicro-runtime` alone
//! and the versions of prost and tonic always match the runtime's. Items here change only together
//! with the API level ([`crate::api::API_LEVEL`]).

pub use prost;
pub use prost_types;

pub use crate::api::require_api;
pub use crate::client::Client;
pub use crate::endpoint::{Endpoint, HttpRule};
pub use crate::server::{RegisterError, ResponseStream, Server, ServiceDef};
pub use tonic::{IntoRequest, IntoStreamingRequest, Request, Response, Status, Streaming};

pub use std::future::Future;
pub use std::sync::Arc;

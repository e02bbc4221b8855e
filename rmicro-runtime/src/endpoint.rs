//! Endpoint metadata that generated code records for each RPC.
//!
//! The values are `const`, built by generated code from the `.proto`: the gRPC path of each
//! method, its message types, its streaming kind and every `google.api.http` binding. The registry
//! publishes them (go-micro's `endpoints` list) and the gateway routes HTTP requests with them.

/// One RPC of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// go-micro's endpoint name, `Service.Method` (for example `User.Call`).
    pub name: &'static str,
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    /// Fully qualified protobuf name of the request message (no leading dot).
    pub request: &'static str,
    /// Fully qualified protobuf name of the response message (no leading dot).
    pub response: &'static str,
    /// Whether the client sends a stream of requests.
    pub client_streaming: bool,
    /// Whether the server sends a stream of responses.
    pub server_streaming: bool,
    /// The `google.api.http` bindings, the primary one first, then its `additional_bindings`.
    pub http: &'static [HttpRule],
}

impl Endpoint {
    /// The streaming kind, as go-micro names it in endpoint metadata (`"stream"` when either side
    /// streams).
    pub const fn is_streaming(&self) -> bool {
        self.client_streaming || self.server_streaming
    }
}

/// One `google.api.http` binding of an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpRule {
    /// The HTTP method in upper case (`GET`, `POST`, …), or the custom verb of a `custom` pattern.
    pub method: &'static str,
    /// The path template, for example `/v1/users/{name=users/*}`.
    pub path: &'static str,
    /// Which request field the HTTP body maps to: `""` for none, `"*"` for the whole message.
    pub body: &'static str,
    /// Which response field becomes the HTTP body: `""` for the whole message.
    pub response_body: &'static str,
    /// The request fields bound by path variables, in template order (dotted for nested fields).
    pub path_params: &'static [&'static str],
}

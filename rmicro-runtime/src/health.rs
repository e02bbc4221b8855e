//! The gRPC health checking protocol (`grpc.health.v1.Health`), served by every [`Server`]:
//! what Kubernetes' gRPC probes, `grpc_health_probe`, Envoy and other load balancers ask.
//!
//! The server as a whole (service `""`) and each service registered on it answer `SERVING` once
//! the server is bound; a service that is not there answers `NOT_FOUND` to `Check` and
//! `SERVICE_UNKNOWN` to `Watch`. A [`Health`] handle from [`Server::health`] changes a status
//! (a service whose database is gone can say `NOT_SERVING` while it recovers). A
//! [`Service`](crate::Service) that stops turns everything `NOT_SERVING` before it deregisters.
//! When the server is told to shut down, everything turns `NOT_SERVING`, and `Watch` streams end
//! after saying so, so they do not hold up the drain of calls in flight.
//!
//! The messages are written out here (field numbers as in `grpc/health/v1/health.proto`).
//!
//! [`Server`]: crate::Server
//! [`Server::health`]: crate::Server::health

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::server::{ResponseStream, ServiceDef};

/// gRPC service name of the health service.
pub const SERVICE: &str = "grpc.health.v1.Health";
/// gRPC path of `Check`.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// gRPC path of `Watch`.
pub const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// The health messages.
pub mod proto {
    /// Which service is asked about (`""`: the server as a whole).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckRequest {
        /// The full gRPC service name, or empty.
        #[prost(string, tag = "1")]
        pub service: String,
    }

    /// How the service is.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HealthCheckResponse {
        /// A [`ServingStatus`](super::ServingStatus) number.
        #[prost(int32, tag = "1")]
        pub status: i32,
    }
}

/// `grpc/health/v1/health.proto` as a descriptor set, so server reflection can describe the
/// health service as it describes the user's (grpcurl, Postman and the gateway's `rpc` handler
/// then call it like any other).
pub(crate) fn descriptor_set() -> Vec<u8> {
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };
    let field = |name: &str, kind: Type, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(1),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        type_name: type_name.map(Into::into),
        json_name: Some(name.into()),
        ..Default::default()
    };
    let statuses = [
        ("UNKNOWN", ServingStatus::Unknown),
        ("SERVING", ServingStatus::Serving),
        ("NOT_SERVING", ServingStatus::NotServing),
        ("SERVICE_UNKNOWN", ServingStatus::ServiceUnknown),
    ];
    let method = |name: &str, streams: bool| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(".grpc.health.v1.HealthCheckRequest".into()),
        output_type: Some(".grpc.health.v1.HealthCheckResponse".into()),
        server_streaming: streams.then_some(true),
        ..Default::default()
    };
    let file = FileDescriptorProto {
        name: Some("grpc/health/v1/health.proto".into()),
        package: Some("grpc.health.v1".into()),
        message_type: vec![
            DescriptorProto {
                name: Some("HealthCheckRequest".into()),
                field: vec![field("service", Type::String, None)],
                ..Default::default()
            },
            DescriptorProto {
                name: Some("HealthCheckResponse".into()),
                field: vec![field(
                    "status",
                    Type::Enum,
                    Some(".grpc.health.v1.HealthCheckResponse.ServingStatus"),
                )],
                enum_type: vec![EnumDescriptorProto {
                    name: Some("ServingStatus".into()),
                    value: statuses
                        .iter()
                        .map(|(name, status)| EnumValueDescriptorProto {
                            name: Some((*name).into()),
                            number: Some(*status as i32),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        service: vec![ServiceDescriptorProto {
            name: Some("Health".into()),
            method: vec![method("Check", false), method("Watch", true)],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

/// A service's health, as the protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ServingStatus {
    /// Not said.
    Unknown = 0,
    /// Taking calls.
    Serving = 1,
    /// Not taking calls (shutting down, or said so by its code).
    NotServing = 2,
    /// Not on this server (`Watch` only; `Check` answers `NOT_FOUND`).
    ServiceUnknown = 3,
}

#[derive(Debug, Clone, Default)]
struct Statuses {
    of: HashMap<String, ServingStatus>,
    /// Set once the server shuts down: watchers end after this.
    closing: bool,
}

/// Sets and reads the statuses a [`Server`](crate::Server) answers health checks with. Clones
/// share them.
#[derive(Debug, Clone)]
pub struct Health {
    statuses: Arc<watch::Sender<Statuses>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            statuses: Arc::new(watch::Sender::new(Statuses::default())),
        }
    }
}

impl Health {
    /// Sets the status of `service` (a full gRPC service name, or `""` for the server as a
    /// whole); watchers hear of a change at once.
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses
            .send_if_modified(|s| s.of.insert(service.to_string(), status) != Some(status));
    }

    /// The status of `service`, if it has one.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.statuses.borrow().of.get(service).copied()
    }

    /// `SERVING` for `service` unless its status was set already.
    pub(crate) fn serving_unless_set(&self, service: &str) {
        self.statuses.send_if_modified(|s| {
            if s.of.contains_key(service) {
                return false;
            }
            s.of.insert(service.to_string(), ServingStatus::Serving);
            true
        });
    }

    /// The server is about to shut down (a service deregisters first): everything is
    /// `NOT_SERVING`, so that load balancers that probe health stop sending calls as soon as
    /// registry watchers do; watchers stay until [`shut_down`](Self::shut_down).
    pub(crate) fn stopping(&self) {
        self.statuses.send_if_modified(|s| {
            let mut changed = false;
            for status in s.of.values_mut() {
                changed |= *status != ServingStatus::NotServing;
                *status = ServingStatus::NotServing;
            }
            changed
        });
    }

    /// The server is shutting down: everything is `NOT_SERVING`, and watchers end.
    pub(crate) fn shut_down(&self) {
        self.statuses.send_modify(|s| {
            for status in s.of.values_mut() {
                *status = ServingStatus::NotServing;
            }
            s.closing = true;
        });
    }
}

/// The `Check` and `Watch` handlers, over `health`.
pub(crate) fn service(health: Health) -> ServiceDef {
    let watching = health.clone();
    ServiceDef::new(SERVICE, &[])
        .unary(
            CHECK_PATH,
            move |request: Request<proto::HealthCheckRequest>| {
                let status = health.status(&request.get_ref().service);
                let service = request.into_inner().service;
                async move {
                    match status {
                        Some(status) => Ok(Response::new(proto::HealthCheckResponse {
                            status: status as i32,
                        })),
                        None => Err(Status::not_found(format!("unknown service `{service}`"))),
                    }
                }
            },
        )
        .server_streaming(
            WATCH_PATH,
            move |request: Request<proto::HealthCheckRequest>| {
                let watching = Watching {
                    changes: WatchStream::new(watching.statuses.subscribe()),
                    service: request.into_inner().service,
                    last: None,
                    done: false,
                };
                async move {
                    let stream: ResponseStream<proto::HealthCheckResponse> = Box::pin(watching);
                    Ok::<_, Status>(Response::new(stream))
                }
            },
        )
}

/// A `Watch` call: the service's status now, then each change, until the server shuts down.
struct Watching {
    changes: WatchStream<Statuses>,
    service: String,
    last: Option<ServingStatus>,
    done: bool,
}

impl Stream for Watching {
    type Item = Result<proto::HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let Some(statuses) = ready!(Pin::new(&mut self.changes).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            let status = statuses
                .of
                .get(&self.service)
                .copied()
                .unwrap_or(ServingStatus::ServiceUnknown);
            self.done = statuses.closing;
            if self.last != Some(status) {
                self.last = Some(status);
                return Poll::Ready(Some(Ok(proto::HealthCheckResponse {
                    status: status as i32,
                })));
            }
        }
    }
}

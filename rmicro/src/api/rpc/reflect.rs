//! The rpc handler's gRPC server reflection client: what it asks a node, and how a failed
//! read is told to the HTTP client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use prost_reflect::DescriptorPool;
use rmicro_runtime::reflection::proto::{
    MessageRequest, MessageResponse, ServerReflectionRequest, ServerReflectionResponse,
};
use rmicro_runtime::reflection::{V1ALPHA_PATH, V1_PATH};
use rmicro_runtime::transport::{Connection, TransportError};

use super::call::RawCodec;
use super::channels::MAX_CHANNELS;
use super::{error, Fail, NodeFail};

/// How long server reflection at a node may take.
const REFLECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The versions of the reflection service: `v1`, and `v1alpha`, all that older grpc-go and
/// grpcio-reflection (to this day) serve. The messages are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V1Alpha,
}

impl Version {
    fn path(self) -> &'static str {
        match self {
            Version::V1 => V1_PATH,
            Version::V1Alpha => V1ALPHA_PATH,
        }
    }

    fn other(self) -> Version {
        match self {
            Version::V1 => Version::V1Alpha,
            Version::V1Alpha => Version::V1,
        }
    }
}

/// Why one version's question got no answer.
enum Unanswered {
    /// The node does not serve that version.
    Unimplemented,
    /// Anything else.
    Failed(ReadFail),
}

impl From<ReadFail> for Unanswered {
    fn from(fail: ReadFail) -> Unanswered {
        Unanswered::Failed(fail)
    }
}

/// A read that failed, kept so that it can be given to every request that waited for it.
#[derive(Debug, Clone)]
pub(super) struct ReadFail {
    status: StatusCode,
    detail: String,
    /// Whether the node could not be reached at all.
    unreached: bool,
}

impl ReadFail {
    /// A failure the node answered (or answered wrongly): 502.
    pub(super) fn bad(detail: String) -> ReadFail {
        ReadFail {
            status: StatusCode::BAD_GATEWAY,
            detail,
            unreached: false,
        }
    }

    /// A node that serves no server reflection, which the rpc handler cannot do without: 501,
    /// as gRPC's UNIMPLEMENTED maps, with what to do about it.
    fn no_reflection(address: &str) -> ReadFail {
        ReadFail {
            status: StatusCode::NOT_IMPLEMENTED,
            detail: format!(
                "the service at {address} does not serve gRPC server reflection \
                 (grpc.reflection.v1 or v1alpha), which the rpc handler needs to learn its \
                 message types: enable gRPC server reflection in the service (grpc-go: \
                 reflection.Register; Python: grpc_reflection's enable_server_reflection; \
                 rmicro services serve it), or call it through the http handler"
            ),
            unreached: false,
        }
    }

    /// A node that could not be reached.
    pub(super) fn unreached(detail: String) -> ReadFail {
        ReadFail {
            unreached: true,
            ..ReadFail::bad(detail)
        }
    }

    /// The HTTP answer.
    pub(super) fn response(&self) -> Fail {
        error::response(self.status, self.detail.clone())
    }
}

impl super::flight::Abandoned for ReadFail {
    fn abandoned() -> ReadFail {
        ReadFail::bad(
            "the gateway's read of the service's descriptions ended without a result; \
             the next request reads them again"
                .to_string(),
        )
    }
}

impl From<ReadFail> for NodeFail {
    fn from(fail: ReadFail) -> NodeFail {
        NodeFail {
            response: fail.response(),
            unreached: fail.unreached,
        }
    }
}

/// The reflection client: it asks `v1` first and `v1alpha` when a node does not serve `v1`, and
/// remembers per node address the version that answered, so a node is not asked twice per read.
#[derive(Default)]
pub(super) struct Reflector {
    versions: Mutex<HashMap<String, Version>>,
}

impl Reflector {
    /// Asks the node at `address` one reflection question over `connection` and returns its
    /// answer (an error answer included: what it means depends on the question).
    pub(super) async fn ask(
        &self,
        connection: &Connection,
        address: &str,
        question: MessageRequest,
    ) -> Result<MessageResponse, ReadFail> {
        let versions = || self.versions.lock().unwrap_or_else(|p| p.into_inner());
        let first = versions().get(address).copied().unwrap_or(Version::V1);
        let mut version = first;
        loop {
            match ask_one(connection, address, version, question.clone()).await {
                Ok(answer) => {
                    if version != first || version != Version::V1 {
                        let mut versions = versions();
                        if versions.len() >= MAX_CHANNELS {
                            versions.clear();
                        }
                        versions.insert(address.to_string(), version);
                    }
                    return Ok(answer);
                }
                // A node redeployed at the same address may serve the other version now.
                Err(Unanswered::Unimplemented) if version == first => version = first.other(),
                Err(Unanswered::Unimplemented) => return Err(ReadFail::no_reflection(address)),
                Err(Unanswered::Failed(fail)) => return Err(fail),
            }
        }
    }

    /// The descriptors of `symbol` (a gRPC service) and the files it needs, from the node at
    /// `address`.
    pub(super) async fn file_containing(
        &self,
        connection: &Connection,
        address: &str,
        symbol: &str,
    ) -> Result<DescriptorPool, ReadFail> {
        let question = MessageRequest::FileContainingSymbol(symbol.to_string());
        let files = files_of(self.ask(connection, address, question).await?, address)?;
        let files = files.ok_or_else(|| {
            ReadFail::bad(format!(
                "server reflection at {address} does not know `{symbol}`"
            ))
        })?;
        DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet { file: files })
            .map_err(|e| {
                ReadFail::bad(format!(
                    "descriptors from {address} do not form a valid set: {e}"
                ))
            })
    }

    /// `pool` with the file that defines `symbol` (a message type an `Any` names, which the
    /// files read before need not import) and the files it needs, read from the node at
    /// `address`; `None` when the node does not know it.
    pub(super) async fn with_symbol(
        &self,
        connection: &Connection,
        address: &str,
        pool: &DescriptorPool,
        symbol: &str,
    ) -> Result<Option<DescriptorPool>, ReadFail> {
        let question = MessageRequest::FileContainingSymbol(symbol.to_string());
        let Some(files) = files_of(self.ask(connection, address, question).await?, address)? else {
            return Ok(None);
        };
        let mut pool = pool.clone();
        // Files already in the pool are skipped.
        pool.add_file_descriptor_protos(files).map_err(|e| {
            ReadFail::bad(format!(
                "the descriptors of `{symbol}` from {address} do not fit those read before: {e}"
            ))
        })?;
        Ok(Some(pool))
    }

    /// The full names of the gRPC services the node at `address` serves.
    pub(super) async fn list_services(
        &self,
        connection: &Connection,
        address: &str,
    ) -> Result<Vec<String>, ReadFail> {
        let question = MessageRequest::ListServices(String::new());
        match self.ask(connection, address, question).await? {
            MessageResponse::ListServicesResponse(list) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            MessageResponse::ErrorResponse(e) => Err(ReadFail::bad(format!(
                "server reflection at {address} does not list its services: {}",
                e.error_message
            ))),
            _ => Err(ReadFail::bad(format!(
                "server reflection at {address} gave an unexpected answer"
            ))),
        }
    }
}

/// Asks the node at `address` one question with reflection service `version`.
async fn ask_one(
    connection: &Connection,
    address: &str,
    version: Version,
    question: MessageRequest,
) -> Result<MessageResponse, Unanswered> {
    let failed = |status: tonic::Status| match TransportError::find(&status) {
        Some(err) => Unanswered::Failed(ReadFail {
            unreached: true,
            ..ReadFail::bad(format!("server reflection at {address}: {err}"))
        }),
        None if status.code() == tonic::Code::Unimplemented => Unanswered::Unimplemented,
        None => Unanswered::Failed(ReadFail::bad(format!(
            "server reflection at {address} failed: {}",
            status.message()
        ))),
    };
    let timed_out = || ReadFail::bad(format!("server reflection at {address} did not answer"));
    let mut grpc = connection.grpc();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    };
    let request = tonic::Request::new(tokio_stream::iter([Bytes::from(request.encode_to_vec())]));
    let call = grpc.streaming(
        request,
        http::uri::PathAndQuery::from_static(version.path()),
        RawCodec,
    );
    let mut stream = tokio::time::timeout(REFLECTION_TIMEOUT, call)
        .await
        .map_err(|_| timed_out())?
        .map_err(failed)?
        .into_inner();
    let reply = tokio::time::timeout(REFLECTION_TIMEOUT, stream.message())
        .await
        .map_err(|_| timed_out())?
        .map_err(failed)?
        .ok_or_else(|| {
            ReadFail::bad(format!(
                "server reflection at {address} closed without answering"
            ))
        })?;
    let reply = ServerReflectionResponse::decode(reply).map_err(|e| {
        ReadFail::bad(format!(
            "server reflection at {address} sent a bad answer: {e}"
        ))
    })?;
    Ok(reply.message_response.ok_or_else(|| {
        ReadFail::bad(format!(
            "server reflection at {address} gave an empty answer"
        ))
    })?)
}

/// The files in `answer` to a request for files; `None` when the node answered NOT_FOUND.
fn files_of(
    answer: MessageResponse,
    address: &str,
) -> Result<Option<Vec<prost_types::FileDescriptorProto>>, ReadFail> {
    let files = match answer {
        MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
        MessageResponse::ErrorResponse(e) if e.error_code == tonic::Code::NotFound as i32 => {
            return Ok(None)
        }
        MessageResponse::ErrorResponse(e) => {
            return Err(ReadFail::bad(format!(
                "server reflection at {address}: {}",
                e.error_message
            )))
        }
        _ => {
            return Err(ReadFail::bad(format!(
                "server reflection at {address} gave an unexpected answer"
            )))
        }
    };
    files
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).map_err(|e| {
                ReadFail::bad(format!(
                    "server reflection at {address} sent a bad descriptor: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The gRPC service of go-micro handler `handler` (`Greeter`, of endpoint `Greeter.Hello`) of
/// registry service `service`, among the gRPC services a node serves. go-micro's own client calls
/// `/<service>.Greeter/Hello` and its servers ignore the package; any other server (grpc-go,
/// Python grpcio) serves the proto's full name, so a gRPC service named `Greeter` in any package
/// is taken when it is the only one.
pub(super) fn grpc_service_among(
    served: &[String],
    service: &str,
    handler: &str,
    address: &str,
) -> Result<String, ReadFail> {
    let conventional = format!("{service}.{handler}");
    let named: Vec<&String> = served
        .iter()
        .filter(|s| s.rsplit('.').next() == Some(handler))
        .collect();
    let chosen = match named.iter().find(|s| **s == &conventional) {
        Some(found) => found,
        None => match named.as_slice() {
            [one] => one,
            [] => {
                return Err(ReadFail::bad(format!(
                    "the service at {address} serves no gRPC service named `{handler}` for \
                     `{service}` (it serves {})",
                    served.join(", ")
                )))
            }
            many => {
                let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                return Err(ReadFail::bad(format!(
                    "`{handler}` of `{service}` could be any of {} at {address}; register \
                     its endpoints with their `grpc_path` metadata",
                    many.join(", ")
                )));
            }
        },
    };
    Ok(chosen.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_micro_endpoints_find_their_grpc_service() {
        let served = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let path = |served: &[String], handler| {
            grpc_service_among(served, "go.micro.srv.greeter", handler, "a:1").map_err(|e| e.detail)
        };
        let one = served(&[
            "grpc.reflection.v1alpha.ServerReflection",
            "hello.v1.Greeter",
        ]);
        assert_eq!(path(&one, "Greeter").unwrap(), "hello.v1.Greeter");
        let two = served(&["go.micro.srv.greeter.Greeter", "hello.v1.Greeter"]);
        assert_eq!(
            path(&two, "Greeter").unwrap(),
            "go.micro.srv.greeter.Greeter"
        );
        let two = served(&["a.Greeter", "b.Greeter"]);
        assert!(path(&two, "Greeter")
            .unwrap_err()
            .contains("a.Greeter, b.Greeter"));
        assert!(path(&one, "Other")
            .unwrap_err()
            .contains("no gRPC service named `Other`"));
    }
}

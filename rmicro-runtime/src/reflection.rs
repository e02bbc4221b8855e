//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`), served from the descriptor sets
//! generated code registers, so grpcurl, Postman and the gateway's `rpc` handler can discover
//! and call rmicro services without their `.proto` files.
//!
//! The message types are written out here (field numbers as in `grpc/reflection/v1/reflection.proto`)
//! so the gateway can use them as a client too.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::{Request, Response, Status, Streaming};

use crate::server::{ResponseStream, ServiceDef};

/// gRPC path of the v1 reflection method.
pub const V1_PATH: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
/// gRPC path of the v1alpha reflection method (older clients).
pub const V1ALPHA_PATH: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// The reflection messages.
pub mod proto {
    /// A reflection request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReflectionRequest {
        /// Unused by rmicro.
        #[prost(string, tag = "1")]
        pub host: String,
        /// What is asked.
        #[prost(oneof = "MessageRequest", tags = "3, 4, 5, 6, 7")]
        pub message_request: Option<MessageRequest>,
    }

    /// What a reflection request asks for.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum MessageRequest {
        /// A file by name, with its imports.
        #[prost(string, tag = "3")]
        FileByFilename(String),
        /// The file defining a fully qualified symbol, with its imports.
        #[prost(string, tag = "4")]
        FileContainingSymbol(String),
        /// The file defining an extension.
        #[prost(message, tag = "5")]
        FileContainingExtension(ExtensionRequest),
        /// Every extension number of a message type.
        #[prost(string, tag = "6")]
        AllExtensionNumbersOfType(String),
        /// The services this server has.
        #[prost(string, tag = "7")]
        ListServices(String),
    }

    /// An extension, by the message it extends and its field number.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExtensionRequest {
        /// The extended message, fully qualified.
        #[prost(string, tag = "1")]
        pub containing_type: String,
        /// The extension's field number.
        #[prost(int32, tag = "2")]
        pub extension_number: i32,
    }

    /// A reflection response.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReflectionResponse {
        /// Unused by rmicro.
        #[prost(string, tag = "1")]
        pub valid_host: String,
        /// The request answered.
        #[prost(message, optional, tag = "2")]
        pub original_request: Option<ServerReflectionRequest>,
        /// The answer.
        #[prost(oneof = "MessageResponse", tags = "4, 5, 6, 7")]
        pub message_response: Option<MessageResponse>,
    }

    /// What a reflection response carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum MessageResponse {
        /// Encoded `FileDescriptorProto`s.
        #[prost(message, tag = "4")]
        FileDescriptorResponse(FileDescriptorResponse),
        /// Extension numbers.
        #[prost(message, tag = "5")]
        AllExtensionNumbersResponse(ExtensionNumberResponse),
        /// Service names.
        #[prost(message, tag = "6")]
        ListServicesResponse(ListServiceResponse),
        /// An error.
        #[prost(message, tag = "7")]
        ErrorResponse(ErrorResponse),
    }

    /// Encoded `FileDescriptorProto`s.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorResponse {
        /// Each an encoded `FileDescriptorProto`.
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub file_descriptor_proto: Vec<Vec<u8>>,
    }

    /// The extension numbers of a type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExtensionNumberResponse {
        /// The type.
        #[prost(string, tag = "1")]
        pub base_type_name: String,
        /// Its extension numbers.
        #[prost(int32, repeated, tag = "2")]
        pub extension_number: Vec<i32>,
    }

    /// The services of a server.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListServiceResponse {
        /// One per service.
        #[prost(message, repeated, tag = "1")]
        pub service: Vec<ServiceResponse>,
    }

    /// A service name.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceResponse {
        /// Fully qualified.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// A failed request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ErrorResponse {
        /// A gRPC status code.
        #[prost(int32, tag = "1")]
        pub error_code: i32,
        /// What went wrong.
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
}

use proto::{MessageRequest, MessageResponse};

/// A `FileDescriptorSet` seen as its files' encoded bytes: a repeated message field decodes as
/// repeated `bytes`, one entry per file, exactly as written.
#[derive(Clone, PartialEq, Message)]
struct EncodedFiles {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// Files and symbols of every registered descriptor set.
#[derive(Debug, Default)]
struct Index {
    /// File name → encoded `FileDescriptorProto` and its imports.
    files: HashMap<String, (Vec<u8>, Vec<String>)>,
    /// Fully qualified symbol → file name.
    symbols: HashMap<String, String>,
    /// `(extended type, number)` → file name.
    extensions: HashMap<(String, i32), String>,
    services: BTreeSet<String>,
}

impl Index {
    fn add_set(&mut self, bytes: &[u8]) -> Result<(), prost::DecodeError> {
        let set = FileDescriptorSet::decode(bytes)?;
        // Each file is served as the bytes the set holds, not re-encoded from `set`: prost-types
        // drops extension fields when it decodes, so a re-encoded file would lose its custom
        // options (`google.api.http` and the like), which reflection clients read. Both are read
        // from the same records, so they pair one to one.
        let encoded = EncodedFiles::decode(bytes)?.file;
        for (file, encoded) in set.file.into_iter().zip(encoded) {
            let name = file.name().to_string();
            let prefix = if file.package().is_empty() {
                String::new()
            } else {
                format!("{}.", file.package())
            };
            fn messages(prefix: &str, file: &str, m: &DescriptorProto, index: &mut Index) {
                let full = format!("{prefix}{}", m.name());
                for e in &m.enum_type {
                    index
                        .symbols
                        .insert(format!("{full}.{}", e.name()), file.to_string());
                }
                for ext in &m.extension {
                    let extendee = ext.extendee().trim_start_matches('.').to_string();
                    index
                        .extensions
                        .insert((extendee, ext.number()), file.to_string());
                }
                for n in &m.nested_type {
                    messages(&format!("{full}."), file, n, index);
                }
                index.symbols.insert(full, file.to_string());
            }
            for m in &file.message_type {
                messages(&prefix, &name, m, self);
            }
            for e in &file.enum_type {
                self.symbols
                    .insert(format!("{prefix}{}", e.name()), name.clone());
            }
            for s in &file.service {
                let full = format!("{prefix}{}", s.name());
                for m in &s.method {
                    self.symbols
                        .insert(format!("{full}.{}", m.name()), name.clone());
                }
                self.symbols.insert(full.clone(), name.clone());
                self.services.insert(full);
            }
            for ext in &file.extension {
                let extendee = ext.extendee().trim_start_matches('.').to_string();
                self.extensions
                    .insert((extendee, ext.number()), name.clone());
                self.symbols
                    .insert(format!("{prefix}{}", ext.name()), name.clone());
            }
            let deps = file.dependency.clone();
            self.files.insert(name, (encoded, deps));
        }
        Ok(())
    }

    /// `file` and its transitive imports, each once, imports first.
    fn with_imports(&self, file: &str) -> Vec<Vec<u8>> {
        fn visit(index: &Index, name: &str, seen: &mut BTreeSet<String>, out: &mut Vec<Vec<u8>>) {
            if !seen.insert(name.to_string()) {
                return;
            }
            if let Some((bytes, deps)) = index.files.get(name) {
                for dep in deps {
                    visit(index, dep, seen, out);
                }
                out.push(bytes.clone());
            }
        }
        let mut out = Vec::new();
        visit(self, file, &mut BTreeSet::new(), &mut out);
        out
    }

    fn answer(&self, request: proto::ServerReflectionRequest) -> proto::ServerReflectionResponse {
        let not_found = |what: String| {
            MessageResponse::ErrorResponse(proto::ErrorResponse {
                error_code: tonic::Code::NotFound as i32,
                error_message: what,
            })
        };
        let files = |name: &str| {
            MessageResponse::FileDescriptorResponse(proto::FileDescriptorResponse {
                file_descriptor_proto: self.with_imports(name),
            })
        };
        let response = match &request.message_request {
            Some(MessageRequest::FileByFilename(name)) => match self.files.contains_key(name) {
                true => files(name),
                false => not_found(format!("no file `{name}` on this server")),
            },
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                match self.symbols.get(symbol.trim_start_matches('.')) {
                    Some(file) => files(file),
                    None => not_found(format!("no symbol `{symbol}` on this server")),
                }
            }
            Some(MessageRequest::FileContainingExtension(ext)) => {
                let key = (
                    ext.containing_type.trim_start_matches('.').to_string(),
                    ext.extension_number,
                );
                match self.extensions.get(&key) {
                    Some(file) => files(file),
                    None => not_found(format!(
                        "no extension {} of `{}` on this server",
                        ext.extension_number, ext.containing_type
                    )),
                }
            }
            Some(MessageRequest::AllExtensionNumbersOfType(ty)) => {
                let ty = ty.trim_start_matches('.');
                let mut numbers: Vec<i32> = self
                    .extensions
                    .keys()
                    .filter(|(t, _)| t == ty)
                    .map(|(_, n)| *n)
                    .collect();
                numbers.sort_unstable();
                MessageResponse::AllExtensionNumbersResponse(proto::ExtensionNumberResponse {
                    base_type_name: ty.to_string(),
                    extension_number: numbers,
                })
            }
            Some(MessageRequest::ListServices(_)) => {
                let mut names: Vec<String> = self.services.iter().cloned().collect();
                names.push("grpc.reflection.v1.ServerReflection".into());
                names.push("grpc.reflection.v1alpha.ServerReflection".into());
                MessageResponse::ListServicesResponse(proto::ListServiceResponse {
                    service: names
                        .into_iter()
                        .map(|name| proto::ServiceResponse { name })
                        .collect(),
                })
            }
            None => MessageResponse::ErrorResponse(proto::ErrorResponse {
                error_code: tonic::Code::InvalidArgument as i32,
                error_message: "empty reflection request".into(),
            }),
        };
        proto::ServerReflectionResponse {
            valid_host: String::new(),
            original_request: Some(request),
            message_response: Some(response),
        }
    }
}

/// The reflection services (v1 and v1alpha) over `sets`.
pub(crate) fn services(sets: &[&[u8]]) -> Vec<ServiceDef> {
    let mut index = Index::default();
    for set in sets {
        if let Err(err) = index.add_set(set) {
            tracing::warn!(error = %err, "a registered descriptor set does not decode; reflection leaves it out");
        }
    }
    let index = Arc::new(index);
    [
        ("grpc.reflection.v1.ServerReflection", V1_PATH),
        ("grpc.reflection.v1alpha.ServerReflection", V1ALPHA_PATH),
    ]
    .into_iter()
    .map(|(name, path)| {
        let index = Arc::clone(&index);
        ServiceDef::new(name, &[]).streaming(
            path,
            move |request: Request<Streaming<proto::ServerReflectionRequest>>| {
                let index = Arc::clone(&index);
                async move {
                    use tokio_stream::StreamExt;
                    let answers = request
                        .into_inner()
                        .map(move |req| req.map(|req| index.answer(req)));
                    let stream: ResponseStream<proto::ServerReflectionResponse> = Box::pin(answers);
                    Ok::<_, Status>(Response::new(stream))
                }
            },
        )
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{encode_key, encode_varint, WireType};

    fn field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(number, WireType::LengthDelimited, &mut out);
        encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn files_are_served_with_their_extension_options() {
        // A method whose options hold only `google.api.http` (field 72295728 of MethodOptions,
        // an extension) = { get: "/v1/x" }, which prost-types would drop on decoding.
        let options = field(72295728, &field(2, b"/v1/x"));
        let method = [
            field(1, b"Get"),
            field(2, b".p.M"),
            field(3, b".p.M"),
            field(4, &options),
        ]
        .concat();
        let service = [field(1, b"S"), field(2, &method)].concat();
        let file = [
            field(1, b"p.proto"),
            field(2, b"p"),
            field(4, &field(1, b"M")),
            field(6, &service),
        ]
        .concat();
        let mut index = Index::default();
        index.add_set(&field(1, &file)).unwrap();

        let response = index.answer(proto::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("p.S".into())),
        });
        match response.message_response {
            Some(MessageResponse::FileDescriptorResponse(found)) => {
                assert!(
                    found.file_descriptor_proto == [file],
                    "the file is not served as registered"
                );
            }
            other => panic!("not a file: {other:?}"),
        }
    }
}

//! A call to a node: the request message encoded and sent, the response decoded back to JSON.

use std::time::{Duration, Instant};

use axum_core::body::Body;
use bytes::{Buf, BufMut, Bytes};
use http::{header, Response, StatusCode};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use rmicro_runtime::registry::Node;
use rmicro_runtime::transport::{Connection, SendBy, TransportError};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;

use super::negative_zero;
use super::request::{build_request, missing_message, names_unknown};
use super::route::Target;
use super::status::{ran_out, status_response, too_large};
use super::{descriptors, error, metadata, proto_json, Fail, NodeFail, RpcHandler};

/// The least a response message may be (gRPC's usual default); `--body-limit` raises it.
const MIN_RESPONSE_LIMIT: usize = 4 * 1024 * 1024;

/// How many message types one request may have to ask a node for (the types of `Any` fields
/// its request and response hold that the service's files do not import).
const MAX_ANY_LOOKUPS: usize = 8;

/// Passes encoded messages through unchanged: the rpc handler encodes and decodes itself.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Where descriptions are read from for a call: until when, registry service, node, gRPC path.
type ReadAt<'a> = (tokio::time::Instant, &'a str, &'a Node, &'a str);

impl RpcHandler {
    /// `method` from descriptors that also define the message an `Any` names in `error` (a
    /// conversion's words), read from the node while `lookups` are left (each read counts one):
    /// `None` when the error is another, the lookups are spent, or the node lacks the type.
    async fn missing_any(
        &self,
        error: &str,
        lookups: &mut usize,
        (until, service, node, grpc_path): ReadAt<'_>,
        method: &MethodDescriptor,
    ) -> Result<Option<MethodDescriptor>, NodeFail> {
        let Some(name) = missing_message(error).filter(|_| *lookups < MAX_ANY_LOOKUPS) else {
            return Ok(None);
        };
        *lookups += 1;
        self.with_message(until, service, node, grpc_path, method, name)
            .await
    }

    /// The request transcoded and sent to the node at `address`, its answer transcoded back.
    pub(super) async fn call_node(
        &self,
        address: &str,
        nodes: &[Node],
        target: &Target,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<Response<Body>, NodeFail> {
        let config = &self.inner.config;
        // The whole call is due within its limit: the descriptions read for it (its method's,
        // those of the `Any` types it holds) and the call itself. A read that takes longer goes
        // on for the requests that follow (`flight`).
        let limit = call_timeout(&parts.headers, config.backend_timeout);
        let deadline = tokio::time::Instant::now() + limit;
        let undescribed = |what: &str| -> NodeFail {
            error::response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the service at {address} did not describe `{what}` by server reflection \
                     within the call's limit ({limit:?}); the gateway goes on reading, and the \
                     requests that follow use what it reads"
                ),
            )
            .into()
        };
        let node = nodes
            .iter()
            .find(|n| n.address == address)
            .unwrap_or(&nodes[0]);
        #[cfg(feature = "tls")]
        let plain = config.client_tls.is_none();
        #[cfg(not(feature = "tls"))]
        let plain = true;
        if plain && node.metadata.get("secure").is_some_and(|s| s == "true") {
            // A handshake would fail with nothing a person could act on. Not reachable by
            // this gateway: another node (a plain one, in a move to TLS) may take the call.
            return Err(NodeFail::unreached(error::response(
                StatusCode::BAD_GATEWAY,
                format!(
                    "service `{}` node {address} serves TLS (its registration says \
                     secure=true): start the gateway with --client-tls-ca, the CA that signed \
                     its certificate",
                    target.service
                ),
            )));
        }
        let grpc_path = match &target.endpoint {
            Some(endpoint) if target.grpc_path.is_empty() => {
                let lookup = self.grpc_path(node, nodes, &target.service, endpoint);
                tokio::time::timeout_at(deadline, lookup)
                    .await
                    .map_err(|_| undescribed(endpoint))??
            }
            _ => target.grpc_path.clone(),
        };
        let grpc_path = grpc_path.as_str();
        let describe = |reread| async move {
            let read = self.method(node, nodes, &target.service, grpc_path, reread);
            tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| undescribed(grpc_path))?
        };
        let (mut method, fresh) = describe(false).await?;
        // Said before the body is read: a streaming method is refused whatever the body.
        if let Some(refusal) = streaming_refused(&method, grpc_path) {
            return Err(refusal.into());
        }
        let query = parts.uri.query();
        // An HTML form's body sets fields as query parameters do (after the URL's own), as
        // go-micro's rpc handler reads one; JSON sent under the form type (`curl -d '{…}'`
        // sends it so) stays JSON.
        let joined;
        let (body, query) = match form_body(&parts.headers, body, &target.body) {
            None => (&body[..], query),
            Some(Err(detail)) => {
                return Err(error::response(StatusCode::BAD_REQUEST, detail).into());
            }
            Some(Ok(form)) => {
                joined = match query.filter(|q| !q.is_empty()) {
                    Some(query) => format!("{query}&{form}"),
                    None => form.to_string(),
                };
                (&[][..], Some(joined.as_str()))
            }
        };
        let (mut reread, mut lookups) = (fresh, 0);
        let input = loop {
            match build_request(&method.input(), target, body, query) {
                // A field or enum value the cached descriptors lack may be one a redeployed
                // service added: read them again (at most once) and build the message anew.
                Err(detail) if !reread && names_unknown(&detail) => {
                    method = describe(true).await?.0;
                    reread = true;
                }
                // An `Any` of a type their files do not import: ask the node for its file.
                Err(detail) => {
                    let at = (deadline, target.service.as_str(), node, grpc_path);
                    match self.missing_any(&detail, &mut lookups, at, &method).await? {
                        Some(found) => method = found,
                        None => break Err(detail),
                    }
                }
                built => break built,
            }
        }
        .map_err(|detail| error::response(StatusCode::BAD_REQUEST, detail))?;
        // (Again: the descriptors may have been read anew.)
        if let Some(refusal) = streaming_refused(&method, grpc_path) {
            return Err(refusal.into());
        }

        // Responses as large as the requests the gateway takes, and never under gRPC's usual
        // 4 MiB (tonic's default would cut every response at 4 MiB).
        let response_limit = config.body_limit.max(MIN_RESPONSE_LIMIT);
        let mut grpc = self
            .channel(address)?
            .grpc()
            .max_decoding_message_size(response_limit);
        let message = Bytes::from(negative_zero::encode(&input));
        let sent = message.len();
        // Headers the client sent for the service become the call's metadata. Those it listed
        // in `Connection`, for the gateway alone, were removed before the plugins ran
        // (`proxy::strip_connection_listed`); what a plugin set stays.
        let mut request = tonic::Request::from_parts(
            MetadataMap::from_headers(metadata::from_request(&parts.headers)),
            tonic::Extensions::default(),
            message,
        );
        // What is left of the limit is the deadline the service hears. None left (a client's
        // `Grpc-Timeout: 0n`, or the reads above took it all): not sent, as a gRPC client
        // fails a call whose deadline has passed, rather than sent with a timeout of nothing.
        let not_called = || -> NodeFail {
            error::response(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the call's limit ({limit:?}) ran out before `{grpc_path}` was called"),
            )
            .into()
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(not_called());
        }
        // Stamped as `grpc-timeout` when the request goes out: connecting to the node (a new
        // one, or one that restarted) comes out of the time the service is told it has.
        request.extensions_mut().insert(SendBy(deadline.into_std()));
        let path = http::uri::PathAndQuery::try_from(grpc_path)
            .map_err(|e| error::response(StatusCode::BAD_GATEWAY, format!("bad gRPC path: {e}")))?;
        let call = exchange(&mut grpc, request, path);
        let started = Instant::now();
        let timed_out = || -> NodeFail {
            error::response(
                StatusCode::GATEWAY_TIMEOUT,
                format!("`{grpc_path}` did not answer within {limit:?}"),
            )
            .into()
        };
        let reply = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => {
                // Silent for the whole backend timeout (not a shorter one the client asked
                // for): avoided, as the http handler avoids a node that does not answer.
                if limit >= config.backend_timeout {
                    self.inner.quarantine.mark(address);
                    self.inner.nodes.invalidate(&target.service);
                }
                return Err(timed_out());
            }
            // The deadline the gateway sent ran out at the service (which answers so as it
            // runs out, racing the gateway's own timer): the gateway's timeout, not a 408.
            Ok(Err((status, _))) if ran_out(&status, started.elapsed(), left) => {
                return Err(timed_out())
            }
            Ok(Err((status, headers))) => {
                // A transport's failure or one while the answer came (a reset stream or
                // connection, a node gone after its headers) is the node's, not a status the
                // service sent: 502. Only a call that never left may go to another node; a
                // node that failed mid-call is avoided.
                let transport = TransportError::find(&status);
                // The limit ran out while the node's connection opened: the call was not sent,
                // and the node is not to blame (the gateway's own timer would have said so a
                // moment later).
                if let Some(TransportError::DeadlinePassed { .. }) = transport {
                    return Err(not_called());
                }
                if transport.is_some() || broke_mid_answer(&status) {
                    let what = match transport {
                        Some(err) => err.to_string(),
                        None => format!(
                            "the connection failed while the answer came ({})",
                            status.message()
                        ),
                    };
                    let response = error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("service `{}` node {address}: {what}", target.service),
                    );
                    if transport.is_some_and(TransportError::is_unsent) {
                        return Err(NodeFail::unreached(response));
                    }
                    if transport.is_none() {
                        tracing::warn!(service = %target.service, %address, error = %status.message(), "backend failed while answering");
                    }
                    self.inner.quarantine.mark(address);
                    self.inner.nodes.invalidate(&target.service);
                    return Err(response.into());
                }
                return Err(match too_large(&status, sent, response_limit, grpc_path) {
                    Some(fail) => fail.into(),
                    None => {
                        let details = self
                            .details(&status, &target.service, node, grpc_path, &method, deadline)
                            .await;
                        let mut response = status_response(&status, details);
                        if let Some(headers) = headers {
                            metadata::to_response(&headers, response.headers_mut());
                        }
                        // The status's own metadata came after the answer's headers, or alone
                        // (a trailers-only answer): trailers, as gRPC sent them.
                        if let Some(trailers) =
                            metadata::trailers(status.metadata(), &parts.headers)
                        {
                            metadata::attach(&mut response, trailers);
                        }
                        response.into()
                    }
                });
            }
            Ok(Ok(answer)) => answer,
        };
        let Answer {
            headers: reply_headers,
            message: reply,
            trailers: reply_trailers,
        } = reply;
        // Proto3 JSON as go-micro's grpc server codec (jsonpb), protojson and json_format
        // write it: lowerCamelCase names (a field's `json_name`), fields without presence left
        // out at their default values.
        let options = prost_reflect::SerializeOptions::new();
        let mut lookups = 0;
        let mut json = loop {
            let mut output =
                DynamicMessage::decode(method.output(), reply.clone()).map_err(|e| {
                    error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("the response of `{grpc_path}` does not decode: {e}"),
                    )
                })?;
            // Fields the descriptors lack, in an answer from a node they were not read from:
            // a newer version of the service (a canary, a rolling update) that the gateway
            // would otherwise answer for without them while an older node stays registered.
            // Read from this node (at most once a second; a failure leaves the answer as it is).
            if !reread
                && descriptors::has_unknown_fields(&output)
                && self.read_elsewhere(&target.service, grpc_path, node)
            {
                reread = true;
                if let Ok((newer, _)) = describe(true).await {
                    method = newer;
                    continue;
                }
            }
            if let Some(invalid) = proto_json::invalid_time(&output) {
                return Err(error::response(
                    StatusCode::BAD_GATEWAY,
                    format!("the response does not convert to JSON: {invalid}"),
                )
                .into());
            }
            proto_json::mark_anys(&mut output);
            let unconverted =
                match output.serialize_with_options(serde_json::value::Serializer, &options) {
                    Ok(mut json) => {
                        proto_json::mend_response(&output, &mut json);
                        break json;
                    }
                    Err(e) => e.to_string(),
                };
            // An `Any` of a type the files read do not import: ask the node for its file.
            let at = (deadline, target.service.as_str(), node, grpc_path);
            match self
                .missing_any(&unconverted, &mut lookups, at, &method)
                .await?
            {
                Some(found) => method = found,
                None => {
                    return Err(error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("the response does not convert to JSON: {unconverted}"),
                    )
                    .into())
                }
            }
        };
        if !target.response_body.is_empty() {
            json =
                response_field(&method.output(), json, &target.response_body).ok_or_else(|| {
                    error::response(
                        StatusCode::BAD_GATEWAY,
                        format!("the response has no field `{}`", target.response_body),
                    )
                })?;
        }
        let mut resp = Response::new(Body::from(negative_zero::write(&json)));
        if let Some(trailers) = reply_trailers.and_then(|t| metadata::trailers(&t, &parts.headers))
        {
            metadata::attach(&mut resp, trailers);
        }
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        metadata::to_response(&reply_headers, resp.headers_mut());
        Ok(resp)
    }
}

/// What a node answered a call with: the metadata before its message (gRPC's response
/// headers), the message, and the metadata after it (trailers).
struct Answer {
    headers: MetadataMap,
    message: Bytes,
    trailers: Option<MetadataMap>,
}

/// A unary call, as tonic's `Grpc::unary` makes it, but keeping the answer's headers and
/// trailers apart (`unary` merges them) and refusing an answer of more than one message (which
/// `unary` reads and throws away). A failed call's status comes with the headers sent before
/// it, if any were.
async fn exchange(
    grpc: &mut tonic::client::Grpc<Connection>,
    request: tonic::Request<Bytes>,
    path: http::uri::PathAndQuery,
) -> Result<Answer, (tonic::Status, Option<MetadataMap>)> {
    let (headers, mut stream, _) = grpc
        .server_streaming(request, path, RawCodec)
        .await
        .map_err(|status| (status, None))?
        .into_parts();
    let message = match stream.message().await {
        Ok(Some(message)) => message,
        Ok(None) => {
            return Err((
                tonic::Status::internal("the service answered no message"),
                Some(headers),
            ))
        }
        Err(status) => return Err((status, Some(headers))),
    };
    // A unary method is answered with one message; a node answering more has the method as
    // another kind (another version of the service): said, as the runtime's client says it,
    // not the first message passed on and the rest read and thrown away.
    match stream.message().await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err((
                tonic::Status::internal(
                    "the service answered more than one message to a unary method: is it \
                     serving the .proto its descriptors describe?",
                ),
                Some(headers),
            ))
        }
        Err(status) => return Err((status, Some(headers))),
    }
    match stream.trailers().await {
        Ok(trailers) => Ok(Answer {
            headers,
            message,
            trailers,
        }),
        Err(status) => Err((status, Some(headers))),
    }
}

/// `google.rpc.Status`, the shape of a status's details (`grpc-status-details-bin`).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// How many details of one error are written out (a status is small; this bounds what a
/// misbehaving node can make the gateway look up and write).
const MAX_DETAILS: usize = 16;

impl RpcHandler {
    /// The details a gRPC error carries (`google.rpc.Status` in `grpc-status-details-bin`:
    /// `BadRequest`, `ErrorInfo`, a service's own messages...), each as proto3 JSON writes an
    /// `Any` (see [`any_json`]); a type neither the service's files nor the node's reflection
    /// know, or that the node does not describe before `until`, is written as
    /// `{"@type": …, "value": base64}`. `None` without details.
    async fn details(
        &self,
        status: &tonic::Status,
        service: &str,
        node: &Node,
        grpc_path: &str,
        method: &MethodDescriptor,
        until: tokio::time::Instant,
    ) -> Option<Vec<serde_json::Value>> {
        let status = RpcStatus::decode(status.details()).ok()?;
        if status.details.is_empty() {
            return None;
        }
        let mut method = method.clone();
        let mut asked: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for any in status.details.iter().take(MAX_DETAILS) {
            let json = loop {
                match any_json(method.parent_pool(), any) {
                    Ok(json) => break json,
                    // A type the files read lack (the detail's, or that of an `Any` in it):
                    // ask the node for its file, once per type.
                    Err(Some(name))
                        if asked.len() < MAX_ANY_LOOKUPS
                            && !asked.contains(&name)
                            && tokio::time::Instant::now() < until =>
                    {
                        let found = self
                            .with_message(until, service, node, grpc_path, &method, &name)
                            .await;
                        asked.push(name);
                        match found {
                            Ok(Some(found)) => method = found,
                            _ => break undecoded(any),
                        }
                    }
                    Err(_) => break undecoded(any),
                }
            };
            out.push(json);
        }
        Some(out)
    }
}

/// The body of a request sent as an HTML form (`application/x-www-form-urlencoded`) to an
/// endpoint that takes the whole body, as UTF-8; `None` for other requests, and for a body under
/// the form type that is JSON (it starts with `{`, `[` or `"`).
fn form_body<'b>(
    headers: &http::HeaderMap,
    body: &'b [u8],
    takes: &str,
) -> Option<Result<&'b str, String>> {
    let media = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    let media = media.split(';').next().unwrap_or_default().trim();
    if takes != "*" || !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return None;
    }
    if matches!(body.trim_ascii_start().first(), Some(b'{' | b'[' | b'"')) {
        return None;
    }
    Some(
        std::str::from_utf8(body).map_err(|_| {
            "the form body is not UTF-8; percent-encode what is not ASCII".to_string()
        }),
    )
}

/// An `Any` as proto3 JSON writes it (as prost-reflect writes an `Any` field, and protojson and
/// json_format do): `{"@type": …, fields…}`, or the JSON of a well-known type with a form of
/// its own (`Duration`, `Struct`, an `Any`...) in `value`. `Err(Some(name))` when `pool` lacks
/// message type `name` (the `Any`'s, or one an `Any` inside names), `Err(None)` when the bytes
/// do not decode as its type.
fn any_json(
    pool: &prost_reflect::DescriptorPool,
    any: &prost_types::Any,
) -> Result<serde_json::Value, Option<String>> {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| (!name.is_empty()).then(|| name.to_string()))?;
    let mut message = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|_| None)?;
    proto_json::mark_anys(&mut message);
    let options = prost_reflect::SerializeOptions::new();
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| missing_message(&e.to_string()).map(str::to_string))?;
    proto_json::mend_response(&message, &mut json);
    let mut object = serde_json::Map::new();
    object.insert("@type".into(), any.type_url.clone().into());
    match json {
        serde_json::Value::Object(fields) if !proto_json::has_json_form(name) => {
            object.extend(fields)
        }
        value => {
            object.insert("value".into(), value);
        }
    }
    Ok(serde_json::Value::Object(object))
}

/// An `Any` whose type is not known (or whose bytes do not decode as it): its bytes in base64.
fn undecoded(any: &prost_types::Any) -> serde_json::Value {
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD.encode(&any.value);
    serde_json::json!({"@type": any.type_url, "value": value})
}

/// The field `name` (as the binding's `response_body` names it: its proto name) of the response
/// `json` of type `desc`. A field left out (at its default value, or unset) is written with its
/// default value (`[]`, `0`, `""`, `{}` for a message or an `Any`, its own form for a well-known
/// type), so the answer is never empty, as grpc-gateway answers.
fn response_field(
    desc: &MessageDescriptor,
    mut json: serde_json::Value,
    name: &str,
) -> Option<serde_json::Value> {
    let field = desc
        .get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))?;
    if let Some(value) = json.get_mut(field.json_name()) {
        return Some(value.take());
    }
    // Left out, so at its default value (a field without presence), or unset (a message field,
    // a oneof member, a proto3 `optional` field): written from a message holding that value.
    let mut holder = DynamicMessage::new(desc.clone());
    holder.set_field(
        &field,
        prost_reflect::Value::default_value_for_field(&field),
    );
    // An empty `Any` is written `{}`, as protojson writes it (prost-reflect cannot write one).
    proto_json::mark_anys(&mut holder);
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    let mut json = holder
        .serialize_with_options(serde_json::value::Serializer, &options)
        .ok()?;
    proto_json::mend_response(&holder, &mut json);
    json.get_mut(field.json_name()).map(serde_json::Value::take)
}

/// The call's deadline: the backend timeout, or less when the client asks for less with
/// go-micro's `Timeout` header (whole seconds, as micro's rpc handler reads it) or with
/// `Grpc-Timeout` (gRPC's form, `5S` or `100m`, as grpc-gateway reads it). A client cannot ask
/// for more than the gateway allows.
fn call_timeout(headers: &http::HeaderMap, backend: Duration) -> Duration {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let seconds = text("timeout")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let grpc = text("grpc-timeout").and_then(rmicro_runtime::context::parse_grpc_timeout);
    [seconds, grpc]
        .into_iter()
        .flatten()
        .fold(backend, Duration::min)
}

/// A 501 for a streaming `method` (the rpc handler serves unary methods only), or `None`.
fn streaming_refused(method: &prost_reflect::MethodDescriptor, grpc_path: &str) -> Option<Fail> {
    (method.is_client_streaming() || method.is_server_streaming()).then(|| {
        error::response(
            StatusCode::NOT_IMPLEMENTED,
            format!("`{grpc_path}` streams; the rpc handler serves unary methods only"),
        )
    })
}

/// Whether `status` is tonic's report of hyper's error (the connection or stream failing while
/// the answer came), not a status the service sent (which comes with no source).
fn broke_mid_answer(status: &tonic::Status) -> bool {
    error::chain(status).any(|e| e.is::<hyper::Error>() || e.is::<std::io::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_may_shorten_the_calls_deadline_but_not_lengthen_it() {
        let backend = Duration::from_secs(30);
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = http::HeaderMap::new();
            for (k, v) in pairs {
                headers.append(*k, http::HeaderValue::from_static(v));
            }
            call_timeout(&headers, backend)
        };
        assert_eq!(with(&[]), backend);
        assert_eq!(with(&[("timeout", "2")]), Duration::from_secs(2));
        assert_eq!(
            with(&[("grpc-timeout", "150m")]),
            Duration::from_millis(150)
        );
        assert_eq!(with(&[("timeout", "90")]), backend);
        assert_eq!(with(&[("timeout", "0")]), backend);
        assert_eq!(with(&[("timeout", "soon")]), backend);
        assert_eq!(
            with(&[("timeout", "3"), ("grpc-timeout", "1S")]),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_response_body_field_left_unset_answers_its_default() {
        let pool = prost_reflect::DescriptorPool::global();
        let field = |message: &str, name: &str| {
            let desc = pool.get_message_by_name(message).unwrap();
            let json = serde_json::json!({});
            response_field(&desc, json, name)
        };
        // A message field: an empty message, its fields at their defaults written out (as the
        // rest of a `response_body` answer is); a oneof member or a scalar: its zero.
        assert_eq!(
            field("google.protobuf.Type", "source_context"),
            Some(serde_json::json!({"fileName": ""}))
        );
        assert_eq!(
            field("google.protobuf.Type", "name"),
            Some(serde_json::json!(""))
        );
        // An `Any` left unset: `{}`, as protojson writes an empty one.
        assert_eq!(
            field("google.protobuf.Option", "value"),
            Some(serde_json::json!({}))
        );

        // `message M { oneof pick { int32 n = 1; } optional string s = 2; }`
        use prost_types::field_descriptor_proto::{Label, Type};
        let scalar = |name: &str, number, kind: Type, oneof| prost_types::FieldDescriptorProto {
            name: Some(name.into()),
            json_name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(kind as i32),
            oneof_index: Some(oneof),
            proto3_optional: (oneof == 1).then_some(true),
            ..Default::default()
        };
        let file = prost_types::FileDescriptorProto {
            name: Some("m.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![prost_types::DescriptorProto {
                name: Some("M".into()),
                field: vec![
                    scalar("n", 1, Type::Int32, 0),
                    scalar("s", 2, Type::String, 1),
                ],
                oneof_decl: vec![
                    prost_types::OneofDescriptorProto {
                        name: Some("pick".into()),
                        ..Default::default()
                    },
                    prost_types::OneofDescriptorProto {
                        name: Some("_s".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(
            prost_types::FileDescriptorSet { file: vec![file] },
        )
        .unwrap();
        let desc = pool.get_message_by_name("t.M").unwrap();
        let unset = |name| response_field(&desc, serde_json::json!({}), name);
        assert_eq!(unset("n"), Some(serde_json::json!(0)));
        assert_eq!(unset("s"), Some(serde_json::json!("")));
        assert_eq!(field("google.protobuf.Type", "no_such"), None);
    }
}

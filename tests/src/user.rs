//! A reference implementation of the seed's `User` service, shared by the tests and examples.

use std::pin::Pin;

use rmicro_runtime::{Request, Response, ResponseStream, Status, Streaming};
use tokio_stream::{Stream, StreamExt};

use crate::fixtures::go::micro::srv::user::{
    CallRequest, CallResponse, Ping, Pong, StreamRequest, StreamResponse, UserHandler,
};

/// Greets by name, counts, and plays ping-pong.
#[derive(Debug, Default, Clone)]
pub struct Greeter;

impl UserHandler for Greeter {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        Ok(Response::new(CallResponse {
            msg: format!("Hello {name}"),
        }))
    }

    async fn stream(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<ResponseStream<StreamResponse>>, Status> {
        let count = request.into_inner().count;
        if !(0..=10_000).contains(&count) {
            return Err(Status::out_of_range("count must be within 0..=10000"));
        }
        let stream = tokio_stream::iter((0..count).map(|count| Ok(StreamResponse { count })));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<ResponseStream<Pong>>, Status> {
        let pings = request.into_inner();
        let pongs: Pin<Box<dyn Stream<Item = Result<Pong, Status>> + Send>> =
            Box::pin(pings.map(|ping| ping.map(|p| Pong { stroke: p.stroke })));
        Ok(Response::new(pongs))
    }
}

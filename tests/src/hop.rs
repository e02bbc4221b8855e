//! A `Hop` node: relays to the next service (if any) through the generated client, reporting the
//! trace metadata and deadline each hop saw.

use rmicro_runtime::errors::Error;
use rmicro_runtime::{context, Client, Request, Response, Status};

use crate::fixtures::rmicro::test::hop::{HopClient, HopHandler, HopReply, HopRequest, Seen};

/// One hop: `name` for reports, `next` the registry name of the following hop.
#[derive(Debug, Clone)]
pub struct HopNode {
    /// This node's name in reports.
    pub name: String,
    /// The next hop's service name and the client to reach it.
    pub next: Option<(String, Client)>,
}

impl HopHandler for HopNode {
    async fn relay(&self, request: Request<HopRequest>) -> Result<Response<HopReply>, Status> {
        let trace_id = request
            .metadata()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let remaining_ms = context::current()
            .and_then(|c| c.remaining())
            .map_or(-1, |d| d.as_millis() as i64);
        let seen = Seen {
            node: self.name.clone(),
            trace_id,
            remaining_ms,
        };
        let req = request.into_inner();
        let mut reply = match &self.next {
            // The request is passed on as a plain message: metadata and deadline travel with the
            // task's call context, not by hand.
            Some((service, client)) => HopClient::new(service.clone(), client.clone())
                .relay(req)
                .await?
                .into_inner(),
            None => {
                tokio::time::sleep(std::time::Duration::from_millis(req.sleep_ms as u64)).await;
                if req.fail_code != 0 {
                    return Err(Error::new(
                        self.name.clone(),
                        "the last hop failed on purpose",
                        req.fail_code,
                    )
                    .into());
                }
                HopReply::default()
            }
        };
        reply.seen.insert(0, seen);
        Ok(Response::new(reply))
    }
}

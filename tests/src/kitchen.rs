//! A reference implementation of the kitchen fixture service.

use rmicro_runtime::{Request, Response, ResponseStream, Status, Streaming};
use tokio_stream::StreamExt;

use crate::fixtures::rmicro::test::kitchen::{
    GetRequest, Item, KitchenHandler, Shelf, UpdateRequest, UploadSummary,
};

/// Answers from the request, so tests can see what arrived.
#[derive(Debug, Default, Clone)]
pub struct Kitchen;

impl KitchenHandler for Kitchen {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Item>, Status> {
        let req = request.into_inner();
        if req.id == 404 {
            return Err(rmicro_runtime::errors::Error::not_found("kitchen", "no item 404").into());
        }
        Ok(Response::new(Item {
            id: req.id,
            name: req.shelf.map(|s| s.name).unwrap_or_default(),
            ..Default::default()
        }))
    }
    async fn put(&self, _request: Request<Item>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
    async fn update(&self, request: Request<UpdateRequest>) -> Result<Response<Item>, Status> {
        Ok(Response::new(request.into_inner().item.unwrap_or_default()))
    }
    async fn purge(&self, _request: Request<()>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("purge is not supported"))
    }
    async fn list(
        &self,
        request: Request<Shelf>,
    ) -> Result<Response<ResponseStream<Item>>, Status> {
        let shelf = request.into_inner().name;
        let items = (1..=2).map(move |id| {
            Ok(Item {
                id,
                name: shelf.clone(),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
    async fn upload(
        &self,
        request: Request<Streaming<Item>>,
    ) -> Result<Response<UploadSummary>, Status> {
        let mut items = request.into_inner();
        let mut count = 0;
        while let Some(item) = items.next().await {
            item?;
            count += 1;
        }
        Ok(Response::new(UploadSummary { count }))
    }
    async fn chat(
        &self,
        request: Request<Streaming<Item>>,
    ) -> Result<Response<ResponseStream<Item>>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
    async fn wrapped(&self, request: Request<String>) -> Result<Response<i64>, Status> {
        Ok(Response::new(request.into_inner().len() as i64))
    }
}

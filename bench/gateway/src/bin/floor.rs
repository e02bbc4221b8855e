//! Floors for the gateway benchmark (`FLOORS=1 bash bench/gateway/run.sh`): three minimal
//! HTTP/1.1 reverse proxies to one backend with none of the gateway's work (no registry, no
//! timeouts, no header rules, no error handling: a failure panics), each on one
//! single-threaded runtime, so the gateway's cost can be told apart from its HTTP stack's:
//!
//! ```text
//! floor hyper  LISTEN BACKEND   hyper's server and hyper's client connections (the gateway's stack)
//! floor inline LISTEN BACKEND   hyper's server, the request written to the backend and its
//!                               response read (httparse) by the request's own task
//! floor raw    LISTEN BACKEND   no hyper: heads parsed with httparse, bytes passed on verbatim
//! floor local  LISTEN BACKEND   as `hyper`, with each backend connection driven by the task of
//!                               the request using it (no connection task, no hand-off)
//! floor own    LISTEN BACKEND   the client side served without hyper (heads parsed with httparse
//!                               into `http` types, responses written from them), the backend
//!                               reached through hyper's client as in `hyper`
//! ```
//!
//! Only for the benchmark's requests: GET without a body, answers with a `Content-Length`.
//! Prints `listening on ADDR` once bound.
use std::cell::RefCell;
use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

thread_local! {
    static HYPER_POOL: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
    static RAW_POOL: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
    static EMPTY_POOL: RefCell<Vec<SendRequest<http_body_util::Empty<Bytes>>>> = const { RefCell::new(Vec::new()) };
}

async fn connect(backend: &str) -> TcpStream {
    let s = TcpStream::connect(backend).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `req` to the backend on a ready connection of `pool` (a new one, its connection task
/// spawned, when none is ready), and puts the connection back.
async fn send_pooled<B>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<SendRequest<B>>>>,
    backend: &'static str,
    req: Request<B>,
) -> Response<Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let pooled = pool.with(|p| {
        let mut p = p.borrow_mut();
        let i = p.iter().position(|s| s.is_ready());
        i.map(|i| p.swap_remove(i))
    });
    let mut sender = match pooled {
        Some(s) => s,
        None => {
            let (s, conn) = hyper::client::conn::http1::Builder::new()
                .writev(false)
                .handshake(TokioIo::new(connect(backend).await))
                .await
                .unwrap();
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
            s
        }
    };
    let resp = sender.send_request(req).await.unwrap();
    pool.with(|p| p.borrow_mut().push(sender));
    resp
}

async fn via_hyper(backend: &'static str, req: Request<Incoming>) -> Result<Response<Incoming>, Infallible> {
    let (mut parts, body) = req.into_parts();
    parts.uri = parts.uri.path_and_query().unwrap().as_str().parse().unwrap();
    Ok(send_pooled(&HYPER_POOL, backend, Request::from_parts(parts, body)).await)
}

/// Reads one Content-Length response from `s` into `buf`: (status, headers, body).
async fn read_response(s: &mut TcpStream, buf: &mut BytesMut) -> (u16, Vec<(http::HeaderName, http::HeaderValue)>, Bytes) {
    loop {
        if s.read_buf(buf).await.unwrap() == 0 {
            panic!("backend closed");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
            let mut cl = 0;
            let mut out = Vec::with_capacity(r.headers.len());
            for h in r.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    cl = std::str::from_utf8(h.value).unwrap().parse().unwrap();
                }
                out.push((
                    http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(h.value).unwrap(),
                ));
            }
            let status = r.code.unwrap();
            while buf.len() < n + cl {
                s.read_buf(buf).await.unwrap();
            }
            let _ = buf.split_to(n);
            let body = buf.split_to(cl).freeze();
            return (status, out, body);
        }
    }
}

async fn via_inline(backend: &'static str, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let pooled = RAW_POOL.with(|p| p.borrow_mut().pop());
    let mut s = match pooled {
        Some(s) => s,
        None => connect(backend).await,
    };
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(req.uri().path_and_query().unwrap().as_str().as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in req.headers() {
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    s.write_all(&head).await.unwrap();
    let mut buf = BytesMut::with_capacity(4096);
    let (status, headers, body) = read_response(&mut s, &mut buf).await;
    RAW_POOL.with(|p| p.borrow_mut().push(s));
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut().append(k, v);
    }
    Ok(resp)
}

/// `own`: requests parsed into `http::Request`, handed to [`via_hyper`]'s client, the
/// `http::Response` written back with its body's length.
async fn own_conn(backend: &'static str, mut client: TcpStream) {
    use http_body_util::BodyExt;
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    loop {
        let req = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let mut req = Request::new(http_body_util::Empty::<Bytes>::new());
                *req.method_mut() = http::Method::from_bytes(r.method.unwrap().as_bytes()).unwrap();
                *req.uri_mut() = r.path.unwrap().parse().unwrap();
                let map = req.headers_mut();
                for h in r.headers.iter() {
                    map.append(
                        http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                        http::HeaderValue::from_bytes(h.value).unwrap(),
                    );
                }
                let _ = buf.split_to(n);
                break req;
            }
            match client.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let resp = send_pooled(&EMPTY_POOL, backend, req).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in &parts.headers {
            if k == http::header::CONTENT_LENGTH {
                continue;
            }
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body);
        if client.write_all(&out).await.is_err() {
            return;
        }
    }
}

type LocalConn = (
    SendRequest<Incoming>,
    hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Incoming>,
);

thread_local! {
    static LOCAL_POOL: RefCell<Vec<LocalConn>> = const { RefCell::new(Vec::new()) };
}

/// A response body that drives its backend connection, and puts it back in the pool at its end.
struct LocalBody {
    body: Incoming,
    conn: Option<LocalConn>,
}

impl hyper::body::Body for LocalBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some((_, conn)) = &mut this.conn {
            if std::future::Future::poll(std::pin::Pin::new(conn), cx).is_ready() {
                this.conn = None;
            }
        }
        let frame = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(None) = frame {
            if let Some(conn) = this.conn.take() {
                LOCAL_POOL.with(|p| p.borrow_mut().push(conn));
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn via_local(backend: &'static str, req: Request<Incoming>) -> Result<Response<LocalBody>, Infallible> {
    use std::future::Future;
    let pooled = LOCAL_POOL.with(|p| p.borrow_mut().pop());
    let (mut sender, mut conn) = match pooled {
        Some(c) => c,
        None => hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(connect(backend).await))
            .await
            .unwrap(),
    };
    let (mut parts, body) = req.into_parts();
    parts.uri = parts.uri.path_and_query().unwrap().as_str().parse().unwrap();
    let mut sent = std::pin::pin!(sender.send_request(Request::from_parts(parts, body)));
    let resp = std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut conn).poll(cx);
        sent.as_mut().poll(cx)
    })
    .await
    .unwrap();
    Ok(resp.map(|body| LocalBody { body, conn: Some((sender, conn)) }))
}

async fn raw_conn(backend: &'static str, mut client: TcpStream) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut up: Option<TcpStream> = None;
    let mut rbuf = BytesMut::with_capacity(4096);
    loop {
        let n = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                break n;
            }
            match client.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = buf.split_to(n);
        let u = match &mut up {
            Some(u) => u,
            None => up.insert(connect(backend).await),
        };
        u.write_all(&head).await.unwrap();
        // Response: head + Content-Length body, forwarded verbatim.
        let total = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&rbuf) {
                let cl: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap_or(0);
                break n + cl;
            }
            u.read_buf(&mut rbuf).await.unwrap();
        };
        while rbuf.len() < total {
            u.read_buf(&mut rbuf).await.unwrap();
        }
        let out = rbuf.split_to(total);
        if client.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Serves `stream` with hyper's HTTP/1 server, each request answered by `answer`, on a task of
/// this thread.
fn serve_hyper<F, Fut, B>(stream: TcpStream, answer: F)
where
    F: Fn(Request<Incoming>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::task::spawn_local(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .writev(false)
            .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
            .await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].clone();
    let listen = args[2].clone();
    let backend: &'static str = Box::leak(args[3].clone().into_boxed_str());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&listen).await.unwrap();
        // Read by run.sh.
        println!("listening on {}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            match mode.as_str() {
                "raw" => {
                    tokio::task::spawn_local(raw_conn(backend, stream));
                }
                "own" => {
                    tokio::task::spawn_local(own_conn(backend, stream));
                }
                "local" => serve_hyper(stream, move |req| via_local(backend, req)),
                "hyper" => serve_hyper(stream, move |req| via_hyper(backend, req)),
                _ => serve_hyper(stream, move |req| via_inline(backend, req)),
            }
        }
    });
}

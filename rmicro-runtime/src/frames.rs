//! A guard on the gRPC messages of a body (a client's answer, a server's request stream),
//! ahead of tonic's decoder.
//!
//! tonic's decoder, given a message over its size limit or a message prefix with a bad flag,
//! reports the error and then goes on reading the message's bytes as if they were the next
//! prefixes: a caller that keeps reading a stream after an error (log and continue) gets
//! millions of errors at full CPU. Checked here, before tonic sees the prefix, the error ends
//! the body, which tonic reports (twice, as it reports any body's error) and then ends the
//! stream. Each message's 5-byte prefix is read as the bytes pass; the bytes themselves are
//! passed on untouched.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use prost::bytes::Bytes;
use tonic::Status;

/// The error a guarded body gives: its own `Status`, or the wrapped body's error, mapped.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest message a client or server receives unless told otherwise, 4 MiB: gRPC's
/// default (grpc-go's `MaxRecvMsgSize`, grpcio's, tonic's).
pub const DEFAULT_MAX_RECEIVE_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The length of a message's prefix: a compression flag and a 4-byte length.
const PREFIX: usize = 5;

pin_project_lite::pin_project! {
    /// `body` with its gRPC messages checked against `limit` and for a valid prefix.
    pub(crate) struct Framed<B, E> {
        #[pin]
        body: B,
        limit: usize,
        // What the wrapped body's errors become.
        map_err: fn(E) -> BoxError,
        // The current prefix's bytes read so far.
        prefix: [u8; PREFIX],
        filled: usize,
        // Bytes of the current message still to come.
        left: u64,
        // Found in the frame just passed on, given next.
        failed: Option<Status>,
        ended: bool,
        // Whose body it is, for the words of an error.
        whose: Whose,
    }
}

/// Whose body a [`Framed`] guards.
#[derive(Debug, Clone, Copy)]
enum Whose {
    Request,
    /// An answer, with its HTTP status.
    Answer(u16),
}

impl<B, E> Framed<B, E> {
    /// The body of an answer with HTTP status `http` (the client's side).
    pub(crate) fn answer(body: B, limit: usize, http: u16, map_err: fn(E) -> BoxError) -> Self {
        Framed::new(body, limit, map_err, Whose::Answer(http))
    }

    /// A request's body (the server's side).
    pub(crate) fn request(body: B, limit: usize, map_err: fn(E) -> BoxError) -> Self {
        Framed::new(body, limit, map_err, Whose::Request)
    }

    fn new(body: B, limit: usize, map_err: fn(E) -> BoxError, whose: Whose) -> Self {
        Framed {
            body,
            limit,
            map_err,
            prefix: [0; PREFIX],
            filled: 0,
            left: 0,
            failed: None,
            ended: false,
            whose,
        }
    }
}

/// Reads the prefixes in `data`, given the state left by the data before it: where the first bad
/// one starts in `data` (0 when it began in earlier data) and why it is bad, if there is one.
fn scan(
    data: &[u8],
    prefix: &mut [u8; PREFIX],
    filled: &mut usize,
    left: &mut u64,
    limit: usize,
    whose: Whose,
) -> Option<(usize, Status)> {
    let mut at = 0;
    while at < data.len() {
        if *left > 0 {
            let skip = (*left).min((data.len() - at) as u64);
            *left -= skip;
            // Less than `data.len()`, so it fits a `usize`.
            at += skip as usize;
            continue;
        }
        let start = at.saturating_sub(*filled);
        let take = (PREFIX - *filled).min(data.len() - at);
        prefix[*filled..*filled + take].copy_from_slice(&data[at..at + take]);
        *filled += take;
        at += take;
        if *filled < PREFIX {
            break;
        }
        *filled = 0;
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        if prefix[0] > 1 {
            let what = match whose {
                Whose::Request => "the request".to_string(),
                Whose::Answer(200) => "the answer".to_string(),
                // An error page from a proxy, say: not gRPC at all.
                Whose::Answer(http) => {
                    format!("the answer (HTTP status {http}: not a gRPC server?)")
                }
            };
            return Some((
                start,
                Status::internal(format!(
                    "protocol error: a message of {what} has compression flag {} (valid flags \
                     are 0 and 1)",
                    prefix[0]
                )),
            ));
        }
        if len as usize > limit {
            // grpc-go's words, which gateways and clients (rmicro's among them) recognise.
            return Some((
                start,
                Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {limit})"
                )),
            ));
        }
        *left = u64::from(len);
    }
    None
}

impl<B, E> Body for Framed<B, E>
where
    B: Body<Data = Bytes, Error = E>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(status) = this.failed.take() {
            *this.ended = true;
            return Poll::Ready(Some(Err(Box::new(status))));
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.body.poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(err)) => {
                *this.ended = true;
                return Poll::Ready(Some(Err((this.map_err)(err))));
            }
            Some(Ok(frame)) => frame,
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let found = scan(
            data.as_ref(),
            this.prefix,
            this.filled,
            this.left,
            *this.limit,
            *this.whose,
        );
        match found {
            None => Poll::Ready(Some(Ok(frame))),
            // The messages before the bad one go on; the error comes next.
            Some((start, status)) if start > 0 => {
                let before = data.slice(..start);
                *this.failed = Some(status);
                Poll::Ready(Some(Ok(Frame::data(before))))
            }
            Some((_, status)) => {
                *this.ended = true;
                Poll::Ready(Some(Err(Box::new(status))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.failed.is_none() && self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn message(len: usize, flag: u8) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    /// The frames `chunks` make, through the guard: the data passed on, then the error if any.
    async fn through(chunks: Vec<Vec<u8>>, limit: usize) -> (Vec<u8>, Option<Status>) {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
        let body = StreamBody::new(tokio_stream::iter(frames));
        let mut framed = Framed::answer(body, limit, 200, |never| match never {});
        let mut passed = Vec::new();
        while let Some(frame) = framed.frame().await {
            match frame {
                Ok(frame) => passed.extend_from_slice(&frame.into_data().unwrap()),
                Err(err) => {
                    let status = err.downcast::<Status>().unwrap();
                    assert!(
                        framed.frame().await.is_none(),
                        "the body ends after its error"
                    );
                    return (passed, Some(*status));
                }
            }
        }
        (passed, None)
    }

    #[tokio::test]
    async fn messages_within_the_limit_pass_however_they_are_cut() {
        let all: Vec<u8> = [message(3, 0), message(0, 0), message(10, 1)].concat();
        // Every cut of the bytes into two frames, and one byte per frame.
        for cut in 0..=all.len() {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let (passed, failed) = through(chunks, 10).await;
            assert_eq!(passed, all, "cut at {cut}");
            assert!(failed.is_none(), "cut at {cut}: {failed:?}");
        }
        let bytes = all.iter().map(|b| vec![*b]).collect();
        let (passed, failed) = through(bytes, 10).await;
        assert_eq!(passed, all);
        assert!(failed.is_none(), "{failed:?}");
    }

    #[tokio::test]
    async fn a_message_over_the_limit_ends_the_body_after_those_before_it() {
        let good = message(4, 0);
        let big = message(11, 0);
        let all: Vec<u8> = [good.clone(), big, message(1, 0)].concat();
        for cut in 0..=all.len() {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let (passed, status) = through(chunks, 10).await;
            // Everything before the big message's prefix, and maybe some of the prefix itself
            // (when it was cut): never any of its body, nor what follows.
            assert!(passed.len() >= good.len().min(cut), "cut at {cut}");
            assert!(passed.len() < good.len() + PREFIX, "cut at {cut}");
            assert_eq!(
                passed[..good.len().min(passed.len())],
                good[..good.len().min(passed.len())]
            );
            let status = status.unwrap();
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(
                status.message().contains("larger than max (11 vs. 10)"),
                "{status:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_compression_flag_ends_the_body() {
        let all: Vec<u8> = [message(2, 0), message(2, 3)].concat();
        let (passed, status) = through(vec![all], 10).await;
        assert_eq!(passed, message(2, 0));
        let status = status.unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status.message().contains("compression flag 3"),
            "{status:?}"
        );
    }
}

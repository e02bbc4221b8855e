//! A guard on the gRPC messages of a body (a client's answer, a server's request stream),
//! ahead of tonic's decoder.
//!
//! tonic's decoder, given a message over its size limit (on the wire, or once decompressed) or
//! a message prefix with a bad flag, reports the error and then goes on reading the message's
//! bytes as if they were the next prefixes, or decompressing the same bytes again: a caller
//! that keeps reading a stream after an error (log and continue) gets an error after another
//! at full CPU, for ever. Checked here, before tonic sees the message, the error ends the body,
//! which tonic reports (twice, as it reports any body's error) and then ends the stream.
//!
//! Each message's 5-byte prefix is read as the bytes pass, and the bytes of plain messages are
//! passed on untouched. A gzip-compressed message (the only coding the runtime takes) is held
//! until it is whole and inflated here, up to the limit, and passed on as a plain message, so
//! that it is inflated once.

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
        // What the wrapped body's errors become.
        map_err: fn(E) -> BoxError,
        scanner: Scanner,
        // Found in the frame just passed on, given next.
        failed: Option<Box<Status>>,
        ended: bool,
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
    /// The body of an answer with HTTP status `http` (the client's side); `gzip` when its
    /// messages may be gzip-compressed (`grpc-encoding: gzip`).
    pub(crate) fn answer(
        body: B,
        limit: usize,
        http: u16,
        gzip: bool,
        map_err: fn(E) -> BoxError,
    ) -> Self {
        Framed::new(
            body,
            map_err,
            Scanner::new(limit, Whose::Answer(http), gzip),
        )
    }

    /// A request's body (the server's side); `gzip` as for [`Framed::answer`]; `single` when
    /// the method takes one message: a second one fails the body with `Internal` (as grpc-go
    /// answers such a call) instead of being dropped unread.
    pub(crate) fn request(
        body: B,
        limit: usize,
        gzip: bool,
        single: bool,
        map_err: fn(E) -> BoxError,
    ) -> Self {
        let mut scanner = Scanner::new(limit, Whose::Request, gzip);
        scanner.single = single;
        Framed::new(body, map_err, scanner)
    }

    fn new(body: B, map_err: fn(E) -> BoxError, scanner: Scanner) -> Self {
        Framed {
            body,
            map_err,
            scanner,
            failed: None,
            ended: false,
        }
    }
}

/// The reading of a body's messages across its frames.
struct Scanner {
    limit: usize,
    whose: Whose,
    gzip: bool,
    /// The current prefix's bytes read so far.
    prefix: [u8; PREFIX],
    filled: usize,
    /// Bytes of the current message still to come.
    left: u64,
    /// The compressed message being gathered, whole before it is inflated.
    compressed: Option<Vec<u8>>,
    /// Whether the body may hold one message only, and whether one began.
    single: bool,
    seen: bool,
}

/// What a frame's data becomes.
enum Passed {
    /// All of it, as it is.
    Whole,
    /// These bytes instead (a compressed message inflated, or the part before a bad message).
    Made(Bytes),
}

/// Pieces of a frame's data to pass on, in order.
enum Piece {
    Slice(usize, usize),
    Made(Vec<u8>),
}

/// The pieces of one frame: most frames are passed on whole, one slice, with no list to
/// allocate for it.
enum Pieces {
    None,
    One(usize, usize),
    Many(Vec<Piece>),
}

impl Pieces {
    fn slice(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        match self {
            Pieces::None => *self = Pieces::One(from, to),
            Pieces::One(_, end) if *end == from => *end = to,
            Pieces::One(a, b) => {
                *self = Pieces::Many(vec![Piece::Slice(*a, *b), Piece::Slice(from, to)])
            }
            Pieces::Many(list) => match list.last_mut() {
                Some(Piece::Slice(_, end)) if *end == from => *end = to,
                _ => list.push(Piece::Slice(from, to)),
            },
        }
    }

    fn made(&mut self, made: Vec<u8>) {
        match std::mem::replace(self, Pieces::None) {
            Pieces::None => *self = Pieces::Many(vec![Piece::Made(made)]),
            Pieces::One(a, b) => *self = Pieces::Many(vec![Piece::Slice(a, b), Piece::Made(made)]),
            Pieces::Many(mut list) => {
                list.push(Piece::Made(made));
                *self = Pieces::Many(list);
            }
        }
    }

    /// Takes back what the last slice passed from `start` on, when it ends at `at`.
    fn cut_back(&mut self, start: usize, at: usize) {
        let last = match self {
            Pieces::One(from, end) => Some((from, end)),
            Pieces::Many(list) => match list.last_mut() {
                Some(Piece::Slice(from, end)) => Some((from, end)),
                _ => None,
            },
            Pieces::None => None,
        };
        if let Some((from, end)) = last {
            if *end == at {
                *end = start.max(*from);
            }
        }
    }
}

impl Scanner {
    fn new(limit: usize, whose: Whose, gzip: bool) -> Scanner {
        Scanner {
            limit,
            whose,
            gzip,
            prefix: [0; PREFIX],
            filled: 0,
            left: 0,
            compressed: None,
            single: false,
            seen: false,
        }
    }

    fn what(&self) -> String {
        match self.whose {
            Whose::Request => "the request".to_string(),
            Whose::Answer(200) => "the answer".to_string(),
            // An error page from a proxy, say: not gRPC at all.
            Whose::Answer(http) => format!("the answer (HTTP status {http}: not a gRPC server?)"),
        }
    }

    /// Reads `data`, given the state the data before it left: what to pass on, and the error
    /// that comes after it, if a message is bad.
    fn feed(&mut self, data: &Bytes) -> (Passed, Option<Status>) {
        // The usual frames, answered without the walk below: the rest of a plain message's
        // bytes, or one whole plain message within the limit.
        if self.compressed.is_none() && self.filled == 0 {
            if self.left >= data.len() as u64 {
                self.left -= data.len() as u64;
                return (Passed::Whole, None);
            }
            if self.left == 0 && data.len() >= PREFIX && data[0] == 0 && !(self.single && self.seen)
            {
                let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                if len <= self.limit && PREFIX + len == data.len() {
                    self.seen = true;
                    return (Passed::Whole, None);
                }
            }
        }
        let mut pieces = Pieces::None;
        let mut failed = None;
        let mut at = 0;
        while at < data.len() {
            if self.left > 0 {
                // Less than `data.len()`, so it fits a `usize`.
                let n = self.left.min((data.len() - at) as u64) as usize;
                match &mut self.compressed {
                    Some(gathered) => gathered.extend_from_slice(&data[at..at + n]),
                    None => pieces.slice(at, at + n),
                }
                self.left -= n as u64;
                at += n;
                if self.left == 0 && self.compressed.is_some() {
                    match self.inflate() {
                        Ok(message) => pieces.made(message),
                        Err(status) => {
                            failed = Some(status);
                            break;
                        }
                    }
                }
                continue;
            }
            if self.filled == 0 && !(data[at] == 1 && self.gzip) {
                // A plain message's prefix goes on as it is; a compressed one's is made anew.
                let end = (at + PREFIX).min(data.len());
                pieces.slice(at, end);
            } else if self.filled > 0 && !(self.prefix[0] == 1 && self.gzip) {
                let end = (at + PREFIX - self.filled).min(data.len());
                pieces.slice(at, end);
            }
            let start = at;
            let take = (PREFIX - self.filled).min(data.len() - at);
            self.prefix[self.filled..self.filled + take].copy_from_slice(&data[at..at + take]);
            self.filled += take;
            at += take;
            if self.filled < PREFIX {
                break;
            }
            self.filled = 0;
            let len = u32::from_be_bytes([
                self.prefix[1],
                self.prefix[2],
                self.prefix[3],
                self.prefix[4],
            ]);
            if self.single && self.seen {
                pieces.cut_back(start, at);
                failed = Some(Status::internal(format!(
                    "protocol error: the method takes one request message, and {} has more",
                    self.what()
                )));
                break;
            }
            self.seen = true;
            if let Some(status) = self.bad_prefix(len) {
                // Nothing of the bad prefix goes on (what an earlier frame held of it did).
                pieces.cut_back(start, at);
                failed = Some(status);
                break;
            }
            self.left = u64::from(len);
            if self.prefix[0] == 1 {
                self.compressed = Some(Vec::with_capacity(len as usize));
                if len == 0 {
                    match self.inflate() {
                        Ok(message) => pieces.made(message),
                        Err(status) => {
                            failed = Some(status);
                            break;
                        }
                    }
                }
            }
        }
        let passed = match pieces {
            Pieces::One(0, end) if end == data.len() => Passed::Whole,
            Pieces::None => Passed::Made(Bytes::new()),
            Pieces::One(from, to) => Passed::Made(data.slice(from..to)),
            Pieces::Many(pieces) => {
                let mut out = Vec::new();
                for piece in pieces {
                    match piece {
                        Piece::Slice(from, to) => out.extend_from_slice(&data[from..to]),
                        Piece::Made(made) => out.extend_from_slice(&made),
                    }
                }
                Passed::Made(Bytes::from(out))
            }
        };
        (passed, failed)
    }

    /// Why a message with this prefix (`len` bytes) cannot be taken, if it cannot.
    fn bad_prefix(&self, len: u32) -> Option<Status> {
        match self.prefix[0] {
            0 | 1 if len as usize > self.limit => {
                // grpc-go's words, which gateways and clients (rmicro's among them) recognise.
                Some(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {})",
                    self.limit
                )))
            }
            0 => None,
            1 if self.gzip => None,
            1 => Some(Status::internal(format!(
                "protocol error: a message of {} is compressed, but not with gzip (`grpc-encoding`), the one coding taken",
                self.what()
            ))),
            flag => Some(Status::internal(format!(
                "protocol error: a message of {} has compression flag {flag} (valid flags are 0 and 1)",
                self.what()
            ))),
        }
    }

    /// The gathered compressed message inflated, as a plain message with its prefix, or why not.
    fn inflate(&mut self) -> Result<Vec<u8>, Status> {
        use std::io::Read;
        let gathered = self.compressed.take().unwrap_or_default();
        let mut message = vec![0; PREFIX];
        let limit = self.limit as u64;
        let read = flate2::read::GzDecoder::new(gathered.as_slice())
            .take(limit + 1)
            .read_to_end(&mut message);
        if let Err(err) = read {
            return Err(Status::internal(format!(
                "protocol error: a compressed message of {} does not inflate: {err}",
                self.what()
            )));
        }
        let len = message.len() - PREFIX;
        if len as u64 > limit {
            return Err(Status::resource_exhausted(format!(
                "grpc: received message after decompression larger than max (over {limit} vs. {limit})"
            )));
        }
        message[1..PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(message)
    }
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
            return Poll::Ready(Some(Err(status)));
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
        let (passed, failed) = this.scanner.feed(data);
        let passed = match passed {
            Passed::Whole => frame,
            Passed::Made(bytes) => Frame::data(bytes),
        };
        match failed {
            None => Poll::Ready(Some(Ok(passed))),
            Some(status) => {
                // What came before the bad message goes on; the error comes next.
                if passed.data_ref().is_some_and(|d| !d.is_empty()) {
                    *this.failed = Some(Box::new(status));
                    Poll::Ready(Some(Ok(passed)))
                } else {
                    *this.ended = true;
                    Poll::Ready(Some(Err(Box::new(status))))
                }
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

    /// A message of `content` gzip-compressed, with its prefix (flag 1).
    fn gzipped(content: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(content).unwrap();
        let body = encoder.finish().unwrap();
        let mut out = vec![1];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend(body);
        out
    }

    /// The frames `chunks` make, through the guard: the data passed on, then the error if any.
    async fn through(chunks: Vec<Vec<u8>>, limit: usize) -> (Vec<u8>, Option<Status>) {
        through_coded(chunks, limit, true).await
    }

    async fn through_coded(
        chunks: Vec<Vec<u8>>,
        limit: usize,
        gzip: bool,
    ) -> (Vec<u8>, Option<Status>) {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
        let body = StreamBody::new(tokio_stream::iter(frames));
        let mut framed = Framed::answer(body, limit, 200, gzip, |never| match never {});
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
        let all: Vec<u8> = [message(3, 0), message(0, 0), message(10, 0)].concat();
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

    #[tokio::test]
    async fn a_compressed_message_is_passed_on_inflated_however_it_is_cut() {
        let content = vec![7u8; 300];
        let all: Vec<u8> = [message(2, 0), gzipped(&content), message(1, 0)].concat();
        let want: Vec<u8> = [message(2, 0), message(300, 0), message(1, 0)].concat();
        for cut in 0..=all.len() {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let (passed, failed) = through(chunks, 300).await;
            assert!(failed.is_none(), "cut at {cut}: {failed:?}");
            assert_eq!(passed, want, "cut at {cut}");
        }
        let bytes = all.iter().map(|b| vec![*b]).collect();
        let (passed, failed) = through(bytes, 300).await;
        assert!(failed.is_none(), "{failed:?}");
        assert_eq!(passed, want);
    }

    #[tokio::test]
    async fn a_compressed_message_over_the_limit_once_inflated_ends_the_body() {
        // 138 bytes or so on the wire, 100 000 once inflated.
        let bomb = gzipped(&vec![0u8; 100_000]);
        assert!(bomb.len() < 1000);
        let all: Vec<u8> = [message(2, 0), bomb, message(1, 0)].concat();
        for cut in [0, 3, 9, all.len() / 2, all.len()] {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let (passed, status) = through(chunks, 1000).await;
            assert_eq!(passed, message(2, 0), "cut at {cut}");
            let status = status.unwrap();
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(
                status
                    .message()
                    .contains("after decompression larger than max"),
                "{status:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_compressed_message_without_gzip_or_not_inflating_ends_the_body() {
        let (passed, status) = through_coded(vec![gzipped(b"hi")], 100, false).await;
        assert!(passed.is_empty());
        assert!(status.unwrap().message().contains("not with gzip"));
        let mut broken = gzipped(b"hello");
        broken[8] ^= 0xff;
        let (_, status) = through(vec![broken], 100).await;
        let status = status.unwrap();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("does not inflate"), "{status:?}");
    }
}

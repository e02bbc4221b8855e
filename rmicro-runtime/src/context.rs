//! The context of the call being served: its deadline and metadata, carried onto the calls a
//! handler makes while serving it (go-micro's `context.Context` propagation).
//!
//! The server runs every handler inside [`scope`]; [`Client`](crate::Client) reads [`current`]
//! and, for each outgoing call, never waits past the incoming deadline and copies the incoming
//! metadata (entries the outgoing request does not set itself). Work a handler spawns onto other
//! tasks leaves the scope; capture [`current`] and run it in [`scope`] there to keep propagating.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// The deadline and metadata of an incoming call.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the caller stops waiting (from its `grpc-timeout`).
    pub deadline: Option<Instant>,
    /// The caller's custom metadata (transport headers removed).
    pub metadata: MetadataMap,
}

tokio::task_local! {
    static CURRENT: CallContext;
}

/// Headers that belong to one hop's transport, never carried to the next call.
const HOP_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "te",
    "user-agent",
    "host",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-status",
    "grpc-message",
    "accept-encoding",
    "connection",
];

impl CallContext {
    /// The context of an incoming request: its deadline and propagatable metadata (a
    /// `grpc-timeout` that cannot be read is taken for none here; rmicro's server refuses
    /// such a call).
    pub fn from_headers(headers: &http::HeaderMap) -> CallContext {
        CallContext::with_deadline(headers, deadline_of(headers).ok().flatten())
    }

    /// [`CallContext::from_headers`] of a call a server takes: one whose `grpc-timeout` cannot
    /// be read (rather than served without the deadline its caller meant), or with a `-bin`
    /// metadata value that is not base64, is refused with what is wrong, as grpc-go refuses
    /// it.
    pub(crate) fn from_request(headers: &http::HeaderMap) -> Result<CallContext, String> {
        let ctx = CallContext::with_deadline(headers, deadline_of(headers)?);
        let malformed = ctx.metadata.iter().find_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Binary(key, value) => {
                value.to_bytes().is_err().then(|| key.to_string())
            }
            tonic::metadata::KeyAndValueRef::Ascii(..) => None,
        });
        match malformed {
            Some(key) => Err(format!(
                "malformed binary metadata `{key}`: the value of a `-bin` key is base64"
            )),
            None => Ok(ctx),
        }
    }

    fn with_deadline(headers: &http::HeaderMap, deadline: Option<Instant>) -> CallContext {
        // Copy only what propagates: most calls carry no custom metadata, and then this
        // allocates nothing.
        let mut metadata = http::HeaderMap::new();
        for (name, value) in headers {
            if !HOP_HEADERS.contains(&name.as_str()) {
                metadata.append(name.clone(), value.clone());
            }
        }
        CallContext {
            deadline,
            metadata: MetadataMap::from_headers(metadata),
        }
    }

    /// Time left until the deadline (zero once it passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// The context of the call this task is serving, if any.
pub fn current() -> Option<CallContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `f` of the context of the call this task is serving, if any, without copying it.
pub(crate) fn with_current<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
    CURRENT.try_with(f).ok()
}

/// Runs `fut` as serving the call described by `ctx`.
pub async fn scope<F: Future>(ctx: CallContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// Runs `f` as serving the call described by `ctx` (for work polled outside a [`scope`], such
/// as a handler's response stream, which the server polls after the handler returned).
pub(crate) fn sync_scope<R>(ctx: CallContext, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx, f)
}

/// The deadline a request's `grpc-timeout` sets, if it has one, or what is wrong with it.
fn deadline_of(headers: &http::HeaderMap) -> Result<Option<Instant>, String> {
    let Some(value) = headers.get(crate::transport::GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let Some(timeout) = value.to_str().ok().and_then(parse_grpc_timeout) else {
        let value = String::from_utf8_lossy(value.as_bytes());
        return Err(format!(
            "malformed grpc-timeout `{}`: expected 1 to 8 digits and a unit (H, M, S, m, u or n)",
            value.escape_debug()
        ));
    };
    Ok(Some(Instant::now() + timeout))
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The most a `grpc-timeout` value holds: 8 digits, as the gRPC spec requires.
const MAX_TIMEOUT_DIGITS: u128 = 99_999_999;

/// `limit` as a `grpc-timeout` value: rounded up (so the server never gives up before the
/// caller), in milliseconds while 8 digits hold them (27.7 hours), else in seconds, minutes or
/// hours, the finest unit that holds it: a longer deadline cut down to what fits in
/// milliseconds would have the server end the call hours before the caller does.
///
/// Rounding up adds less than one unit: a time left under a millisecond goes as `1m` (one
/// millisecond: the lower-case `m`; `M` is minutes), never as anything longer. Nothing is sent
/// for no time left: a call whose deadline has passed fails before it is sent (zero still
/// encodes as `1m`, the least there is to say).
pub(crate) fn grpc_timeout_value(limit: Duration) -> http::HeaderValue {
    const UNITS: [(u128, u8); 4] = [
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let nanos = limit.as_nanos();
    let (count, unit) = UNITS
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|&(count, _)| count <= MAX_TIMEOUT_DIGITS)
        .unwrap_or((MAX_TIMEOUT_DIGITS, b'H'));
    // Within 8 digits, so it fits a `u32`.
    let count = count.max(1) as u32;
    let mut buf = [0u8; 9];
    let mut at = buf.len() - 1;
    buf[at] = unit;
    let mut rest = count;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&buf[at..]).expect("digits and a unit are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_header(limit: Duration) -> String {
        grpc_timeout_value(limit).to_str().unwrap().to_string()
    }

    #[test]
    fn grpc_timeout_is_rounded_up_in_the_finest_unit_that_holds_it() {
        assert_eq!(timeout_header(Duration::from_millis(300)), "300m");
        assert_eq!(timeout_header(Duration::from_micros(299_001)), "300m");
        assert_eq!(timeout_header(Duration::from_nanos(1)), "1m");
        assert_eq!(timeout_header(Duration::ZERO), "1m");
        assert_eq!(timeout_header(Duration::from_secs(5)), "5000m");
        assert_eq!(
            timeout_header(Duration::from_millis(99_999_999)),
            "99999999m"
        );
        // Past 8 digits of milliseconds, the finest unit that holds it, rounded up.
        assert_eq!(
            timeout_header(Duration::from_millis(100_000_000)),
            "100000S"
        );
        assert_eq!(timeout_header(Duration::from_secs(30 * 3600)), "108000S");
        assert_eq!(
            timeout_header(Duration::from_millis(100_000_000_001)),
            "1666667M"
        );
        assert_eq!(
            timeout_header(Duration::from_secs(6_000_000_060)),
            "1666667H"
        );
        assert_eq!(timeout_header(Duration::MAX), "99999999H");
        for limit in [
            Duration::from_millis(100_000_000),
            Duration::from_secs(123_456_789),
            Duration::from_secs(9_876_543_210),
        ] {
            let sent = parse_grpc_timeout(&timeout_header(limit)).unwrap();
            assert!(sent >= limit, "{limit:?} sent as {sent:?}");
        }
        for ms in [1u64, 9, 10, 99, 100, 12_345, 99_999_999] {
            let header = timeout_header(Duration::from_millis(ms));
            assert_eq!(parse_grpc_timeout(&header), Some(Duration::from_millis(ms)));
        }
    }

    /// At and around the edges: no time, a nanosecond, and just under, at and just over the
    /// point where each unit gives way to the next. What is sent is never less than the time
    /// left (the server must not give up first) and never a whole unit more (a tiny time left
    /// stays tiny on the wire).
    #[test]
    fn grpc_timeout_edges_round_up_by_less_than_one_unit() {
        let ns = Duration::from_nanos;
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let minutes = |n: u64| secs(n * 60);
        let hours = |n: u64| secs(n * 3600);
        let cases = [
            // Nothing left, and less than the finest unit: the least a timeout says.
            (Duration::ZERO, "1m"),
            (ns(1), "1m"),
            (ns(999_999), "1m"),
            (ms(1), "1m"),
            (ms(1) + ns(1), "2m"),
            (ms(2) - ns(1), "2m"),
            // Milliseconds give way to seconds past 8 digits.
            (ms(99_999_999) - ns(1), "99999999m"),
            (ms(99_999_999), "99999999m"),
            (ms(99_999_999) + ns(1), "100000S"),
            // Seconds to minutes.
            (secs(99_999_999) - ns(1), "99999999S"),
            (secs(99_999_999), "99999999S"),
            (secs(99_999_999) + ns(1), "1666667M"),
            // Minutes to hours.
            (minutes(99_999_999) - ns(1), "99999999M"),
            (minutes(99_999_999), "99999999M"),
            (minutes(99_999_999) + ns(1), "1666667H"),
            // Hours, then the most 8 digits of hours say.
            (hours(99_999_999) - ns(1), "99999999H"),
            (hours(99_999_999), "99999999H"),
            (hours(99_999_999) + ns(1), "99999999H"),
        ];
        for (left, expected) in cases {
            let header = timeout_header(left);
            assert_eq!(header, expected, "{left:?} left");
            let sent = parse_grpc_timeout(&header).unwrap();
            let unit = match header.as_bytes()[header.len() - 1] {
                b'm' => ms(1),
                b'S' => secs(1),
                b'M' => minutes(1),
                _ => hours(1),
            };
            if left <= hours(99_999_999) {
                assert!(sent >= left, "{left:?} left, sent as {header}");
            }
            assert!(
                sent < left + unit || left.is_zero(),
                "{left:?} left, sent as {header}: a unit or more over"
            );
        }
    }

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("x5S"), None);
    }

    #[test]
    fn hop_headers_are_dropped() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", "100m".parse().unwrap());
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("x-trace-id", "abc".parse().unwrap());
        h.append("x-tag", "one".parse().unwrap());
        h.append("x-tag", "two".parse().unwrap());
        let ctx = CallContext::from_headers(&h);
        assert!(ctx.remaining().unwrap() <= Duration::from_millis(100));
        assert_eq!(ctx.metadata.len(), 3);
        assert_eq!(ctx.metadata.get("x-trace-id").unwrap(), "abc");
        let tags: Vec<_> = ctx.metadata.get_all("x-tag").iter().collect();
        assert_eq!(
            tags,
            ["one", "two"],
            "every value of a repeated key propagates"
        );
    }
}

//! Benchmarks rmicro's generated client against a plain tonic client, in one process run.
//!
//! One server: an rmicro `Service` named `go.micro.srv.user` on 127.0.0.1:0, registered in a
//! `MemoryRegistry`, with a trivial `UserHandler` ("Hello {name}"). Clients, all calling the
//! unary `User.Call` on that one server:
//!
//! - A: rmicro's generated `UserClient` over `Client::builder().registry(reg)
//!   .selector(RoundRobin::default()).build()`: every call takes the service's nodes from the
//!   client's `NodeCache` (read from the registry, kept fresh by its watch), selects a node,
//!   takes the node's connection, 5 s default timeout, 1 retry.
//! - B: tonic-prost-build's generated `UserClient` over one `tonic::transport::Channel`
//!   (tcp_nodelay), cloned per task.
//!
//! Diagnostic variants (`--variants A,B,C,D,E`), to split A's overhead:
//!
//! - C: rmicro's `UserClient` over `Client::with_address(addr)`: no registry, no selector; still
//!   the 5 s timeout and retry loop.
//! - D: as C with `request_timeout(None)`: no registry, no timeout.
//! - E: tonic's client with `request.set_timeout(5 s)`: tonic plus the `grpc-timeout` header
//!   rmicro sends (the channel and the server then each arm a timer).
//!
//! Each round connects its client afresh and runs C concurrent tasks calling in a loop for warm-up + duration; calls that
//! complete inside the measured window count for throughput and latency. Variants run
//! interleaved (A, B, A, B, …) so background load hits them alike. Reported: per variant the
//! median across rounds of throughput, p50 and p99, and of the process's CPU time per call
//! (clients and server together; less disturbed by other load on the machine than throughput).
//!
//! Options (flag or environment variable): `--concurrency N` / `BENCH_CONCURRENCY` (32),
//! `--duration SECS` / `BENCH_DURATION` (5), `--warmup SECS` / `BENCH_WARMUP` (1),
//! `--rounds N` / `BENCH_ROUNDS` (6), `--variants A,B,…` / `BENCH_VARIANTS` (A,B),
//! `--micro-iters N` / `BENCH_MICRO_ITERS` (200000; 0 skips the registry micro-benchmark),
//! `--extra-services N` / `BENCH_EXTRA_SERVICES` (0: register N other services, shaped like this
//! one, in the same registry, to see how A's lookup scales with the registry's size).
//!
//! Run it through `bash bench/rpc/run.sh`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmicro_runtime::registry::{MemoryRegistry, NodeCache, Registry, DEFAULT_CACHE_TTL};
use rmicro_runtime::selector::{RoundRobin, Selector};
use rmicro_runtime::{Client, Request, Response, ResponseStream, Service, Status, Streaming};

/// rmicro-build's output: messages, `UserClient`, `UserHandler`, `register_user_handler`.
#[allow(dead_code, missing_docs, clippy::all)]
mod rm {
    include!(concat!(env!("OUT_DIR"), "/go.micro.srv.user.rs"));
}

/// tonic-prost-build's output: messages and the standard tonic `user_client::UserClient`.
#[allow(dead_code, missing_docs, clippy::all)]
mod tn {
    include!(concat!(env!("OUT_DIR"), "/tonic/go.micro.srv.user.rs"));
}

const SERVICE: &str = "go.micro.srv.user";
const NAME: &str = "bench";
const EXPECTED: &str = "Hello bench";
const TARGET_THROUGHPUT_RATIO: f64 = 0.97;
const TARGET_P99_RATIO: f64 = 1.1;

// ---------------------------------------------------------------------------------------------
// Server

/// The trivial handler: `Call` greets, the streaming methods are not used by the benchmark.
struct Hello;

impl rm::UserHandler for Hello {
    async fn call(&self, request: Request<rm::CallRequest>) -> Result<Response<rm::CallResponse>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(rm::CallResponse { msg: format!("Hello {name}") }))
    }

    async fn stream(
        &self,
        _request: Request<rm::StreamRequest>,
    ) -> Result<Response<ResponseStream<rm::StreamResponse>>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }

    async fn ping_pong(
        &self,
        _request: Request<Streaming<rm::Ping>>,
    ) -> Result<Response<ResponseStream<rm::Pong>>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    rounds: usize,
    variants: Vec<Variant>,
    micro_iters: usize,
    extra_services: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut values: std::collections::HashMap<&'static str, String> = Default::default();
    const KEYS: [(&str, &str); 7] = [
        ("concurrency", "BENCH_CONCURRENCY"),
        ("duration", "BENCH_DURATION"),
        ("warmup", "BENCH_WARMUP"),
        ("rounds", "BENCH_ROUNDS"),
        ("variants", "BENCH_VARIANTS"),
        ("micro-iters", "BENCH_MICRO_ITERS"),
        ("extra-services", "BENCH_EXTRA_SERVICES"),
    ];
    for (key, var) in KEYS {
        if let Ok(v) = std::env::var(var) {
            values.insert(key, v);
        }
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err("usage: rmicro-bench-rpc [--concurrency N] [--duration SECS] [--warmup SECS] \
                 [--rounds N] [--variants A,B,C,D,E] [--micro-iters N] [--extra-services N]"
                .into());
        }
        let flag = arg.strip_prefix("--").ok_or_else(|| format!("unexpected argument `{arg}`"))?;
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (flag.to_string(), args.next().ok_or_else(|| format!("--{flag} needs a value"))?),
        };
        let key = KEYS.iter().find(|(k, _)| *k == name).ok_or_else(|| format!("unknown option --{name}"))?.0;
        values.insert(key, value);
    }
    let num = |key: &str, default: f64| -> Result<f64, String> {
        match values.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{key}: `{v}` is not a non-negative number")),
        }
    };
    let variants = match values.get("variants") {
        None => vec![Variant::A, Variant::B],
        Some(list) => list
            .split(',')
            .map(|s| Variant::parse(s.trim()).ok_or_else(|| format!("unknown variant `{s}` (A–E)")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let opts = Options {
        concurrency: num("concurrency", 32.0)? as usize,
        duration: Duration::from_secs_f64(num("duration", 5.0)?),
        warmup: Duration::from_secs_f64(num("warmup", 1.0)?),
        rounds: num("rounds", 6.0)? as usize,
        variants,
        micro_iters: num("micro-iters", 200_000.0)? as usize,
        extra_services: num("extra-services", 0.0)? as usize,
    };
    if opts.concurrency == 0 || opts.rounds == 0 || opts.duration.is_zero() || opts.variants.is_empty() {
        return Err("concurrency, rounds, duration and variants must be non-zero".into());
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------------
// Clients

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    A,
    B,
    C,
    D,
    E,
}

impl Variant {
    fn parse(s: &str) -> Option<Variant> {
        Some(match s.to_ascii_uppercase().as_str() {
            "A" => Variant::A,
            "B" => Variant::B,
            "C" => Variant::C,
            "D" => Variant::D,
            "E" => Variant::E,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::A => "A rmicro: registry + RoundRobin",
            Variant::B => "B tonic: plain Channel",
            Variant::C => "C rmicro: with_address",
            Variant::D => "D rmicro: with_address, no timeout",
            Variant::E => "E tonic: + grpc-timeout 5s",
        }
    }
}

#[derive(Clone)]
enum Caller {
    Rmicro(rm::UserClient),
    Tonic(tn::user_client::UserClient<tonic::transport::Channel>, Option<Duration>),
}

impl Caller {
    async fn new(variant: Variant, registry: &Arc<dyn Registry>, addr: &str) -> Caller {
        let tonic_client = |timeout| async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("valid address")
                .tcp_nodelay(true)
                .connect()
                .await
                .expect("tonic channel connects");
            Caller::Tonic(tn::user_client::UserClient::new(channel), timeout)
        };
        match variant {
            Variant::A => Caller::Rmicro(rm::UserClient::new(
                SERVICE,
                Client::builder().registry(Arc::clone(registry)).selector(RoundRobin::default()).build(),
            )),
            Variant::B => tonic_client(None).await,
            Variant::C => Caller::Rmicro(rm::UserClient::new(SERVICE, Client::with_address(addr))),
            Variant::D => Caller::Rmicro(rm::UserClient::new(
                SERVICE,
                Client::builder().address(addr).request_timeout(None).build(),
            )),
            Variant::E => tonic_client(Some(rmicro_runtime::client::DEFAULT_REQUEST_TIMEOUT)).await,
        }
    }

    /// One unary `Call`; the reply's message.
    async fn call(&mut self) -> Result<String, Status> {
        match self {
            Caller::Rmicro(c) => {
                Ok(c.call(rm::CallRequest { name: NAME.to_string() }).await?.into_inner().msg)
            }
            Caller::Tonic(c, timeout) => {
                let mut request = tonic::Request::new(tn::CallRequest { name: NAME.to_string() });
                if let Some(t) = timeout {
                    request.set_timeout(*t);
                }
                Ok(c.call(request).await?.into_inner().msg)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear buckets of nanoseconds, exact below 512 ns, then 256 buckets per
// power of two (< 0.4 % relative error). Fixed size (~117 KiB), so memory stays bounded however
// many calls a round makes.

const SUB_BITS: u32 = 8;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize) * SUB + 2 * SUB;

struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, max: 0 }
    }

    fn index(v: u64) -> usize {
        if v < (2 * SUB) as u64 {
            v as usize
        } else {
            let shift = 63 - v.leading_zeros() - SUB_BITS;
            shift as usize * SUB + (v >> shift) as usize
        }
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 2 * SUB {
            i as u64
        } else {
            let shift = (i / SUB - 1) as u32;
            let sub = (i - shift as usize * SUB) as u64;
            (sub << shift) + ((1u64 << shift) >> 1)
        }
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Nearest-rank percentile (`q` in 0..=1), in nanoseconds.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------------------------
// Load

struct RoundResult {
    calls: u64,
    throughput: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Process CPU time (user + system, all threads: clients and server) per measured call.
    cpu_us_per_call: f64,
    errors: u64,
}

struct TaskResult {
    hist: Histogram,
    errors: u64,
}

/// `concurrency` tasks calling in a loop: warm-up, then the measured window. A call counts when
/// it completes inside the window; tasks stop issuing calls once the window has passed.
async fn run_round(caller: &Caller, opts: &Options, first_error: &Arc<Mutex<Option<String>>>) -> RoundResult {
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let mut tasks = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        let mut caller = caller.clone();
        let first_error = Arc::clone(first_error);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::new();
            let mut errors = 0;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = caller.call().await;
                let t1 = Instant::now();
                let failure = match result {
                    Ok(msg) if msg == EXPECTED => None,
                    Ok(msg) => Some(format!("unexpected reply `{msg}`")),
                    Err(status) => Some(format!("{:?}: {}", status.code(), status.message())),
                };
                if let Some(failure) = failure {
                    errors += 1;
                    first_error.lock().unwrap().get_or_insert(failure);
                } else if t1 >= measure_from && t1 <= end {
                    hist.record((t1 - t0).as_nanos() as u64);
                }
            }
            TaskResult { hist, errors }
        }));
    }
    // The process's CPU time over the measured window: less sensitive to other load on the
    // machine than throughput, since time spent waiting for a core does not count.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = process_cpu_secs();
    tokio::time::sleep_until(end.into()).await;
    let cpu = process_cpu_secs() - cpu_from;
    let mut hist = Histogram::new();
    let mut errors = 0;
    for task in tasks {
        let r = task.await.expect("load task panicked");
        hist.merge(&r.hist);
        errors += r.errors;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    RoundResult {
        calls: hist.total,
        throughput: hist.total as f64 / opts.duration.as_secs_f64(),
        p50_us: us(hist.quantile(0.50)),
        p99_us: us(hist.quantile(0.99)),
        p999_us: us(hist.quantile(0.999)),
        max_us: us(hist.max),
        cpu_us_per_call: cpu * 1e6 / hist.total.max(1) as f64,
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// Registry micro-benchmark: what A pays per call before the RPC, outside the RPC.

/// The same work `Client::pick` does for a registry target on its first attempt (it is
/// private): the service's nodes from the client's `NodeCache`, and the selector's pick.
async fn pick_replica(cache: &NodeCache, selector: &RoundRobin) -> usize {
    let nodes = cache.nodes(SERVICE).await.expect("lookup");
    selector.select(SERVICE, &nodes).min(nodes.len() - 1)
}

async fn micro(registry: &Arc<dyn Registry>, iters: usize) {
    if iters == 0 {
        return;
    }
    let record = registry.get_service(SERVICE).await.expect("lookup");
    let endpoints: usize = record.iter().map(|s| s.endpoints.len()).sum();
    let endpoint_meta: usize = record.iter().flat_map(|s| &s.endpoints).map(|e| e.metadata.len()).sum();
    let node_meta: usize = record.iter().flat_map(|s| &s.nodes).map(|n| n.metadata.len()).sum();
    println!(
        "registry record: {} service(s), {endpoints} endpoints ({endpoint_meta} endpoint metadata entries), \
         {node_meta} node metadata entries",
        record.len()
    );
    let selector = RoundRobin::default();
    let cache = NodeCache::new(Arc::clone(registry), DEFAULT_CACHE_TTL);
    let mut best = [f64::MAX; 2];
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(registry.get_service(std::hint::black_box(SERVICE)).await.unwrap());
        }
        best[0] = best[0].min(t.elapsed().as_nanos() as f64 / iters as f64);
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(pick_replica(&cache, &selector).await);
        }
        best[1] = best[1].min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    println!(
        "per call, one task, best of 3 x {iters}: registry.get_service {:.0} ns; \
         NodeCache::nodes + RoundRobin (= Client::pick) {:.0} ns",
        best[0], best[1]
    );
    // The registry lookup itself (what the client pays only when its cache is cold): the same
    // lookup with 20 other services (each like this one: 3 endpoints, one node) registered.
    let crowded: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    for mut service in record.iter().cloned() {
        crowded.register(&service, Duration::from_secs(3600)).await.unwrap();
        let name = service.name.clone();
        for i in 0..20 {
            service.name = format!("{name}.other{i}");
            for node in &mut service.nodes {
                node.id = format!("{}-{i}", node.id);
            }
            crowded.register(&service, Duration::from_secs(3600)).await.unwrap();
        }
    }
    let mut best_crowded = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..iters / 10 {
            std::hint::black_box(crowded.get_service(std::hint::black_box(SERVICE)).await.unwrap());
        }
        best_crowded = best_crowded.min(t.elapsed().as_nanos() as f64 / (iters / 10).max(1) as f64);
    }
    println!("  registry.get_service with 20 other services registered: {best_crowded:.0} ns");
}

// ---------------------------------------------------------------------------------------------

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// User + system CPU time of this process so far, in seconds (`/proc/self/stat`, 10 ms ticks).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: state is 3rd overall, utime 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    // The one server, registered in an explicit memory registry.
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let mut service = Service::builder(SERVICE).registry(Arc::clone(&registry)).build();
    rm::register_user_handler(service.server_mut(), Hello).expect("register handler");
    let running = service.start().await.expect("service starts");
    let addr = running.local_addr().to_string();
    for _ in 0..200 {
        if registry.get_service(SERVICE).await.unwrap().iter().any(|s| !s.nodes.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        registry.get_service(SERVICE).await.unwrap().iter().any(|s| !s.nodes.is_empty()),
        "the service never appeared in the registry"
    );

    println!(
        "server: rmicro Service `{SERVICE}` at {addr} (MemoryRegistry); clients and server share one \
         tokio multi-thread runtime with {workers} workers"
    );
    println!(
        "load: {} tasks x unary User.Call, warm-up {:?} + measured {:?} per round, {} rounds, order {}",
        opts.concurrency,
        opts.warmup,
        opts.duration,
        opts.rounds,
        opts.variants.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",")
    );
    micro(&registry, opts.micro_iters).await;
    if opts.extra_services > 0 {
        let record = registry.get_service(SERVICE).await.unwrap();
        for i in 0..opts.extra_services {
            for mut service in record.iter().cloned() {
                service.name = format!("{SERVICE}.other{i}");
                for node in &mut service.nodes {
                    node.id = format!("{}-other{i}", node.id);
                }
                registry.register(&service, Duration::from_secs(3600)).await.unwrap();
            }
        }
        println!("registered {} other services in the same registry", opts.extra_services);
    }

    // Every round builds its clients afresh, with new connections: which worker thread a
    // connection's tasks land on changes its speed by several per cent, and a connection kept
    // for all rounds would keep its luck, good or bad, for one variant.
    async fn connect(v: Variant, registry: &Arc<dyn Registry>, addr: &str) -> Caller {
        let mut caller = Caller::new(v, registry, addr).await;
        // One call up front: the connection is up before the warm-up.
        let reply = caller.call().await.unwrap_or_else(|e| panic!("{v:?}: first call failed: {e}"));
        assert_eq!(reply, EXPECTED);
        caller
    }

    let first_error = Arc::new(Mutex::new(None));
    let mut results: Vec<Vec<RoundResult>> = opts.variants.iter().map(|_| Vec::new()).collect();
    println!();
    println!(
        "{:<36} {:>5} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}  load",
        "variant",
        "round",
        "calls",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "CPU µs/c",
        "errors"
    );
    for round in 1..=opts.rounds {
        for (i, &v) in opts.variants.iter().enumerate() {
            let caller = connect(v, &registry, &addr).await;
            let r = run_round(&caller, &opts, &first_error).await;
            drop(caller);
            println!(
                "{:<36} {:>5} {:>10} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>6}  {}",
                v.describe(),
                round,
                r.calls,
                r.throughput,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.max_us,
                r.cpu_us_per_call,
                r.errors,
                loadavg()
            );
            results[i].push(r);
        }
    }

    struct Summary {
        v: Variant,
        tput: f64,
        p50: f64,
        p99: f64,
        cpu: f64,
        errors: u64,
    }
    let summaries: Vec<Summary> = opts
        .variants
        .iter()
        .zip(&results)
        .map(|(&v, rs)| Summary {
            v,
            tput: median(rs.iter().map(|r| r.throughput).collect()),
            p50: median(rs.iter().map(|r| r.p50_us).collect()),
            p99: median(rs.iter().map(|r| r.p99_us).collect()),
            cpu: median(rs.iter().map(|r| r.cpu_us_per_call).collect()),
            errors: rs.iter().map(|r| r.errors).sum(),
        })
        .collect();
    // A variant listed twice would be measured twice; summarize the first of each.
    let find = |v: Variant| summaries.iter().find(|s| s.v == v);

    println!();
    println!("median across {} rounds:", opts.rounds);
    println!(
        "| {:<36} | {:>9} | {:>8} | {:>8} | {:>12} | {:>6} | {:>10} | {:>8} | {:>8} |",
        "client", "calls/s", "p50 µs", "p99 µs", "CPU µs/call", "errors", "calls/s÷B", "p99÷B", "CPU÷B"
    );
    println!(
        "|{:-<38}|{:->11}|{:->10}|{:->10}|{:->14}|{:->8}|{:->12}|{:->10}|{:->10}|",
        "", "", "", "", "", "", "", "", ""
    );
    let b = find(Variant::B);
    for s in &summaries {
        let (tr, pr, cr) = match b {
            Some(b) => (
                format!("{:.3}", s.tput / b.tput),
                format!("{:.3}", s.p99 / b.p99),
                format!("{:.3}", s.cpu / b.cpu),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {:<36} | {:>9.0} | {:>8.1} | {:>8.1} | {:>12.1} | {:>6} | {:>10} | {:>8} | {:>8} |",
            s.v.describe(),
            s.tput,
            s.p50,
            s.p99,
            s.cpu,
            s.errors,
            tr,
            pr,
            cr
        );
    }
    // Paired ratios: each round's variant against the B round next to it in time, so a burst of
    // other load that hits one round of each pair counts once, not in both medians.
    if let Some(bi) = opts.variants.iter().position(|v| *v == Variant::B) {
        println!();
        println!("paired per-round ratios vs B (median over rounds; min..max):");
        for (i, v) in opts.variants.iter().enumerate() {
            if i == bi || opts.variants[..i].contains(v) {
                continue;
            }
            let ratios = |f: &dyn Fn(&RoundResult) -> f64| {
                let rs: Vec<f64> = results[i].iter().zip(&results[bi]).map(|(x, y)| f(x) / f(y)).collect();
                let lo = rs.iter().copied().fold(f64::MAX, f64::min);
                let hi = rs.iter().copied().fold(f64::MIN, f64::max);
                format!("{:.3} ({lo:.3}..{hi:.3})", median(rs))
            };
            println!(
                "  {:<36} calls/s {}  p99 {}  CPU/call {}",
                v.describe(),
                ratios(&|r| r.throughput),
                ratios(&|r| r.p99_us),
                ratios(&|r| r.cpu_us_per_call)
            );
        }
    }
    if let (Some(a), Some(b)) = (find(Variant::A), b) {
        let tr = a.tput / b.tput;
        let pr = a.p99 / b.p99;
        let ok_t = tr >= TARGET_THROUGHPUT_RATIO;
        let ok_p = pr <= TARGET_P99_RATIO;
        println!();
        println!(
            "throughput A/B = {tr:.3} (target >= {TARGET_THROUGHPUT_RATIO}): {}",
            if ok_t { "met" } else { "NOT met" }
        );
        println!(
            "p99 A/B        = {pr:.3} (target <= {TARGET_P99_RATIO}): {}",
            if ok_p { "met" } else { "NOT met" }
        );
        println!("targets: {}", if ok_t && ok_p { "MET" } else { "NOT MET" });
        // With a few rounds, a burst of other load in one round moves a median a lot.
        let spread = |i: usize| {
            let t: Vec<f64> = results[i].iter().map(|r| r.throughput).collect();
            t.iter().copied().fold(f64::MIN, f64::max) / t.iter().copied().fold(f64::MAX, f64::min)
        };
        let ai = opts.variants.iter().position(|v| *v == Variant::A).unwrap();
        let bi = opts.variants.iter().position(|v| *v == Variant::B).unwrap();
        let worst = spread(ai).max(spread(bi));
        if worst > 1.15 {
            println!(
                "WARNING: throughput varied {:.0} % between rounds of one client (other load on the \
                 machine?); the verdict above is unreliable: see the paired ratios and CPU µs/call, \
                 or rerun with more rounds",
                (worst - 1.0) * 100.0
            );
        }
    }

    let _ = running.stop().await;
    let errors: u64 = summaries.iter().map(|s| s.errors).sum();
    if errors > 0 {
        eprintln!(
            "{errors} call(s) failed; first: {}",
            first_error.lock().unwrap().clone().unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    println!("errors: 0");
    ExitCode::SUCCESS
}

//! Benchmarks the work rmicro-build does in a build.rs, in one process:
//!
//! 1. the version check of checked-in generated code (`Config::checked_in(dir).try_check()`) over
//!    a directory of 100 generated files, with the runtime resolved the two ways build.rs can
//!    (Cargo's `links` metadata in `DEP_RMICRO_RUNTIME_*`, or a `Cargo.lock`), plus a breakdown
//!    of the check into its parts;
//! 2. a full generation run over the same 100 `.proto` files, rmicro-build (protox, in process)
//!    against tonic-prost-build (protoc as a subprocess, then prost + tonic codegen).
//!
//! Run it through `bash bench/build-check/run.sh`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;
use std::{env, fs};

use rmicro_build::check::{self, FileCheck, Status};

/// Distinct `.proto` files (and so distinct packages, one generated file each).
const PROTOS: usize = 100;
/// Version-check iterations: untimed warm-up, then timed.
const CHECK_WARMUP: usize = 20;
const CHECK_ITERS: usize = 200;
/// Generation iterations per tool, after one untimed warm-up run each.
const GEN_ITERS: usize = 5;
/// The budget for the check in a build script.
const TARGET_MS: f64 = 20.0;

/// The `links` metadata Cargo gives the build script of a crate depending on rmicro-runtime 0.1.0.
const RUNTIME_ENV: [(&str, &str); 3] = [
    ("DEP_RMICRO_RUNTIME_0_1_VERSION", "0.1.0"),
    ("DEP_RMICRO_RUNTIME_0_1_API", "1"),
    ("DEP_RMICRO_RUNTIME_0_1_API_MIN", "1"),
];

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let tmp = env::temp_dir().join(format!("rmicro-bench-build-check.{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();

    // Not under Cargo: keep rmicro-build from printing `cargo:rerun-if-env-changed` lines.
    // SAFETY (all env edits here): single-threaded; no other thread reads the environment.
    unsafe { env::remove_var("CARGO") };
    set_runtime_env(true);

    // Inputs: 100 protos under distinct packages, and their rmicro output as "checked-in" code.
    let proto_root = tmp.join("protos");
    let protos = write_protos(&repo, &proto_root);
    let includes = vec![proto_root, repo.join("tests/proto")];
    let checked = tmp.join("checked");
    let generated = rmicro_build::Config::new()
        .out_dir(&checked)
        .emit_rerun_if_changed(false)
        .try_compile(&protos, &includes)
        .unwrap_or_else(|e| panic!("rmicro-build failed on the benchmark protos: {e}"));
    assert!(generated.len() >= PROTOS, "only {} files generated", generated.len());
    println!("{} protos -> {} generated files in {}", protos.len(), generated.len(), checked.display());

    // Lock files for the Cargo.lock path: a minimal one, and the workspace's real one (~1.2k lines).
    let lock_min = tmp.join("lock-min");
    fs::create_dir_all(&lock_min).unwrap();
    fs::write(
        lock_min.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"rmicro-runtime\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let lock_ws = tmp.join("lock-workspace");
    fs::create_dir_all(&lock_ws).unwrap();
    fs::copy(repo.join("Cargo.lock"), lock_ws.join("Cargo.lock")).unwrap();

    // ---- 1. The version check, exactly as build.rs calls it -----------------------------------
    // All cases run round-robin (one call of each per round), so load from other processes on
    // the machine lands on every case alike. Env edits and result checks stay outside the timer.
    let mut config = rmicro_build::Config::new();
    config.checked_in(&checked).emit_rerun_if_changed(false);
    let config = &config;
    let expected = generated.len();
    let with_env = move || {
        set_runtime_env(true);
        let (result, t) = timed(|| config.try_check());
        verify_checks(result, expected);
        t
    };
    let with_lock = move |dir| {
        move || {
            set_runtime_env(false);
            unsafe { env::set_var("CARGO_MANIFEST_DIR", dir) };
            let (result, t) = timed(|| config.try_check());
            verify_checks(result, expected);
            t
        }
    };
    // The three steps try_check runs, timed alone (public API of rmicro_build::check).
    let dirs = [checked.clone()];
    let runtimes = check::resolve_from_lockfile(&lock_min).unwrap().unwrap().runtimes;
    let files = check::collect(&dirs);
    let resolve = |dir| move || timed(|| check::resolve_from_lockfile(dir).unwrap()).1;
    let (lock_min, lock_ws) = (lock_min.as_path(), lock_ws.as_path());
    let rows = round_robin(vec![
        ("try_check, runtime from DEP_RMICRO_RUNTIME_*", Box::new(with_env)),
        ("try_check, runtime from minimal Cargo.lock", Box::new(with_lock(lock_min))),
        ("try_check, runtime from workspace Cargo.lock", Box::new(with_lock(lock_ws))),
        ("  part: collect (walk dir, sniff prefix)", Box::new(|| timed(|| check::collect(&dirs)).1)),
        (
            "  part: check_files (read + parse headers)",
            Box::new(|| timed(|| check::check_files(&files, &runtimes)).1),
        ),
        ("  part: resolve from minimal Cargo.lock", Box::new(resolve(lock_min))),
        ("  part: resolve from workspace Cargo.lock", Box::new(resolve(lock_ws))),
    ]);
    println!(
        "\n== 1. Version check of {} checked-in files ({CHECK_ITERS} rounds after {CHECK_WARMUP} warm-up) ==",
        files.len()
    );
    println!("{:<46} {:>10} {:>10} {:>10}", "", "median ms", "p99 ms", "max ms");
    for (label, s) in &rows {
        println!("{label:<46} {:>10.3} {:>10.3} {:>10.3}", s.median, s.p99, s.max);
    }

    // ---- 2. Full generation run: rmicro-build vs tonic-prost-build ------------------------------
    set_runtime_env(true);
    println!(
        "\n== 2. Full generation of {PROTOS} protos ({GEN_ITERS} iterations each, interleaved, after 1 warm-up) =="
    );
    let (mut rmicro_ms, mut tonic_ms) = (Vec::new(), Vec::new());
    let (mut rmicro_files, mut tonic_files) = (0, 0);
    for i in 0..=GEN_ITERS {
        let out = tmp.join(format!("gen/rmicro-{i}"));
        fs::create_dir_all(&out).unwrap();
        let start = Instant::now();
        let written = rmicro_build::Config::new()
            .out_dir(&out)
            .emit_rerun_if_changed(false)
            .try_compile(&protos, &includes)
            .unwrap_or_else(|e| panic!("rmicro-build: {e}"));
        let r = ms(start);
        rmicro_files = written.len();

        let out = tmp.join(format!("gen/tonic-{i}"));
        fs::create_dir_all(&out).unwrap();
        let start = Instant::now();
        tonic_prost_build::configure()
            .out_dir(&out)
            .emit_rerun_if_changed(false)
            .compile_protos(&protos, &includes)
            .unwrap_or_else(|e| panic!("tonic-prost-build: {e}"));
        let t = ms(start);
        tonic_files = count_rs(&out);

        let tag = if i == 0 { "warm-up" } else { "" };
        println!("run {i}: rmicro-build {r:8.1} ms   tonic-prost-build {t:8.1} ms  {tag}");
        if i > 0 {
            rmicro_ms.push(r);
            tonic_ms.push(t);
        }
    }
    let (rm, tm) = (Stats::of(rmicro_ms).median, Stats::of(tonic_ms).median);

    // ---- 3. Summary ------------------------------------------------------------------------------
    let check_env = &rows[0].1;
    let check_lock = &rows[1].1;
    println!("\n== Summary ==");
    println!("{:<52} {:>12}", "measure", "value");
    println!("{:<52} {:>9.3} ms", "check, DEP_* env: median", check_env.median);
    println!("{:<52} {:>9.3} ms", "check, DEP_* env: p99", check_env.p99);
    println!("{:<52} {:>9.3} ms", "check, minimal Cargo.lock: median", check_lock.median);
    println!("{:<52} {:>9.3} ms", "check, minimal Cargo.lock: p99", check_lock.p99);
    println!("{:<52} {:>9.3} ms", "check, workspace Cargo.lock: median", rows[2].1.median);
    println!("{:<52} {:>9.3} ms", "check, workspace Cargo.lock: p99", rows[2].1.p99);
    let worst_p99 = rows[..3].iter().map(|(_, s)| s.p99).fold(0.0, f64::max);
    let verdict = if worst_p99 < TARGET_MS { "MET" } else { "NOT MET" };
    println!("{:<52} {:>12}", format!("target < {TARGET_MS} ms (worst p99 {worst_p99:.3} ms)"), verdict);
    println!("{:<52} {:>9.1} ms", format!("generate, rmicro-build ({rmicro_files} files): median"), rm);
    println!("{:<52} {:>9.1} ms", format!("generate, tonic-prost-build ({tonic_files} files): median"), tm);
    println!("{:<52} {:>12.2}", "ratio rmicro-build / tonic-prost-build", rm / tm);

    fs::remove_dir_all(&tmp).unwrap();
}

/// Sets (or removes) the `DEP_RMICRO_RUNTIME_*` variables Cargo passes to build scripts.
fn set_runtime_env(on: bool) {
    for (key, value) in RUNTIME_ENV {
        // SAFETY: see main; the benchmark is single-threaded when it edits the environment.
        unsafe { if on { env::set_var(key, value) } else { env::remove_var(key) } }
    }
}

/// Writes 100 distinct protos under `root/bench/`: copies of the user service and of the
/// kitchen-sink test proto (HTTP annotations, well-known types, a cross-package import),
/// alternating, each with its own package. Returns their paths.
fn write_protos(repo: &Path, root: &Path) -> Vec<PathBuf> {
    let user = fs::read_to_string(repo.join("proto/user.proto")).unwrap();
    let kitchen = fs::read_to_string(repo.join("tests/proto/rmicro/test/everything.proto")).unwrap();
    let dir = root.join("bench");
    fs::create_dir_all(&dir).unwrap();
    (0..PROTOS)
        .map(|i| {
            let (text, package, stem) = match i % 2 {
                0 => (&user, "package go.micro.srv.user;", "user"),
                _ => (&kitchen, "package rmicro.test.kitchen;", "kitchen"),
            };
            assert!(text.contains(package), "{package} not found in the source proto");
            let path = dir.join(format!("{stem}{i:03}.proto"));
            fs::write(&path, text.replacen(package, &format!("package bench.{stem}{i:03};"), 1)).unwrap();
            path
        })
        .collect()
}

/// Fails loudly unless the check returned every generated file, each accepted by the runtime.
fn verify_checks(result: Result<Vec<FileCheck>, rmicro_build::Error>, expected: usize) {
    let checks = result.unwrap_or_else(|e| panic!("try_check failed: {e}"));
    assert!(
        checks.len() >= expected && checks.len() >= PROTOS,
        "try_check returned {} results, expected {expected} (is the runtime resolved?)",
        checks.len()
    );
    if let Some(bad) = checks.iter().find(|c| !matches!(c.status, Status::Ok(_))) {
        panic!("unexpected check result: {bad}");
    }
}

/// A labelled benchmark case; each call returns the milliseconds it measured.
type Case<'a> = (&'a str, Box<dyn FnMut() -> f64 + 'a>);

/// Runs every case once per round, `CHECK_WARMUP` untimed rounds then `CHECK_ITERS` timed ones.
fn round_robin(mut cases: Vec<Case<'_>>) -> Vec<(String, Stats)> {
    let mut samples = vec![Vec::with_capacity(CHECK_ITERS); cases.len()];
    for round in 0..CHECK_WARMUP + CHECK_ITERS {
        for ((_, case), out) in cases.iter_mut().zip(&mut samples) {
            let t = case();
            if round >= CHECK_WARMUP {
                out.push(t);
            }
        }
    }
    cases.iter().zip(samples).map(|((label, _), s)| (label.to_string(), Stats::of(s))).collect()
}

/// Calls `f` once; returns its result and the wall time in milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let result = black_box(f());
    (result, ms(start))
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn count_rs(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "rs")).count()
}

/// Median, nearest-rank p99 and maximum of a sample, in milliseconds.
struct Stats {
    median: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        let p99 = v[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
        Stats { median, p99, max: v[n - 1] }
    }
}

//! Task runtimes on the worker: the built-in kernels (trusted code in the client; their input is
//! data). Later, sandboxed WebAssembly.
//!
//! [`run`] dispatches a task by kind to its kernel and runs it on the calling thread, which is a
//! worker thread, never an async runtime thread: kernels compute for seconds and block while
//! paused. Kernels are pure functions of their input and their dependencies' outputs: they do no
//! I/O (no files, no sockets; time only through [`TaskControl`]'s busy clock), and they never
//! panic on input, however malformed or hostile: every field is checked, sizes are capped, and a
//! bad one is a [`TaskError::BadInput`] that names it.
//!
//! Each kind's wire format (input and output JSON) is documented in its file.
//!
//! [`check_input`] runs, at submission, the same field checks as each kernel (the kernels' own
//! parsing code, not a copy), and where the input alone determines it, that no stage's output can
//! exceed the supervisor's output limit. [`validate_job`] is job validation with those checks.
//! `bytes` and `abort` are there for tests: a large output of known content, and a kernel that
//! kills its worker (enabled only by [`set_fault_kernels`]).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::job::{self, Job, JobError, JobSpec};
use crate::proto::TaskId;

mod abort;
mod bytes;
mod control;
pub mod mandelbrot;
mod memsweep;
mod primes;
mod spin;

pub use abort::{fault_kernels_enabled, set_fault_kernels};
pub use control::{StepAside, Stop, TaskControl};

/// Every built-in kind, for manifest validation on the supervisor.
pub const KINDS: &[&str] = &[
    "mandelbrot_view",
    "mandelbrot",
    "mandelbrot_assemble",
    "primes",
    "spin",
    "memsweep",
    "bytes",
    "abort",
];

pub fn is_known_kind(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// Why a task produced no output.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task kind {0:?}; this worker runs {list}", list = KINDS.join(", "))]
    UnknownKind(String),
    /// The input or a dependency's output is not what the kind accepts; the message names the
    /// field and what is allowed. Running the task again elsewhere will not help.
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("cancelled")]
    Cancelled,
}

impl From<Stop> for TaskError {
    fn from(_: Stop) -> Self {
        TaskError::Cancelled
    }
}

/// Checks a task's own input as its kernel will, without computing anything: the same fields,
/// types and ranges, and for a Mandelbrot view that neither its tiles nor its assembly can
/// produce more than [`crate::proto::DEFAULT_MAX_OUTPUT_BYTES`]. What depends on dependencies'
/// outputs (a tile's index against its plan) is checked by the kernel when it runs. `bytes` is
/// the one kind whose output size is left to the worker and supervisor at run time (see
/// `bytes.rs`).
pub fn check_input(kind: &str, input: &Value) -> Result<(), TaskError> {
    match kind {
        "mandelbrot_view" => mandelbrot::check_view(input),
        "mandelbrot" => mandelbrot::check_tile(input),
        "mandelbrot_assemble" => mandelbrot::parse_assemble(input).map(drop),
        "primes" => primes::parse(input).map(drop),
        "spin" => spin::parse(input).map(drop),
        "memsweep" => memsweep::parse(input).map(drop),
        "bytes" => bytes::parse(input).map(drop),
        "abort" => abort::parse(input).map(drop),
        other => Err(TaskError::UnknownKind(other.to_owned())),
    }
}

/// Validates a job for the built-in kernels: [`job::validate_with`] with [`is_known_kind`] and
/// every task's input through [`check_input`]. What the supervisor and the submit CLI run.
pub fn validate_job(spec: JobSpec) -> Result<Job, JobError> {
    job::validate_with(spec, is_known_kind, |kind, input| {
        check_input(kind, input).map_err(|e| e.to_string())
    })
}

/// Runs one task to completion on the calling thread (a worker thread, never an async runtime
/// thread). `deps` are the outputs of the task's dependencies keyed by task id.
pub fn run(
    kind: &str,
    input: &Value,
    deps: &BTreeMap<TaskId, Value>,
    ctl: &TaskControl,
) -> Result<Value, TaskError> {
    let output = match kind {
        "mandelbrot_view" => mandelbrot::run_view(input)?,
        "mandelbrot" => mandelbrot::run_tile(input, deps, ctl)?,
        "mandelbrot_assemble" => mandelbrot::run_assemble(input, deps, ctl)?,
        "primes" => primes::run(input, ctl)?,
        "spin" => spin::run(input, ctl)?,
        "memsweep" => memsweep::run(input, ctl)?,
        "bytes" => bytes::run(input, ctl)?,
        "abort" => abort::run(input, ctl)?,
        other => return Err(TaskError::UnknownKind(other.to_owned())),
    };
    ctl.set_progress(1.0);
    Ok(output)
}

/// Single-core speed: runs a fixed small kernel (Mandelbrot steps on a bounded orbit) for about
/// `budget` and returns millions of kernel steps per second. Workers report it at start-up; 30 to
/// 50 ms is enough for a figure that ranks machines.
pub fn bench_mops(budget: Duration) -> f64 {
    const CHUNK: u64 = 20_000;
    // c is in the period-3 bulb (the "rabbit"), so the orbit stays bounded and never goes
    // subnormal or infinite, which would change the speed of the arithmetic.
    let (cr, ci) = std::hint::black_box((-0.122_561_166, 0.744_861_766));
    let (mut zr, mut zi) = (0.0f64, 0.0f64);
    let mut steps = 0u64;
    let start = Instant::now();
    // Speed is steps per second of this thread's CPU time, not of the wall clock: a machine busy
    // with other work at start-up (or several workers starting at once on one machine) must not
    // look slower than it is.
    let cpu_start = thread_cpu_time();
    loop {
        for _ in 0..CHUNK {
            let zr2 = zr * zr - zi * zi + cr;
            zi = 2.0 * zr * zi + ci;
            zr = zr2;
        }
        steps += CHUNK;
        let elapsed = start.elapsed();
        if elapsed >= budget {
            std::hint::black_box((zr, zi));
            let cpu = thread_cpu_time().saturating_sub(cpu_start);
            let secs = if cpu.is_zero() { elapsed } else { cpu };
            return steps as f64 / secs.as_secs_f64().max(1e-9) / 1e6;
        }
    }
}

/// CPU time consumed by the calling thread so far (zero where the platform does not say).
pub fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own and reads nothing else.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    Duration::ZERO
}

/// A kind's JSON object (an input, or a dependency's output), read field by field. Every getter
/// checks type and range and says what is allowed when the value is not.
struct Fields<'a> {
    /// `None` for a JSON `null`, which reads as `{}` so that kinds without required fields can be
    /// given no input at all.
    map: Option<&'a Map<String, Value>>,
    /// Where the object came from, prefixed to messages ("" for the task's own input).
    origin: String,
}

impl<'a> Fields<'a> {
    /// Checks that `value` is an object whose every field is in `allowed`: a misspelt optional
    /// field is an error rather than silently ignored.
    fn of(value: &'a Value, allowed: &[&str], origin: &str) -> Result<Self, TaskError> {
        let origin = if origin.is_empty() {
            String::new()
        } else {
            format!("{origin}: ")
        };
        let map = match value {
            Value::Null => None,
            Value::Object(map) => Some(map),
            other => {
                return Err(TaskError::BadInput(format!(
                    "{origin}expected a JSON object, got {}",
                    show(other)
                )));
            }
        };
        if let Some(unknown) = map.and_then(|m| m.keys().find(|k| !allowed.contains(&k.as_str()))) {
            return Err(TaskError::BadInput(format!(
                "{origin}unknown field {unknown:?}; allowed fields: {}",
                allowed.join(", ")
            )));
        }
        Ok(Self { map, origin })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    fn bad(&self, name: &str, what: impl std::fmt::Display) -> TaskError {
        TaskError::BadInput(format!("{}field {name:?} {what}", self.origin))
    }

    fn required(&self, name: &str, expected: &str) -> Result<&'a Value, TaskError> {
        self.get(name)
            .ok_or_else(|| self.bad(name, format_args!("is missing; expected {expected}")))
    }

    /// An integer in `range`. Integral floats (`5.0`) are accepted since some JSON writers
    /// produce them.
    fn u64(&self, name: &str, range: RangeInclusive<u64>) -> Result<u64, TaskError> {
        self.opt_u64(name, range.clone())?.ok_or_else(|| {
            self.bad(
                name,
                format_args!("is missing; expected {}", integers(&range)),
            )
        })
    }

    fn opt_u64(&self, name: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, TaskError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                // Only floats up to 2^53 are taken, which every such float converts to exactly;
                // a larger one (a seed written as 1e19) is no exact integer.
                const EXACT: f64 = (1u64 << 53) as f64;
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= EXACT)
                    .filter(|f| *f <= *range.end() as f64)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(self.bad(
                name,
                format_args!("must be {}, got {}", integers(&range), show(value)),
            )),
        }
    }

    /// A finite number in `range`.
    fn f64(&self, name: &str, range: RangeInclusive<f64>) -> Result<f64, TaskError> {
        let expected = format!(
            "a number in {}..={}",
            plain(*range.start()),
            plain(*range.end())
        );
        let value = self.required(name, &expected)?;
        match value.as_f64() {
            Some(x) if x.is_finite() && range.contains(&x) => Ok(x),
            _ => Err(self.bad(
                name,
                format_args!("must be {expected}, got {}", show(value)),
            )),
        }
    }

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>, TaskError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.bad(name, format_args!("must be a string, got {}", show(other))))
            }
        }
    }
}

fn integers(range: &RangeInclusive<u64>) -> String {
    format!("an integer in {}..={}", range.start(), range.end())
}

/// A bound for an error message: `100` and `-10` as such, `1e-12` rather than `0.000000000001`.
fn plain(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e7) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A value for an error message, cut short so that a hostile input cannot make a huge one.
fn show(value: &Value) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TaskSpec;
    use serde_json::json;

    fn run_plain(kind: &str, input: Value) -> Result<Value, TaskError> {
        run(kind, &input, &BTreeMap::new(), &TaskControl::new())
    }

    #[test]
    fn every_listed_kind_is_known_and_runs_through_run() {
        for kind in KINDS {
            assert!(is_known_kind(kind));
            // Every kind refuses an unknown field, so this shows the input reached its kernel.
            let err = run_plain(kind, json!({"bogus": 1})).unwrap_err();
            assert!(matches!(err, TaskError::BadInput(_)), "{kind}: {err}");
        }
        assert!(!is_known_kind("Mandelbrot"));
    }

    #[test]
    fn an_unknown_kind_is_named_with_the_known_ones() {
        let err = run_plain("fortran", json!({})).unwrap_err();
        assert!(matches!(&err, TaskError::UnknownKind(k) if k == "fortran"));
        let msg = err.to_string();
        assert!(
            msg.contains("\"fortran\"") && msg.contains("primes") && msg.contains("spin"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_types_and_ranges_are_named() {
        let cases = [
            (json!(7), "expected a JSON object"),
            (
                json!({"ms": -1}),
                "field \"ms\" must be an integer in 0..=86400000, got -1",
            ),
            (json!({"ms": "10"}), "field \"ms\" must be an integer"),
            (json!({"ms": 1.5}), "got 1.5"),
            (json!({"ms": 1e300}), "field \"ms\""),
            (json!({"ms": 18446744073709551615u64}), "field \"ms\""),
            (json!({}), "field \"ms\" is missing"),
            (
                json!({"ms": 1, "msec": 2}),
                "unknown field \"msec\"; allowed fields: ms",
            ),
        ];
        for (input, expected) in cases {
            let err = run_plain("spin", input.clone()).unwrap_err();
            assert!(err.to_string().contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn integral_floats_are_accepted_as_integers() {
        assert_eq!(
            run_plain("spin", json!({"ms": 0.0})).unwrap(),
            json!({"spun_ms": 0})
        );
    }

    #[test]
    fn error_messages_stay_short_whatever_the_input() {
        let huge = "x".repeat(1 << 20);
        let err = run_plain("spin", json!({ "ms": huge })).unwrap_err();
        assert!(err.to_string().len() < 200, "{}", err.to_string().len());
    }

    /// Every field of every input and dependency output, replaced in turn by each awkward value:
    /// the kernels answer (mostly BadInput) and never panic.
    #[test]
    fn hostile_values_anywhere_never_panic() {
        let awkward = [
            json!(null),
            json!(true),
            json!(-1),
            json!(0),
            json!(1),
            json!(1.5),
            json!(-0.0),
            json!(1e308),
            json!(u64::MAX),
            json!(i64::MIN),
            json!("1"),
            json!([0, 1]),
            json!({"rows": []}),
        ];
        let ctl = TaskControl::new();
        let view = json!({
            "width": 6, "height": 4, "center_re": -0.5, "center_im": 0.0, "span_re": 3.0,
            "max_iter": 50, "tiles": 2,
        });
        let plan = run("mandelbrot_view", &view, &BTreeMap::new(), &ctl).unwrap();
        let plan_deps = BTreeMap::from([(TaskId::from("plan"), plan.clone())]);
        let tile = run("mandelbrot", &json!({"index": 0}), &plan_deps, &ctl).unwrap();
        let other = run("mandelbrot", &json!({"index": 1}), &plan_deps, &ctl).unwrap();
        let all = |plan: Value, tile: Value| {
            BTreeMap::from([
                ("plan".into(), plan),
                ("t0".into(), tile),
                ("t1".into(), other.clone()),
            ])
        };
        let cases: Vec<(&str, Value, BTreeMap<TaskId, Value>)> = vec![
            ("spin", json!({"ms": 1}), BTreeMap::new()),
            ("primes", json!({"from": 0, "to": 100}), BTreeMap::new()),
            ("mandelbrot_view", view.clone(), BTreeMap::new()),
            ("mandelbrot", json!({"index": 0}), plan_deps.clone()),
            (
                "mandelbrot_assemble",
                json!({"file": "a.png"}),
                all(plan.clone(), tile.clone()),
            ),
        ];
        let mut runs = 0;
        for (kind, input, deps) in &cases {
            assert!(run(kind, input, deps, &ctl).is_ok(), "{kind} base case");
            for bad in &awkward {
                for field in input.as_object().unwrap().keys() {
                    let mut input = input.clone();
                    input[field] = bad.clone();
                    let _ = run(kind, &input, deps, &ctl);
                    runs += 1;
                }
                for (id, output) in deps {
                    for field in output.as_object().unwrap().keys() {
                        let mut deps = deps.clone();
                        let output = deps.get_mut(id).unwrap();
                        output[field] = bad.clone();
                        let _ = run(kind, input, &deps, &ctl);
                        runs += 1;
                    }
                    let mut deps = deps.clone();
                    deps.insert(id.clone(), bad.clone());
                    let _ = run(kind, input, &deps, &ctl);
                    runs += 1;
                }
            }
        }
        assert!(runs > 300, "{runs}");
    }

    #[test]
    fn check_input_refuses_what_the_kernel_refuses_with_the_same_message() {
        let cases = [
            ("spin", json!({"ms": -1})),
            ("spin", json!({"msec": 1})),
            ("primes", json!({"from": 10, "to": 5})),
            ("primes", json!({"from": 0, "to": 20_000_000_000u64})),
            ("mandelbrot_view", json!({"width": 0})),
            ("mandelbrot_assemble", json!({"file": "../x.png"})),
            ("bytes", json!({"bytes": (1u64 << 30) + 1, "seed": 0})),
            ("bytes", json!({"bytes": 1, "seed": 1e19})),
            ("abort", json!({"after_ms": "soon"})),
            ("fortran", json!({})),
        ];
        for (kind, input) in cases {
            let checked = check_input(kind, &input).unwrap_err();
            let ran = run_plain(kind, input.clone()).unwrap_err();
            assert_eq!(checked.to_string(), ran.to_string(), "{kind} {input}");
        }
        // A tile's own input is checked; its index against the plan only when it runs.
        let err = check_input("mandelbrot", &json!({"index": -1})).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"index\" must be an integer in 0..=9999")
        );
        check_input("mandelbrot", &json!({"index": 9999})).unwrap();
    }

    #[test]
    fn check_input_accepts_without_computing() {
        let start = Instant::now();
        for (kind, input) in [
            ("spin", json!({"ms": 86_400_000})),
            (
                "primes",
                json!({"from": 990_000_000_000u64, "to": 1_000_000_000_000u64}),
            ),
            ("bytes", json!({"bytes": 1u64 << 30, "seed": u64::MAX})),
            ("abort", json!({"after_ms": 86_400_000})),
            ("abort", json!({})),
            ("mandelbrot_assemble", json!(null)),
        ] {
            check_input(kind, &input).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_view_whose_outputs_exceed_the_output_limit_is_refused_at_submission() {
        let view = |side: u64| {
            json!({
                "width": side, "height": side, "center_re": -0.5, "center_im": 0.0,
                "span_re": 3.0, "tiles": 16,
            })
        };
        // 3500 x 3500: 65 MB of tile base64 at 16/3 bytes a pixel, just under 64 MiB.
        check_input("mandelbrot_view", &view(3500)).unwrap();
        let err = check_input("mandelbrot_view", &view(3600)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("3600 x 3600 = 12960000 pixels")
                && msg.contains("tiles' outputs")
                && msg.contains("output limit of 64 MiB"),
            "{msg}"
        );
        // The kernel itself still plans it: the limit is the supervisor's, not the maths'.
        assert!(run_plain("mandelbrot_view", view(3600)).is_ok());
    }

    #[test]
    fn validate_job_names_the_task_and_the_kernels_message() {
        let spec = |tasks| JobSpec {
            name: "j".into(),
            tasks,
            ..Default::default()
        };
        let good = TaskSpec::new("a", "spin", json!({"ms": 5}));
        let bad = TaskSpec::new("b", "primes", json!({"from": 9, "to": 3}));
        let err = validate_job(spec(vec![good.clone(), bad])).unwrap_err();
        assert!(
            matches!(&err, JobError::BadInput { task, kind, .. } if task.0 == "b" && kind == "primes"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "task `b` (primes): bad input: field \"from\" must not exceed \"to\" (3), got 9"
        );
        let unknown = TaskSpec::new("c", "fortran", json!({}));
        assert!(matches!(
            validate_job(spec(vec![good.clone(), unknown])).unwrap_err(),
            JobError::UnknownKind { .. }
        ));
        // Kinds only: the same bad input passes plain validation.
        let bad = TaskSpec::new("b", "primes", json!({"from": 9, "to": 3}));
        assert!(job::validate(spec(vec![good.clone(), bad]), is_known_kind).is_ok());
        assert!(validate_job(spec(vec![good])).is_ok());
    }

    #[test]
    fn a_bytes_task_beyond_the_output_limit_is_accepted_at_submission() {
        // Its output fails on the worker or the supervisor; tests need it to get that far.
        let input = json!({"bytes": 1u64 << 30, "seed": 1});
        let spec = JobSpec {
            name: "big".into(),
            tasks: vec![TaskSpec::new("big", "bytes", input)],
            ..Default::default()
        };
        assert!(validate_job(spec).is_ok());
    }

    #[test]
    fn every_example_job_passes_validate_job() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let spec = job::load_manifest(&path).unwrap();
                validate_job(spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn bench_reports_a_plausible_speed_within_its_budget() {
        let start = Instant::now();
        let mops = bench_mops(Duration::from_millis(30));
        let took = start.elapsed();
        assert!(mops.is_finite() && mops > 1.0, "{mops}");
        assert!(
            took >= Duration::from_millis(30) && took < Duration::from_millis(500),
            "{took:?}"
        );
    }
}

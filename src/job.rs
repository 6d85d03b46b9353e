//! Jobs: the manifest format (TOML) an operator writes, and the validated [`Job`] the supervisor
//! accepts.
//!
//! A manifest is read into a [`JobSpec`] (file inputs inlined), which is also the JSON body of a
//! job submission. [`validate`] turns a spec into a [`Job`] or says precisely what is wrong. The
//! CLI validates before submitting and the supervisor validates every submission, so `validate`
//! must not panic on any spec, and its work is linear in the size of the job (no recursion: a
//! 100 000-task chain is a valid job). This module does no network I/O; reading a manifest reads
//! only the manifest and the input files it names.
//!
//! # Manifest format
//!
//! ```toml
//! name = "primes-demo"                 # 1..=200 characters
//! redundancy_budget = 0.25             # extra replicas: at most this share of the CPU estimate
//! min_complete = 90                    # complete once 90 tasks are done (optional tasks)
//! validate = "quorum"                  # every task's output must be agreed by distinct workers
//! quorum = 2                           # how many must agree, 2..=9 (default 2)
//! tolerance = 1e-9                     # numbers may differ by this much (default 0: byte-equal)
//!
//! [[task]]                             # one table per task
//! id = "count-0"                       # 1..=128 of A-Z a-z 0-9 . _ -
//! kind = "primes"                      # a kind the workers run
//! input = { from = 0, to = 1000000 }   # any TOML value...
//! # input_file = "inputs/count-0.json" # ...or a JSON file, relative to the manifest's directory
//! deps = ["seed"]                      # tasks that must finish first
//! critical = true                      # run on several workers from the start (false: never;
//!                                      # absent: the supervisor decides from the job's shape)
//! replicas = 3                         # 2..=8, only with `critical = true`
//! optional = true                      # the job may complete without it
//! validate = "none"                    # this task's output is trusted as sent (or "quorum",
//!                                      # with its own `quorum` and `tolerance`)
//! [task.estimates]                     # all optional; zero means unknown
//! cpu_s = 2.5
//! mem_mb = 512
//! disk_mb = 0
//! net_kb = 64                         # data moved over the network
//! out_kb = 16                         # size of the output dependents receive
//! ```
//!
//! Unknown keys are errors. A task with neither `input` nor `input_file` gets `{}`. TOML
//! datetimes inside `input` become their RFC 3339 text, because JSON has no datetime type and the
//! text is exactly what the author wrote; `nan` and `inf` inside `input` are errors, because JSON
//! numbers are finite.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::proto::TaskId;

/// A job as submitted: a name and its tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub tasks: Vec<TaskSpec>,
    /// Extra replicas of critical tasks may cost at most this fraction of the job's estimated
    /// CPU time (the supervisor's `--redundancy-budget`, 0.25, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundancy_budget: Option<f64>,
    /// The job is complete once this many tasks are done (all non-optional ones among them);
    /// the rest are cancelled. Absent: every non-optional task (at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_complete: Option<usize>,
    /// How every task's output is validated, unless the task says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Validate>,
    /// Workers that must agree on a quorum task's output (default [`DEFAULT_QUORUM`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// How far numbers in two outputs may differ and still agree (default 0: byte-equal
    /// canonical JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// How a task's output is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validate {
    /// The first result is trusted as sent.
    None,
    /// Distinct workers run it until `quorum` of them agree on the output.
    Quorum,
}

/// A quorum task's rule, as resolved from the task and its job ([`Job::quorum`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quorum {
    /// Workers that must agree.
    pub n: u32,
    /// Numbers agree within this absolute difference; everything else must be equal.
    pub tolerance: f64,
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub id: TaskId,
    /// Built-in task kind run by the worker (see `runtime::KINDS`).
    pub kind: String,
    /// Input data handed to the task, a JSON value (a TOML table in the manifest).
    #[serde(default)]
    pub input: serde_json::Value,
    /// Tasks that must be done before this one starts; their outputs become its inputs.
    #[serde(default)]
    pub deps: Vec<TaskId>,
    /// Run on several distinct workers from the start (`Some(true)`), or never (`Some(false)`);
    /// `None` lets the supervisor decide from the job's shape (`sched::criticality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
    /// The job may complete without this task (see [`JobSpec::min_complete`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Replicas for a critical task, overriding the supervisor's default (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub estimates: Estimates,
    /// Overrides the job's `validate`, `quorum` and `tolerance` for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Validate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

impl TaskSpec {
    /// A task with no dependencies, not critical, without estimates.
    pub fn new(id: impl Into<TaskId>, kind: &str, input: serde_json::Value) -> Self {
        Self {
            id: id.into(),
            kind: kind.to_owned(),
            input,
            deps: Vec::new(),
            critical: None,
            optional: false,
            replicas: None,
            estimates: Estimates::default(),
            validate: None,
            quorum: None,
            tolerance: None,
        }
    }
}

/// The author's estimate of what a task needs. All optional; zero means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Estimates {
    #[serde(default)]
    pub cpu_s: f64,
    #[serde(default)]
    pub mem_mb: u64,
    #[serde(default)]
    pub disk_mb: u64,
    #[serde(default)]
    pub net_kb: u64,
    /// Size of the task's output, which its dependents receive.
    #[serde(default)]
    pub out_kb: u64,
}

/// Most tasks one job may have.
pub const MAX_TASKS: usize = 100_000;
/// Longest job name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest task id, in characters.
pub const MAX_TASK_ID_CHARS: usize = 128;
/// Replicas a critical task may ask for.
pub const REPLICAS: RangeInclusive<u32> = 2..=8;
/// Workers a quorum may ask to agree.
pub const QUORUM: RangeInclusive<u32> = 2..=9;
/// Agreeing workers a quorum task needs when its manifest does not say.
pub const DEFAULT_QUORUM: u32 = 2;
/// Longest inline `input` of a task, in bytes of JSON text (compact, as it is sent): an `Assign`
/// carries it whole, and must fit in [`crate::proto::MAX_FRAME_BYTES`] (16 MiB) with room for the
/// rest of the message and the inline outputs of dependencies.
pub const MAX_INPUT_JSON_BYTES: u64 = 8 << 20;
/// Largest input file a manifest may name.
pub const MAX_INPUT_FILE_BYTES: u64 = 16 << 20;
/// Largest manifest read. Generous (a 100 000-task manifest is about 10 MiB); it only stops a
/// mistaken path such as a device file from being read forever.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

// Largest believable estimates. Beyond these the author has almost certainly used the wrong unit
// (bytes for MB, ms for s), and such a number would swamp the supervisor's ranking of heavy tasks.
const MAX_CPU_S: f64 = 1e7; // 116 days
const MAX_MEM_MB: u64 = 16 << 20; // 16 TiB
const MAX_DISK_MB: u64 = 1 << 30; // 1 PiB
const MAX_NET_KB: u64 = 1 << 40; // 1 PiB

// ---------------------------------------------------------------------------------------------
// Manifests

/// A line and column in a manifest, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A manifest that could not be read into a [`JobSpec`].
///
/// Displays as `PATH:LINE:COLUMN: problem`, the form editors and terminals link to.
#[derive(Debug)]
pub struct ManifestError {
    /// The manifest file; `None` when the text was handed to [`parse_manifest`] directly.
    pub path: Option<PathBuf>,
    /// Where the problem is: exact for TOML syntax errors, the task's `[[task]]` header for a
    /// problem inside a task, `None` for a file that could not be read at all.
    pub position: Option<Position>,
    pub kind: ManifestErrorKind,
}

/// What is wrong with a manifest. `task` fields name the task by its id, or by its position
/// (`#3`, counting from 1) when it has no usable id.
#[derive(Debug, thiserror::Error)]
pub enum ManifestErrorKind {
    #[error("cannot read the manifest: {0}")]
    Read(io::Error),
    #[error("the manifest is larger than {} MiB", MAX_MANIFEST_BYTES >> 20)]
    TooLarge,
    /// Not TOML, or the top level is not `name` plus `[[task]]` tables.
    #[error("{message}")]
    Toml { message: String },
    /// A task has an unknown or missing key, a value of the wrong type, or an input JSON cannot
    /// hold.
    #[error("task {task}: {message}")]
    Task { task: String, message: String },
    #[error("task {task}: cannot read input file {}: {error}", .file.display())]
    InputFile {
        task: String,
        file: PathBuf,
        error: io::Error,
    },
    #[error(
        "task {task}: input file {} is larger than {} MiB",
        .file.display(),
        MAX_INPUT_FILE_BYTES >> 20
    )]
    InputFileTooLarge { task: String, file: PathBuf },
    #[error("task {task}: input file {} is not valid JSON: {error}", .file.display())]
    InputFileJson {
        task: String,
        file: PathBuf,
        error: serde_json::Error,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.position) {
            (Some(path), Some(at)) => write!(f, "{}:{}:{}: ", path.display(), at.line, at.column)?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some(at)) => write!(f, "line {}, column {}: ", at.line, at.column)?,
            (None, None) => {}
        }
        write!(f, "{}", self.kind)
    }
}

// The kind's message, OS errors included, is already part of the display: reporting it again as a
// source would print it twice in an error chain.
impl std::error::Error for ManifestError {}

/// Reads the manifest at `path`, inlining the input files it names (relative to its directory).
pub fn load_manifest(path: &Path) -> Result<JobSpec, ManifestError> {
    let failed = |position, kind| ManifestError {
        path: Some(path.to_owned()),
        position,
        kind,
    };
    let bytes = match read_capped(path, MAX_MANIFEST_BYTES) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(failed(None, ManifestErrorKind::TooLarge)),
        Err(error) => return Err(failed(None, ManifestErrorKind::Read(error))),
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let position = position_in(error.as_bytes(), valid);
            let message = format!("not UTF-8 text: {}", error.utf8_error());
            return Err(failed(Some(position), ManifestErrorKind::Toml { message }));
        }
    };
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_manifest(&text, base_dir).map_err(|mut error| {
        error.path = Some(path.to_owned());
        error
    })
}

/// Reads manifest text; `input_file`s are resolved against `base_dir`.
pub fn parse_manifest(text: &str, base_dir: &Path) -> Result<JobSpec, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|error| ManifestError {
        path: None,
        position: error
            .span()
            .map(|span| position_in(text.as_bytes(), span.start)),
        kind: ManifestErrorKind::Toml {
            message: error.message().to_owned(),
        },
    })?;
    let mut tasks = Vec::with_capacity(raw.task.len());
    for (number, table) in (1..).zip(raw.task) {
        let header = table.span().start;
        // The position is worked out only on failure: it scans the text up to the task.
        let task =
            read_task(number, table.into_inner(), base_dir).map_err(|kind| ManifestError {
                path: None,
                position: Some(position_in(text.as_bytes(), header)),
                kind,
            })?;
        tasks.push(task);
    }
    Ok(JobSpec {
        name: raw.name,
        tasks,
        redundancy_budget: raw.redundancy_budget,
        min_complete: raw.min_complete,
        validate: raw.validate,
        quorum: raw.quorum,
        tolerance: raw.tolerance,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    redundancy_budget: Option<f64>,
    min_complete: Option<usize>,
    validate: Option<Validate>,
    quorum: Option<u32>,
    tolerance: Option<f64>,
    // Each task is first kept as a plain table with its position, so that a problem inside it
    // can name the task and point at its header (serde's own error could do neither).
    #[serde(default)]
    task: Vec<toml::Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: TaskId,
    kind: String,
    input: Option<toml::Value>,
    input_file: Option<PathBuf>,
    #[serde(default)]
    deps: Vec<TaskId>,
    critical: Option<bool>,
    #[serde(default)]
    optional: bool,
    replicas: Option<u32>,
    #[serde(default)]
    estimates: Estimates,
    validate: Option<Validate>,
    quorum: Option<u32>,
    tolerance: Option<f64>,
}

fn read_task(
    number: usize,
    table: toml::Table,
    base_dir: &Path,
) -> Result<TaskSpec, ManifestErrorKind> {
    let task = match table.get("id").and_then(toml::Value::as_str) {
        Some(id) if check_task_id(id).is_ok() => format!("`{id}`"),
        Some(id) => quoted(id),
        None => format!("#{number}"),
    };
    let problem = |message: String| ManifestErrorKind::Task {
        task: task.clone(),
        message,
    };
    let raw: RawTask = table
        .try_into()
        .map_err(|error: toml::de::Error| problem(one_line(&error)))?;
    let input = match (raw.input, raw.input_file) {
        (Some(_), Some(_)) => {
            return Err(problem("give `input` or `input_file`, not both".to_owned()));
        }
        (Some(value), None) => toml_to_json(value).map_err(|bad| {
            problem(format!(
                "input{} is {}, and JSON numbers must be finite",
                bad.path, bad.value
            ))
        })?,
        (None, Some(file)) => read_input_file(task.clone(), base_dir.join(file))?,
        (None, None) => serde_json::Value::Object(serde_json::Map::new()),
    };
    Ok(TaskSpec {
        id: raw.id,
        kind: raw.kind,
        input,
        deps: raw.deps,
        critical: raw.critical,
        optional: raw.optional,
        replicas: raw.replicas,
        estimates: raw.estimates,
        validate: raw.validate,
        quorum: raw.quorum,
        tolerance: raw.tolerance,
    })
}

fn read_input_file(task: String, file: PathBuf) -> Result<serde_json::Value, ManifestErrorKind> {
    let bytes = match read_capped(&file, MAX_INPUT_FILE_BYTES) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(ManifestErrorKind::InputFileTooLarge { task, file }),
        Err(error) => return Err(ManifestErrorKind::InputFile { task, file, error }),
    };
    serde_json::from_slice(&bytes).map_err(|error| ManifestErrorKind::InputFileJson {
        task,
        file,
        error,
    })
}

/// Reads a whole file, or `None` when it is larger than `limit` bytes. Reads at most one byte
/// past the limit whatever the file is (a pipe, a device, a file still growing).
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// A float in a TOML input that JSON cannot hold, and where it is (`.a[2].b`).
struct NonFinite {
    path: String,
    value: f64,
}

// Recursion is bounded here: the TOML parser refuses nesting deeper than 80 levels.
fn toml_to_json(value: toml::Value) -> Result<serde_json::Value, NonFinite> {
    use serde_json::Value as Json;
    Ok(match value {
        toml::Value::String(text) => Json::String(text),
        toml::Value::Integer(number) => Json::from(number),
        toml::Value::Float(number) => match serde_json::Number::from_f64(number) {
            Some(number) => Json::Number(number),
            None => {
                return Err(NonFinite {
                    path: String::new(),
                    value: number,
                });
            }
        },
        toml::Value::Boolean(flag) => Json::Bool(flag),
        toml::Value::Datetime(datetime) => Json::String(datetime.to_string()),
        toml::Value::Array(items) => {
            let mut array = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                array.push(toml_to_json(item).map_err(|mut bad| {
                    bad.path.insert_str(0, &format!("[{i}]"));
                    bad
                })?);
            }
            Json::Array(array)
        }
        toml::Value::Table(table) => {
            let mut object = serde_json::Map::new();
            for (key, item) in table {
                let item = toml_to_json(item).map_err(|mut bad| {
                    let plain = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    let step = if plain {
                        format!(".{key}")
                    } else {
                        format!(".{key:?}")
                    };
                    bad.path.insert_str(0, &step);
                    bad
                })?;
                object.insert(key, item);
            }
            Json::Object(object)
        }
    })
}

/// Line and column of byte `offset` in `text`. Never panics: an offset past the end or inside a
/// character still gives a position.
pub(crate) fn position_in(text: &[u8], offset: usize) -> Position {
    let before = &text[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    Position {
        line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        column: String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1,
    }
}

/// A toml error without source text displays as its message, then a line naming the key
/// (in `estimates.mem_mb`); joined into one line it reads as a sentence after the task's name.
fn one_line(error: &toml::de::Error) -> String {
    error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Validation

/// A job that passed [`validate`]: ids unique, dependencies known and acyclic, kinds known,
/// numbers sane. Tasks are referred to by their index in [`Job::tasks`].
#[derive(Debug, Clone)]
pub struct Job {
    spec: JobSpec,
    order: Vec<usize>,
    index: HashMap<TaskId, usize>,
    deps: Adjacency,
    dependents: Adjacency,
}

impl Job {
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn tasks(&self) -> &[TaskSpec] {
        &self.spec.tasks
    }

    /// Every task index once, each after all of its dependencies. Deterministic: the same spec
    /// always gives the same order, which starts with the tasks that have no dependencies, in the
    /// order of the spec.
    pub fn topo_order(&self) -> &[usize] {
        &self.order
    }

    /// Indices of the tasks that list `task_index` in their `deps`, ascending.
    ///
    /// # Panics
    /// If `task_index` is not an index into [`Job::tasks`].
    pub fn dependents(&self, task_index: usize) -> &[usize] {
        self.dependents.row(task_index)
    }

    /// Indices of the tasks `task_index` depends on, in the order of its `deps`.
    ///
    /// # Panics
    /// If `task_index` is not an index into [`Job::tasks`].
    pub fn dependencies(&self, task_index: usize) -> &[usize] {
        self.deps.row(task_index)
    }

    pub fn index_of(&self, id: &TaskId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Tasks that must be done for the job to complete: `min_complete`, or else every task not
    /// marked optional (at least one). Every non-optional task is always among them.
    pub fn min_complete(&self) -> usize {
        let required = self.spec.tasks.iter().filter(|t| !t.optional).count();
        self.spec.min_complete.unwrap_or(required.max(1))
    }

    pub fn into_spec(self) -> JobSpec {
        self.spec
    }

    /// The task's quorum rule, if its output must be agreed by several workers: the task's
    /// `validate`, else the job's; `quorum` and `tolerance` likewise.
    ///
    /// # Panics
    /// If `task_index` is not an index into [`Job::tasks`].
    pub fn quorum(&self, task_index: usize) -> Option<Quorum> {
        quorum_of(&self.spec, &self.spec.tasks[task_index])
    }
}

fn quorum_of(job: &JobSpec, task: &TaskSpec) -> Option<Quorum> {
    match task.validate.or(job.validate) {
        Some(Validate::Quorum) => Some(Quorum {
            n: task.quorum.or(job.quorum).unwrap_or(DEFAULT_QUORUM),
            tolerance: task.tolerance.or(job.tolerance).unwrap_or(0.0),
        }),
        _ => None,
    }
}

/// Dependency edges as compressed rows: row `i` is `targets[offsets[i]..offsets[i + 1]]`. Two
/// flat vectors rather than a `Vec` per task keep a 100 000-task job to a few allocations.
#[derive(Debug, Clone)]
struct Adjacency {
    offsets: Vec<usize>,
    targets: Vec<usize>,
}

impl Adjacency {
    fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn row(&self, i: usize) -> &[usize] {
        &self.targets[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The same edges pointing the other way; each new row comes out ascending.
    fn transposed(&self) -> Adjacency {
        let mut offsets = vec![0; self.rows() + 1];
        for &target in &self.targets {
            offsets[target + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut free = offsets.clone();
        let mut targets = vec![0; self.targets.len()];
        for source in 0..self.rows() {
            for &target in self.row(source) {
                targets[free[target]] = source;
                free[target] += 1;
            }
        }
        Adjacency { offsets, targets }
    }
}

/// Why a [`JobSpec`] is not a valid job. Indices count tasks from 0, as in `JobSpec::tasks`;
/// messages count from 1, as a person reading the manifest does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("the job has no tasks")]
    Empty,
    #[error("the job has {count} tasks; at most {MAX_TASKS} are allowed")]
    TooManyTasks { count: usize },
    #[error("bad job name {}: {reason}", quoted(.name))]
    BadName { name: String, reason: String },
    #[error("bad task id {} (task {}): {reason}", quoted(.id), .index + 1)]
    BadTaskId {
        index: usize,
        id: String,
        reason: String,
    },
    #[error("duplicate task id `{id}`: tasks {} and {} both use it", .first + 1, .second + 1)]
    DuplicateTaskId {
        id: TaskId,
        first: usize,
        second: usize,
    },
    #[error("task `{task}` depends on unknown task {}", quoted(.dep))]
    UnknownDependency { task: TaskId, dep: String },
    #[error("task `{task}` depends on itself")]
    SelfDependency { task: TaskId },
    #[error("task `{task}` lists dependency `{dep}` more than once")]
    DuplicateDependency { task: TaskId, dep: TaskId },
    /// `tasks` is one cycle, starting at its task that comes first in the spec; each depends on
    /// the next, and the last on the first.
    #[error("dependency cycle: {} (each task depends on the next)", cycle_text(.tasks))]
    Cycle { tasks: Vec<TaskId> },
    #[error("task `{task}` has unknown kind {}", quoted(.kind))]
    UnknownKind { task: TaskId, kind: String },
    #[error(
        "task `{task}`: its input is {bytes} bytes of JSON text; at most {} MiB are allowed \
         (pass large data as a dependency's output)",
        MAX_INPUT_JSON_BYTES >> 20
    )]
    InputTooLarge { task: TaskId, bytes: u64 },
    /// The task's input is not what its kind accepts; `message` is the kernel's.
    #[error("task `{task}` ({kind}): {message}")]
    BadInput {
        task: TaskId,
        kind: String,
        message: String,
    },
    #[error("task `{task}`: estimate `{field}` = {value} is {problem}")]
    BadEstimate {
        task: TaskId,
        field: &'static str,
        value: String,
        problem: String,
    },
    #[error(
        "task `{task}`: replicas = {replicas} is out of range ({}..={})",
        REPLICAS.start(),
        REPLICAS.end()
    )]
    ReplicasOutOfRange { task: TaskId, replicas: u32 },
    #[error(
        "task `{task}` sets replicas = {replicas} but is not critical \
         (add `critical = true` or remove `replicas`)"
    )]
    ReplicasWithoutCritical { task: TaskId, replicas: u32 },
    #[error(
        "redundancy_budget = {budget} is out of range (a fraction of the job's CPU time, \
         0 to {MAX_REDUNDANCY_BUDGET})"
    )]
    BadRedundancyBudget { budget: f64 },
    #[error(
        "{}quorum = {quorum} is out of range ({}..={})",
        task_prefix(.task),
        QUORUM.start(),
        QUORUM.end()
    )]
    QuorumOutOfRange { task: Option<TaskId>, quorum: u32 },
    #[error(
        "{}tolerance = {tolerance} is not a finite number of at least 0",
        task_prefix(.task)
    )]
    BadTolerance {
        task: Option<TaskId>,
        tolerance: f64,
    },
    #[error(
        "task `{task}` sets `{key}` but its output is not validated by quorum \
         (add `validate = \"quorum\"` to the task or the job)"
    )]
    QuorumWithoutValidate { task: TaskId, key: &'static str },
    #[error(
        "the job sets `{key}` but no task's output is validated by quorum \
         (add `validate = \"quorum\"` to the job or to tasks)"
    )]
    JobQuorumUnused { key: &'static str },
    #[error("min_complete = {min} is out of range (1..={tasks}, the job's tasks)")]
    MinCompleteOutOfRange { min: usize, tasks: usize },
    #[error(
        "min_complete = {min} is below the {required} tasks not marked optional \
         (every task without `optional = true` must complete)"
    )]
    MinCompleteBelowRequired { min: usize, required: usize },
    #[error(
        "task `{task}` depends on optional task `{dep}` but is not optional itself \
         (the job may complete without `{dep}`)"
    )]
    RequiredAfterOptional { task: TaskId, dep: TaskId },
}

/// Checks a spec and indexes its dependency graph. Linear in tasks plus dependencies, iterative,
/// and free of panics whatever the spec holds; the first problem found is returned. Task inputs
/// are checked for size only; [`validate_with`] also has them checked by their kind.
pub fn validate(spec: JobSpec, is_known_kind: impl Fn(&str) -> bool) -> Result<Job, JobError> {
    validate_with(spec, is_known_kind, |_, _| Ok(()))
}

/// [`validate`], and `check_task(kind, input)` on each task whose kind is known, in the order
/// of the spec; its `Err` message becomes [`JobError::BadInput`] naming the task.
/// `runtime::validate_job` passes the built-in kernels' checks.
pub fn validate_with(
    spec: JobSpec,
    is_known_kind: impl Fn(&str) -> bool,
    check_task: impl Fn(&str, &serde_json::Value) -> Result<(), String>,
) -> Result<Job, JobError> {
    check_name(&spec.name)?;
    let count = spec.tasks.len();
    if count == 0 {
        return Err(JobError::Empty);
    }
    if count > MAX_TASKS {
        return Err(JobError::TooManyTasks { count });
    }
    let mut index = HashMap::with_capacity(count);
    for (i, task) in spec.tasks.iter().enumerate() {
        check_task_id(&task.id.0).map_err(|reason| JobError::BadTaskId {
            index: i,
            id: task.id.0.clone(),
            reason,
        })?;
        match index.entry(task.id.clone()) {
            Entry::Occupied(first) => {
                return Err(JobError::DuplicateTaskId {
                    id: task.id.clone(),
                    first: *first.get(),
                    second: i,
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
        if !is_known_kind(&task.kind) {
            return Err(JobError::UnknownKind {
                task: task.id.clone(),
                kind: task.kind.clone(),
            });
        }
        check_input_size(task)?;
        check_task(&task.kind, &task.input).map_err(|message| JobError::BadInput {
            task: task.id.clone(),
            kind: task.kind.clone(),
            message,
        })?;
        check_replicas(task)?;
        check_estimates(task)?;
        check_validation(&spec, task)?;
    }
    check_quorum_numbers(None, spec.quorum, spec.tolerance)?;
    let job_keys = [
        ("quorum", spec.quorum.is_some()),
        ("tolerance", spec.tolerance.is_some()),
    ];
    if let Some((key, _)) = job_keys.iter().find(|(_, set)| *set)
        && !spec.tasks.iter().any(|t| quorum_of(&spec, t).is_some())
    {
        return Err(JobError::JobQuorumUnused { key });
    }
    check_completion(&spec)?;
    let deps = resolve_deps(&spec.tasks, &index)?;
    check_optional_deps(&spec.tasks, &deps)?;
    let dependents = deps.transposed();
    let order = topological_order(&deps, &dependents).map_err(|cycle| JobError::Cycle {
        tasks: cycle.iter().map(|&i| spec.tasks[i].id.clone()).collect(),
    })?;
    Ok(Job {
        spec,
        order,
        index,
        deps,
        dependents,
    })
}

fn check_name(name: &str) -> Result<(), JobError> {
    let chars = name.chars().count();
    let reason = if name.trim().is_empty() {
        "it is empty".to_owned()
    } else if chars > MAX_NAME_CHARS {
        format!("it has {chars} characters; at most {MAX_NAME_CHARS} are allowed")
    } else if name.chars().any(char::is_control) {
        "it contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(JobError::BadName {
        name: name.to_owned(),
        reason,
    })
}

/// Ids show up in logs, URLs and perhaps file names, hence the small alphabet and the ban on
/// `.` and `..`.
fn check_task_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() {
        return Err("it is empty".to_owned());
    }
    if let Some((at, c)) = id.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "it contains {c:?} at character {}; ids use only A-Z a-z 0-9 . _ -",
            at + 1
        ));
    }
    // The alphabet is ASCII, so bytes are characters from here on.
    if id.len() > MAX_TASK_ID_CHARS {
        return Err(format!(
            "it has {} characters; at most {MAX_TASK_ID_CHARS} are allowed",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return Err("`.` and `..` are reserved".to_owned());
    }
    Ok(())
}

fn check_input_size(task: &TaskSpec) -> Result<(), JobError> {
    /// Counts the bytes serde_json writes instead of keeping them.
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, &task.input);
    if count.0 > MAX_INPUT_JSON_BYTES {
        return Err(JobError::InputTooLarge {
            task: task.id.clone(),
            bytes: count.0,
        });
    }
    Ok(())
}

/// Largest `redundancy_budget`: extra replicas worth four times the job's own CPU time.
pub const MAX_REDUNDANCY_BUDGET: f64 = 4.0;

fn check_completion(spec: &JobSpec) -> Result<(), JobError> {
    if let Some(budget) = spec.redundancy_budget
        && !(budget.is_finite() && (0.0..=MAX_REDUNDANCY_BUDGET).contains(&budget))
    {
        return Err(JobError::BadRedundancyBudget { budget });
    }
    if let Some(min) = spec.min_complete {
        let required = spec.tasks.iter().filter(|t| !t.optional).count();
        if min == 0 || min > spec.tasks.len() {
            return Err(JobError::MinCompleteOutOfRange {
                min,
                tasks: spec.tasks.len(),
            });
        }
        if min < required {
            return Err(JobError::MinCompleteBelowRequired { min, required });
        }
    }
    Ok(())
}

/// A required task may not wait for an optional one: the job may complete, and cancel the
/// optional task, before it ever runs.
fn check_optional_deps(tasks: &[TaskSpec], deps: &Adjacency) -> Result<(), JobError> {
    for (i, task) in tasks.iter().enumerate() {
        if task.optional {
            continue;
        }
        if let Some(&d) = deps.row(i).iter().find(|&&d| tasks[d].optional) {
            return Err(JobError::RequiredAfterOptional {
                task: task.id.clone(),
                dep: tasks[d].id.clone(),
            });
        }
    }
    Ok(())
}

/// "task `id`: " for a task's error, nothing for the job's.
fn task_prefix(task: &Option<TaskId>) -> String {
    task.as_ref()
        .map(|t| format!("task `{t}`: "))
        .unwrap_or_default()
}

fn check_quorum_numbers(
    task: Option<&TaskId>,
    quorum: Option<u32>,
    tolerance: Option<f64>,
) -> Result<(), JobError> {
    if let Some(q) = quorum
        && !QUORUM.contains(&q)
    {
        return Err(JobError::QuorumOutOfRange {
            task: task.cloned(),
            quorum: q,
        });
    }
    if let Some(t) = tolerance
        && !(t.is_finite() && t >= 0.0)
    {
        return Err(JobError::BadTolerance {
            task: task.cloned(),
            tolerance: t,
        });
    }
    Ok(())
}

/// A task's own `quorum` and `tolerance` are in range and mean something: its output is
/// validated by quorum (by the task's `validate` or the job's).
fn check_validation(job: &JobSpec, task: &TaskSpec) -> Result<(), JobError> {
    check_quorum_numbers(Some(&task.id), task.quorum, task.tolerance)?;
    if quorum_of(job, task).is_none() {
        let key = if task.quorum.is_some() {
            Some("quorum")
        } else if task.tolerance.is_some() {
            Some("tolerance")
        } else {
            None
        };
        if let Some(key) = key {
            return Err(JobError::QuorumWithoutValidate {
                task: task.id.clone(),
                key,
            });
        }
    }
    Ok(())
}

fn check_replicas(task: &TaskSpec) -> Result<(), JobError> {
    let Some(replicas) = task.replicas else {
        return Ok(());
    };
    if !REPLICAS.contains(&replicas) {
        return Err(JobError::ReplicasOutOfRange {
            task: task.id.clone(),
            replicas,
        });
    }
    if task.critical != Some(true) {
        return Err(JobError::ReplicasWithoutCritical {
            task: task.id.clone(),
            replicas,
        });
    }
    Ok(())
}

fn check_estimates(task: &TaskSpec) -> Result<(), JobError> {
    let bad = |field, value: String, problem: String| JobError::BadEstimate {
        task: task.id.clone(),
        field,
        value,
        problem,
    };
    let estimates = task.estimates;
    let cpu_s = estimates.cpu_s;
    let cpu_problem = if cpu_s.is_nan() {
        Some("not a number".to_owned())
    } else if cpu_s.is_infinite() {
        Some("infinite".to_owned())
    } else if cpu_s < 0.0 {
        Some("negative".to_owned())
    } else if cpu_s > MAX_CPU_S {
        Some(format!("absurd (more than {MAX_CPU_S}; wrong unit?)"))
    } else {
        None
    };
    if let Some(problem) = cpu_problem {
        return Err(bad("cpu_s", cpu_s.to_string(), problem));
    }
    for (field, value, limit) in [
        ("mem_mb", estimates.mem_mb, MAX_MEM_MB),
        ("disk_mb", estimates.disk_mb, MAX_DISK_MB),
        ("net_kb", estimates.net_kb, MAX_NET_KB),
        ("out_kb", estimates.out_kb, MAX_NET_KB),
    ] {
        if value > limit {
            let problem = format!("absurd (more than {limit}; wrong unit?)");
            return Err(bad(field, value.to_string(), problem));
        }
    }
    Ok(())
}

/// Turns every task's `deps` into indices, refusing unknown, self and repeated dependencies.
fn resolve_deps(tasks: &[TaskSpec], index: &HashMap<TaskId, usize>) -> Result<Adjacency, JobError> {
    let mut offsets = Vec::with_capacity(tasks.len() + 1);
    offsets.push(0);
    let mut targets = Vec::new();
    // `listed_by[d] == i` once task i has named task d: spots a repeat in O(1) without a set per
    // task.
    let mut listed_by = vec![usize::MAX; tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        for dep in &task.deps {
            let Some(&d) = index.get(dep) else {
                return Err(JobError::UnknownDependency {
                    task: task.id.clone(),
                    dep: dep.0.clone(),
                });
            };
            if d == i {
                return Err(JobError::SelfDependency {
                    task: task.id.clone(),
                });
            }
            if listed_by[d] == i {
                return Err(JobError::DuplicateDependency {
                    task: task.id.clone(),
                    dep: dep.clone(),
                });
            }
            listed_by[d] = i;
            targets.push(d);
        }
        offsets.push(targets.len());
    }
    Ok(Adjacency { offsets, targets })
}

/// Kahn's algorithm. `Err` holds the task indices of one cycle when there is no order.
fn topological_order(deps: &Adjacency, dependents: &Adjacency) -> Result<Vec<usize>, Vec<usize>> {
    let count = deps.rows();
    let mut waiting_on: Vec<usize> = (0..count).map(|i| deps.row(i).len()).collect();
    // `order` is also the queue: tasks before `next` have released their dependents.
    let mut order = Vec::with_capacity(count);
    order.extend((0..count).filter(|&i| waiting_on[i] == 0));
    let mut next = 0;
    while let Some(&task) = order.get(next) {
        next += 1;
        for &dependent in dependents.row(task) {
            waiting_on[dependent] -= 1;
            if waiting_on[dependent] == 0 {
                order.push(dependent);
            }
        }
    }
    if order.len() == count {
        Ok(order)
    } else {
        Err(find_cycle(deps, &waiting_on))
    }
}

/// Once Kahn's algorithm stalls, every task still waiting has a dependency that is still
/// waiting. Following such dependencies from any waiting task must come back to a task already
/// on the path, and the path from there is a cycle. Each task is stepped on at most once.
fn find_cycle(deps: &Adjacency, waiting_on: &[usize]) -> Vec<usize> {
    const NOT_ON_PATH: usize = usize::MAX;
    let mut step_of = vec![NOT_ON_PATH; waiting_on.len()];
    let mut path = Vec::new();
    let mut current = waiting_on.iter().position(|&n| n > 0);
    while let Some(task) = current {
        if step_of[task] != NOT_ON_PATH {
            let mut cycle = path.split_off(step_of[task]);
            // Start at the task listed first, so the message does not depend on where the walk
            // happened to enter the cycle.
            if let Some(first) = (0..cycle.len()).min_by_key(|&at| cycle[at]) {
                cycle.rotate_left(first);
            }
            return cycle;
        }
        step_of[task] = path.len();
        path.push(task);
        current = deps.row(task).iter().copied().find(|&d| waiting_on[d] > 0);
    }
    // Not reached when the order stalled; an empty cycle still reports that there is one.
    Vec::new()
}

/// `a -> b -> c -> a`, shortened in the middle for long cycles.
fn cycle_text(tasks: &[TaskId]) -> String {
    const HEAD: usize = 10;
    let (Some(first), Some(last)) = (tasks.first(), tasks.last()) else {
        return "(not found)".to_owned();
    };
    let mut names: Vec<String> = if tasks.len() <= HEAD + 2 {
        tasks.iter().map(ToString::to_string).collect()
    } else {
        let mut names: Vec<String> = tasks[..HEAD].iter().map(ToString::to_string).collect();
        names.push(format!("... ({} more)", tasks.len() - HEAD - 1));
        names.push(last.to_string());
        names
    };
    names.push(first.to_string());
    names.join(" -> ")
}

/// Quotes text taken from a submission for an error message, escaped and cut short: a 10 MB job
/// name must not become a 10 MB log line.
fn quoted(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &text[..cut],
            text.chars().count()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    const KINDS: [&str; 5] = [
        "mandelbrot_view",
        "mandelbrot",
        "mandelbrot_assemble",
        "primes",
        "spin",
    ];

    fn known(kind: &str) -> bool {
        KINDS.contains(&kind)
    }

    fn task(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            kind: "spin".into(),
            input: json!({}),
            deps: deps.iter().map(|&dep| dep.into()).collect(),
            critical: None,
            optional: false,
            replicas: None,
            estimates: Estimates::default(),
            validate: None,
            quorum: None,
            tolerance: None,
        }
    }

    fn spec(tasks: Vec<TaskSpec>) -> JobSpec {
        JobSpec {
            name: "test".into(),
            tasks,
            ..Default::default()
        }
    }

    fn rejection(spec: JobSpec) -> JobError {
        validate(spec, known).expect_err("the spec was accepted")
    }

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs")
    }

    fn manifest_error(text: &str) -> ManifestError {
        parse_manifest(text, Path::new(".")).expect_err("the manifest was accepted")
    }

    const ONE_TASK: &str = "name = \"x\"\n\n[[task]]\nid = \"a\"\nkind = \"spin\"\n";

    // --- manifests -----------------------------------------------------------------------------

    #[test]
    fn every_example_manifest_loads_and_validates() {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(examples()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let spec = load_manifest(&path).unwrap_or_else(|e| panic!("{e}"));
                validate(spec, known).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "dag.toml",
                "mandelbrot.toml",
                "primes.toml",
                "quorum.toml",
                "with-input-file.toml"
            ]
        );
    }

    #[test]
    fn primes_example_splits_0_to_8_million_into_equal_ranges() {
        let spec = load_manifest(&examples().join("primes.toml")).unwrap();
        assert_eq!(spec.tasks.len(), 8);
        for (i, task) in spec.tasks.iter().enumerate() {
            let i = i as u64;
            assert_eq!(task.kind, "primes");
            assert_eq!(
                task.input,
                json!({"from": i * 1_000_000, "to": (i + 1) * 1_000_000})
            );
            assert!(task.deps.is_empty());
        }
        assert_eq!(
            spec.tasks
                .iter()
                .filter(|t| t.critical == Some(true))
                .count(),
            1
        );
    }

    #[test]
    fn dag_example_fans_out_from_a_seed_and_back_in() {
        let job = validate(load_manifest(&examples().join("dag.toml")).unwrap(), known).unwrap();
        let seed = job.index_of(&"seed".into()).unwrap();
        let finish = job.index_of(&"finish".into()).unwrap();
        assert_eq!(job.tasks().len(), 8);
        assert_eq!(job.tasks()[seed].input, json!({"ms": 200}));
        assert_eq!(job.dependents(seed).len(), 6);
        assert_eq!(job.dependencies(finish), job.dependents(seed));
        assert!(
            job.tasks()[seed].critical == Some(true) && job.tasks()[finish].critical == Some(true)
        );
        assert_eq!(job.topo_order().first(), Some(&seed));
        assert_eq!(job.topo_order().last(), Some(&finish));
    }

    #[test]
    fn mandelbrot_example_assembles_after_the_view_and_every_tile() {
        let job = validate(
            load_manifest(&examples().join("mandelbrot.toml")).unwrap(),
            known,
        )
        .unwrap();
        let view = &job.tasks()[job.index_of(&"view".into()).unwrap()];
        assert_eq!(
            view.input,
            json!({"width": 800, "height": 600, "center_re": -0.745, "center_im": 0.11,
                   "span_re": 0.05, "tiles": 8})
        );
        let assemble = job.index_of(&"assemble".into()).unwrap();
        assert_eq!(job.dependencies(assemble).len(), 9);
        assert!(job.tasks()[assemble].critical == Some(true) && view.critical == Some(true));
        let tiles: Vec<_> = job
            .tasks()
            .iter()
            .filter(|t| t.kind == "mandelbrot")
            .collect();
        assert_eq!(tiles.len(), 8);
        for (i, tile) in tiles.iter().enumerate() {
            assert_eq!(tile.input, json!({ "index": i }));
            assert_eq!(tile.deps, [TaskId::from("view")]);
        }
    }

    #[test]
    fn input_file_is_read_relative_to_the_manifest_directory() {
        let spec = load_manifest(&examples().join("with-input-file.toml")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(examples().join("inputs/range.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(spec.tasks[0].input, expected);

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        std::fs::write(dir.path().join("in/data.json"), r#"{"n": [1, 2.5, "x"]}"#).unwrap();
        let text = format!("{ONE_TASK}input_file = \"in/data.json\"\n");
        let spec = parse_manifest(&text, dir.path()).unwrap();
        assert_eq!(spec.tasks[0].input, json!({"n": [1, 2.5, "x"]}));
    }

    #[test]
    fn task_without_input_gets_an_empty_object() {
        let spec = parse_manifest(ONE_TASK, Path::new(".")).unwrap();
        assert_eq!(spec.tasks[0].input, json!({}));
        assert_eq!(spec.tasks[0].deps, Vec::<TaskId>::new());
        assert_eq!(spec.tasks[0].critical, None);
        assert!(!spec.tasks[0].optional);
        assert_eq!(spec.tasks[0].replicas, None);
        assert_eq!(spec.tasks[0].estimates, Estimates::default());
    }

    #[test]
    fn every_task_key_is_read() {
        let text = "name = \"x\"\n\n[[task]]\nid = \"seed\"\nkind = \"spin\"\n\n\
                    [[task]]\nid = \"b\"\nkind = \"primes\"\ninput = { from = 0, to = 10 }\n\
                    deps = [\"seed\"]\ncritical = true\nreplicas = 3\n\
                    validate = \"quorum\"\nquorum = 3\ntolerance = 0.5\n\
                    [task.estimates]\ncpu_s = 2\nmem_mb = 512\ndisk_mb = 1\nnet_kb = 64\n";
        let spec = parse_manifest(text, Path::new(".")).unwrap();
        assert_eq!(
            spec.tasks[1],
            TaskSpec {
                id: "b".into(),
                kind: "primes".into(),
                input: json!({"from": 0, "to": 10}),
                deps: vec!["seed".into()],
                critical: Some(true),
                optional: false,
                replicas: Some(3),
                estimates: Estimates {
                    cpu_s: 2.0,
                    mem_mb: 512,
                    disk_mb: 1,
                    net_kb: 64,
                    out_kb: 0,
                },
                validate: Some(Validate::Quorum),
                quorum: Some(3),
                tolerance: Some(0.5),
            }
        );
    }

    #[test]
    fn a_quorum_is_resolved_from_the_task_then_the_job_then_the_default() {
        let text = "name = \"q\"\nvalidate = \"quorum\"\ntolerance = 0.01\n\
                    [[task]]\nid = \"plain\"\nkind = \"spin\"\n\
                    [[task]]\nid = \"three\"\nkind = \"spin\"\nquorum = 3\ntolerance = 0\n\
                    [[task]]\nid = \"trusted\"\nkind = \"spin\"\nvalidate = \"none\"\n";
        let job = validate(parse_manifest(text, Path::new(".")).unwrap(), known).unwrap();
        assert_eq!(
            job.quorum(0),
            Some(Quorum {
                n: DEFAULT_QUORUM,
                tolerance: 0.01
            })
        );
        assert_eq!(
            job.quorum(1),
            Some(Quorum {
                n: 3,
                tolerance: 0.0
            })
        );
        assert_eq!(job.quorum(2), None);
        let unvalidated = validate(spec(vec![task("a", &[])]), known).unwrap();
        assert_eq!(unvalidated.quorum(0), None);
    }

    #[test]
    fn quorum_settings_that_mean_nothing_or_are_out_of_range_are_refused() {
        let with = |f: &dyn Fn(&mut JobSpec)| {
            let mut s = spec(vec![task("a", &[])]);
            f(&mut s);
            validate(s, known).map(|_| ()).unwrap_err().to_string()
        };
        assert_eq!(
            with(&|s| s.tasks[0].quorum = Some(3)),
            "task `a` sets `quorum` but its output is not validated by quorum \
             (add `validate = \"quorum\"` to the task or the job)"
        );
        assert_eq!(
            with(&|s| s.tolerance = Some(0.1)),
            "the job sets `tolerance` but no task's output is validated by quorum \
             (add `validate = \"quorum\"` to the job or to tasks)"
        );
        assert_eq!(
            with(&|s| {
                s.validate = Some(Validate::Quorum);
                s.quorum = Some(1);
            }),
            "quorum = 1 is out of range (2..=9)"
        );
        assert_eq!(
            with(&|s| {
                s.tasks[0].validate = Some(Validate::Quorum);
                s.tasks[0].tolerance = Some(-1.0);
            }),
            "task `a`: tolerance = -1 is not a finite number of at least 0"
        );
        let bad = "name = \"q\"\nvalidate = \"majority\"\n[[task]]\nid = \"a\"\nkind = \"spin\"\n";
        let err = parse_manifest(bad, Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("majority"), "{err}");
    }

    #[test]
    fn toml_syntax_error_names_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "name = \"x\"\n\n[[task]\nid = \"a\"\n").unwrap();
        let error = load_manifest(&path).unwrap_err();
        assert_eq!(error.path.as_deref(), Some(path.as_path()));
        assert_eq!(error.position, Some(Position { line: 3, column: 8 }));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}:3:8: ", path.display())),
            "{message}"
        );
        assert!(message.contains("expected `]`"), "{message}");
    }

    #[test]
    fn unknown_key_in_a_task_names_the_key_and_the_task() {
        let error = manifest_error(&format!("{ONE_TASK}colour = \"red\"\n"));
        assert_eq!(error.position, Some(Position { line: 3, column: 1 }));
        let message = error.to_string();
        assert!(message.contains("task `a`"), "{message}");
        assert!(message.contains("unknown field `colour`"), "{message}");
    }

    #[test]
    fn unknown_key_in_estimates_names_the_key_and_the_task() {
        let message = manifest_error(&format!("{ONE_TASK}[task.estimates]\ncpu = 1\n")).to_string();
        assert!(message.contains("task `a`"), "{message}");
        assert!(message.contains("unknown field `cpu`"), "{message}");
        assert!(message.contains("estimates"), "{message}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let message = manifest_error("name = \"x\"\ntasks = []\n").to_string();
        assert!(message.starts_with("line 2, column 1: "), "{message}");
        assert!(message.contains("unknown field `tasks`"), "{message}");
    }

    #[test]
    fn missing_keys_are_named() {
        let message = manifest_error("[[task]]\nid = \"a\"\nkind = \"spin\"\n").to_string();
        assert!(message.contains("missing field `name`"), "{message}");
        let message = manifest_error("name = \"x\"\n[[task]]\nkind = \"spin\"\n").to_string();
        assert!(message.contains("task #1: missing field `id`"), "{message}");
    }

    #[test]
    fn value_of_the_wrong_type_names_the_key() {
        let message = manifest_error(&format!("{ONE_TASK}deps = \"b\"\n")).to_string();
        assert!(message.contains("task `a`"), "{message}");
        assert!(message.contains("`deps`"), "{message}");
        let message =
            manifest_error(&format!("{ONE_TASK}[task.estimates]\nmem_mb = -4\n")).to_string();
        assert!(message.contains("`estimates.mem_mb`"), "{message}");
    }

    #[test]
    fn input_and_input_file_together_are_refused() {
        let text = format!("{ONE_TASK}input = 1\ninput_file = \"x.json\"\n");
        let message = manifest_error(&text).to_string();
        assert!(message.contains("task `a`"), "{message}");
        assert!(
            message.contains("`input` or `input_file`, not both"),
            "{message}"
        );
    }

    #[test]
    fn toml_datetimes_in_input_become_rfc3339_text() {
        let text = format!("{ONE_TASK}input = {{ at = 1979-05-27T07:32:00Z, day = 1979-05-27 }}\n");
        let spec = parse_manifest(&text, Path::new(".")).unwrap();
        assert_eq!(
            spec.tasks[0].input,
            json!({"at": "1979-05-27T07:32:00Z", "day": "1979-05-27"})
        );
    }

    #[test]
    fn non_finite_numbers_in_input_are_refused_with_their_place() {
        let message = manifest_error(&format!("{ONE_TASK}input = {{ x = [1, {{ y = nan }}] }}\n"))
            .to_string();
        assert!(
            message.contains("task `a`: input.x[1].y is NaN"),
            "{message}"
        );
        let message = manifest_error(&format!("{ONE_TASK}input = -inf\n")).to_string();
        assert!(message.contains("task `a`: input is -inf"), "{message}");
    }

    #[test]
    fn unreadable_input_file_names_the_task_the_file_and_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{ONE_TASK}input_file = \"missing.json\"\n");
        let error = parse_manifest(&text, dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("task `a`"), "{message}");
        let file = dir.path().join("missing.json");
        assert!(message.contains(&file.display().to_string()), "{message}");
        let ManifestErrorKind::InputFile {
            error: os_error, ..
        } = &error.kind
        else {
            panic!("{message}");
        };
        assert_eq!(os_error.kind(), io::ErrorKind::NotFound);
        assert!(message.ends_with(&format!(": {os_error}")), "{message}");
    }

    #[test]
    fn input_file_over_16_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = std::fs::File::create(dir.path().join("big.json")).unwrap();
        big.set_len(MAX_INPUT_FILE_BYTES + 1).unwrap();
        let text = format!("{ONE_TASK}input_file = \"big.json\"\n");
        let message = parse_manifest(&text, dir.path()).unwrap_err().to_string();
        assert!(message.contains("task `a`"), "{message}");
        assert!(
            message.contains("big.json is larger than 16 MiB"),
            "{message}"
        );
    }

    #[test]
    fn input_file_that_is_not_json_is_refused_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.json"), "{\"a\": 1,\n oops}").unwrap();
        let text = format!("{ONE_TASK}input_file = \"bad.json\"\n");
        let message = parse_manifest(&text, dir.path()).unwrap_err().to_string();
        assert!(message.contains("task `a`"), "{message}");
        assert!(message.contains("bad.json is not valid JSON"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn missing_manifest_names_its_path() {
        let path = examples().join("no-such-job.toml");
        let error = load_manifest(&path).unwrap_err();
        assert!(matches!(error.kind, ManifestErrorKind::Read(_)));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{}: cannot read the manifest", path.display())),
            "{message}"
        );
    }

    #[test]
    fn manifest_that_is_not_utf8_is_refused_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.toml");
        std::fs::write(&path, b"name = \"x\"\n# caf\xe9\n").unwrap();
        let error = load_manifest(&path).unwrap_err();
        assert_eq!(error.position, Some(Position { line: 2, column: 6 }));
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }

    // --- validation ----------------------------------------------------------------------------

    #[test]
    fn job_without_tasks_is_refused() {
        assert_eq!(rejection(spec(vec![])), JobError::Empty);
        assert_eq!(rejection(spec(vec![])).to_string(), "the job has no tasks");
    }

    #[test]
    fn job_with_more_than_100000_tasks_is_refused() {
        let tasks = (0..=MAX_TASKS)
            .map(|i| task(&format!("t{i}"), &[]))
            .collect();
        let message = rejection(spec(tasks)).to_string();
        assert_eq!(
            message,
            "the job has 100001 tasks; at most 100000 are allowed"
        );
    }

    #[test]
    fn bad_job_names_are_refused_with_the_reason() {
        for (name, reason) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            (
                &"n".repeat(201),
                "it has 201 characters; at most 200 are allowed",
            ),
            ("two\nlines", "it contains a control character"),
        ] {
            let mut job = spec(vec![task("a", &[])]);
            job.name = name.to_owned();
            let message = rejection(job).to_string();
            assert!(message.starts_with("bad job name "), "{message}");
            assert!(message.ends_with(reason), "{message}");
        }
        let mut job = spec(vec![task("a", &[])]);
        job.name = "é".repeat(200);
        assert!(validate(job, known).is_ok());
    }

    #[test]
    fn bad_task_ids_say_which_and_why() {
        for (id, reason) in [
            ("", "it is empty"),
            ("a b", "it contains ' ' at character 2"),
            ("tile/3", "it contains '/' at character 5"),
            ("ü", "it contains 'ü' at character 1"),
            (
                &"x".repeat(129),
                "it has 129 characters; at most 128 are allowed",
            ),
            ("..", "`.` and `..` are reserved"),
        ] {
            let message = rejection(spec(vec![task("ok", &[]), task(id, &[])])).to_string();
            assert!(
                message.starts_with(&format!("bad task id {} (task 2): ", quoted(id))),
                "{message}"
            );
            assert!(message.contains(reason), "{message}");
        }
        let longest = "A-z_0.9".repeat(19)[..MAX_TASK_ID_CHARS].to_owned();
        assert!(validate(spec(vec![task(&longest, &[])]), known).is_ok());
    }

    #[test]
    fn duplicate_task_id_is_named() {
        let error = rejection(spec(vec![task("a", &[]), task("b", &[]), task("a", &[])]));
        assert_eq!(
            error.to_string(),
            "duplicate task id `a`: tasks 1 and 3 both use it"
        );
    }

    #[test]
    fn unknown_dependency_is_named() {
        let error = rejection(spec(vec![task("a", &[]), task("b", &["a", "zz"])]));
        assert_eq!(error.to_string(), "task `b` depends on unknown task \"zz\"");
    }

    #[test]
    fn self_dependency_is_refused() {
        let error = rejection(spec(vec![task("a", &[]), task("b", &["a", "b"])]));
        assert_eq!(error.to_string(), "task `b` depends on itself");
    }

    #[test]
    fn duplicate_dependency_is_refused() {
        let error = rejection(spec(vec![task("a", &[]), task("b", &["a", "a"])]));
        assert_eq!(
            error.to_string(),
            "task `b` lists dependency `a` more than once"
        );
    }

    #[test]
    fn cycle_is_named_in_order_from_its_first_task() {
        let error = rejection(spec(vec![
            task("x", &[]),
            task("b", &["c", "x"]),
            task("c", &["a"]),
            task("a", &["b"]),
        ]));
        assert_eq!(
            error.to_string(),
            "dependency cycle: b -> c -> a -> b (each task depends on the next)"
        );
    }

    #[test]
    fn cycle_reached_through_a_waiting_task_leaves_that_task_out() {
        let error = rejection(spec(vec![
            task("tail", &["a"]),
            task("a", &["b"]),
            task("b", &["a"]),
        ]));
        assert_eq!(
            error,
            JobError::Cycle {
                tasks: vec!["a".into(), "b".into()]
            }
        );
        assert!(error.to_string().contains("a -> b -> a"), "{error}");
    }

    #[test]
    fn cycle_of_100000_tasks_is_found_without_recursion_and_shortened() {
        let count = MAX_TASKS;
        let tasks = (0..count)
            .map(|i| task(&format!("t{i}"), &[&format!("t{}", (i + 1) % count)]))
            .collect();
        let error = rejection(spec(tasks));
        let JobError::Cycle { tasks } = &error else {
            panic!("{error}");
        };
        assert_eq!(tasks.len(), count);
        assert_eq!(tasks[..3], ["t0".into(), "t1".into(), "t2".into()]);
        let message = error.to_string();
        assert!(
            message.starts_with("dependency cycle: t0 -> t1 -> t2 -> "),
            "{message}"
        );
        assert!(
            message.contains("t9 -> ... (99989 more) -> t99999 -> t0 "),
            "{message}"
        );
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn unknown_kind_names_the_task_and_the_kind() {
        let mut odd = task("a", &[]);
        odd.kind = "fortran".into();
        assert_eq!(
            rejection(spec(vec![odd])).to_string(),
            "task `a` has unknown kind \"fortran\""
        );
    }

    #[test]
    fn bad_estimates_name_the_task_the_field_and_the_value() {
        let zero = Estimates::default();
        for (estimates, expected) in [
            (
                Estimates {
                    cpu_s: -1.5,
                    ..zero
                },
                "`cpu_s` = -1.5 is negative",
            ),
            (
                Estimates {
                    cpu_s: f64::NAN,
                    ..zero
                },
                "`cpu_s` = NaN is not a number",
            ),
            (
                Estimates {
                    cpu_s: f64::INFINITY,
                    ..zero
                },
                "`cpu_s` = inf is infinite",
            ),
            (
                Estimates { cpu_s: 2e7, ..zero },
                "`cpu_s` = 20000000 is absurd",
            ),
            (
                Estimates {
                    mem_mb: u64::MAX,
                    ..zero
                },
                "`mem_mb` = 18446744073709551615 is absurd",
            ),
            (
                Estimates {
                    disk_mb: (1 << 30) + 1,
                    ..zero
                },
                "`disk_mb` = 1073741825 is absurd",
            ),
            (
                Estimates {
                    net_kb: (1 << 40) + 1,
                    ..zero
                },
                "`net_kb` = 1099511627777 is absurd",
            ),
        ] {
            let mut t = task("a", &[]);
            t.estimates = estimates;
            let message = rejection(spec(vec![t])).to_string();
            assert!(message.starts_with("task `a`: estimate "), "{message}");
            assert!(message.contains(expected), "{message}");
        }
        let mut fine = task("a", &[]);
        fine.estimates = Estimates {
            cpu_s: 1e7,
            mem_mb: 16 << 20,
            disk_mb: 1 << 30,
            net_kb: 1 << 40,
            out_kb: 1 << 40,
        };
        assert!(validate(spec(vec![fine]), known).is_ok());
    }

    #[test]
    fn nan_estimate_in_a_manifest_is_refused_by_validation() {
        let text = format!("{ONE_TASK}[task.estimates]\ncpu_s = nan\n");
        let spec = parse_manifest(&text, Path::new(".")).unwrap();
        let message = validate(spec, known).unwrap_err().to_string();
        assert!(
            message.contains("`cpu_s` = NaN is not a number"),
            "{message}"
        );
    }

    #[test]
    fn replicas_outside_2_to_8_are_refused() {
        for replicas in [0, 1, 9, u32::MAX] {
            let mut t = task("a", &[]);
            t.critical = Some(true);
            t.replicas = Some(replicas);
            assert_eq!(
                rejection(spec(vec![t])).to_string(),
                format!("task `a`: replicas = {replicas} is out of range (2..=8)")
            );
        }
        for replicas in [2, 8] {
            let mut t = task("a", &[]);
            t.critical = Some(true);
            t.replicas = Some(replicas);
            assert!(validate(spec(vec![t]), known).is_ok());
        }
    }

    #[test]
    fn replicas_without_critical_are_refused() {
        let mut t = task("a", &[]);
        t.replicas = Some(3);
        let message = rejection(spec(vec![t])).to_string();
        assert!(
            message.starts_with("task `a` sets replicas = 3 but is not critical"),
            "{message}"
        );
    }

    #[test]
    fn chain_of_100000_tasks_validates_in_order_without_recursion() {
        let forward: Vec<TaskSpec> = (0..MAX_TASKS)
            .map(|i| match i {
                0 => task("t0", &[]),
                _ => task(&format!("t{i}"), &[&format!("t{}", i - 1)]),
            })
            .collect();
        let started = Instant::now();
        let job = validate(spec(forward), known).unwrap();
        eprintln!("100000-task chain validated in {:?}", started.elapsed());
        assert!(job.topo_order().iter().copied().eq(0..MAX_TASKS));

        // The same chain listed last task first: the order must run against the listing.
        let backward = (0..MAX_TASKS)
            .map(|i| match i {
                i if i == MAX_TASKS - 1 => task(&format!("t{i}"), &[]),
                _ => task(&format!("t{i}"), &[&format!("t{}", i + 1)]),
            })
            .collect();
        let job = validate(spec(backward), known).unwrap();
        assert!(job.topo_order().iter().copied().eq((0..MAX_TASKS).rev()));
    }

    #[test]
    fn job_accessors_follow_the_spec() {
        let original = spec(vec![
            task("c", &["a", "b"]),
            task("a", &[]),
            task("b", &["a"]),
            task("d", &[]),
        ]);
        let job = validate(original.clone(), known).unwrap();
        assert_eq!(job.name(), "test");
        assert_eq!(job.spec(), &original);
        assert_eq!(job.tasks(), original.tasks.as_slice());
        assert_eq!(job.index_of(&"b".into()), Some(2));
        assert_eq!(job.index_of(&"zz".into()), None);
        assert_eq!(job.dependencies(0), [1, 2]);
        assert_eq!(job.dependents(1), [0, 2]);
        assert_eq!(job.dependents(0), [] as [usize; 0]);
        assert_eq!(job.topo_order(), [1, 3, 2, 0]);
        assert_eq!(job.into_spec(), original);
    }

    /// A small xorshift generator: the property test below needs varied specs, not good
    /// randomness, and must be reproducible.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn validate_never_panics_and_orders_whatever_it_accepts() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let ids = ["a", "b", "c", "d", "e", "f", "g", "h", "", "x y", "..", "é"];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let count = rng.below(8);
            let tasks = (0..count)
                .map(|i| {
                    // Mostly distinct, valid ids; now and then a clash or a bad one.
                    let id = match rng.below(50) {
                        0 => ids[rng.below(ids.len())].to_owned(),
                        _ => format!("t{i}"),
                    };
                    let deps = (0..rng.below(4))
                        .map(|_| match rng.below(50) {
                            0 => TaskId::from(ids[rng.below(ids.len())]),
                            // Edges mostly point backwards, so many specs are acyclic.
                            1..=4 => TaskId(format!("t{}", rng.below(count))),
                            _ => TaskId(format!("t{}", rng.below(i.max(1)))),
                        })
                        .collect();
                    let mut t = TaskSpec {
                        id: TaskId(id),
                        deps,
                        ..task("", &[])
                    };
                    if rng.below(50) == 0 {
                        t.kind = "nope".into();
                    }
                    if rng.below(50) == 0 {
                        t.estimates.cpu_s = [f64::NAN, -1.0, f64::INFINITY, 1e300][rng.below(4)];
                    }
                    if rng.below(20) == 0 {
                        t.critical = Some(rng.below(2) == 0);
                        t.replicas = Some(rng.below(10) as u32);
                    }
                    t
                })
                .collect();
            let Ok(job) = validate(spec(tasks), known) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let tasks = job.tasks();
            let mut position = vec![usize::MAX; tasks.len()];
            for (at, &i) in job.topo_order().iter().enumerate() {
                assert_eq!(position[i], usize::MAX, "task {i} ordered twice");
                position[i] = at;
            }
            for (i, t) in tasks.iter().enumerate() {
                assert_eq!(job.index_of(&t.id), Some(i));
                let deps: Vec<usize> = t.deps.iter().map(|d| job.index_of(d).unwrap()).collect();
                assert_eq!(job.dependencies(i), deps);
                for &d in &deps {
                    assert!(position[d] < position[i], "{d} not before {i}");
                    assert!(job.dependents(d).contains(&i));
                }
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} {refused}");
    }

    #[test]
    fn job_spec_survives_a_json_round_trip() {
        let mut original = load_manifest(&examples().join("mandelbrot.toml")).unwrap();
        original.tasks[0].replicas = Some(3);
        original.tasks[1].estimates = Estimates {
            cpu_s: 2.5,
            mem_mb: 512,
            disk_mb: 1,
            net_kb: 64,
            out_kb: 8,
        };
        let text = serde_json::to_string(&original).unwrap();
        let back: JobSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn json_submission_with_an_unknown_field_is_refused() {
        let body = r#"{"name": "x", "tasks": [{"id": "a", "kind": "spin", "colour": 1}]}"#;
        let error = serde_json::from_str::<JobSpec>(body).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `colour`"),
            "{error}"
        );
        let minimal = r#"{"name": "x", "tasks": [{"id": "a", "kind": "spin"}]}"#;
        let spec: JobSpec = serde_json::from_str(minimal).unwrap();
        assert!(validate(spec, known).is_ok());
    }

    #[test]
    fn huge_strings_are_shortened_in_messages() {
        let huge = "z".repeat(10 << 20);
        let mut job = spec(vec![task("a", &[])]);
        job.name = huge.clone();
        let message = rejection(job).to_string();
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(message.contains("(10485760 characters)"), "{message}");

        let error = rejection(spec(vec![task("a", &[&huge])]));
        assert!(error.to_string().len() < 300);
    }

    #[test]
    fn an_input_over_8_mib_of_json_is_refused_naming_the_task_and_the_limit() {
        // The JSON text of a string is its characters and two quotes.
        let at_limit = "x".repeat(MAX_INPUT_JSON_BYTES as usize - 2);
        let mut fits = task("fits", &[]);
        fits.input = json!(at_limit);
        assert!(validate(spec(vec![fits.clone()]), known).is_ok());
        let mut big = task("big", &[]);
        big.input = json!({ "data": at_limit });
        let err = rejection(spec(vec![fits, big]));
        assert_eq!(
            err,
            JobError::InputTooLarge {
                task: "big".into(),
                bytes: MAX_INPUT_JSON_BYTES + 9
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("task `big`: its input is 8388617 bytes") && msg.contains("8 MiB"),
            "{msg}"
        );
    }

    #[test]
    fn validate_with_names_the_first_task_its_check_refuses() {
        let mut a = task("a", &[]);
        a.input = json!({"n": 1});
        let mut b = task("b", &["a"]);
        b.input = json!({"n": -1});
        let mut c = task("c", &[]);
        c.input = json!({"n": -2});
        let check = |kind: &str, input: &serde_json::Value| {
            assert_eq!(kind, "spin");
            match input["n"].as_i64() {
                Some(n) if n >= 0 => Ok(()),
                _ => Err(format!("n must not be negative, got {}", input["n"])),
            }
        };
        let err = validate_with(spec(vec![a.clone(), b, c]), known, check).unwrap_err();
        assert_eq!(
            err.to_string(),
            "task `b` (spin): n must not be negative, got -1"
        );
        assert!(validate_with(spec(vec![a]), known, check).is_ok());
        // An unknown kind is reported as such, before its input is looked at.
        let mut odd = task("odd", &[]);
        odd.kind = "cobol".into();
        let err = validate_with(spec(vec![odd]), known, |_, _| Err("looked".into())).unwrap_err();
        assert!(matches!(err, JobError::UnknownKind { .. }), "{err:?}");
    }
}

//! Wire protocol between workers (`idlegrid`) and the supervisor: the messages, the protocol
//! version and the identifiers they carry.
//!
//! This is the only module that knows the wire format (JSON text frames, one message per frame,
//! internally tagged by `"type"`). Everything else sees typed values. Decoding never panics: any
//! frame that is not valid JSON for a known message is a [`ProtoError`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of this protocol. A worker announces it in [`WorkerMsg::Hello`]; the supervisor refuses
/// a worker whose version it does not speak.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame either side accepts, in bytes. Larger frames are refused by the WebSocket layer
/// before they are buffered whole.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Payloads (results, dependency outputs) whose JSON text is larger than this travel out of band,
/// over HTTP on the supervisor's port, so that the WebSocket always carries heartbeats and
/// `Activity` promptly. Smaller ones go inline.
pub const BULK_THRESHOLD_BYTES: usize = 256 << 10;

/// Largest task output (JSON text) a supervisor accepts unless configured otherwise.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// Longest error string a worker may report for a failed replica; longer ones are cut.
pub const MAX_ERROR_CHARS: usize = 2000;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A job, named by the supervisor when it accepts the job.
    JobId
);
string_id!(
    /// A task inside one job, named by the job's author (unique within the job).
    TaskId
);
string_id!(
    /// A worker process, named by the worker itself for the life of the process so that a
    /// reconnect (after a network blip or a supervisor restart) is recognised as the same worker.
    WorkerId
);

/// One execution of one task on one worker. A task may have several replicas at once (critical
/// tasks, reissues); the first to finish wins. Unique across supervisor restarts: `epoch` is the
/// supervisor's boot count, `seq` counts replicas within one boot (64 bits: it never wraps).
///
/// On the wire and in the store it is the text `"EPOCH.SEQ"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId {
    pub epoch: u32,
    pub seq: u64,
}

impl ReplicaId {
    pub const fn new(epoch: u32, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The `"EPOCH.SEQ"` form used on the wire and in the store.
    pub fn key(&self) -> String {
        format!("{}.{}", self.epoch, self.seq)
    }

    /// Parses the `"EPOCH.SEQ"` form.
    pub fn parse(s: &str) -> Option<Self> {
        let (e, n) = s.split_once('.')?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(e) || !digits(n) {
            return None;
        }
        Some(Self {
            epoch: e.parse().ok()?,
            seq: n.parse().ok()?,
        })
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}.{}", self.epoch, self.seq)
    }
}

impl Serialize for ReplicaId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}.{}", self.epoch, self.seq))
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ReplicaId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("replica id {s:?} is not EPOCH.SEQ")))
    }
}

/// A payload moved out of band (see [`BULK_THRESHOLD_BYTES`]): its JSON text's length and
/// SHA-256, so the receiver can resume a transfer and check what it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the JSON text.
    pub sha256: String,
}

/// A task output or dependency output: inline JSON, or a reference to an out-of-band transfer.
/// Results go up with `PUT /worker/uploads/{replica}`; dependency outputs come down with
/// `GET /worker/outputs/{job}/{task}` (both resumable, see `supervisor::http`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    Inline(serde_json::Value),
    Blob(BlobRef),
}

/// What a worker's machine offers, sent once in [`WorkerMsg::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// Logical CPUs of the machine.
    pub cores: u32,
    /// Total memory in MiB.
    pub memory_mb: u64,
    /// Free disk space where tasks would write, in MiB.
    pub disk_mb: u64,
    /// Operating system, e.g. "Debian GNU/Linux 12".
    pub os: String,
    /// Tasks the worker runs at once (its CPU cap).
    pub slots: u32,
    /// Single-core speed from a short benchmark run at start-up, in millions of kernel steps per
    /// second. Zero when unknown.
    #[serde(default)]
    pub bench_mops: f64,
}

/// Progress of one running replica, as a fraction from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub replica: ReplicaId,
    pub fraction: f32,
}

/// What the owner of a machine did that made the worker stop computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Keyboard,
    Mouse,
    Pointer,
    Touch,
    Voice,
    BusyProcess,
    /// Not the owner, but a reason to stop all the same: the machine went on battery.
    OnBattery,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Keyboard => "keyboard",
            ActivityKind::Mouse => "mouse",
            ActivityKind::Pointer => "pointer",
            ActivityKind::Touch => "touch",
            ActivityKind::Voice => "voice",
            ActivityKind::BusyProcess => "busy_process",
            ActivityKind::OnBattery => "on_battery",
        }
    }
}

/// Measured cost of one replica's execution, reported with its result or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Execution {
    /// Wall-clock time the replica spent computing (pauses excluded), in milliseconds.
    pub wall_ms: u64,
    /// CPU time of the thread that ran it, in milliseconds.
    pub cpu_ms: u64,
}

/// Messages a worker sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// First message on every connection.
    Hello {
        protocol: u32,
        worker: WorkerId,
        name: String,
        token: String,
        hardware: Hardware,
        /// Replicas the worker still holds from an earlier connection (running, paused, or
        /// finished but not yet reported). The supervisor answers which to keep.
        #[serde(default)]
        held: Vec<ReplicaId>,
        /// Whether the machine is idle and the worker takes tasks now. A worker that is
        /// waiting for its owner to leave says false and sends `Available` later.
        #[serde(default = "yes")]
        available: bool,
    },
    Heartbeat {
        #[serde(default)]
        progress: Vec<Progress>,
    },
    StatusAck {
        nonce: u64,
    },
    Progress(Progress),
    /// A replica finished. The worker keeps it until a [`SupervisorMsg::ResultAck`] and sends it
    /// again on its next connection if none came; the supervisor accepts a repeat idempotently.
    Result {
        replica: ReplicaId,
        output: Payload,
        execution: Execution,
    },
    Failure {
        replica: ReplicaId,
        error: String,
        execution: Execution,
    },
    /// The owner came back: the worker has paused its tasks. Sent the moment it is seen.
    Activity {
        kind: ActivityKind,
        /// Unix time of the observation, in milliseconds.
        at_ms: u64,
    },
    /// The machine is idle again and the worker takes tasks.
    Available {
        at_ms: u64,
    },
}

fn yes() -> bool {
    true
}

/// Messages the supervisor sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMsg {
    /// Answer to a valid hello.
    Welcome {
        protocol: u32,
        /// How often the worker must send a heartbeat.
        heartbeat_ms: u64,
        /// Of the replicas listed in `held`, those to carry on with...
        keep: Vec<ReplicaId>,
        /// ...and those to stop and forget.
        drop: Vec<ReplicaId>,
        /// Largest output (JSON text) this supervisor accepts; a larger one is a failure.
        max_output_bytes: u64,
    },
    /// The outcome (result or failure) of this replica is stored, or no longer wanted: the worker
    /// may forget it.
    ResultAck {
        replica: ReplicaId,
    },
    Assign(Assignment),
    Cancel {
        replica: ReplicaId,
        reason: String,
    },
    StatusRequest {
        nonce: u64,
    },
    /// Something the worker sent was refused. When `fatal`, the supervisor closes the connection
    /// right after.
    Error {
        code: ErrorCode,
        message: String,
        fatal: bool,
    },
}

/// One replica to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub replica: ReplicaId,
    pub job: JobId,
    pub task: TaskId,
    pub kind: String,
    pub input: serde_json::Value,
    /// Outputs of the task's dependencies, by task id; large ones out of band.
    #[serde(default)]
    pub deps: BTreeMap<TaskId, Payload>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Malformed,
    TooLarge,
    Unauthorized,
    VersionMismatch,
    Protocol,
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("binary frames are not part of the protocol; send JSON text frames")]
    Binary,
}

/// Header that names the worker on its bulk transfers over HTTP (with the worker token as
/// `Authorization: Bearer`).
pub const WORKER_HEADER: &str = "x-idlegrid-worker";

/// Whether `id` is a worker id the protocol accepts: 1-64 of A-Z a-z 0-9 - _ .
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Cuts an error text to [`MAX_ERROR_CHARS`] characters.
pub fn cut_error(mut error: String) -> String {
    if let Some((at, _)) = error.char_indices().nth(MAX_ERROR_CHARS) {
        error.truncate(at);
    }
    error
}

/// Lower-case hex SHA-256 of `bytes`: the digest in a [`BlobRef`].
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes one text frame from a worker.
pub fn decode_worker(frame: &str) -> Result<WorkerMsg, ProtoError> {
    Ok(serde_json::from_str(frame)?)
}

/// Decodes one text frame from the supervisor.
pub fn decode_supervisor(frame: &str) -> Result<SupervisorMsg, ProtoError> {
    Ok(serde_json::from_str(frame)?)
}

/// Encodes a message as one text frame.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serialising these types cannot fail: every map key is a string and no value is a float
    // that JSON cannot hold except NaN progress, which serde_json writes as null.
    serde_json::to_string(msg)
        .unwrap_or_else(|e| format!("{{\"type\":\"invalid\",\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_message_survives_a_round_trip() {
        let msgs = vec![
            WorkerMsg::Hello {
                protocol: PROTOCOL_VERSION,
                worker: "w1".into(),
                name: "desk".into(),
                token: "t".into(),
                hardware: Hardware {
                    cores: 8,
                    memory_mb: 16000,
                    disk_mb: 100_000,
                    os: "Linux".into(),
                    slots: 4,
                    bench_mops: 120.5,
                },
                held: vec![ReplicaId::new(1, 7)],
                available: false,
            },
            WorkerMsg::Heartbeat {
                progress: vec![Progress {
                    replica: ReplicaId::new(0, 3),
                    fraction: 0.5,
                }],
            },
            WorkerMsg::StatusAck { nonce: 9 },
            WorkerMsg::Progress(Progress {
                replica: ReplicaId::new(0, 3),
                fraction: 0.25,
            }),
            WorkerMsg::Result {
                replica: ReplicaId::new(0, 3),
                output: Payload::Inline(serde_json::json!({"count": 78498})),
                execution: Execution {
                    wall_ms: 10,
                    cpu_ms: 9,
                },
            },
            WorkerMsg::Failure {
                replica: ReplicaId::new(0, 3),
                error: "boom".into(),
                execution: Execution::default(),
            },
            WorkerMsg::Activity {
                kind: ActivityKind::Keyboard,
                at_ms: 17,
            },
            WorkerMsg::Available { at_ms: 18 },
        ];
        for msg in msgs {
            assert_eq!(decode_worker(&encode(&msg)).unwrap(), msg);
        }
    }

    #[test]
    fn every_supervisor_message_survives_a_round_trip() {
        let msgs = vec![
            SupervisorMsg::Welcome {
                protocol: PROTOCOL_VERSION,
                heartbeat_ms: 1000,
                keep: vec![ReplicaId::new(0, 1)],
                drop: vec![ReplicaId::new(0, 2)],
                max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            },
            SupervisorMsg::ResultAck {
                replica: ReplicaId::new(7, u64::MAX),
            },
            SupervisorMsg::Assign(Assignment {
                replica: ReplicaId::new(0, 5),
                job: "j1".into(),
                task: "t1".into(),
                kind: "primes".into(),
                input: serde_json::json!({"from": 0, "to": 10}),
                deps: BTreeMap::from([
                    (TaskId::from("seed"), Payload::Inline(serde_json::json!(1))),
                    (
                        TaskId::from("big"),
                        Payload::Blob(BlobRef {
                            bytes: 1 << 20,
                            sha256: "ab".repeat(32),
                        }),
                    ),
                ]),
            }),
            SupervisorMsg::Cancel {
                replica: ReplicaId::new(0, 5),
                reason: "won elsewhere".into(),
            },
            SupervisorMsg::StatusRequest { nonce: 3 },
            SupervisorMsg::Error {
                code: ErrorCode::Unauthorized,
                message: "wrong token".into(),
                fatal: true,
            },
        ];
        for msg in msgs {
            assert_eq!(decode_supervisor(&encode(&msg)).unwrap(), msg);
        }
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        for frame in [
            "",
            "{",
            "null",
            "[]",
            "{\"type\":\"nope\"}",
            "{\"type\":\"result\"}",
            "{\"type\":\"heartbeat\",\"progress\":[{\"replica\":-1,\"fraction\":0}]}",
            "\u{0}\u{1}",
        ] {
            assert!(decode_worker(frame).is_err(), "{frame:?} decoded");
        }
    }

    #[test]
    fn replica_ids_show_their_epoch_and_never_wrap_at_32_bits() {
        let r = ReplicaId::new(3, 12);
        assert_eq!(r.to_string(), "r3.12");
        assert_eq!(encode(&r), "\"3.12\"");
        let big = ReplicaId::new(u32::MAX, u64::from(u32::MAX) + 1);
        assert_eq!(
            serde_json::from_str::<ReplicaId>(&encode(&big)).unwrap(),
            big
        );
        assert!(big > ReplicaId::new(u32::MAX, u64::from(u32::MAX)));
        for bad in [
            "\"3\"",
            "\"3.\"",
            "\".4\"",
            "\"a.b\"",
            "\"1.-2\"",
            "7",
            "\"99999999999.1\"",
        ] {
            assert!(serde_json::from_str::<ReplicaId>(bad).is_err(), "{bad}");
        }
    }
}

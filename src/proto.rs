//! Wire protocol between workers (`idlegrid`) and the supervisor: the messages, the protocol
//! version and the identifiers they carry.
//!
//! This is the only module that knows the wire format (JSON text frames, one message per frame,
//! internally tagged by `"type"`; binary frames only for the payload of a link probe, see
//! [`SupervisorMsg::LinkDown`]). Everything else sees typed values. Decoding never panics: any
//! frame that is not valid JSON for a known message is a [`ProtoError`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of this protocol. A worker announces it in [`WorkerMsg::Hello`]; the supervisor refuses
/// a worker whose version it does not speak.
pub const PROTOCOL_VERSION: u32 = 4;

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

/// A link probe's payload travels in binary frames of at most this many bytes: a heartbeat or
/// an `Activity` waits in the sender's writer behind one frame at most, not behind a whole leg,
/// and a leg cut short by its time limit still counts what arrived.
pub const LINK_CHUNK_BYTES: usize = 4 << 10;
/// Most payload bytes one leg of a link probe may ask for, either way.
pub const MAX_LINK_PROBE_BYTES: u64 = 4 << 20;
/// Longest time limit one leg of a link probe may be given.
pub const MAX_LINK_LEG_MS: u64 = 600_000;

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

impl From<serde_json::Value> for Payload {
    fn from(v: serde_json::Value) -> Self {
        Payload::Inline(v)
    }
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
    /// The volunteer paused computing from the window or the tray (snooze).
    User,
    /// The daily schedule the volunteer set does not allow computing now.
    Schedule,
    /// A program the volunteer listed as exclusive (a game, a render) started.
    ExclusiveProgram,
    /// A CPU sensor is above the volunteer's temperature limit.
    Thermal,
    /// A full-screen window has the focus (a film, a game, a call).
    Fullscreen,
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
            ActivityKind::User => "user",
            ActivityKind::Schedule => "schedule",
            ActivityKind::ExclusiveProgram => "exclusive_program",
            ActivityKind::Thermal => "thermal",
            ActivityKind::Fullscreen => "fullscreen",
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

/// A replica a leaving worker hands back unfinished, and what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedBack {
    pub replica: ReplicaId,
    pub execution: Execution,
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
    /// A cancelled replica's task stopped after using `execution` (what the job is charged for
    /// a replica that lost). Advisory: sent once, never kept for a later connection.
    Stopped {
        replica: ReplicaId,
        execution: Execution,
    },
    /// The worker is going away (its volunteer quit, or it was told to stop): it hands back
    /// every replica it still runs, with what each used so far (the job is charged for it). The
    /// supervisor reissues them at once and forgets the worker without waiting for silence.
    /// Sent after every outcome queued before it; outcomes not acknowledged stay with the
    /// worker, which sends them again when it comes back.
    Leaving {
        #[serde(default)]
        replicas: Vec<HandedBack>,
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
    /// Answer to [`SupervisorMsg::LinkPing`], sent at once (ahead of any outcome).
    LinkPong {
        nonce: u64,
    },
    /// The payload of a [`SupervisorMsg::LinkDown`] arrived: all of it, or (when its time limit
    /// passed first) the `bytes` that did. `digest` is [`LinkDigest`] of what arrived: proof
    /// that it did.
    LinkReceived {
        nonce: u64,
        bytes: u64,
        digest: u64,
    },
    /// Follows the last binary frame sent for a [`SupervisorMsg::LinkUp`]: `bytes` were sent,
    /// fewer than asked if the time limit passed first.
    LinkSent {
        nonce: u64,
        bytes: u64,
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
    /// Start of a link probe: answer with [`WorkerMsg::LinkPong`] at once (the round trip is
    /// taken off the transfer times).
    LinkPing {
        nonce: u64,
    },
    /// `bytes` of payload ([`link_chunk`]) follow in binary frames. The worker answers with
    /// [`WorkerMsg::LinkReceived`] once they have all arrived, or `timeout_ms` after this
    /// message with what did.
    LinkDown {
        nonce: u64,
        bytes: u64,
        timeout_ms: u64,
    },
    /// Send `bytes` of payload ([`link_chunk`]) in binary frames, stopping when `timeout_ms` have
    /// passed since this message, then [`WorkerMsg::LinkSent`].
    LinkUp {
        nonce: u64,
        bytes: u64,
        timeout_ms: u64,
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
    #[error(
        "binary frame not asked for: binary frames carry only the payload of a link probe the supervisor asked for"
    )]
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

/// The bytes `offset..offset + len` of the payload of link probe `nonce`: pseudo-random (no
/// compression on the way can flatter a link), the same on both sides, so the receiver's
/// [`LinkDigest`] shows the sender what arrived. `offset` is a multiple of 8 (frames are
/// [`LINK_CHUNK_BYTES`]).
pub fn link_chunk(nonce: u64, offset: u64, len: usize) -> Vec<u8> {
    // SplitMix64's state after n outputs is seed + n * its increment: start at any word.
    let word = offset / 8;
    let mut rng = crate::rng::Rng::new(
        nonce
            .wrapping_mul(0xd1b5_4a32_d192_ed03)
            .wrapping_add(word.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    );
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

/// A 64-bit digest of a byte stream, the same however the stream is cut into frames. Not
/// cryptographic: it proves only that a worker read the bytes it says arrived.
#[derive(Debug, Clone)]
pub struct LinkDigest {
    h: u64,
    tail: [u8; 8],
    tail_len: usize,
    bytes: u64,
}

impl Default for LinkDigest {
    fn default() -> Self {
        Self {
            h: 0xcbf2_9ce4_8422_2325,
            tail: [0; 8],
            tail_len: 0,
            bytes: 0,
        }
    }
}

impl LinkDigest {
    pub fn update(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.tail_len > 0 {
            let take = (8 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.mix(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(23);
    }

    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(&self) -> u64 {
        let mut d = self.clone();
        if d.tail_len > 0 {
            let mut last = [0u8; 8];
            last[..d.tail_len].copy_from_slice(&d.tail[..d.tail_len]);
            d.mix(u64::from_le_bytes(last));
        }
        d.mix(d.bytes);
        d.h
    }
}

/// The digest of the first `bytes` bytes of link probe `nonce`'s payload.
pub fn link_digest(nonce: u64, bytes: u64) -> u64 {
    let mut d = LinkDigest::default();
    let mut offset = 0;
    while offset < bytes {
        let len = (bytes - offset).min(LINK_CHUNK_BYTES as u64) as usize;
        d.update(&link_chunk(nonce, offset, len));
        offset += len as u64;
    }
    d.finish()
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
            WorkerMsg::LinkPong { nonce: u64::MAX },
            WorkerMsg::LinkReceived {
                nonce: 4,
                bytes: 16 << 10,
                digest: u64::MAX - 1,
            },
            WorkerMsg::LinkSent {
                nonce: 5,
                bytes: MAX_LINK_PROBE_BYTES,
            },
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
            SupervisorMsg::LinkPing { nonce: 1 },
            SupervisorMsg::LinkDown {
                nonce: 2,
                bytes: 64 << 10,
                timeout_ms: 3000,
            },
            SupervisorMsg::LinkUp {
                nonce: 3,
                bytes: MAX_LINK_PROBE_BYTES,
                timeout_ms: MAX_LINK_LEG_MS,
            },
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
            "{\"type\":\"link_pong\"}",
            "{\"type\":\"link_pong\",\"nonce\":-1}",
            "{\"type\":\"link_pong\",\"nonce\":18446744073709551616}",
            "{\"type\":\"link_received\",\"nonce\":1,\"bytes\":2}",
            "{\"type\":\"link_received\",\"nonce\":1,\"bytes\":1.5,\"digest\":0}",
            "{\"type\":\"link_sent\",\"nonce\":\"1\",\"bytes\":2}",
        ] {
            assert!(decode_worker(frame).is_err(), "{frame:?} decoded");
        }
        for frame in [
            "{\"type\":\"link_ping\"}",
            "{\"type\":\"link_down\",\"nonce\":1,\"bytes\":-5,\"timeout_ms\":1}",
            "{\"type\":\"link_up\",\"nonce\":1,\"bytes\":5}",
        ] {
            assert!(decode_supervisor(frame).is_err(), "{frame:?} decoded");
        }
    }

    #[test]
    fn a_link_digest_is_the_same_however_the_payload_is_cut_and_differs_when_a_byte_does() {
        let whole = link_chunk(7, 0, 3 * LINK_CHUNK_BYTES);
        // Chunks generated at their offsets are the pieces of the whole.
        let mut pieces = Vec::new();
        for i in 0..3 {
            pieces.extend(link_chunk(
                7,
                (i * LINK_CHUNK_BYTES) as u64,
                LINK_CHUNK_BYTES,
            ));
        }
        assert_eq!(pieces, whole);
        assert_ne!(
            link_chunk(8, 0, 64),
            whole[..64],
            "another nonce, other bytes"
        );
        let expected = link_digest(7, whole.len() as u64);
        for cut in [1, 3, 8, 13, 4096, LINK_CHUNK_BYTES] {
            let mut d = LinkDigest::default();
            for part in whole.chunks(cut) {
                d.update(part);
            }
            assert_eq!(d.bytes(), whole.len() as u64);
            assert_eq!(d.finish(), expected, "cut into {cut}-byte pieces");
        }
        let mut flipped = whole.clone();
        flipped[LINK_CHUNK_BYTES + 5] ^= 1;
        let mut d = LinkDigest::default();
        d.update(&flipped);
        assert_ne!(d.finish(), expected);
        // A prefix has a digest of its own: a partial ack cannot claim the whole.
        assert_ne!(link_digest(7, LINK_CHUNK_BYTES as u64), expected);
        assert_ne!(link_digest(7, 0), link_digest(7, 8));
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

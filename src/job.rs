//! Jobs: the manifest format (TOML) an operator writes, and the validated [`Job`] the supervisor
//! accepts.
//!
//! A manifest is read into a [`JobSpec`] (file inputs inlined), which is also the JSON body of a
//! job submission. [`validate`] turns a spec into a [`Job`] or says precisely what is wrong. This
//! module does no network I/O; reading a manifest reads only the manifest and the input files it
//! names.

use serde::{Deserialize, Serialize};

use crate::proto::TaskId;

/// A job as submitted: a name and its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub tasks: Vec<TaskSpec>,
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
    /// Run on several distinct workers from the start.
    #[serde(default)]
    pub critical: bool,
    /// Replicas for a critical task, overriding the supervisor's default (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub estimates: Estimates,
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
}

//! `abort`: a fault-injection kernel that kills its worker process, standing for a kernel that
//! takes its process down (out of memory, a crash in native code). Tests use it to check that the
//! supervisor survives the loss and reissues the task.
//!
//! Input `{}` or `{"after_ms": N}` with N in `0..=86_400_000` (default 0). It has no output: when
//! fault kernels are enabled on the worker ([`set_fault_kernels`], the worker's
//! `--fault-kernels` flag), it computes for N ms of busy time, as `spin` does, then calls
//! [`std::process::abort`]. When they are not, which is the default and what production runs,
//! it fails at once with [`TaskError::BadInput`], so a stray `abort` task costs a failed task,
//! never a worker.
//!
//! Submission checks only the input: whether a worker runs fault kernels is that worker's
//! setting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::spin::{MAX_MS, spin_for};
use super::{Fields, TaskControl, TaskError};

/// Process-wide: a worker process either may be killed by its tasks or may not.
static FAULT_KERNELS: AtomicBool = AtomicBool::new(false);

/// Lets fault kernels (`abort`) do their damage in this process. Off unless called with `true`;
/// the worker calls it only when started with `--fault-kernels`.
pub fn set_fault_kernels(on: bool) {
    FAULT_KERNELS.store(on, Ordering::SeqCst);
}

pub fn fault_kernels_enabled() -> bool {
    FAULT_KERNELS.load(Ordering::SeqCst)
}

/// The delay before aborting, checked; what [`super::check_input`] runs at submission.
pub(super) fn parse(input: &Value) -> Result<u64, TaskError> {
    let fields = Fields::of(input, &["after_ms"], "")?;
    Ok(fields.opt_u64("after_ms", 0..=MAX_MS)?.unwrap_or(0))
}

pub(super) fn run(input: &Value, ctl: &TaskControl) -> Result<Value, TaskError> {
    let after_ms = parse(input)?;
    if !fault_kernels_enabled() {
        return Err(TaskError::BadInput(
            "fault kernels are disabled on this worker (start it with --fault-kernels)".to_owned(),
        ));
    }
    spin_for(Duration::from_millis(after_ms), ctl)?;
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    /// Set in the child process that [`an_enabled_abort_kills_its_process_after_its_busy_time`]
    /// starts, which runs only that test and is meant to die.
    const CHILD: &str = "IDLEGRID_TEST_ABORT_CHILD";

    #[test]
    fn abort_is_refused_while_fault_kernels_are_disabled() {
        // Nothing in this test binary enables them; only the child process below does.
        assert!(!fault_kernels_enabled());
        let err = run(&json!({"after_ms": 1}), &TaskControl::new()).unwrap_err();
        assert!(
            matches!(&err, TaskError::BadInput(m) if m == "fault kernels are disabled on this \
                worker (start it with --fault-kernels)"),
            "{err}"
        );
        let err = run(&json!({"after_ms": MAX_MS + 1}), &TaskControl::new()).unwrap_err();
        assert!(err.to_string().contains("\"after_ms\""), "{err}");
        assert_eq!(parse(&json!({})).unwrap(), 0);
        assert_eq!(parse(&json!(null)).unwrap(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn an_enabled_abort_kills_its_process_after_its_busy_time() {
        use std::os::unix::process::ExitStatusExt;
        const NAME: &str =
            "runtime::abort::tests::an_enabled_abort_kills_its_process_after_its_busy_time";
        if std::env::var_os(CHILD).is_some() {
            set_fault_kernels(true);
            let result = run(&json!({"after_ms": 100}), &TaskControl::new());
            panic!("abort returned {result:?} instead of aborting the process");
        }
        let start = Instant::now();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run this test binary again");
        let took = start.elapsed();
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
        assert!(took >= Duration::from_millis(100), "aborted after {took:?}");
    }
}

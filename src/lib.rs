//! idlegrid: volunteer computing on idle desktops. See `ARCHITECTURE.md` for the map.

pub mod bench;
pub mod chart;
pub mod client;
pub mod demo;
#[cfg(feature = "gui")]
pub mod gui;
pub mod job;
pub mod local;
pub mod opcli;
pub mod operator;
pub mod proto;
pub mod rng;
pub mod runtime;
pub mod sched;
mod signal;
pub mod sim;
pub mod supervisor;
pub mod tls;

pub use signal::{init_logging, shutdown_signal};

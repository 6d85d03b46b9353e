//! idlegrid: volunteer computing on idle desktops. See `ARCHITECTURE.md` for the map.

pub mod job;
pub mod proto;
pub mod runtime;

//! Integration tests: one binary, a module per area (see STYLE.md).

mod bad_input;
mod cluster;
mod demo;
mod harness;

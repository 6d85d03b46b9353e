//! Integration tests: one binary, a module per area (see STYLE.md).

mod activity;
mod bad_input;
mod chaos;
mod cli;
mod cluster;
mod demo;
mod harness;
mod poison;
mod reliability;
mod sim;

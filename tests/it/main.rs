//! Integration tests: one binary, a module per area (see STYLE.md).

mod activity;
mod bad_input;
mod chaos;
mod cli;
mod cluster;
mod dashboard;
mod demo;
#[cfg(feature = "input")]
mod fullscreen;
mod harness;
mod interference;
mod leaving;
mod limits;
mod link;
mod metrics;
mod poison;
mod qos;
mod reliability;
mod sim;
mod sim_vs_real;
mod swarm;
mod tls;
mod tokens;
#[cfg(feature = "gui")]
mod tray;
mod validation;

//! The settings form the settings page edits: [`crate::client::settings::SettingsForm`], whose
//! `check` applies the same rules as the settings file.

pub use crate::client::settings::SettingsForm;

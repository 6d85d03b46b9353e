pub mod screensaver;

//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod lab;
pub mod netns;
pub mod serve;
pub mod watch;

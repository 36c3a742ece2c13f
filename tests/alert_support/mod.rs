//! Shared pieces of the alert tests: a real SMTP server, a real HTTP server (axum) and
//! policy/alert fixtures. Each test file uses what it needs.
#![allow(dead_code)]

pub mod fixtures;
pub mod http;
pub mod smtp;

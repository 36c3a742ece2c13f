//! Policy and alert fixtures shared by the alert tests (the SMTP and HTTP peers are in
//! `canaryd-testkit`). Each test file uses what it needs.
#![allow(dead_code)]

pub mod fixtures;

//! Helpers of the decision-quality benchmark: the simulated world, the three deciders, the
//! scenario list and the report.

pub mod report;
pub mod runners;
pub mod scenarios;
pub mod world;

//! smart-task: a daemon that decides INPS Smart-Task requests with Rhai rules.
//!
//! Layers, bottom up: [`domain`] (pure types, validators, the closing plan), [`config`], [`store`]
//! (persistence), [`rules`] (the sandboxed rule engine), [`intake`], [`worker`] (the pipeline),
//! [`daemon`] (lifecycle and signals), [`bench`], and [`cli`] at the top.

pub mod activation;
pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod documents;
pub mod domain;
pub mod esiti;
pub mod facts_file;
pub mod health;
pub mod http;
pub mod intake;
pub mod notify;
pub mod output;
pub mod reload;
pub mod rules;
pub mod ruletools;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod wakeup;
pub mod worker;

//! ztraded: GitOps for automated trading.
//!
//! A trader keeps pipelines, scanners and risk policies as YAML in git; `ztraded validate`
//! checks them in CI and `ztraded run` reconciles running pipelines with the files.
#![forbid(unsafe_code)]

pub mod agents;
pub mod backtest;
pub mod broker;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod expr;
pub mod http;
pub mod market;
pub mod metrics;
pub mod reconcile;
pub mod risk;
pub mod runtime;
pub mod store;

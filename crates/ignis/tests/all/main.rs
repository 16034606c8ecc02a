//! End-to-end tests: a real `ignis serve` on a free port with a temporary data directory,
//! driven through HTTP and the CLI.

mod harness;

mod authz;
mod baas;
mod bad_input;
mod bench;
mod cli;
mod cluster;
mod compose;
mod dev_cluster;
mod events;
mod fuzz;
mod hardening;
mod invoke;
mod jetstream;
mod lambda;
mod lifecycle;
mod messaging;
mod noisy;
mod observe;
mod sandbox;
mod scaling;
mod soak;
mod tenancy;
mod triggers;
mod ui;
mod wasm;
mod web;

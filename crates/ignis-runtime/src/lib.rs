//! Runtimes of Ignis: the framed protocol between the invoker and a python/node instance, the
//! bootstraps that speak it (shipped inside the binary), and unpacking of uploaded code.
//!
//! Nothing here starts processes: the invoker does, through the sandbox.
#![warn(missing_docs)]

pub mod bootstrap;
pub mod code;
pub mod protocol;

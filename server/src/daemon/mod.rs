//! The reusable process template: everything about processes and sockets, nothing about HTTP.

pub mod worker;

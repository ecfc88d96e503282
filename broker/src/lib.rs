//! The fleet health broker.

pub mod mqtt;

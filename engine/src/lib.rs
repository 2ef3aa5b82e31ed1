//! placeholder

pub mod gates;

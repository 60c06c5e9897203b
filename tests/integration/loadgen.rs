//! Tests of loadgen, run against the real binaries.
#[allow(unused_imports)] use crate::util;

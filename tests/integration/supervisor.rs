//! Tests of supervisor, run against the real binaries.
#[allow(unused_imports)] use crate::util;

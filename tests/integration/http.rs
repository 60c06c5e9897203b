//! Tests of http, run against the real binaries.
#[allow(unused_imports)]
use crate::util;

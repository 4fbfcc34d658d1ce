//! Thin wrappers around the template, JSONPath and scripting libraries, so
//! each library is used in exactly one file and can be replaced there.

pub mod jsonpath;
pub mod rules;
pub mod template;

//! Mesh traffic: copies of live requests sent to another version ([`mirror`]) and the
//! full-link lane a request keeps along a chain of services ([`lane`]).

pub mod lane;
pub mod mirror;

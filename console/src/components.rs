//! Pieces the pages share.

pub mod chart;
pub mod messages;
pub mod split_bar;
pub mod weights;

//! Pieces the pages share.

pub mod chart;
pub mod messages;
pub mod rollout_panel;
pub mod split_bar;
pub mod weights;

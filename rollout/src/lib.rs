//! Grayline's automated rollouts: a canary climbs a plan of weight steps while gates compare
//! it, second by second, with the stable version's traffic in the same seconds; harm rolls it
//! back, safety moves it on, the last step promotes it.
//!
//! Pure code, like `grayline-routing`: no IO, no clock, no randomness of its own. The server
//! drives it with the proxies' per-second statistics, the simulations drive it with seeded
//! synthetic streams, and the console (compiled to wasm) uses the same estimates.
//!
//! - [`plan`]: what an operator asks for, checked field by field.
//! - [`evidence`]: the anytime-valid tests (mixture likelihood ratios).
//! - [`gate`]: how the tests combine into a gate's verdict.
//! - [`judge`]: the state machine, its controls and the effects it asks for.
//! - [`estimate`]: how long a step is likely to take at a given traffic.
//! - [`sim`]: seeded synthetic traffic, for simulations and benchmarks.
//! - [`view`]: what the APIs show.
//!
//! `docs/rollouts.md` explains the method, its assumptions and its measured error rates.

pub mod estimate;
pub mod evidence;
pub mod gate;
pub mod guard;
pub mod judge;
pub mod plan;
pub mod sim;
pub mod view;

pub use gate::{Gate, GateKind, GateSummary, Tally, Verdict};
pub use judge::{Control, Effect, NotNow, Phase, Rollout, Sample, Second, Transition};
pub use plan::{CeilingGate, ErrorGate, Gates, LatencyGate, Mode, OnTimeout, Plan, Step, Webhook};
pub use view::{RolloutEvent, RolloutView};

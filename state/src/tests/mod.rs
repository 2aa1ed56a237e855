//! Cross-module tests: the cache against both engines, and the commit protocol against a
//! simulated broker with crashes at every step.

mod cache;
mod crash_points;
mod property;
mod sim;
mod sim_restore;
mod standby;

//! The protocol (`crate::protocol`) against a simulated broker, with crashes at every step:
//! one test per crash point, a random-crash property test and standby failovers.

mod crash_points;
mod property;
mod sim;
mod sim_io;
mod standby;

//! loadshift's executor: runs workloads on one worker node and drives its
//! half of every migration with CRIU (processes) or the Docker Engine API
//! (containers), reporting each step as an event.

pub mod admission;
pub mod cgroup;
pub mod checkpoint;
pub mod clock;
pub mod cordon;
pub mod deadline;
#[cfg(test)]
mod doubles;
pub mod fault;
pub mod fence;
pub mod image_store;
pub mod journal;
pub mod kdat;
pub mod lazy;
pub mod liveness;
pub mod output;
pub mod runtime;
pub mod saga;
pub mod seal;
pub mod service;
pub mod stop;

pub mod stream;
pub mod sweep;
pub mod unpack;
pub mod usage;
